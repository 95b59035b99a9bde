//! Every limit flooded; every error leaves the mailbox as it was; garbage refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use dcgka::consts::PREKEY_DEFAULT_VALIDITY;
use dcgka::ids::{GroupId, MemberTag, SeqNo};
use dcgka::prekeys::Identity;
use dcgka_mailbox::consts::{
    MAX_DIRECTS_PER_IDENTITY, MAX_ENVELOPE_SIZE, MAX_GROUP_BYTES, MAX_GROUP_ENVELOPES, MAX_IDENTITIES,
    MAX_MAILBOX_GROUPS, MAX_ONE_TIME_PREKEYS_PER_IDENTITY,
};
use dcgka_mailbox::{Deposit, GroupHeads, Limits, Mailbox, MailboxError, SyncRequest};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng as _, SeedableRng};
use support::{NOW, Scenario, crafted, variant};

const TAG: MemberTag = MemberTag([5; 16]);

#[test]
fn groups_served_are_bounded() {
    let mut mb = Mailbox::open_in_memory().unwrap();
    for i in 0..MAX_MAILBOX_GROUPS {
        let mut g = [0u8; 32];
        g[..8].copy_from_slice(&(i as u64).to_be_bytes());
        assert!(mb.serve(GroupId(g)).unwrap());
    }
    assert!(!mb.serve(GroupId([0; 32])).unwrap(), "serving again is no new group");
    let e = mb.serve(GroupId([0xFF; 32])).unwrap_err();
    assert!(matches!(e, MailboxError::TooManyGroups { max: MAX_MAILBOX_GROUPS }));
    assert_eq!(mb.served().unwrap().len(), MAX_MAILBOX_GROUPS);
    assert!(mb.unserve(&GroupId([0; 32])).unwrap());
    assert!(mb.serve(GroupId([0xFF; 32])).unwrap(), "room again");
}

#[test]
fn a_full_group_evicts_its_oldest_envelopes_by_count() {
    let gid = GroupId([1; 32]);
    let other = GroupId([2; 32]);
    let mut mb = Mailbox::open_in_memory().unwrap();
    mb.serve(gid).unwrap();
    mb.serve(other).unwrap();
    let _ = mb.deposit(&other, &crafted(TAG, 2, 0, 0)).unwrap();
    for i in 0..MAX_GROUP_ENVELOPES as u64 {
        assert_eq!(mb.deposit(&gid, &crafted(TAG, i + 2, 0, i)).unwrap(), Deposit::Stored { evicted: 0 });
    }
    let n = MAX_GROUP_ENVELOPES as u64;
    assert_eq!(mb.deposit(&gid, &crafted(TAG, n + 2, 0, n)).unwrap(), Deposit::Stored { evicted: 1 });
    let usage = mb.usage().unwrap();
    let g = usage.group(&gid).unwrap();
    assert_eq!((g.envelopes, g.evicted), (MAX_GROUP_ENVELOPES, 1));
    assert_eq!(usage.group(&other).unwrap().envelopes, 1, "other groups keep theirs");
    // The oldest (seq 2) is gone: the run starts at 3 and reaches the newest.
    let h = mb.heads(&gid).unwrap().senders[0];
    assert_eq!((h.lowest, h.head), (SeqNo(3), SeqNo(n + 2)));
}

#[test]
fn a_full_group_evicts_its_oldest_envelopes_by_bytes() {
    let gid = GroupId([1; 32]);
    let mut mb = Mailbox::open_in_memory().unwrap();
    mb.serve(gid).unwrap();
    let mib = 1024 * 1024;
    let per = MAX_GROUP_BYTES / mib; // envelopes of just over 1 MiB each
    let mut evicted = 0;
    for i in 0..=per as u64 {
        match mb.deposit(&gid, &crafted(TAG, i + 2, mib, i)).unwrap() {
            Deposit::Stored { evicted: e } => evicted += e,
            d => panic!("{d:?}"),
        }
    }
    let g = mb.usage().unwrap().group(&gid).cloned().unwrap();
    assert!(g.bytes <= MAX_GROUP_BYTES);
    assert!(evicted >= 2, "{per} + 1 envelopes of over 1 MiB exceed 64 MiB by two");
    assert_eq!(g.evicted, evicted as u64);
    assert_eq!(g.envelopes, per + 1 - evicted);
    assert_eq!(mb.heads(&gid).unwrap().senders[0].lowest, SeqNo(2 + evicted as u64), "the oldest went");
}

