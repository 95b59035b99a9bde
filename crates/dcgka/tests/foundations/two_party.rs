use std::collections::VecDeque;

use dcgka::codec::Encode;
use dcgka::consts::PREKEY_DEFAULT_VALIDITY;
use dcgka::crypto::{self, TAG_LEN, labels};
use dcgka::ids::{GroupId, MemberId};
use dcgka::prekeys::{InMemoryPrekeyDirectory, PrekeyBundle, PrekeyError, PrekeyProvider};
use dcgka::two_party::{KeyRef, TwoPartyError, TwoPartySession, TwoSmCiphertext};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;

use crate::{Device, NOW, rng, two_devices};

fn send(from: &mut Device, r: &mut ChaCha20Rng, dir: &mut InMemoryPrekeyDirectory, msg: &[u8]) -> TwoSmCiphertext {
    from.session.send(r, dir, NOW, msg).unwrap()
}

fn recv(to: &mut Device, c: &TwoSmCiphertext) -> Result<Vec<u8>, TwoPartyError> {
    to.session.receive(to.identity.key_store_mut(), c).map(|p| p.to_vec())
}

#[test]
fn one_way_stream() {
    let mut r = rng(1);
    let (mut a, mut b, mut dir) = two_devices(&mut r, 4);
    let cts: Vec<_> = (0..5u8).map(|i| send(&mut a, &mut r, &mut dir, &[i; 3])).collect();
    assert!(matches!(cts[0].key_ref, KeyRef::Prekey { opk_id: Some(_), .. }));
    assert!(cts[1..].iter().all(|c| c.key_ref == KeyRef::KeyIGaveYou));
    for (i, c) in cts.iter().enumerate() {
        assert_eq!(recv(&mut b, c).unwrap(), vec![i as u8; 3]);
    }
}

#[test]
fn strict_alternation() {
    let mut r = rng(2);
    let (mut a, mut b, mut dir) = two_devices(&mut r, 4);
    for round in 0..6u8 {
        let c = send(&mut a, &mut r, &mut dir, &[round]);
        assert_eq!(recv(&mut b, &c).unwrap(), vec![round]);
        let c = send(&mut b, &mut r, &mut dir, &[round, 1]);
        if round == 0 {
            assert!(matches!(c.key_ref, KeyRef::YourKey(1)), "B answers to the key A sent");
        }
        assert_eq!(recv(&mut a, &c).unwrap(), vec![round, 1]);
    }
    // Old keys are erased as the peer moves on: only a bounded number remain.
    assert!(a.session.held_secret_keys() <= 2, "held {}", a.session.held_secret_keys());
    assert!(b.session.held_secret_keys() <= 2, "held {}", b.session.held_secret_keys());
}

#[test]
fn concurrent_first_messages_via_prekeys_then_concurrent_streams() {
    let mut r = rng(3);
    let (mut a, mut b, mut dir) = two_devices(&mut r, 4);
    let ca = send(&mut a, &mut r, &mut dir, b"hello from a");
    let cb = send(&mut b, &mut r, &mut dir, b"hello from b");
    assert!(matches!(ca.key_ref, KeyRef::Prekey { .. }) && matches!(cb.key_ref, KeyRef::Prekey { .. }));
    assert_eq!(recv(&mut b, &ca).unwrap(), b"hello from a");
    assert_eq!(recv(&mut a, &cb).unwrap(), b"hello from b");
    // Both send two more before either receives.
    let ca: Vec<_> = (0..2u8).map(|i| send(&mut a, &mut r, &mut dir, &[b'a', i])).collect();
    let cb: Vec<_> = (0..2u8).map(|i| send(&mut b, &mut r, &mut dir, &[b'b', i])).collect();
    for (i, c) in cb.iter().enumerate() {
        assert_eq!(recv(&mut a, c).unwrap(), vec![b'b', i as u8]);
    }
    for (i, c) in ca.iter().enumerate() {
        assert_eq!(recv(&mut b, c).unwrap(), vec![b'a', i as u8]);
    }
}

