//! Bounded bookkeeping for acknowledgments (issue 10, item 1): a member keeps what V4 (d)
//! and the ordering layer need of a create, update, remove or add only while it is in
//! flight, i.e. until every current member has acknowledged it (docs/protocol.md §5.6,
//! `dcgka/acks.rs`).
//!
//! Each test asserts outcomes: what is in flight and awaited where, what the ordering layer
//! still retains, which acks are accepted or refused and why, who is a member, and the size
//! of a snapshot.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;

use common::{assert_clean, created, created_with, deliver_all_except, envelope_bytes, group, parse, recv, resign};
use dcgka::codec::Encode;
use dcgka::events::{Event, RejectReason};
use dcgka::group::{Group, GroupConfig, Received};
use dcgka::ids::{MemberId, SeqNo};
use dcgka::wire::{AckRef, ControlBody, Envelope, EnvelopeKind};
use dcgka_sim::lean::Network;
use dcgka_sim::names::{A, B, C, D, E};
use dcgka_sim::{Dev, PacketKind, Sim};

/// Members `ds` as a set of MIDs.
fn mids(sim: &Sim, ds: &[Dev]) -> BTreeSet<MemberId> {
    ds.iter().map(|d| sim.mid(*d).unwrap()).collect()
}

/// Nothing is in flight at any of `ds`, and nothing of an operation is retained there.
fn assert_settled(sim: &Sim, ds: &[Dev]) {
    for d in ds {
        let g = group(sim, *d);
        assert_eq!(g.in_flight(), 0, "device {d}");
        assert_eq!(g.retained_counts().0, 0, "device {d}: retained hashes");
    }
}

/// A second ack by `d` of `(s, q)` (whose envelope hash is `hash`), signed with `d`'s
/// current key at its next sequence number: what a misbehaving `d` could send.
fn second_ack(sim: &Sim, d: Dev, s: MemberId, q: SeqNo, hash: [u8; 16]) -> Vec<u8> {
    let g = group(sim, d);
    let of = AckRef { of_sender: s.tag(), of_seq: q, of_hash: hash };
    let body = ControlBody::Ack { of, forwards: Vec::new() }.to_bytes();
    let seq = SeqNo(g.seq().0 + 1);
    Envelope::seal(EnvelopeKind::Ack, &g.gid(), seq, &g.me(), None, None, None, body, g.signing_secret()).to_bytes()
}

