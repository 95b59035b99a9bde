//! Codec: round trips of every message type, totality on arbitrary input.

use dcgka::codec::{Decode, DecodeError, Encode};
use dcgka::crypto::{Hash32, Signature, VerifyingKey, X25519Public};
use dcgka::ids::{GroupId, MemberTag, SeqNo};
use dcgka::prekeys::{CarriedPrekey, OneTimePrekeyId, PrekeyBundle, SignedPrekeyId};
use dcgka::two_party::{KeyRef, TwoSmCiphertext};
use dcgka::wire::{
    AckRef, ApplicationBody, ControlBody, Envelope, EnvelopeKind, Forward, SeedBlock, SenderRef, requires_rotation,
};
use proptest::prelude::*;

fn arr32() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

fn key_ref() -> impl Strategy<Value = KeyRef> {
    prop_oneof![
        (any::<u64>(), proptest::option::of(any::<u64>()))
            .prop_map(|(s, o)| KeyRef::Prekey { spk_id: SignedPrekeyId(s), opk_id: o.map(OneTimePrekeyId) }),
        any::<u64>().prop_map(KeyRef::YourKey),
        Just(KeyRef::KeyIGaveYou),
    ]
}

fn two_sm() -> impl Strategy<Value = TwoSmCiphertext> {
    (key_ref(), arr32(), proptest::collection::vec(any::<u8>(), 0..200))
        .prop_map(|(key_ref, enc, ct)| TwoSmCiphertext { key_ref, enc, ct })
}

fn seeds() -> impl Strategy<Value = SeedBlock> {
    (arr32(), proptest::collection::vec(two_sm(), 0..4))
        .prop_map(|(d, cts)| SeedBlock { recipients_digest: Hash32(d), cts })
}

fn ack_ref() -> impl Strategy<Value = AckRef> {
    (any::<[u8; 16]>(), 1..u64::MAX, any::<[u8; 16]>()).prop_map(|(s, q, h)| AckRef {
        of_sender: MemberTag(s),
        of_seq: SeqNo(q),
        of_hash: h,
    })
}

fn carried(pk: [u8; 32], id: u64, not_before: u64, not_after: u64, sig: [u8; 64]) -> CarriedPrekey {
    CarriedPrekey {
        spk_id: SignedPrekeyId(id),
        spk_pub: X25519Public(pk),
        not_before,
        not_after,
        signature: Signature(sig),
    }
}

fn control_body() -> impl Strategy<Value = ControlBody> {
    prop_oneof![
        (proptest::collection::btree_set(arr32(), 0..5), seeds())
            .prop_map(|(m, seeds)| ControlBody::Create { members: m.into_iter().map(VerifyingKey).collect(), seeds }),
        seeds().prop_map(|seeds| ControlBody::Update { seeds }),
        (any::<[u8; 16]>(), seeds()).prop_map(|(t, seeds)| ControlBody::Remove { target: MemberTag(t), seeds }),
        (arr32(), arr32(), any::<u64>(), any::<u64>(), any::<u64>(), any::<[u8; 64]>()).prop_map(
            |(t, pk, id, nb, na, sig)| ControlBody::Add {
                target: VerifyingKey(t),
                prekey: carried(pk, id, nb, na, sig)
            }
        ),
        (ack_ref(), proptest::collection::vec((any::<[u8; 16]>(), two_sm()), 0..3)).prop_map(|(of, f)| {
            ControlBody::Ack {
                of,
                forwards: f.into_iter().map(|(r, ct)| Forward { recipient: MemberTag(r), ct }).collect(),
            }
        }),
        (ack_ref(), proptest::option::of(two_sm())).prop_map(|(of, ratchet_ct)| ControlBody::AddAck { of, ratchet_ct }),
    ]
}

