//! The prekey stock: verified before stocking, each one-time prekey handed out once
//! (also across a reopen), expired ones skipped, the signed prekey alone at the end.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use dcgka::consts::{PREKEY_DEFAULT_VALIDITY, PREKEY_MIN_REMAINING};
use dcgka::prekeys::{Identity, PrekeyError};
use dcgka_mailbox::{Mailbox, MailboxError};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const NOW: u64 = 1_800_000_000;

fn identity(rng: &mut ChaCha20Rng) -> Identity {
    Identity::generate(rng)
}

#[test]
fn each_one_time_prekey_is_handed_out_once_even_across_a_reopen() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut id = identity(&mut rng);
    let ik = id.public_key();
    let spk = id.new_signed_prekey(&mut rng, NOW, NOW + PREKEY_DEFAULT_VALIDITY);
    let opks = id.new_one_time_prekeys(&mut rng, 5, NOW + PREKEY_DEFAULT_VALIDITY).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mb.sqlite");
    let mut seen = BTreeSet::new();
    {
        let mut mb = Mailbox::open(&path).unwrap();
        assert_eq!(mb.bundle(&ik, NOW).unwrap(), None, "nothing stocked");
        assert_eq!(mb.stock_prekeys(spk.clone(), opks.clone(), NOW).unwrap(), 5);
        assert_eq!(mb.usage().unwrap().identity(&ik).unwrap().one_time_prekeys, 5);
        for _ in 0..2 {
            let b = mb.bundle(&ik, NOW).unwrap().unwrap().verify(&ik, NOW).unwrap();
            assert!(seen.insert(b.opk.unwrap().0));
        }
    }
    let mut mb = Mailbox::open(&path).unwrap();
    assert_eq!(mb.usage().unwrap().identity(&ik).unwrap().one_time_prekeys, 3);
    for _ in 0..3 {
        let b = mb.bundle(&ik, NOW).unwrap().unwrap().verify(&ik, NOW).unwrap();
        assert!(seen.insert(b.opk.unwrap().0), "never handed out twice");
    }
    assert_eq!(seen.len(), 5);
    // The stock is empty: the signed prekey alone.
    let b = mb.bundle(&ik, NOW).unwrap().unwrap();
    assert_eq!(b.one_time_prekey, None);
    assert_eq!(b.signed_prekey, spk);
    assert!(b.verify(&ik, NOW).is_ok());
    // Replaying the first upload stocks nothing again.
    assert_eq!(mb.stock_prekeys(spk.clone(), opks, NOW).unwrap(), 0);
    assert_eq!(mb.bundle(&ik, NOW).unwrap().unwrap().one_time_prekey, None);
    // Fresh keys (higher IDs) are taken; a new signed prekey replaces the old one.
    let spk2 = id.new_signed_prekey(&mut rng, NOW, NOW + PREKEY_DEFAULT_VALIDITY);
    let more = id.new_one_time_prekeys(&mut rng, 2, NOW + PREKEY_DEFAULT_VALIDITY).unwrap();
    assert_eq!(mb.stock_prekeys(spk2.clone(), more, NOW).unwrap(), 2);
    let b = mb.bundle(&ik, NOW).unwrap().unwrap();
    assert_eq!(b.signed_prekey, spk2);
    assert!(b.verify(&ik, NOW).unwrap().opk.is_some());
    // The old signed prekey is stale now.
    assert!(matches!(mb.stock_prekeys(spk, vec![], NOW), Err(MailboxError::StaleSignedPrekey { .. })));
    assert_eq!(mb.bundle(&ik, NOW).unwrap().unwrap().signed_prekey, spk2);
}