#[test]
fn replay_fails_and_changes_nothing() {
    let mut r = rng(4);
    let (mut a, mut b, mut dir) = two_devices(&mut r, 4);
    let c0 = send(&mut a, &mut r, &mut dir, b"first");
    recv(&mut b, &c0).unwrap();
    assert_eq!(recv(&mut b, &c0), Err(TwoPartyError::UnexpectedPrekeyMessage));
    let c1 = send(&mut a, &mut r, &mut dir, b"second");
    recv(&mut b, &c1).unwrap();
    assert_eq!(recv(&mut b, &c1), Err(TwoPartyError::DecryptionFailed));
    let reply = send(&mut b, &mut r, &mut dir, b"reply");
    recv(&mut a, &reply).unwrap();
    let c2 = send(&mut a, &mut r, &mut dir, b"third");
    assert!(matches!(c2.key_ref, KeyRef::YourKey(_)));
    recv(&mut b, &c2).unwrap();
    assert!(matches!(recv(&mut b, &c2), Err(TwoPartyError::UnknownKeyIndex(_))));
    // The session still works after the failed replays.
    let c3 = send(&mut a, &mut r, &mut dir, b"fourth");
    assert_eq!(recv(&mut b, &c3).unwrap(), b"fourth");
}

#[test]
fn tampered_ciphertext_fails_and_changes_nothing() {
    let mut r = rng(5);
    let (mut a, mut b, mut dir) = two_devices(&mut r, 4);
    let c = send(&mut a, &mut r, &mut dir, b"payload");
    for k in [0, 17, c.ct.len() - 1] {
        let mut bad = c.clone();
        bad.ct[k] ^= 1;
        assert_eq!(recv(&mut b, &bad), Err(TwoPartyError::DecryptionFailed));
    }
    let mut bad = c.clone();
    bad.enc[3] ^= 1;
    assert_eq!(recv(&mut b, &bad), Err(TwoPartyError::DecryptionFailed));
    // A different key reference changes the HPKE aad, so it fails too.
    let mut bad = c.clone();
    if let KeyRef::Prekey { opk_id, .. } = &mut bad.key_ref {
        *opk_id = None;
    }
    assert_eq!(recv(&mut b, &bad), Err(TwoPartyError::DecryptionFailed));
    assert_eq!(recv(&mut b, &c).unwrap(), b"payload");
}

#[test]
fn forward_secrecy_snapshot_after_receipt() {
    let mut r = rng(6);
    let (mut a, mut b, mut dir) = two_devices(&mut r, 4);
    let mut cts = Vec::new();
    for i in 0..4u8 {
        let c = send(&mut a, &mut r, &mut dir, &[i]);
        recv(&mut b, &c).unwrap();
        cts.push(c);
        let c = send(&mut b, &mut r, &mut dir, &[i]);
        recv(&mut a, &c).unwrap();
    }
    let mut snap_session = b.session.clone();
    let mut snap_keys = b.identity.key_store().clone();
    for c in &cts {
        assert!(snap_session.receive(&mut snap_keys, c).is_err(), "snapshot decrypted an already received message");
    }
}

#[test]
fn post_compromise_security_after_one_exchange() {
    let mut r = rng(7);
    let (mut a, mut b, mut dir) = two_devices(&mut r, 4);
    for i in 0..3u8 {
        let c = send(&mut a, &mut r, &mut dir, &[i]);
        recv(&mut b, &c).unwrap();
        let c = send(&mut b, &mut r, &mut dir, &[i]);
        recv(&mut a, &c).unwrap();
    }
    // Compromise: snapshots of both parties' complete state.
    let snap_a = (a.session.clone(), a.identity.key_store().clone());
    let snap_b = (b.session.clone(), b.identity.key_store().clone());
    // B -> A, then A -> B, then B -> A: each is undecryptable by the snapshot of its receiver.
    let m1 = send(&mut b, &mut r, &mut dir, b"b1");
    let (mut s, mut k) = snap_a.clone();
    let snapshot_result = s.receive(&mut k, &m1);
    // m1 is sealed to a key A generated before the snapshot: the snapshot of A opens it.
    assert_eq!(snapshot_result.unwrap().to_vec(), b"b1");
    recv(&mut a, &m1).unwrap();
    let m2 = send(&mut a, &mut r, &mut dir, b"a2");
    let (mut s, mut k) = snap_b.clone();
    assert!(s.receive(&mut k, &m2).is_err(), "B's snapshot must not open A's reply to B's fresh key");
    assert_eq!(recv(&mut b, &m2).unwrap(), b"a2");
    let m3 = send(&mut b, &mut r, &mut dir, b"b3");
    let (mut s, mut k) = snap_a.clone();
    assert!(s.receive(&mut k, &m3).is_err(), "A's snapshot must not open B's reply to A's fresh key");
    assert_eq!(recv(&mut a, &m3).unwrap(), b"b3");
}

