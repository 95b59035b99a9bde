//! Identity snapshots (`Identity::snapshot` / `Identity::restore`): a restored identity
//! has the same keys and snapshot, and behaves identically (it opens a first-contact 2SM
//! message and joins a group, each consuming a one-time prekey, and numbers new prekeys
//! where the original would). Decoding is total: every truncation and every bit flip of a
//! real snapshot gives an error or a canonical snapshot, never a panic.

use dcgka::consts::PREKEY_DEFAULT_VALIDITY;
use dcgka::group::{Context, Group, GroupConfig};
use dcgka::prekeys::{Identity, InMemoryPrekeyDirectory, PrekeyError, SignedPrekeyId};
use dcgka::snapshot::{IDENTITY_SNAPSHOT_MAGIC, IDENTITY_SNAPSHOT_VERSION, SnapshotError};
use dcgka::two_party::{KeyRef, TwoPartyError};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;

use crate::{NOW, rng, two_devices};

/// `restore(snapshot(id))` has the same keys, and its snapshot is byte for byte the same.
fn round_trip(id: &Identity) -> Identity {
    let bytes = id.snapshot();
    assert_eq!(bytes[..2], [IDENTITY_SNAPSHOT_MAGIC, IDENTITY_SNAPSHOT_VERSION]);
    let r = Identity::restore(&bytes).unwrap_or_else(|e| panic!("restore failed: {e}"));
    assert_eq!(r.public_key(), id.public_key());
    assert_eq!(r.signing_key().to_bytes(), id.signing_key().to_bytes());
    assert_eq!(r.key_store().one_time_prekey_count(), id.key_store().one_time_prekey_count());
    assert_eq!(&r.snapshot()[..], &bytes[..], "a restored identity's snapshot is the original snapshot");
    r
}

/// An identity with two signed prekeys of different expiry and five one-time prekeys, one
/// of them consumed.
fn rich_identity(r: &mut ChaCha20Rng) -> Identity {
    let mut id = Identity::generate(r);
    let _ = id.new_signed_prekey(r, NOW, NOW + PREKEY_DEFAULT_VALIDITY);
    let _ = id.new_signed_prekey(r, NOW + 10, NOW + 2 * PREKEY_DEFAULT_VALIDITY);
    let opks = id.new_one_time_prekeys(r, 5, NOW + PREKEY_DEFAULT_VALIDITY).unwrap();
    id.key_store_mut().delete_opk(opks[2].value.opk_id);
    id
}

/// If `bytes` restore, they are the canonical snapshot of what they restore to.
fn assert_canonical_if_accepted(bytes: &[u8]) {
    if let Ok(id) = Identity::restore(bytes) {
        assert_eq!(&id.snapshot()[..], bytes, "an accepted identity snapshot is canonical");
    }
}

#[test]
fn fresh_and_rich_identities_round_trip() {
    let mut r = rng(31);
    let fresh = Identity::generate(&mut r);
    let restored = round_trip(&fresh);
    assert_eq!(restored.key_store().one_time_prekey_count(), 0);
    let rich = rich_identity(&mut r);
    let restored = round_trip(&rich);
    assert_eq!(restored.key_store().one_time_prekey_count(), 4);
    for i in 1..=2 {
        let (a, b) =
            (rich.key_store().spk(SignedPrekeyId(i)).unwrap(), restored.key_store().spk(SignedPrekeyId(i)).unwrap());
        assert_eq!(a.to_bytes(), b.to_bytes());
    }
    assert_ne!(&fresh.snapshot()[..], &rich.snapshot()[..]);
}

#[test]
fn signed_prekey_expiry_survives_a_restore() {
    let mut r = rng(32);
    let original = rich_identity(&mut r);
    let mut restored = round_trip(&original);
    // The first signed prekey is purged after its not_after plus the grace period, the
    // second is kept: the restored store knows both expiries.
    restored.key_store_mut().purge_expired(NOW + PREKEY_DEFAULT_VALIDITY + dcgka::consts::PREKEY_GRACE + 1);
    assert!(restored.key_store().spk(SignedPrekeyId(1)).is_err());
    assert!(restored.key_store().spk(SignedPrekeyId(2)).is_ok());
    round_trip(&restored);
}

#[test]
fn a_restored_identity_numbers_and_signs_new_prekeys_like_the_original() {
    let mut r = rng(33);
    let mut original = rich_identity(&mut r);
    let mut restored = round_trip(&original);
    let (mut r1, mut r2) = (rng(34), rng(34));
    let a = original.new_signed_prekey(&mut r1, NOW, NOW + 1000);
    let b = restored.new_signed_prekey(&mut r2, NOW, NOW + 1000);
    assert_eq!(a, b);
    assert_eq!(a.value.spk_id, SignedPrekeyId(3));
    let a = original.new_one_time_prekeys(&mut r1, 2, NOW + 1000).unwrap();
    let b = restored.new_one_time_prekeys(&mut r2, 2, NOW + 1000).unwrap();
    assert_eq!(a, b);
    assert_eq!(&original.snapshot()[..], &restored.snapshot()[..]);
}