/// An envelope of any kind with a structurally valid body and header.
fn envelope() -> impl Strategy<Value = Envelope> {
    let app = (1..u64::MAX, proptest::collection::vec(any::<u8>(), 16..80))
        .prop_map(|(d, ct)| (EnvelopeKind::Application, ApplicationBody { epoch_delta: d, ct }.to_bytes()));
    let ctl = control_body().prop_map(|b| (b.kind(), b.to_bytes()));
    (prop_oneof![app, ctl], 1..1_000_000u64, arr32(), arr32(), arr32(), any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(
        |((kind, body), seq, gid, sender, nk, s1, s2)| {
            let seq = if kind == EnvelopeKind::Create { SeqNo(1) } else { SeqNo(seq) };
            let sender = if seq.0 == 1 {
                SenderRef::Identity(VerifyingKey(sender))
            } else {
                let mut t = [0u8; 16];
                t.copy_from_slice(&sender[..16]);
                SenderRef::Tag(MemberTag(t))
            };
            let mut sig = [0u8; 64];
            sig[..32].copy_from_slice(&s1);
            sig[32..].copy_from_slice(&s2);
            Envelope {
                kind,
                gid: (kind == EnvelopeKind::Create).then_some(GroupId(gid)),
                seq,
                sender,
                new_signing_key: requires_rotation(kind, seq).then_some(VerifyingKey(nk)),
                key_cert: requires_rotation(kind, seq).then_some(Signature(sig)),
                body,
                signature: Signature(sig),
            }
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn envelopes_round_trip(env in envelope()) {
        let bytes = env.to_bytes();
        prop_assert_eq!(Envelope::from_bytes(&bytes).unwrap(), env.clone());
        if env.kind == EnvelopeKind::Application {
            let body = ApplicationBody::from_bytes(&env.body).unwrap();
            prop_assert_eq!(body.to_bytes(), env.body);
        } else {
            let body = ControlBody::from_bytes(env.kind, &env.body).unwrap();
            prop_assert_eq!(body.to_bytes(), env.body);
        }
    }

    #[test]
    fn control_bodies_round_trip(body in control_body()) {
        prop_assert_eq!(ControlBody::from_bytes(body.kind(), &body.to_bytes()).unwrap(), body);
    }

    #[test]
    fn two_sm_ciphertexts_round_trip(c in two_sm()) {
        prop_assert_eq!(TwoSmCiphertext::from_bytes(&c.to_bytes()).unwrap(), c);
    }

    /// Truncation never panics and never yields the original envelope. The body has no
    /// length prefix, so a prefix that still holds a header and 64 bytes parses, as a
    /// different envelope whose signature cannot verify; anything shorter is refused.
    #[test]
    fn truncations_are_refused_or_change_the_envelope(env in envelope()) {
        let bytes = env.to_bytes();
        let header = bytes.len() - env.body.len() - 64;
        for cut in 0..bytes.len() {
            if let Ok(e) = Envelope::from_bytes(&bytes[..cut]) {
                prop_assert!(cut >= header + 64, "prefix of {} bytes accepted", cut);
                prop_assert_ne!(&e, &env);
            }
        }
        let mut longer = bytes.clone();
        longer.push(0);
        prop_assert_ne!(Envelope::from_bytes(&longer).ok(), Some(env));
    }

    /// Arbitrary bytes decode to a value or a typed error, for every decoder.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), kind in 0u8..20) {
        let _ = Envelope::from_bytes(&bytes);
        let _ = TwoSmCiphertext::from_bytes(&bytes);
        let _ = PrekeyBundle::from_bytes(&bytes);
        let _ = ApplicationBody::from_bytes(&bytes);
        if let Ok(k) = EnvelopeKind::from_tag(kind) {
            let _ = ControlBody::from_bytes(k, &bytes);
        }
        // With a valid header in front, the random tail reaches the body and key decoders.
        let mut framed = vec![0x11, kind, 0x05];
        framed.extend_from_slice(&bytes);
        let _ = Envelope::from_bytes(&framed);
    }

    /// Control bodies survive single-byte corruption without panicking, and any accepted
    /// corruption re-encodes to exactly the corrupted bytes (canonical encoding).
    #[test]
    fn corrupted_bodies_are_canonical(body in control_body(), pos: prop::sample::Index, val: u8) {
        let mut bytes = body.to_bytes();
        let i = pos.index(bytes.len());
        bytes[i] = val;
        if let Ok(b) = ControlBody::from_bytes(body.kind(), &bytes) {
            prop_assert_eq!(b.to_bytes(), bytes);
        }
    }
}

#[test]
fn structural_rules_are_enforced() {
    // Unknown version, unknown kind.
    assert_eq!(Envelope::from_bytes(&[0x12, 2, 5]), Err(DecodeError::UnsupportedVersion(0x12)));
    assert!(matches!(Envelope::from_bytes(&[0x11, 7, 5]), Err(DecodeError::UnknownTag { .. })));
    // An ack (not seq 1) must not carry a new signing key; an update must.
    let mut bytes = vec![0x11, 2, 5];
    bytes.extend_from_slice(&[0xaa; 16]);
    bytes.push(1);
    bytes.extend_from_slice(&[0xbb; 32]);
    bytes.extend_from_slice(&[0xcc; 64]);
    bytes.extend_from_slice(&[0; 64]);
    assert_eq!(
        Envelope::from_bytes(&bytes),
        Err(DecodeError::InvalidField("signing-key rotation present exactly when required"))
    );
    let mut bytes = vec![0x11, 3, 5];
    bytes.extend_from_slice(&[0xaa; 16]);
    bytes.push(0);
    bytes.extend_from_slice(&[0; 64]);
    assert!(Envelope::from_bytes(&bytes).is_err());
    // Sequence number 0 does not exist.
    assert!(Envelope::from_bytes(&[0x11, 16, 0]).is_err());
    // The create's member list must be a sorted set.
    let body = ControlBody::Create {
        members: vec![VerifyingKey([2; 32]), VerifyingKey([1; 32])],
        seeds: SeedBlock { recipients_digest: Hash32([0; 32]), cts: vec![] },
    };
    assert_eq!(ControlBody::from_bytes(EnvelopeKind::Create, &body.to_bytes()), Err(DecodeError::NotCanonicalSet));
    // An application body carries at least a tag, and its epoch delta is at least 1.
    assert!(ApplicationBody::from_bytes(&[1; 10]).is_err());
    assert!(ApplicationBody::from_bytes(&[0; 20]).is_err());
    // Non-minimal varints inside a body.
    let mut b =
        ControlBody::Add { target: VerifyingKey([1; 32]), prekey: carried([2; 32], 1, 0, 1, [3; 64]) }.to_bytes();
    b.push(0);
    assert_eq!(ControlBody::from_bytes(EnvelopeKind::Add, &b), Err(DecodeError::TrailingBytes(1)));
}

#[test]
fn oversized_inputs_are_refused_before_parsing() {
    let big = vec![0u8; dcgka::consts::MAX_MESSAGE_SIZE + 1];
    assert!(matches!(Envelope::from_bytes(&big), Err(DecodeError::TooLarge { .. })));
}