#[test]
fn a_bad_signature_or_mixed_identities_stock_nothing() {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let mut id = identity(&mut rng);
    let mut other = identity(&mut rng);
    let ik = id.public_key();
    let until = NOW + PREKEY_DEFAULT_VALIDITY;
    let spk = id.new_signed_prekey(&mut rng, NOW, until);
    let opks = id.new_one_time_prekeys(&mut rng, 3, until).unwrap();
    let mut mb = Mailbox::open_in_memory().unwrap();

    let mut bad_spk = spk.clone();
    bad_spk.signature.0[0] ^= 1;
    let e = mb.stock_prekeys(bad_spk, opks.clone(), NOW).unwrap_err();
    assert!(matches!(e, MailboxError::Prekey { index: None, error: PrekeyError::BadSignedPrekeySignature }), "{e}");

    let mut bad_opk = opks.clone();
    bad_opk[2].signature.0[5] ^= 1;
    let e = mb.stock_prekeys(spk.clone(), bad_opk, NOW).unwrap_err();
    assert!(matches!(e, MailboxError::Prekey { index: Some(2), error: PrekeyError::BadOneTimePrekeySignature }));

    let mut mixed = opks.clone();
    mixed.push(other.new_one_time_prekeys(&mut rng, 1, until).unwrap().remove(0));
    let e = mb.stock_prekeys(spk.clone(), mixed, NOW).unwrap_err();
    assert!(matches!(e, MailboxError::Prekey { index: Some(3), error: PrekeyError::WrongIdentity }));

    // Relabelled: another identity's key claiming to be ours fails its signature.
    let mut relabelled = other.new_one_time_prekeys(&mut rng, 1, until).unwrap();
    relabelled[0].value.ik = ik;
    let e = mb.stock_prekeys(spk.clone(), relabelled, NOW).unwrap_err();
    assert!(matches!(e, MailboxError::Prekey { index: Some(0), error: PrekeyError::BadOneTimePrekeySignature }));

    // An expired signed prekey or one-time prekey is refused too.
    let e = mb.stock_prekeys(spk.clone(), vec![], until - PREKEY_MIN_REMAINING + 1).unwrap_err();
    assert!(matches!(e, MailboxError::Prekey { index: None, error: PrekeyError::Expired { .. } }));
    let short = id.new_one_time_prekeys(&mut rng, 1, NOW - 1).unwrap();
    let e = mb.stock_prekeys(spk.clone(), short, NOW).unwrap_err();
    assert!(matches!(e, MailboxError::Prekey { index: Some(0), error: PrekeyError::OneTimePrekeyExpired { .. } }));

    assert_eq!(mb.usage().unwrap().identities, vec![], "nothing was stored");
    assert_eq!(mb.bundle(&ik, NOW).unwrap(), None);
    assert_eq!(mb.stock_prekeys(spk, opks, NOW).unwrap(), 3);
}

#[test]
fn expired_one_time_prekeys_are_skipped_and_dropped() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let mut id = identity(&mut rng);
    let ik = id.public_key();
    let spk = id.new_signed_prekey(&mut rng, NOW, NOW + PREKEY_DEFAULT_VALIDITY);
    let soon = id.new_one_time_prekeys(&mut rng, 2, NOW + 100).unwrap();
    let later = id.new_one_time_prekeys(&mut rng, 1, NOW + 10_000).unwrap();
    let later_id = later[0].value.opk_id;
    let mut mb = Mailbox::open_in_memory().unwrap();
    assert_eq!(mb.stock_prekeys(spk.clone(), [soon, later].concat(), NOW).unwrap(), 3);
    let b = mb.bundle(&ik, NOW + 101).unwrap().unwrap();
    assert_eq!(b.verify(&ik, NOW + 101).unwrap().opk.map(|o| o.0), Some(later_id), "the expired two are skipped");
    assert_eq!(mb.usage().unwrap().identity(&ik).unwrap().one_time_prekeys, 0, "and dropped");
    // A signed prekey past its usable life goes alone: no one-time prekey is spent.
    let more = id.new_one_time_prekeys(&mut rng, 1, u64::MAX).unwrap();
    assert_eq!(mb.stock_prekeys(spk, more, NOW + 101).unwrap(), 1);
    let late = NOW + PREKEY_DEFAULT_VALIDITY;
    assert_eq!(mb.bundle(&ik, late).unwrap().unwrap().one_time_prekey, None);
    assert_eq!(mb.usage().unwrap().identity(&ik).unwrap().one_time_prekeys, 1);
}