#[test]
fn one_time_prekey_usable_once_and_deleted_after_use() {
    let mut r = rng(8);
    let (mut a, mut b, mut dir) = two_devices(&mut r, 1);
    let c = send(&mut a, &mut r, &mut dir, b"x");
    let KeyRef::Prekey { opk_id: Some(opk), .. } = c.key_ref else { panic!("expected a one-time prekey") };
    assert!(b.identity.key_store().has_opk(opk));
    // A failed (tampered) first message does not consume it.
    let mut bad = c.clone();
    bad.ct[0] ^= 1;
    assert!(recv(&mut b, &bad).is_err());
    assert!(b.identity.key_store().has_opk(opk));
    recv(&mut b, &c).unwrap();
    assert!(!b.identity.key_store().has_opk(opk), "the secret is gone after first use");
    // Another session (a second group) that replays the same first message fails: the OPK is gone.
    let mut other =
        dcgka::two_party::TwoPartySession::new(dcgka::ids::GroupId([7; 32]), b.mid, a.mid, a.identity.public_key());
    assert_eq!(
        other.receive(b.identity.key_store_mut(), &c),
        Err(TwoPartyError::Prekey(PrekeyError::UnknownOneTimePrekey(opk)))
    );
}

#[test]
fn pool_exhausted_falls_back_to_signed_prekey_only() {
    let mut r = rng(9);
    let (mut a, mut b, mut dir) = two_devices(&mut r, 0);
    let c = send(&mut a, &mut r, &mut dir, b"spk only");
    assert!(matches!(c.key_ref, KeyRef::Prekey { opk_id: None, .. }));
    assert_eq!(recv(&mut b, &c).unwrap(), b"spk only");
}

#[test]
fn missing_or_invalid_bundle_fails_without_state_change() {
    let mut r = rng(10);
    let (mut a, _b, _dir) = two_devices(&mut r, 1);
    let mut empty = InMemoryPrekeyDirectory::new();
    let err = a.session.send(&mut r, &mut empty, NOW, b"x").unwrap_err();
    assert!(matches!(err, TwoPartyError::MissingPrekeyBundle(_)));
    let (_, _, mut dir) = two_devices(&mut rng(10), 1);
    let far_future = NOW + 10 * 365 * 24 * 3600;
    let err = a.session.send(&mut r, &mut dir, far_future, b"x").unwrap_err();
    assert!(matches!(err, TwoPartyError::Prekey(PrekeyError::Expired { .. })));
    assert_eq!(a.session.held_secret_keys(), 0, "no keys generated by failed sends");
}

/// A 32-byte payload (a seed) and the 2SM plaintext around it: the key for the receiver
/// (32), the sender's key index (a 1-byte varint), the sender's new public key (32).
const SEED: [u8; 32] = [0x5e; 32];
const FIRST_PLAINTEXT_LEN: usize = 32 + 1 + 32 + SEED.len();

#[test]
fn first_contact_round_trips_with_and_without_one_time_prekey() {
    for opks in [1, 0] {
        let mut r = rng(11);
        let (mut a, mut b, mut dir) = two_devices(&mut r, opks);
        let c = send(&mut a, &mut r, &mut dir, &SEED);
        let KeyRef::Prekey { opk_id, .. } = c.key_ref else { panic!("expected a first contact") };
        assert_eq!(opk_id.is_some(), opks == 1);
        assert_eq!(c.ct.len(), FIRST_PLAINTEXT_LEN + TAG_LEN, "one layer: plaintext and one tag");
        let held = b.identity.key_store().one_time_prekey_count();
        assert_eq!(recv(&mut b, &c).unwrap(), SEED);
        if let Some(opk) = opk_id {
            assert!(!b.identity.key_store().has_opk(opk), "the OPK secret is deleted after a successful open");
            assert_eq!(b.identity.key_store().one_time_prekey_count(), held - 1);
        }
        let reply = send(&mut b, &mut r, &mut dir, b"reply");
        assert_eq!(recv(&mut a, &reply).unwrap(), b"reply");
    }
}

/// The former construction (§4.3 of the draft): HPKE to the OPK, then that `enc ‖ ct`
/// sealed again with HPKE to the SPK. Only its length matters here.
fn nested_hpke_len(bundle: &dcgka::prekeys::VerifiedBundle, pt_len: usize) -> usize {
    let mut r = rng(99);
    let pt = vec![0u8; pt_len];
    let inner = match bundle.opk {
        Some((_, opk_pub)) => {
            let (enc1, ct1) = crypto::hpke_seal(&mut r, &opk_pub, b"info", b"aad", &pt).unwrap();
            [&enc1[..], &ct1].concat()
        }
        None => pt,
    };
    crypto::hpke_seal(&mut r, &bundle.spk.1, b"info", b"aad", &inner).unwrap().1.len()
}