#[test]
fn too_large_and_malformed_envelopes_change_nothing() {
    let s = Scenario::build(11);
    let gid = s.gid;
    let mut mb = Mailbox::open_in_memory().unwrap();
    s.fill(&mut mb);
    let before = mb.usage().unwrap();
    let e = mb.deposit(&gid, &vec![0x11; MAX_ENVELOPE_SIZE + 1]).unwrap_err();
    assert!(matches!(e, MailboxError::TooLarge { size, max: MAX_ENVELOPE_SIZE } if size == MAX_ENVELOPE_SIZE + 1));
    for bad in [&b""[..], b"garbage", &s.world.tape[3][..20], &[0x12; 200]] {
        assert!(matches!(mb.deposit(&gid, bad), Err(MailboxError::Malformed(_))));
    }
    let e = mb.deposit(&GroupId([9; 32]), &s.world.tape[1]).unwrap_err();
    assert!(matches!(e, MailboxError::NotServed(_)));
    // A create names its group: another group's create is refused.
    let other = GroupId([9; 32]);
    mb.serve(other).unwrap();
    let e = mb.deposit(&other, &s.world.tape[0]).unwrap_err();
    assert!(matches!(e, MailboxError::WrongGroup { expected, found } if expected == other && found == gid));
    assert!(mb.unserve(&other).unwrap());
    // A sequence number SQLite cannot hold.
    let e = mb.deposit(&gid, &crafted(TAG, u64::MAX, 0, 0)).unwrap_err();
    assert!(matches!(e, MailboxError::OutOfRange { value: u64::MAX, .. }));
    // Random bytes and bit flips of real envelopes: refused or stored, never a panic.
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    for _ in 0..500 {
        let mut bytes = vec![0u8; (rng.next_u32() % 300) as usize];
        rng.fill_bytes(&mut bytes);
        assert!(mb.deposit(&gid, &bytes).is_err());
    }
    assert_eq!(mb.usage().unwrap(), before, "nothing changed");
    for _ in 0..500 {
        let mut bytes = s.world.tape[(rng.next_u32() as usize) % s.world.tape.len()].clone();
        let i = (rng.next_u32() as usize) % bytes.len();
        bytes[i] ^= 1 << (rng.next_u32() % 8);
        let _ = mb.deposit(&gid, &bytes);
    }
    // Sync requests out of canonical order or bounds are refused without change.
    let before = mb.usage().unwrap();
    let unsorted = SyncRequest {
        identity: s.ik(3),
        groups: vec![
            GroupHeads { gid: GroupId([0xFF; 32]), heads: vec![], buffered: vec![] },
            GroupHeads { gid, heads: vec![], buffered: vec![] },
        ],
        known: vec![],
    };
    assert!(matches!(mb.answer_sync(&unsorted), Err(MailboxError::Sync(_))));
    assert_eq!(mb.usage().unwrap(), before);
}

/// `n` distinct Welcomes for one identity (the same Welcome under other signatures:
/// other bytes, still decoding).
fn welcomes(s: &Scenario, n: usize) -> Vec<Vec<u8>> {
    let (_, _, w) = s.world.directs.iter().find(|(ik, _, _)| *ik == s.ik(3)).unwrap();
    (0..n as u64).map(|i| variant(w, i + 1)).collect()
}

#[test]
fn held_directs_are_bounded_per_identity() {
    let s = Scenario::build(12);
    let (d, gid) = (s.ik(3), s.gid);
    let mut mb = Mailbox::open_in_memory().unwrap();
    let ws = welcomes(&s, MAX_DIRECTS_PER_IDENTITY + 1);
    for w in &ws[..MAX_DIRECTS_PER_IDENTITY] {
        mb.hold_direct(&d, &gid, w).unwrap();
    }
    mb.hold_direct(&d, &gid, &ws[0]).unwrap(); // the same bytes again: no change
    let before = mb.usage().unwrap();
    assert_eq!(before.identity(&d).unwrap().directs, MAX_DIRECTS_PER_IDENTITY);
    let e = mb.hold_direct(&d, &gid, &ws[MAX_DIRECTS_PER_IDENTITY]).unwrap_err();
    assert!(matches!(
        e,
        MailboxError::TooManyDirects { held: MAX_DIRECTS_PER_IDENTITY, max: MAX_DIRECTS_PER_IDENTITY }
    ));
    // Garbage, a Welcome named for another group, and oversized bytes are refused.
    assert!(matches!(mb.hold_direct(&s.ik(2), &gid, b"garbage"), Err(MailboxError::Malformed(_))));
    assert!(matches!(mb.hold_direct(&s.ik(2), &GroupId([4; 32]), &ws[0]), Err(MailboxError::WrongGroup { .. })));
    let huge = vec![0u8; MAX_ENVELOPE_SIZE + 1];
    assert!(matches!(mb.hold_direct(&s.ik(2), &gid, &huge), Err(MailboxError::TooLarge { .. })));
    assert_eq!(mb.usage().unwrap(), before);
}