#[test]
fn a_restored_identity_opens_a_first_contact_message_once() {
    let mut r = rng(35);
    let (mut a, b, mut dir) = two_devices(&mut r, 3);
    let before = b.identity.snapshot();
    let c = a.session.send(&mut r, &mut dir, NOW, b"first contact").unwrap();
    let KeyRef::Prekey { opk_id: Some(opk), .. } = c.key_ref else {
        panic!("expected a one-time prekey: {:?}", c.key_ref)
    };

    // The original and the restored identity, each with a copy of B's fresh session.
    let mut original = b.identity.clone();
    let mut restored = Identity::restore(&before).unwrap();
    let (mut s1, mut s2) = (b.session.clone(), b.session.clone());
    assert_eq!(&s1.receive(original.key_store_mut(), &c).unwrap()[..], b"first contact");
    assert_eq!(&s2.receive(restored.key_store_mut(), &c).unwrap()[..], b"first contact");
    assert!(!restored.key_store().has_opk(opk), "the one-time prekey is consumed");
    assert_eq!(restored.key_store().one_time_prekey_count(), 2);
    let after = restored.snapshot();
    assert_eq!(&after[..], &original.snapshot()[..]);
    assert_ne!(&after[..], &before[..]);

    // Restored from after the consumption, it cannot open the message again.
    let mut again = Identity::restore(&after).unwrap();
    let mut s3 = b.session.clone();
    assert_eq!(
        s3.receive(again.key_store_mut(), &c).map(|p| p.to_vec()),
        Err(TwoPartyError::Prekey(PrekeyError::UnknownOneTimePrekey(opk)))
    );
}

#[test]
fn a_restored_identity_joins_a_group_and_consumes_a_one_time_prekey() {
    let mut r = rng(36);
    let mut dir = InMemoryPrekeyDirectory::new();
    let mut alice = Identity::generate(&mut r);
    let mut bob = Identity::generate(&mut r);
    dir.publish_identity(&mut r, &mut alice, NOW, 2).unwrap();
    dir.publish_identity(&mut r, &mut bob, NOW, 2).unwrap();
    let mut bob = Identity::restore(&bob.snapshot()).unwrap();

    let config = GroupConfig::default();
    let mut ctx = Context { rng: &mut r, now: NOW, prekeys: &mut dir, identity: &mut alice };
    let (mut at_alice, out) = Group::create(&mut ctx, &[bob.public_key()], config).unwrap();
    let mut ctx = Context { rng: &mut r, now: NOW, prekeys: &mut dir, identity: &mut bob };
    let (at_bob, bob_out) = Group::from_create(&mut ctx, &out.broadcast[0], config).unwrap();
    assert_eq!(bob.key_store().one_time_prekey_count(), 1, "joining consumed a one-time prekey");
    let mut ctx = Context { rng: &mut r, now: NOW, prekeys: &mut dir, identity: &mut alice };
    let got = at_alice.receive(&mut ctx, &bob_out.broadcast[0]).unwrap();
    assert_eq!(got.received, Some(dcgka::group::Received::Processed));
    assert_eq!(at_alice.members(), at_bob.members());
    round_trip(&bob);
}

#[test]
fn every_truncation_and_bit_flip_is_an_error_or_canonical() {
    let mut r = rng(37);
    let bytes = rich_identity(&mut r).snapshot();
    for len in 0..bytes.len() {
        assert!(Identity::restore(&bytes[..len]).is_err(), "truncation to {len} bytes accepted");
    }
    let mut accepted = 0;
    for bit in 0..bytes.len() * 8 {
        let mut b = bytes.to_vec();
        b[bit / 8] ^= 1 << (bit % 8);
        if Identity::restore(&b).is_ok() {
            accepted += 1;
        }
        assert_canonical_if_accepted(&b);
    }
    // Flips inside keys are undetectable without authentication; flips in the header,
    // counters, ids and counts are not.
    assert!(accepted > 0 && accepted < bytes.len() * 8, "{accepted} flips accepted");
}

#[test]
fn a_group_snapshot_is_not_an_identity_and_the_header_is_checked() {
    let mut r = rng(38);
    let (mut a, b, mut dir) = two_devices(&mut r, 1);
    let b_ik = b.identity.public_key();
    let mut ctx = Context { rng: &mut r, now: NOW, prekeys: &mut dir, identity: &mut a.identity };
    let (g, _) = Group::create(&mut ctx, &[b_ik], GroupConfig::default()).unwrap();
    let group_bytes = g.snapshot();
    assert_eq!(
        Identity::restore(&group_bytes).err(),
        Some(SnapshotError::NotASnapshot { found: group_bytes[0], expected: IDENTITY_SNAPSHOT_MAGIC })
    );
    let identity_bytes = a.identity.snapshot();
    assert!(matches!(
        Group::restore(&identity_bytes),
        Err(SnapshotError::NotASnapshot { found: IDENTITY_SNAPSHOT_MAGIC, .. })
    ));
    let mut b = identity_bytes.to_vec();
    b[1] = 2;
    assert_eq!(
        Identity::restore(&b).err(),
        Some(SnapshotError::UnsupportedVersion { found: 2, supported: IDENTITY_SNAPSHOT_VERSION })
    );
    let mut b = identity_bytes.to_vec();
    b.push(0);
    assert!(matches!(Identity::restore(&b), Err(SnapshotError::Malformed(_))));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_with_an_identity_header_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if bytes.len() >= 2 {
            bytes[0] = IDENTITY_SNAPSHOT_MAGIC;
            bytes[1] = IDENTITY_SNAPSHOT_VERSION;
        }
        assert_canonical_if_accepted(&bytes);
    }

    #[test]
    fn corrupted_identity_snapshots_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut r = rng(39);
        let mut bytes = rich_identity(&mut r).snapshot().to_vec();
        for (i, v) in edits {
            let k = i.index(bytes.len());
            bytes[k] = v;
        }
        assert_canonical_if_accepted(&bytes);
    }
}