#[test]
fn first_contact_is_48_bytes_shorter_than_nested_hpke() {
    // (opks, ct bytes before, ct bytes now, encoded TwoSmCiphertext bytes now)
    for (opks, before, now, encoded) in [(1, 161, 113, 150), (0, 113, 113, 149)] {
        let mut r = rng(12);
        let (mut a, b, mut dir) = two_devices(&mut r, opks);
        let bundle = dir.clone().bundle(&b.identity.public_key()).unwrap().verify(&b.identity.public_key(), NOW);
        let c = send(&mut a, &mut r, &mut dir, &SEED);
        assert_eq!(nested_hpke_len(&bundle.unwrap(), FIRST_PLAINTEXT_LEN), before);
        assert_eq!(c.ct.len(), now, "opks = {opks}");
        assert_eq!(c.to_bytes().len(), encoded, "opks = {opks}");
        assert_eq!(before - now, if opks == 1 { 48 } else { 0 });
    }
}

#[test]
fn failed_first_contact_changes_neither_session_nor_key_store() {
    let mut r = rng(13);
    let (mut a, mut b, mut dir) = two_devices(&mut r, 1);
    let c = send(&mut a, &mut r, &mut dir, &SEED);
    let KeyRef::Prekey { spk_id, opk_id: Some(opk) } = c.key_ref else { panic!("expected a one-time prekey") };
    let gid = GroupId([7; 32]);
    let a_ik = a.identity.public_key();
    let session_before = format!("{:?}", b.session);
    let opks_before = b.identity.key_store().one_time_prekey_count();

    let mut tampered: Vec<(&str, TwoSmCiphertext)> = Vec::new();
    let mut bad = c.clone();
    bad.enc[0] ^= 1;
    tampered.push(("enc", bad));
    let mut bad = c.clone();
    bad.ct[40] ^= 0x10;
    tampered.push(("ct", bad));
    let mut bad = c.clone();
    bad.key_ref = KeyRef::Prekey { spk_id, opk_id: None };
    tampered.push(("aad: OPK dropped from the key reference", bad));
    for (what, bad) in &tampered {
        assert_eq!(recv(&mut b, bad), Err(TwoPartyError::DecryptionFailed), "{what}");
    }
    // Right ciphertext, wrong context: another group, another peer.
    let mut wrong_gid = TwoPartySession::new(GroupId([8; 32]), b.mid, a.mid, a_ik);
    let mut wrong_peer = TwoPartySession::new(gid, b.mid, MemberId([9; 32]), a_ik);
    for (what, s) in [("wrong gid", &mut wrong_gid), ("wrong peer", &mut wrong_peer)] {
        assert_eq!(s.receive(b.identity.key_store_mut(), &c), Err(TwoPartyError::DecryptionFailed), "{what}");
    }
    // Another identity holds keys with the same ids: the wrong SPK and OPK secrets.
    let (_, mut c_dev, _) = two_devices(&mut rng(14), 1);
    let mut as_c = TwoPartySession::new(gid, b.mid, a.mid, a_ik);
    assert_eq!(as_c.receive(c_dev.identity.key_store_mut(), &c), Err(TwoPartyError::DecryptionFailed));

    assert!(b.identity.key_store().has_opk(opk), "a failed open leaves the OPK in place");
    assert_eq!(b.identity.key_store().one_time_prekey_count(), opks_before);
    assert_eq!(format!("{:?}", b.session), session_before);
    // Without the OPK secret, the message cannot be opened at all.
    let mut without_opk = b.identity.key_store().clone();
    without_opk.delete_opk(opk);
    let mut s = b.session.clone();
    assert_eq!(s.receive(&mut without_opk, &c), Err(TwoPartyError::Prekey(PrekeyError::UnknownOneTimePrekey(opk))));

    assert_eq!(recv(&mut b, &c).unwrap(), SEED);
    assert!(!b.identity.key_store().has_opk(opk));
}

type Queue = VecDeque<(Vec<u8>, TwoSmCiphertext)>;

