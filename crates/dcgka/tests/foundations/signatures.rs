//! Signatures must be unforgeable: the authors' prototype accepted 100 of 100 forgeries
//! (spec §13 #1). Every variation below must be rejected.

use dcgka::crypto::{CryptoError, SigningSecret, VerifyingKey, labels};
use dcgka::ids::{GroupId, MemberId, SeqNo};
use dcgka::wire::{Envelope, EnvelopeKind};

use crate::rng;

const GID: GroupId = GroupId([3; 32]);
const SENDER: MemberId = MemberId([4; 32]);

fn envelope(key: &SigningSecret) -> Envelope {
    Envelope::seal(EnvelopeKind::Application, &GID, SeqNo(5), &SENDER, None, None, None, vec![1, 42, 9, 9, 9], key)
}

/// Ed25519 group order L, little-endian.
const L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

#[test]
fn genuine_signature_verifies() {
    let key = SigningSecret::generate(&mut rng(1));
    envelope(&key).verify(&GID, &SENDER, &key.verifying_key()).unwrap();
}

#[test]
fn forged_signatures_are_rejected() {
    let mut r = rng(2);
    let key = SigningSecret::generate(&mut r);
    let vk = key.verifying_key();
    let env = envelope(&key);
    // Random signatures.
    for i in 0..100u8 {
        let mut forged = env.clone();
        let s = SigningSecret::generate(&mut r).sign(labels::SIG_ENVELOPE, &[&[i]]);
        forged.signature = s;
        assert_eq!(forged.verify(&GID, &SENDER, &vk), Err(CryptoError::BadSignature));
    }
    // A bit flipped anywhere in the signature.
    for bit in (0..512).step_by(37) {
        let mut forged = env.clone();
        forged.signature.0[bit / 8] ^= 1 << (bit % 8);
        assert!(forged.verify(&GID, &SENDER, &vk).is_err(), "bit {bit}");
    }
    // Malleability: S + L encodes the same scalar non-canonically and must be refused.
    let mut forged = env.clone();
    let mut carry = 0u16;
    for (k, l) in L.iter().enumerate() {
        let v = u16::from(forged.signature.0[32 + k]) + u16::from(*l) + carry;
        forged.signature.0[32 + k] = v as u8;
        carry = v >> 8;
    }
    assert_eq!(forged.verify(&GID, &SENDER, &vk), Err(CryptoError::BadSignature));
}

#[test]
fn signature_by_another_key_is_rejected() {
    let mut r = rng(3);
    let key = SigningSecret::generate(&mut r);
    let other = SigningSecret::generate(&mut r);
    let env = envelope(&other);
    assert_eq!(env.verify(&GID, &SENDER, &key.verifying_key()), Err(CryptoError::BadSignature));
}

#[test]
fn signature_binds_group_sender_and_every_byte() {
    let key = SigningSecret::generate(&mut rng(4));
    let vk = key.verifying_key();
    let env = envelope(&key);
    assert!(env.verify(&GroupId([0; 32]), &SENDER, &vk).is_err(), "another group");
    assert!(env.verify(&GID, &MemberId([5; 32]), &vk).is_err(), "another sender with the same tag prefix");
    let mut t = env.clone();
    t.body[1] ^= 1;
    assert!(t.verify(&GID, &SENDER, &vk).is_err(), "body");
    let mut t = env.clone();
    t.seq = SeqNo(6);
    assert!(t.verify(&GID, &SENDER, &vk).is_err(), "sequence number");
}

#[test]
fn small_order_and_invalid_keys_are_rejected() {
    let key = SigningSecret::generate(&mut rng(5));
    let env = envelope(&key);
    let mut identity_point = [0u8; 32];
    identity_point[0] = 1;
    assert_eq!(env.verify(&GID, &SENDER, &VerifyingKey(identity_point)), Err(CryptoError::InvalidPublicKey));
    assert!(env.verify(&GID, &SENDER, &VerifyingKey([0xff; 32])).is_err());
}