/// The rejection reasons in a call's events.
fn rejections(events: &[Event]) -> Vec<RejectReason> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Rejected { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

/// The envelope `id`'s short hash.
fn hash_of(sim: &Sim, id: usize) -> [u8; 16] {
    Group::peek(&envelope_bytes(sim, id)).unwrap().hash
}

/// The latest envelope of kind `kind` that `d` sent.
fn last_of_kind(sim: &Sim, d: Dev, kind: EnvelopeKind) -> usize {
    (0..sim.transcript.len())
        .rev()
        .find(|id| {
            sim.transcript[*id].from == d && matches!(sim.transcript[*id].kind, PacketKind::Envelope(k, _) if k == kind)
        })
        .unwrap()
}

#[test]
fn an_update_remove_and_add_acknowledged_by_everyone_leave_nothing_behind() {
    let mut sim = created(5, &[B, C, D], 1);
    // The create itself completed everywhere.
    assert_settled(&sim, &[A, B, C, D]);

    let u = sim.update(A).unwrap()[0];
    let (a, q) = (sim.mid(A).unwrap(), group(&sim, A).seq());
    assert_eq!(group(&sim, A).in_flight(), 1);
    assert_eq!(group(&sim, A).awaited_acks(&a, q), Some(mids(&sim, &[B, C, D])));
    assert!(group(&sim, A).retains(&a, q));
    for d in [B, C, D] {
        sim.deliver_id(d, u);
        // Each recipient awaits the two others, never itself nor the sender.
        let others: Vec<Dev> = [B, C, D].into_iter().filter(|o| *o != d).collect();
        assert_eq!(group(&sim, d).awaited_acks(&a, q), Some(mids(&sim, &others)), "device {d}");
    }
    sim.deliver_all();
    assert_settled(&sim, &[A, B, C, D]);
    for d in [A, B, C, D] {
        assert!(!group(&sim, d).retains(&a, q), "device {d}");
    }

    // A remove: its target is not awaited; once the others acknowledged it, nothing is left.
    sim.remove(B, D).unwrap();
    let (b, r) = (sim.mid(B).unwrap(), group(&sim, B).seq());
    assert_eq!(group(&sim, B).awaited_acks(&b, r), Some(mids(&sim, &[A, C])));
    sim.deliver_all();
    assert_settled(&sim, &[A, B, C]);
    assert!(!group(&sim, A).retains(&b, r));

    // An add: the newcomer acknowledges its own add with an ack, and that counts.
    sim.add(C, E).unwrap();
    let (c, t) = (sim.mid(C).unwrap(), group(&sim, C).seq());
    let e = group(&sim, C).members().into_iter().find(|m| !mids(&sim, &[A, B, C]).contains(m)).unwrap();
    let mut awaited = mids(&sim, &[A, B]);
    awaited.insert(e);
    assert_eq!(group(&sim, C).awaited_acks(&c, t), Some(awaited));
    sim.deliver_all();
    assert_settled(&sim, &[A, B, C, E]);
    assert_eq!(sim.member_names(A), ["A", "B", "C", "E"].map(String::from).into());
    assert_clean(&sim);
}

/// The snapshot of a member does not grow with fully acknowledged updates: after a warm-up
/// that fills every sender's window of recent hashes (§7.6, bounded by
/// `MAX_RECENT_HASHES`) and takes every sequence number past one varint byte, the state of
/// a member after one more update and after 200 differs by a few bytes at most. (Before the
/// acknowledgment tracker it grew by the update's hash, key and acks, about 100 bytes per
/// update in a group of eight.) Measured at members that do not update themselves: a
/// sender's 2SM sessions keep a key per seed sent until the recipient answers.
#[test]
fn the_snapshot_does_not_grow_with_fully_acknowledged_updates() {
    let n = 8;
    let mut net = Network::new(n, 7, GroupConfig::default(), ()).unwrap();
    net.create().unwrap();
    for _ in 0..150 {
        for d in 0..n {
            net.perform(d, |g, ctx| g.send(ctx, &dcgka_sim::lean::PAYLOAD)).unwrap();
        }
    }
    net.run_until_quiet().unwrap();
    let size = |net: &Network, d: Dev| net.node(d).unwrap().group().unwrap().state_size();
    let update = |net: &mut Network| {
        net.perform(1, |g, ctx| g.update(ctx)).unwrap();
        net.run_until_quiet().unwrap();
    };
    update(&mut net);
    let after_one: Vec<usize> = [0, 2].iter().map(|d| size(&net, *d)).collect();
    for _ in 1..200 {
        update(&mut net);
    }
    let after_200: Vec<usize> = [0, 2].iter().map(|d| size(&net, *d)).collect();
    for (one, many) in after_one.iter().zip(&after_200) {
        assert!(many.abs_diff(*one) <= 8, "after 1 update: {one} bytes, after 200: {many} bytes");
    }
    for d in 0..n {
        let g = net.node(d).unwrap().group().unwrap();
        assert_eq!(g.in_flight(), 0);
        // Only the key of the updater's first update is kept: its recent messages were
        // verified under it.
        assert!(g.retained_counts().0 == 0 && g.retained_counts().1 <= 1, "{:?}", g.retained_counts());
    }
}

#[test]
fn a_second_ack_is_refused_while_in_flight_and_with_its_own_reason_after_completion() {
    let mut sim = created(4, &[B, C, D], 2);
    let u = sim.update(A).unwrap()[0];
    let (a, q, hash) = (sim.mid(A).unwrap(), group(&sim, A).seq(), hash_of(&sim, u));
    for d in [B, C, D] {
        assert!(sim.deliver_id(d, u));
    }
    // C processes B's ack; D's is still awaited there.
    let b_ack = last_of_kind(&sim, B, EnvelopeKind::Ack);
    assert!(sim.deliver_id(C, b_ack));
    assert_eq!(group(&sim, C).awaited_acks(&a, q), Some(mids(&sim, &[D])));

    // A second ack by B while the update is in flight: refused, as always (V4 (d)).
    let second = second_ack(&sim, B, a, q, hash);
    let out = recv(&mut sim, C, &second).unwrap();
    assert_eq!(rejections(&out.events), [RejectReason::InvalidAck("acknowledged twice")]);

    // A processes every ack: the entry completes and nothing of the update is left.
    while sim.deliver_next(A) {}
    assert_eq!(group(&sim, A).awaited_acks(&a, q), None);
    assert!(!group(&sim, A).retains(&a, q));

    // A second ack by D now, from a current member: refused with its own reason.
    let second = second_ack(&sim, D, a, q, hash);
    let out = recv(&mut sim, A, &second).unwrap();
    assert_eq!(rejections(&out.events), [RejectReason::AcknowledgedByAll]);
}

/// A remove concurrent with an update: D processes A's update and acknowledges it before
/// it learns that B removed it. C has processed the removal (D is no longer awaited) but
/// not yet B's ack, so the update is still in flight there, and D's late ack is accepted
/// as before: it counts, and a second one would be refused.
#[test]
fn a_removed_members_late_ack_is_accepted_while_the_entry_lives() {
    let mut sim = created(4, &[B, C, D], 3);
    let u = sim.update(A).unwrap()[0];
    let (a, q, hash) = (sim.mid(A).unwrap(), group(&sim, A).seq(), hash_of(&sim, u));
    let rm = sim.remove(B, D).unwrap()[0];
    assert!(sim.deliver_id(D, u));
    let d_ack = last_of_kind(&sim, D, EnvelopeKind::Ack);
    assert!(sim.deliver_id(C, u));
    assert!(sim.deliver_id(C, rm));
    assert_eq!(group(&sim, C).awaited_acks(&a, q), Some(mids(&sim, &[B])));
    let d = sim.mid(D).unwrap();
    assert!(!group(&sim, C).members().contains(&d));
    assert!(sim.deliver_id(C, d_ack));
    assert!(sim.events_at(C, |e| matches!(e, Event::Rejected { .. })).is_empty());
    let second = second_ack(&sim, D, a, q, hash);
    let again = recv(&mut sim, C, &second).unwrap();
    assert_eq!(rejections(&again.events), [RejectReason::InvalidAck("acknowledged twice")]);
}

/// The same removal, but D's late ack reaches C only after every current member has
/// acknowledged the update there: C can no longer tell whether it is D's first ack and
/// accepts it (its member secret for D is still held, so D's ratchet moves on as
/// everywhere, and C reads D's late message). D then removes E, a late operation
/// concurrent with its own removal: it applies at A, which processed D's ack while the
/// update was in flight, and at C alike. Refusing the ack at C would have cut D off there
/// and kept E a member at C only.
#[test]
fn a_removed_members_late_ack_after_completion_is_accepted_so_that_views_stay_equal() {
    let mut sim = created(5, &[B, C, D, E], 4);
    let u = sim.update(A).unwrap()[0];
    let (a, q) = (sim.mid(A).unwrap(), group(&sim, A).seq());
    assert!(sim.deliver_id(B, u));
    let rm = sim.remove(B, D).unwrap()[0];
    // D processes the update (not its removal), acknowledges it, sends a message and
    // removes E.
    assert!(sim.deliver_id(D, u));
    let m = *sim.send(D, b"late news").unwrap().last().unwrap();
    let late_remove = sim.remove(D, E).unwrap()[0];
    // E acknowledges the update too.
    assert!(sim.deliver_id(E, u));
    // C: the update, B's remove, and every current member's ack, then D's envelopes.
    let d_envelopes: Vec<usize> = sim.devices[C].inbox.iter().filter(|p| p.from == D).map(|p| p.id).collect();
    for id in [u, rm] {
        assert!(sim.deliver_id(C, id));
    }
    let acks: Vec<usize> = sim.devices[C].inbox.iter().filter(|p| p.from != D).map(|p| p.id).collect();
    for id in acks {
        sim.deliver_id(C, id);
    }
    assert_eq!(group(&sim, C).awaited_acks(&a, q), None, "completed at C");
    for id in &d_envelopes {
        assert!(sim.deliver_id(C, *id));
    }
    assert!(sim.events_at(C, |e| matches!(e, Event::Rejected { .. })).is_empty(), "{:?}", sim.devices[C].events);
    assert!(sim.decrypted(C, m), "C reads D's late message");
    // A takes D's envelopes first, while the update is still in flight there.
    for id in d_envelopes.iter().copied().chain([rm]) {
        sim.deliver_id(A, id);
    }
    assert!(d_envelopes.contains(&late_remove));
    sim.deliver_all();
    let expected: BTreeSet<String> = ["A", "B", "C"].map(String::from).into();
    for d in [A, B, C] {
        assert_eq!(sim.member_names(d), expected, "device {d}");
    }
    assert_settled(&sim, &[A, B, C]);
    assert_clean(&sim);
}

/// B adds E without having processed A's update: E is awaited wherever B is, processes
/// the update itself (it lies above E's horizon), acknowledges it, and the entry completes.
#[test]
fn a_newcomer_added_concurrently_with_an_update_acknowledges_it_and_the_entry_completes() {
    let mut sim = created(5, &[B, C], 5);
    let u = sim.update(A).unwrap()[0];
    let (a, q) = (sim.mid(A).unwrap(), group(&sim, A).seq());
    let add = sim.add(B, E).unwrap();
    assert!(sim.deliver_id(C, u));
    let envelopes: Vec<usize> =
        add.into_iter().filter(|id| matches!(sim.transcript[*id].kind, PacketKind::Envelope(..))).collect();
    for id in envelopes {
        assert!(sim.deliver_id(C, id));
    }
    let known = mids(&sim, &[A, B, C]);
    let e = group(&sim, C).members().into_iter().find(|m| !known.contains(m)).unwrap();
    assert_eq!(group(&sim, C).awaited_acks(&a, q), Some([sim.mid(B).unwrap(), e].into()));
    sim.deliver_all();
    assert_eq!(sim.mid(E), Some(e));
    assert_eq!(sim.events_at(E, |e| matches!(e, Event::Updated { .. })).len(), 1, "E processed the update");
    assert_settled(&sim, &[A, B, C, E]);
    assert_clean(&sim);
}

/// B acknowledges A's update and then adds E: E's Welcome covers the update, E never
/// acknowledges it, and it does not hold the entry up (D's ack completes it).
#[test]
fn a_newcomer_added_after_its_adder_acknowledged_does_not_block_completion() {
    let mut sim = created(5, &[B, C, D], 6);
    let u = sim.update(A).unwrap()[0];
    let (a, q) = (sim.mid(A).unwrap(), group(&sim, A).seq());
    assert!(sim.deliver_id(B, u));
    let b_ack = last_of_kind(&sim, B, EnvelopeKind::Ack);
    sim.add(B, E).unwrap();
    let add = last_of_kind(&sim, B, EnvelopeKind::Add);
    for id in [u, b_ack, add] {
        assert!(sim.deliver_id(C, id));
    }
    assert_eq!(group(&sim, C).awaited_acks(&a, q), Some(mids(&sim, &[D])));
    sim.deliver_all();
    assert!(sim.events_at(E, |e| matches!(e, Event::Updated { .. })).is_empty(), "below E's horizon");
    assert_settled(&sim, &[A, B, C, D, E]);
    assert_clean(&sim);
}

/// With coalesced acks, the members hold their acks of A's update; the entry completes
/// once they flush them. B's held ack travels first in the batch that carries its add of
/// E, so E is counted as having acknowledged (its Welcome covers the update).
#[test]
fn with_coalesced_acks_entries_complete_after_the_held_acks_are_sent() {
    let mut sim = created_with(5, &[B, C, D], 7, |sim| sim.config.coalesce_acks = true);
    sim.update(A).unwrap();
    let (a, q) = (sim.mid(A).unwrap(), group(&sim, A).seq());
    sim.deliver_queued();
    for d in [B, C, D] {
        assert_eq!(group(&sim, d).held_acks(), 1, "device {d}");
    }
    assert_eq!(group(&sim, A).awaited_acks(&a, q), Some(mids(&sim, &[B, C, D])));

    let add = sim.add(B, E).unwrap();
    assert_eq!(parse(&envelope_bytes(&sim, add[0])).kind, EnvelopeKind::Batch, "the held ack goes first");
    sim.deliver_queued();
    assert_eq!(group(&sim, A).awaited_acks(&a, q), Some(mids(&sim, &[C, D])), "E is not awaited");
    for d in [C, D] {
        assert!(sim.flush(d));
    }
    sim.deliver_all();
    assert_settled(&sim, &[A, B, C, D, E]);
    assert_clean(&sim);
}

/// D is offline: every operation of the others stays in flight, awaiting D alone, and the
/// ordering layer keeps their hashes. Removing D completes them all, the remove included.
#[test]
fn an_offline_member_keeps_entries_in_flight_until_it_is_removed() {
    let mut sim = created(4, &[B, C, D], 8);
    let mut ops = Vec::new();
    for d in [A, A, B, C, A] {
        sim.update(d).unwrap();
        ops.push((sim.mid(d).unwrap(), group(&sim, d).seq()));
        deliver_all_except(&mut sim, &[D]);
    }
    let awaited = Some(mids(&sim, &[D]));
    for d in [A, B, C] {
        let g = group(&sim, d);
        assert_eq!(g.in_flight(), 5, "device {d}");
        assert_eq!(g.retained_counts().0, 5, "device {d}");
        for (s, q) in &ops {
            assert_eq!(g.awaited_acks(s, *q), awaited, "device {d}");
        }
    }
    // A snapshot keeps them.
    let restored = Group::restore(&group(&sim, B).snapshot()).unwrap();
    assert_eq!((restored.in_flight(), restored.retained_counts().0), (5, 5));

    sim.remove(A, D).unwrap();
    deliver_all_except(&mut sim, &[D]);
    assert_settled(&sim, &[A, B, C]);
    // D comes back, catches up and leaves.
    sim.deliver_all();
    assert!(!sim.devices[D].active());
    assert_clean(&sim);
}

/// A second authentic version of A's update (A signs two) is equivocation while the update
/// is in flight; once every member acknowledged it, nothing of it is kept, and the other
/// version is taken for a replay.
#[test]
fn a_second_version_of_an_acknowledged_update_is_taken_for_a_replay() {
    let mut sim = created(3, &[B, C], 9);
    let key = group(&sim, A).signing_secret().clone();
    let u = sim.update(A).unwrap()[0];
    let (gid, a) = (group(&sim, A).gid(), sim.mid(A).unwrap());
    let mut other = parse(&envelope_bytes(&sim, u));
    let ControlBody::Update { mut seeds } = ControlBody::from_bytes(other.kind, &other.body).unwrap() else {
        panic!("not an update")
    };
    seeds.cts[0].ct[0] ^= 1;
    other.body = ControlBody::Update { seeds }.to_bytes();
    let other = resign(&other, &gid, &a, &key);
    assert!(sim.deliver_id(B, u));

    // In flight at B (C has not acknowledged): equivocation.
    let out = recv(&mut sim, B, &other).unwrap();
    assert_eq!(out.received, Some(Received::Duplicate));
    assert!(out.events.iter().any(|e| matches!(e, Event::Equivocation { sender, .. } if *sender == a)));

    // Acknowledged by everyone: a replay.
    sim.deliver_all();
    assert_settled(&sim, &[A, B, C]);
    let out = recv(&mut sim, B, &other).unwrap();
    assert_eq!(out.received, Some(Received::Duplicate));
    assert!(out.events.is_empty(), "{:?}", out.events);
}

/// The key an acknowledged update was verified under stays while a recent hash needs it:
/// B acknowledges A's update, then updates itself (rotating its signing key), and everyone
/// acknowledges both. A second authentic version of B's ack, signed under B's key of the
/// time, is still equivocation at C: the hash of the ack is recent, and its key is the one
/// retained for B's update, kept although the update completed.
#[test]
fn a_recent_ack_keeps_the_key_of_a_completed_update_for_equivocation_checks() {
    let mut sim = created(3, &[B, C], 10);
    let u = sim.update(A).unwrap()[0];
    let (a, q, hash) = (sim.mid(A).unwrap(), group(&sim, A).seq(), hash_of(&sim, u));
    assert!(sim.deliver_id(B, u));
    let b_ack = last_of_kind(&sim, B, EnvelopeKind::Ack);
    let key = group(&sim, B).signing_secret().clone();
    let (b, r) = (sim.mid(B).unwrap(), SeqNo(group(&sim, B).seq().0 + 1));
    sim.update(B).unwrap();
    sim.deliver_all();
    assert_settled(&sim, &[A, B, C]);
    assert!(!group(&sim, C).retains(&b, r));
    assert_eq!(group(&sim, C).retained_counts(), (0, 1), "B's update's key stays");

    let genuine = parse(&envelope_bytes(&sim, b_ack));
    let mut other = genuine.clone();
    let of = AckRef { of_sender: a.tag(), of_seq: q, of_hash: [hash[0] ^ 1; 16] };
    other.body = ControlBody::Ack { of, forwards: Vec::new() }.to_bytes();
    let gid = group(&sim, C).gid();
    let other = resign(&other, &gid, &b, &key);
    let out = recv(&mut sim, C, &other).unwrap();
    assert_eq!(out.received, Some(Received::Duplicate));
    assert!(
        out.events
            .iter()
            .any(|e| matches!(e, Event::Equivocation { sender, seq, .. } if *sender == b && *seq == genuine.seq)),
        "{:?}",
        out.events
    );
}
