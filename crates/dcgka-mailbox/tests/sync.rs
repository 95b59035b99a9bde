//! The mailbox with real devices: a newcomer that missed everything catches up from a
//! reopened mailbox alone; sync answers skip what the requester holds and page; heads.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use dcgka::ids::{GroupId, SeqNo};
use dcgka::{Group, SenderRef};
use dcgka_device::Outcome;
use dcgka_device::consts::MAX_SYNC_RESPONSE_BYTES;
use dcgka_mailbox::{Deposit, GroupHeads, Mailbox, SyncRequest};
use support::{AFTER_ADD, NOW, Scenario, World, variant};

use dcgka_mailbox::SyncResponse;

#[test]
fn an_offline_newcomer_catches_up_from_a_reopened_mailbox_alone() {
    let mut s = Scenario::build(1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mailbox.sqlite");
    {
        let mut mb = Mailbox::open(&path).unwrap();
        s.fill(&mut mb);
    }
    let mut mb = Mailbox::open(&path).unwrap();
    let usage = mb.usage().unwrap();
    assert_eq!(usage.group(&s.gid).unwrap().envelopes, s.world.tape.len());
    assert_eq!(usage.identity(&s.ik(3)).unwrap().directs, 1, "D's Welcome is held");
    assert_eq!(mb.served().unwrap(), vec![s.gid]);

    // D was offline for its own addition and everything after; only the mailbox answers.
    let responses = s.world.sync_with(3, &mut mb);
    assert_eq!(responses[0].welcomes.len(), 1, "the Welcome comes first");
    assert!(responses[0].envelopes.is_empty(), "D lists no group yet: no envelopes");
    assert!(responses[1..].iter().all(|r| r.welcomes.is_empty()), "the Welcome was deleted once D listed the group");
    assert_eq!(mb.usage().unwrap().directs(), 0);
    assert_eq!(s.world.plaintexts(3), AFTER_ADD.iter().map(|p| p.to_vec()).collect::<Vec<_>>());
    let gid = s.gid;
    assert_eq!(
        s.world.devs[3].group(&gid).unwrap().members(),
        s.world.devs[0].group(&gid).unwrap().members(),
        "D sees the same members as A"
    );
    assert_eq!(s.world.devs[3].group(&gid).unwrap().pending(), 0, "nothing waits in D's buffer");
}

/// What the mailbox answers to device `d` now, in one exchange (asserting it all fits).
fn answer(world: &World, d: usize, mb: &mut Mailbox) -> usize {
    let resp = mb.answer_sync(&world.devs[d].sync_request()).unwrap();
    assert!(!resp.more);
    resp.envelopes.len()
}

#[test]
fn answers_skip_what_heads_and_buffered_cover() {
    let mut s = Scenario::build(2);
    let gid = s.gid;
    let mut mb = Mailbox::open_in_memory().unwrap();
    s.fill(&mut mb);
    // Members that received everything get nothing back (the first envelopes of B and C
    // included: their member IDs follow from A's, learned from the create).
    for d in 0..3 {
        assert_eq!(answer(&s.world, d, &mut mb), 0, "device {d}");
    }
    // C goes offline while A sends three messages and B one.
    s.world.offline.insert(2);
    let start = s.world.tape.len();
    for m in [&b"1"[..], b"2", b"3"] {
        s.world.run(0, |d, env| d.send(env, &gid, m));
    }
    s.world.run(1, |d, env| d.send(env, &gid, b"4"));
    s.world.pump();
    s.world.offline.remove(&2);
    let missed: Vec<Vec<u8>> = s.world.tape[start..].to_vec();
    assert_eq!(missed.len(), 4);
    for e in &missed {
        assert!(matches!(mb.deposit(&gid, e).unwrap(), Deposit::Stored { .. }));
    }
    assert_eq!(answer(&s.world, 2, &mut mb), 4, "C lacks exactly what it missed");
    assert_eq!(answer(&s.world, 0, &mut mb), 0);
    // C receives A's third message out of order: buffered above the gap, and listed as
    // such in its request, so the mailbox skips it.
    s.world.run(2, |d, env| d.receive(env, &missed[2]));
    let req = s.world.devs[2].sync_request();
    assert_eq!(req.groups[0].buffered.len(), 1);
    let resp = mb.answer_sync(&req).unwrap();
    assert_eq!(resp.envelopes, vec![missed[0].clone(), missed[1].clone(), missed[3].clone()], "arrival order");
    let r = s.world.call(2, |d, env| d.apply_sync(env, &resp));
    assert!(r.outcomes.iter().all(|o| matches!(o, Outcome::Accepted(_))), "{:?}", r.outcomes);
    assert_eq!(answer(&s.world, 2, &mut mb), 0);
}

#[test]
fn first_envelopes_are_matched_through_member_ids_learned_from_requests() {
    let s = Scenario::build(3);
    let gid = s.gid;
    // A mailbox that started serving after the create: it cannot derive anyone's ID.
    let mut mb = Mailbox::open_in_memory().unwrap();
    mb.serve(gid).unwrap();
    let create = &s.world.tape[0];
    assert!(Group::peek(create).unwrap().gid == Some(gid));
    for e in &s.world.tape[1..] {
        let _ = mb.deposit(&gid, e).unwrap();
    }
    let firsts = s.world.tape[1..].iter().filter(|e| matches!(support::sender(e), SenderRef::Identity(_))).count();
    assert_eq!(firsts, 2, "B's and C's acks of the create");
    let a = s.world.me(0, &gid);
    let b_req = s.world.devs[1].sync_request();
    // B's request without A's head: A's envelopes are missing, and the first envelopes of
    // B and C cannot be matched yet (A's ID is unknown here).
    let mut without_a = b_req.clone();
    without_a.groups[0].heads.retain(|(m, _)| *m != a);
    let a_envelopes = s.world.tape[1..].iter().filter(|e| support::sender(e) == SenderRef::Tag(a.tag())).count();
    let got = mb.answer_sync(&without_a).unwrap().envelopes.len();
    assert_eq!(got, a_envelopes + firsts);
    assert_eq!(mb.usage().unwrap().group(&gid).unwrap().known_members, 2, "B's and C's IDs (from their heads)");
    // B's real request teaches A's ID; the mapping is kept, so the same partial request
    // now skips the first envelopes.
    assert_eq!(mb.answer_sync(&b_req).unwrap().envelopes.len(), 0);
    assert_eq!(mb.answer_sync(&without_a).unwrap().envelopes.len(), a_envelopes);
}

#[test]
fn answers_page_within_the_response_bounds() {
    let mut w = World::new(2, 4);
    let b_ik = w.devs[1].public_key();
    let mut env = dcgka_device::Env { rng: &mut w.rng, now: NOW, prekeys: &mut w.dir };
    let (gid, r) = w.devs[0].create(&mut env, &[b_ik]).unwrap();
    w.post(0, &r);
    w.pump();
    let big = vec![7u8; 400 * 1024];
    for _ in 0..12 {
        w.run(0, |d, env| d.send(env, &gid, &big));
    }
    w.pump();
    let mut mb = Mailbox::open_in_memory().unwrap();
    mb.serve(gid).unwrap();
    for e in &w.tape {
        let _ = mb.deposit(&gid, e).unwrap();
    }
    let total: usize = w.tape.iter().map(Vec::len).sum();
    assert!(total > MAX_SYNC_RESPONSE_BYTES);
    // A stranger that lists the group with no heads: everything, over two pages.
    let req = SyncRequest {
        identity: dcgka::VerifyingKey([9; 32]),
        groups: vec![GroupHeads { gid, heads: vec![], buffered: vec![] }],
        known: vec![],
    };
    let first = mb.answer_sync(&req).unwrap();
    assert!(first.more);
    assert!(first.envelopes.iter().map(Vec::len).sum::<usize>() <= MAX_SYNC_RESPONSE_BYTES);
    assert!(first.envelopes[..] == w.tape[..first.envelopes.len()], "arrival order");
    // A requester that took the first page (its heads cover it) gets the rest.
    let mids: Vec<_> = (0..2).map(|d| (w.devs[d].public_key(), w.devs[d].group(&gid).unwrap().me())).collect();
    let mut heads = std::collections::BTreeMap::new();
    for e in &first.envelopes {
        let p = Group::peek(e).unwrap();
        let mid = match p.sender {
            SenderRef::Tag(t) => mids.iter().find(|(_, m)| m.tag() == t).unwrap().1,
            SenderRef::Identity(ik) => mids.iter().find(|(k, _)| *k == ik).unwrap().1,
        };
        let h = heads.entry(mid).or_insert(SeqNo(0));
        *h = (*h).max(p.last_seq);
    }
    let second = mb
        .answer_sync(&SyncRequest {
            groups: vec![GroupHeads { gid, heads: heads.into_iter().collect(), buffered: vec![] }],
            ..req.clone()
        })
        .unwrap();
    assert!(!second.more);
    assert!(second.envelopes[..] == w.tape[first.envelopes.len()..]);
}

#[test]
fn heads_report_contiguous_runs_and_first_envelopes() {
    let s = Scenario::build(5);
    let gid = s.gid;
    let mut mb = Mailbox::open_in_memory().unwrap();
    s.fill(&mut mb);
    let heads = mb.heads(&gid).unwrap();
    let group = s.world.devs[0].group(&gid).unwrap();
    // Every member that sent has a run from 2 (1 is its first envelope) to its last seq.
    let mut expected: Vec<_> = (0..3)
        .map(|d| {
            let me = s.world.me(d, &gid);
            (me.tag(), SeqNo(2), s.world.devs[d].group(&gid).unwrap().seq())
        })
        .collect();
    expected.sort();
    let got: Vec<_> = heads.senders.iter().map(|h| (h.tag, h.lowest, h.head)).collect();
    assert_eq!(got, expected);
    assert!(group.members().len() == 4, "D is a member but never sent: no run");
    let mut firsts: Vec<[u8; 16]> = s
        .world
        .tape
        .iter()
        .map(|e| Group::peek(e).unwrap())
        .filter(|p| matches!(p.sender, SenderRef::Identity(_)))
        .map(|p| p.hash)
        .collect();
    firsts.sort();
    assert_eq!(firsts.len(), 3, "the create and the first acks of B and C");
    assert_eq!(heads.first_envelopes, firsts);

    // Without A's second envelope, A's run stops before it; later ones are held above the gap.
    let a_tag = s.world.me(0, &gid).tag();
    let hole = s
        .world
        .tape
        .iter()
        .position(|e| {
            let p = Group::peek(e).unwrap();
            p.sender == SenderRef::Tag(a_tag) && p.seq == SeqNo(3)
        })
        .unwrap();
    let mut gappy = Mailbox::open_in_memory().unwrap();
    gappy.serve(gid).unwrap();
    for (i, e) in s.world.tape.iter().enumerate() {
        if i != hole {
            let _ = gappy.deposit(&gid, e).unwrap();
        }
    }
    let h = gappy.heads(&gid).unwrap();
    let a = h.senders.iter().find(|h| h.tag == a_tag).unwrap();
    assert_eq!((a.lowest, a.head), (SeqNo(2), SeqNo(2)));
    assert!(s.world.devs[0].group(&gid).unwrap().seq() > SeqNo(3), "A sent more above the gap");
    // The same envelope under another signature is other bytes: held too, and the
    // heads do not change; the very same bytes are a duplicate.
    assert_eq!(gappy.deposit(&gid, &s.world.tape[0]).unwrap(), Deposit::Duplicate);
    let _ = gappy.deposit(&gid, &variant(&s.world.tape[1], 99)).unwrap();
    assert_eq!(gappy.heads(&gid).unwrap(), h);
    let _ = GroupId([0; 32]);
}

#[test]
fn a_welcome_is_offered_until_its_target_lists_the_group() {
    let mut s = Scenario::build(6);
    let mut mb = Mailbox::open_in_memory().unwrap();
    s.fill(&mut mb);
    let d_ik = s.ik(3);
    let before = s.world.devs[3].sync_request();
    assert!(before.groups.is_empty());
    for _ in 0..2 {
        let resp = mb.answer_sync(&before).unwrap();
        assert_eq!((resp.welcomes.len(), resp.envelopes.len()), (1, 0));
    }
    assert_eq!(mb.usage().unwrap().identity(&d_ik).unwrap().directs, 1, "offered, still held");
    // Nobody else gets it.
    assert!(mb.answer_sync(&s.world.devs[1].sync_request()).unwrap().welcomes.is_empty());
    let resp = mb.answer_sync(&before).unwrap();
    let r = s.world.call(3, |d, env| d.apply_sync(env, &resp));
    assert_eq!(r.joined, vec![s.gid]);
    let after = s.world.devs[3].sync_request();
    assert_eq!(after.groups.len(), 1);
    let resp = mb.answer_sync(&after).unwrap();
    assert!(resp.welcomes.is_empty());
    assert!(!resp.envelopes.is_empty());
    assert_eq!(mb.usage().unwrap().directs(), 0, "deleted once D listed the group");
    assert!(mb.usage().unwrap().identity(&d_ik).is_none());
}

#[test]
fn a_guest_claiming_the_target_identity_cannot_have_its_welcome_deleted() {
    let mut s = Scenario::build(6);
    let mut mb = Mailbox::open_in_memory().unwrap();
    s.fill(&mut mb);
    let d_ik = s.ik(3);
    let before = s.world.devs[3].sync_request();
    let resp = mb.answer_sync(&before).unwrap();
    let r = s.world.call(3, |d, env| d.apply_sync(env, &resp));
    assert_eq!(r.joined, vec![s.gid]);
    // Anyone can send D's request (it is not secret); from a peer not known to speak for
    // D it is answered the same, but the Welcome stays.
    let after = s.world.devs[3].sync_request();
    let guest = mb.answer_sync_guest(&after).unwrap();
    assert!(!guest.envelopes.is_empty());
    assert_eq!(guest.welcomes.len(), 1, "still offered: only D can open it");
    assert_eq!(mb.usage().unwrap().identity(&d_ik).unwrap().directs, 1, "kept for a guest's claim");
    // The same request from D itself deletes it.
    let own = mb.answer_sync(&after).unwrap();
    assert_eq!((own.envelopes, own.welcomes.len()), (guest.envelopes, 0));
    assert_eq!(mb.usage().unwrap().directs(), 0);
}

#[test]
fn a_create_is_offered_to_an_initial_member_that_never_held_the_group() {
    let mut w = World::new(3, 7);
    w.offline.insert(2);
    let others = [w.devs[1].public_key(), w.devs[2].public_key()];
    let mut env = dcgka_device::Env { rng: &mut w.rng, now: NOW, prekeys: &mut w.dir };
    let (gid, r) = w.devs[0].create(&mut env, &others).unwrap();
    w.post(0, &r);
    w.pump();
    w.run(0, |d, env| d.send(env, &gid, b"while C was away"));
    w.pump();
    let mut mb = Mailbox::open_in_memory().unwrap();
    mb.serve(gid).unwrap();
    for e in &w.tape {
        let _ = mb.deposit(&gid, e).unwrap();
    }
    // Listing the group as known (held before): no create.
    let mut stale = w.devs[2].sync_request();
    stale.known = vec![gid];
    assert_eq!(mb.answer_sync(&stale).unwrap(), SyncResponse::default());
    // B is invited too but holds the group: nothing.
    assert!(mb.answer_sync(&w.devs[1].sync_request()).unwrap().is_empty());
    w.offline.clear();
    let responses = w.sync_with(2, &mut mb);
    assert_eq!(responses[0].envelopes.len(), 1, "the create alone first");
    assert_eq!(w.plaintexts(2), vec![b"while C was away".to_vec()]);
}

#[test]
fn a_mailbox_that_serves_no_group_still_relays_welcomes() {
    let mut s = Scenario::build(8);
    let mut mb = Mailbox::open_in_memory().unwrap();
    for (ik, gid, bytes) in &s.world.directs {
        mb.hold_direct(ik, gid, bytes).unwrap();
    }
    let resp = mb.answer_sync(&s.world.devs[3].sync_request()).unwrap();
    assert_eq!((resp.welcomes.len(), resp.envelopes.len()), (1, 0));
    let r = s.world.call(3, |d, env| d.apply_sync(env, &resp));
    assert_eq!(r.joined, vec![s.gid]);
    let resp = mb.answer_sync(&s.world.devs[3].sync_request()).unwrap();
    assert!(resp.is_empty(), "nothing served, and the Welcome is gone");
    assert_eq!(mb.usage().unwrap().directs(), 0);
}