#[test]
fn held_direct_bytes_are_bounded_per_identity() {
    // 32 MiB of Welcomes needs groups of thousands: the limit is flooded at a smaller
    // setting (three Welcomes' worth), through the same code path.
    let s = Scenario::build(13);
    let (d, gid) = (s.ik(3), s.gid);
    let ws = welcomes(&s, 4);
    let len = ws[0].len();
    let limits = Limits { direct_bytes_per_identity: 3 * len + len / 2, ..Limits::default() };
    let mut mb = Mailbox::open_in_memory_with_limits(limits).unwrap();
    for w in &ws[..3] {
        mb.hold_direct(&d, &gid, w).unwrap();
    }
    let before = mb.usage().unwrap();
    let e = mb.hold_direct(&d, &gid, &ws[3]).unwrap_err();
    assert!(matches!(e, MailboxError::DirectBytesExceeded { held, size, .. } if held == 3 * len && size == len));
    assert_eq!(mb.usage().unwrap(), before);
    assert_eq!(before.identity(&d).unwrap().direct_bytes, 3 * len);
}

#[test]
fn one_time_prekeys_are_bounded_per_identity() {
    let mut rng = ChaCha20Rng::seed_from_u64(14);
    let mut id = Identity::generate(&mut rng);
    let ik = id.public_key();
    let until = NOW + PREKEY_DEFAULT_VALIDITY;
    let spk = id.new_signed_prekey(&mut rng, NOW, until);
    let max = MAX_ONE_TIME_PREKEYS_PER_IDENTITY;
    let mut mb = Mailbox::open_in_memory().unwrap();
    let too_many = id.new_one_time_prekeys(&mut rng, max + 1, until).unwrap();
    let e = mb.stock_prekeys(spk.clone(), too_many, NOW).unwrap_err();
    assert!(matches!(e, MailboxError::TooManyOneTimePrekeys { .. }));
    assert!(mb.usage().unwrap().identities.is_empty());
    let opks = id.new_one_time_prekeys(&mut rng, max, until).unwrap();
    assert_eq!(mb.stock_prekeys(spk.clone(), opks, NOW).unwrap(), max);
    let before = mb.usage().unwrap();
    let one = id.new_one_time_prekeys(&mut rng, 1, until).unwrap();
    let e = mb.stock_prekeys(spk.clone(), one.clone(), NOW).unwrap_err();
    assert!(matches!(e, MailboxError::TooManyOneTimePrekeys { held, adding: 1, .. } if held == max));
    assert_eq!(mb.usage().unwrap(), before);
    // Once one is handed out, there is room for it.
    assert!(mb.bundle(&ik, NOW).unwrap().unwrap().one_time_prekey.is_some());
    assert_eq!(mb.stock_prekeys(spk, one, NOW).unwrap(), 1);
}

#[test]
fn identities_with_material_are_bounded() {
    let mut rng = ChaCha20Rng::seed_from_u64(15);
    let until = NOW + PREKEY_DEFAULT_VALIDITY;
    let mut mb = Mailbox::open_in_memory().unwrap();
    for _ in 0..MAX_IDENTITIES {
        let mut id = Identity::generate(&mut rng);
        let spk = id.new_signed_prekey(&mut rng, NOW, until);
        assert_eq!(mb.stock_prekeys(spk, vec![], NOW).unwrap(), 0);
    }
    let before = mb.usage().unwrap();
    assert_eq!(before.identities.len(), MAX_IDENTITIES);
    let mut id = Identity::generate(&mut rng);
    let spk = id.new_signed_prekey(&mut rng, NOW, until);
    let e = mb.stock_prekeys(spk, vec![], NOW).unwrap_err();
    assert!(matches!(e, MailboxError::TooManyIdentities { max: MAX_IDENTITIES }));
    // Held mail counts too: a Welcome for a new identity is refused.
    let s = Scenario::build(99);
    let e = mb.hold_direct(&s.ik(3), &s.gid, &welcomes(&s, 1)[0]).unwrap_err();
    assert!(matches!(e, MailboxError::TooManyIdentities { .. }));
    assert_eq!(mb.usage().unwrap(), before);
}

#[test]
fn learned_member_ids_are_bounded_per_group() {
    let s = Scenario::build(16);
    let gid = s.gid;
    // No member ID kept: the first envelopes of B and C cannot be matched any more, so
    // an up-to-date member gets them again (harmless duplicates), and nothing else.
    let mut mb =
        Mailbox::open_in_memory_with_limits(Limits { known_members_per_group: 0, ..Limits::default() }).unwrap();
    s.fill(&mut mb);
    let resp = mb.answer_sync(&s.world.devs[1].sync_request()).unwrap();
    assert_eq!(resp.envelopes.len(), 2);
    assert_eq!(mb.usage().unwrap().group(&gid).unwrap().known_members, 0);
    // At two, requests teach no more than two.
    let mut mb =
        Mailbox::open_in_memory_with_limits(Limits { known_members_per_group: 2, ..Limits::default() }).unwrap();
    s.fill(&mut mb);
    for d in 0..3 {
        assert!(mb.answer_sync(&s.world.devs[d].sync_request()).unwrap().envelopes.is_empty());
    }
    assert_eq!(mb.usage().unwrap().group(&gid).unwrap().known_members, 2);
}