#[derive(Clone, Debug)]
enum Step {
    SendA,
    SendB,
    DeliverToA,
    DeliverToB,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Any interleaving of sends and in-order deliveries in both directions decrypts every
    /// message, in order.
    #[test]
    fn random_interleavings_deliver_everything(
        steps in proptest::collection::vec(prop_oneof![Just(Step::SendA), Just(Step::SendB), Just(Step::DeliverToA), Just(Step::DeliverToB)], 1..40),
        seed: u64,
    ) {
        let mut r = rng(seed);
        let (mut a, mut b, mut dir) = two_devices(&mut r, 2);
        let (mut to_a, mut to_b): (Queue, Queue) = Default::default();
        let mut n = 0u32;
        let mut all = steps.clone();
        all.extend(std::iter::repeat_n(Step::DeliverToA, 40));
        all.extend(std::iter::repeat_n(Step::DeliverToB, 40));
        for s in all {
            n += 1;
            let msg = n.to_be_bytes().to_vec();
            match s {
                Step::SendA => { let c = send(&mut a, &mut r, &mut dir, &msg); to_b.push_back((msg, c)); }
                Step::SendB => { let c = send(&mut b, &mut r, &mut dir, &msg); to_a.push_back((msg, c)); }
                Step::DeliverToA => if let Some((m, c)) = to_a.pop_front() { prop_assert_eq!(recv(&mut a, &c).unwrap(), m); },
                Step::DeliverToB => if let Some((m, c)) = to_b.pop_front() { prop_assert_eq!(recv(&mut b, &c).unwrap(), m); },
            }
        }
    }
}

/// The two small-order X25519 points most often used in attacks: zero, and a point of
/// order 8.
const SMALL_ORDER_POINTS: [[u8; 32]; 2] = [
    [0; 32],
    [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a, 0xda, 0x09,
        0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00,
    ],
];

/// A bundle of `owner` whose signed or one-time prekey is replaced by `point` and signed
/// again with the owner's identity key: authentic, but useless for key agreement.
fn bundle_with(owner: &mut Device, r: &mut ChaCha20Rng, spk: Option<[u8; 32]>, opk: Option<[u8; 32]>) -> PrekeyBundle {
    let signer = owner.identity.signing_key().clone();
    let mut s = owner.identity.new_signed_prekey(r, NOW, NOW + PREKEY_DEFAULT_VALIDITY);
    let mut o = owner.identity.new_one_time_prekeys(r, 1, NOW + PREKEY_DEFAULT_VALIDITY).unwrap().remove(0);
    if let Some(p) = spk {
        s.value.spk_pub = crypto::X25519Public(p);
        s.signature = signer.sign(labels::SIG_SIGNED_PREKEY, &[&s.value.to_bytes()]);
    }
    if let Some(p) = opk {
        o.value.opk_pub = crypto::X25519Public(p);
        o.signature = signer.sign(labels::SIG_ONE_TIME_PREKEY, &[&o.value.to_bytes()]);
    }
    PrekeyBundle { signed_prekey: s, one_time_prekey: Some(o) }
}

#[test]
fn small_order_prekeys_are_refused_where_they_enter() {
    let mut r = rng(11);
    let (mut a, mut b, _dir) = two_devices(&mut r, 0);
    let ikb = b.identity.public_key();
    for point in SMALL_ORDER_POINTS {
        assert!(!crypto::X25519Public(point).is_contributory());
        let bad_spk = bundle_with(&mut b, &mut r, Some(point), None);
        assert_eq!(bad_spk.verify(&ikb, NOW).unwrap_err(), PrekeyError::SmallOrderPrekey("signed"));
        let bad_opk = bundle_with(&mut b, &mut r, None, Some(point));
        assert_eq!(bad_opk.verify(&ikb, NOW).unwrap_err(), PrekeyError::SmallOrderPrekey("one-time"));
        // An add carrying such a signed prekey is refused by every member alike (V2).
        let carried = dcgka::prekeys::CarriedPrekey::of(&bad_spk.signed_prekey).unwrap();
        assert_eq!(carried.verify(&ikb).unwrap_err(), PrekeyError::SmallOrderPrekey("signed"));
        // A send to such a bundle fails before anything changes; the genuine bundle then works.
        let mut dir = SingleBundle(Some(bad_opk));
        let err = a.session.send(&mut r, &mut dir, NOW, b"x").unwrap_err();
        assert_eq!(err, TwoPartyError::Prekey(PrekeyError::SmallOrderPrekey("one-time")));
        assert_eq!(a.session.held_secret_keys(), 0, "no keys generated by a refused send");
    }
    let good = bundle_with(&mut b, &mut r, None, None);
    assert!(crypto::X25519Public(good.signed_prekey.value.spk_pub.0).is_contributory());
    let c = a.session.send(&mut r, &mut SingleBundle(Some(good)), NOW, b"hello").unwrap();
    assert_eq!(recv(&mut b, &c).unwrap(), b"hello");
}

/// A provider that hands out one bundle once.
struct SingleBundle(Option<PrekeyBundle>);

impl PrekeyProvider for SingleBundle {
    fn bundle(&mut self, _: &dcgka::crypto::IdentityKey) -> Option<PrekeyBundle> {
        self.0.take()
    }
}
