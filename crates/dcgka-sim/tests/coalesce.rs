//! Coalesced acknowledgments (CCS §8.1, spec §12): members hold their acks and add-acks
//! and send them with their next envelope, as one batch under one signature.
//!
//! Each test asserts outcomes: what is held and sent, who is a member, who decrypts what,
//! which member secrets are still held, and that a batch changes nothing when it is
//! forged, tampered with or replayed. The random schedules of `tests/random.rs` run with
//! coalescing on in about half of their cases.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{assert_clean, create_recorded, created_with, group, observe, outcome, parse, recv, signing_key_for};
use dcgka::codec::{Decode, Encode};
use dcgka::consts::MAX_BATCH_ITEMS;
use dcgka::crypto::SigningSecret;
use dcgka::events::{DropReason, EquivocationEvidence, Event};
use dcgka::group::{GroupError, Received, Status};
use dcgka::ids::SeqNo;
use dcgka::wire::{BatchItem, Envelope, EnvelopeKind, encode_batch};
use dcgka_sim::names::{A, B, C, D, E};
use dcgka_sim::{Dev, Sim};

/// `n` devices with coalescing on; A creates the group with `others` and every first ack
/// (never held: it carries the sender's identity key) is processed everywhere.
fn setup(n: usize, others: &[Dev], seed: u64) -> Sim {
    let sim = created_with(n, others, seed, |sim| sim.config.coalesce_acks = true);
    for d in std::iter::once(A).chain(others.iter().copied()) {
        assert_eq!(group(&sim, d).held_acks(), 0);
    }
    sim
}

fn kind_of(bytes: &[u8]) -> EnvelopeKind {
    parse(bytes).kind
}

#[test]
fn acks_are_held_and_travel_with_the_next_message() {
    let mut sim = setup(4, &[B, C, D], 1);
    let upd = sim.update(A).unwrap();
    assert_eq!(upd.len(), 1);
    sim.deliver_queued();
    // Every recipient processed the update and holds its ack; nothing else was sent.
    assert_eq!(sim.transcript.len(), upd[0] + 1);
    for d in [B, C, D] {
        assert_eq!(group(&sim, d).held_acks(), 1, "device {d}");
    }
    // A still holds every recipient's member secret of its update: no ack has arrived.
    let a = sim.mid(A).unwrap();
    let q = group(&sim, A).seq();
    assert_eq!(group(&sim, A).member_secrets_pending(&a, q).len(), 3);

    // B's message carries its ack: one envelope, a batch of two items, one signature.
    let ids = sim.send(B, b"hello from B").unwrap();
    assert_eq!(ids.len(), 1);
    let batch = parse(&sim.transcript[ids[0]].bytes);
    assert_eq!(batch.kind, EnvelopeKind::Batch);
    let items = batch.items().unwrap();
    assert_eq!(items.iter().map(|e| e.kind).collect::<Vec<_>>(), [EnvelopeKind::Ack, EnvelopeKind::Application]);
    assert_eq!(items[1].seq.0, items[0].seq.0 + 1);
    assert_eq!(batch.last_seq(), items[1].seq);
    assert_eq!(group(&sim, B).held_acks(), 0);
    sim.deliver_queued();
    for d in [A, C, D] {
        assert!(sim.decrypted(d, ids[0]), "device {d} reads B's message");
    }
    // A learnt B's ack: B's member secret is gone, C's and D's are not.
    let pending = group(&sim, A).member_secrets_pending(&a, q);
    assert_eq!(pending.len(), 2);
    assert!(!pending.contains(&sim.mid(B).unwrap()));

    // Flushing sends the rest as plain acks (one each); then everyone agrees.
    assert!(sim.flush_all());
    let flushed: Vec<_> = sim.transcript[ids[0] + 1..].iter().map(|p| kind_of(&p.bytes)).collect();
    assert_eq!(flushed, [EnvelopeKind::Ack, EnvelopeKind::Ack]);
    sim.deliver_all();
    assert!(group(&sim, A).member_secrets_pending(&a, q).is_empty());
    assert_clean(&sim);
}

#[test]
fn an_operation_carries_the_held_acks_and_rotates_after_the_batch() {
    let mut sim = setup(4, &[B, C, D], 2);
    sim.update(A).unwrap();
    sim.update(B).unwrap();
    sim.deliver_queued();
    // C holds two acks (of A's and of B's update), then removes D: one batch of three.
    assert_eq!(group(&sim, C).held_acks(), 2);
    let ids = sim.remove(C, D).unwrap();
    assert_eq!(ids.len(), 1);
    let batch = parse(&sim.transcript[ids[0]].bytes);
    assert_eq!(batch.kind, EnvelopeKind::Batch);
    assert!(batch.new_signing_key.is_some(), "the remove rotates C's signing key");
    let kinds: Vec<_> = batch.items().unwrap().iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EnvelopeKind::Ack, EnvelopeKind::Ack, EnvelopeKind::Remove]);
    sim.deliver_all();
    assert_eq!(sim.member_names(A), ["A", "B", "C"].iter().map(|s| s.to_string()).collect());
    let d = sim.devices[D].retired.last().unwrap();
    assert_eq!(*d.status(), Status::Removed { by: sim.mid(C).unwrap() });
    // C's next envelope verifies under the rotated key.
    let m = sim.send(C, b"after the remove").unwrap();
    sim.deliver_all();
    assert!(sim.decrypted(A, m[0]) && sim.decrypted(B, m[0]));
    assert!(!sim.decrypted(D, m[0]));
    assert_clean(&sim);
}

#[test]
fn a_newcomers_horizon_inside_the_adders_batch() {
    let mut sim = setup(5, &[B, C], 3);
    sim.update(B).unwrap();
    sim.deliver_queued();
    assert_eq!(group(&sim, A).held_acks(), 1);
    // A's add of E goes out as [ack of B's update, add]; the Welcome carries that batch
    // and puts A's horizon at the ack, inside it.
    let ids = sim.add(A, E).unwrap();
    let add = parse(&sim.transcript[ids[0]].bytes);
    assert_eq!(add.kind, EnvelopeKind::Batch);
    assert_eq!(add.items().unwrap().last().unwrap().kind, EnvelopeKind::Add);
    sim.deliver_all();
    let everyone: std::collections::BTreeSet<String> = ["A", "B", "C", "E"].iter().map(|s| s.to_string()).collect();
    for d in [A, B, C, E] {
        assert_eq!(sim.member_names(d), everyone, "device {d}");
    }
    // E reads everyone's next message, and everyone reads E's.
    let mut msgs = Vec::new();
    for d in [A, B, C, E] {
        msgs.push((d, sim.send(d, format!("from {d}").as_bytes()).unwrap()[0]));
    }
    sim.deliver_all();
    for (from, id) in msgs {
        for to in [A, B, C, E] {
            if to != from {
                assert!(sim.decrypted(to, id), "{to} reads {from}'s message");
            }
        }
    }
    assert_clean(&sim);
}

#[test]
fn a_batch_that_arrives_early_waits_and_a_replayed_one_is_a_duplicate() {
    let mut sim = setup(3, &[B, C], 4);
    sim.update(A).unwrap();
    sim.deliver_queued();
    // B sends a message and then another (the first carries its ack).
    let first = sim.send(B, b"one").unwrap()[0];
    let second = sim.send(B, b"two").unwrap()[0];
    assert_eq!(kind_of(&sim.transcript[first].bytes), EnvelopeKind::Batch);
    // C gets B's second message first: buffered; then the batch releases both.
    assert!(sim.deliver_id(C, second));
    assert!(!sim.decrypted(C, second));
    assert_eq!(group(&sim, C).pending(), 1);
    assert!(sim.deliver_id(C, first));
    assert!(sim.decrypted(C, first) && sim.decrypted(C, second));
    // The same batch again: a duplicate, nothing changes.
    let before = observe(group(&sim, C));
    let bytes = sim.transcript[first].bytes.clone();
    assert_eq!(outcome(&recv(&mut sim, C, &bytes)), Ok(Received::Duplicate));
    assert_eq!(observe(group(&sim, C)), before);
    sim.deliver_all();
    assert_clean(&sim);
}

#[test]
fn a_tampered_or_forged_batch_changes_nothing() {
    let mut sim = setup(3, &[B, C], 5);
    sim.update(A).unwrap();
    sim.deliver_queued();
    let id = sim.send(B, b"genuine").unwrap()[0];
    let genuine = sim.transcript[id].bytes.clone();
    let before = observe(group(&sim, C));
    // Every single-bit flip is refused (malformed, a bad signature, or, for a flipped
    // sequence number, buffered and never processed) and changes no processed state.
    for i in 0..genuine.len() {
        let mut bad = genuine.clone();
        bad[i] ^= 0x01;
        let saved = sim.devices[C].group().cloned();
        match recv(&mut sim, C, &bad) {
            Err(_) => assert_eq!(observe(group(&sim, C)), before, "flip at byte {i} changed C"),
            Ok(out) => {
                assert!(out.events.is_empty() && out.broadcast.is_empty(), "flip at byte {i}: {out:?}");
                assert_eq!(group(&sim, C).sync_state(), before.sync, "flip at byte {i} was processed");
            }
        }
        if let Some(g) = saved {
            sim.devices[C].install(g);
        }
    }
    // The same items under another key: a bad signature.
    let env = parse(&genuine);
    let forger = SigningSecret::from_bytes(&[7; 32]);
    let b = sim.mid(B).unwrap();
    let forged = Envelope::seal(
        EnvelopeKind::Batch,
        &group(&sim, C).gid(),
        env.seq,
        &b,
        None,
        None,
        None,
        env.body.clone(),
        &forger,
    )
    .to_bytes();
    assert_eq!(outcome(&recv(&mut sim, C, &forged)), Ok(Received::Dropped(DropReason::BadSignature)));
    assert_eq!(observe(group(&sim, C)), before);
    // The genuine batch still goes through.
    assert!(sim.deliver_id(C, id));
    assert!(sim.decrypted(C, id));
    sim.deliver_all();
    assert_clean(&sim);
}

#[test]
fn a_conflicting_batch_from_the_same_sender_is_equivocation() {
    let mut sim = Sim::new(3, 6);
    sim.config.coalesce_acks = true;
    // A's group is created with a recording generator, so its signing key is known.
    let (_, draws) = create_recorded(&mut sim, A, &[B, C], 99);
    sim.deliver_all();
    sim.update(B).unwrap();
    sim.deliver_queued();
    // A's update carries its held ack: [ack, update]. B and C process it and hold their
    // acks, so it stays in flight: a second version of an operation every member has
    // acknowledged would be taken for a replay (docs/protocol.md §7.6).
    let id = sim.update(A).unwrap()[0];
    sim.deliver_queued();
    let original = parse(&sim.transcript[id].bytes);
    assert_eq!(original.kind, EnvelopeKind::Batch);
    let a = sim.mid(A).unwrap();
    let gid = group(&sim, B).gid();
    // A's key before that batch is the one its create rotated to.
    let vk = draws
        .iter()
        .map(SigningSecret::from_bytes)
        .map(|k| k.verifying_key())
        .find(|vk| original.verify(&gid, &a, vk).is_ok())
        .expect("A's key is among the recorded draws");
    let key = signing_key_for(&draws, &vk);
    // The same sequence numbers with a different update, signed by A: equivocation.
    let mut items: Vec<BatchItem> =
        original.items().unwrap().iter().map(|e| BatchItem { kind: e.kind, body: e.body.clone() }).collect();
    let last = items.last_mut().unwrap();
    let k = last.body.len() - 1;
    last.body[k] ^= 0xff;
    let twin = Envelope::seal(
        EnvelopeKind::Batch,
        &gid,
        original.seq,
        &a,
        None,
        original.new_signing_key,
        original.key_cert,
        encode_batch(&items),
        &key,
    )
    .to_bytes();
    let before = observe(group(&sim, B));
    let out = recv(&mut sim, B, &twin).unwrap();
    let evidence = EquivocationEvidence::Processed { processed: original.short_hash(), other: twin.clone() };
    assert_eq!(out.events, [Event::Equivocation { sender: a, seq: original.last_seq(), evidence }]);
    assert_eq!(observe(group(&sim, B)), before);
    sim.deliver_all();
    assert_clean(&sim);
}

#[test]
fn a_member_that_holds_many_acks_sends_them_before_a_batch_would_overflow() {
    let n = 4;
    let mut sim = setup(n, &[B, C, D], 7);
    // B receives many operations without sending anything itself.
    let ops = MAX_BATCH_ITEMS + 5;
    for i in 0..ops {
        let from = [A, C, D][i % 3];
        sim.update(from).unwrap();
        sim.deliver_queued();
    }
    let sent_by_b: Vec<_> = sim.transcript.iter().filter(|p| p.from == B).map(|p| parse(&p.bytes)).collect();
    // B sent exactly one full batch of acks once it held MAX_BATCH_ITEMS − 1 of them.
    let batches: Vec<_> = sent_by_b.iter().filter(|e| e.kind == EnvelopeKind::Batch).collect();
    assert_eq!(batches.len(), 1);
    let items = batches[0].items().unwrap();
    assert_eq!(items.len(), MAX_BATCH_ITEMS - 1);
    assert!(items.iter().all(|e| e.kind == EnvelopeKind::Ack));
    assert_eq!(group(&sim, B).held_acks(), ops - (MAX_BATCH_ITEMS - 1));
    sim.deliver_all();
    assert_eq!(group(&sim, B).held_acks(), 0);
    assert_clean(&sim);
}

#[test]
fn a_removed_member_drops_what_it_held() {
    let mut sim = setup(3, &[B, C], 8);
    sim.update(C).unwrap();
    sim.deliver_queued();
    assert_eq!(group(&sim, B).held_acks(), 1);
    sim.remove(A, B).unwrap();
    sim.deliver_queued();
    let g = sim.devices[B].retired.last_mut().unwrap();
    assert!(matches!(g.status(), Status::Removed { .. }));
    assert_eq!(g.held_acks(), 0);
    assert!(matches!(g.flush_acks(), Err(GroupError::NotActive(_))));
    sim.deliver_all();
    assert_eq!(sim.member_names(A), ["A", "C"].iter().map(|s| s.to_string()).collect());
    assert_clean(&sim);
}

#[test]
fn batch_decoding_enforces_the_batch_rules() {
    let mut sim = setup(2, &[B], 9);
    sim.update(A).unwrap();
    sim.deliver_queued();
    let id = sim.send(B, b"x").unwrap()[0];
    let env = parse(&sim.transcript[id].bytes);
    let items: Vec<BatchItem> =
        env.items().unwrap().iter().map(|e| BatchItem { kind: e.kind, body: e.body.clone() }).collect();
    let reencode = |e: &Envelope, body: Vec<u8>, seq: u64, key: Option<dcgka::crypto::VerifyingKey>| {
        let mut e = e.clone();
        e.body = body;
        e.seq = SeqNo(seq);
        e.new_signing_key = key;
        e.to_bytes()
    };
    // The genuine encoding decodes.
    assert!(Envelope::from_bytes(&env.to_bytes()).is_ok());
    // One item only.
    assert!(Envelope::from_bytes(&reencode(&env, encode_batch(&items[1..]), env.seq.0, None)).is_err());
    // A non-ack before the last item.
    let swapped = vec![items[1].clone(), items[0].clone()];
    assert!(Envelope::from_bytes(&reencode(&env, encode_batch(&swapped), env.seq.0, None)).is_err());
    // Too many items.
    let mut many = vec![items[0].clone(); MAX_BATCH_ITEMS];
    many.push(items[1].clone());
    assert!(Envelope::from_bytes(&reencode(&env, encode_batch(&many), env.seq.0, None)).is_err());
    // A rotation that the last item does not call for.
    let vk = SigningSecret::from_bytes(&[1; 32]).verifying_key();
    assert!(Envelope::from_bytes(&reencode(&env, encode_batch(&items), env.seq.0, Some(vk))).is_err());
    // A batch never holds a first envelope (sequence number 1).
    assert!(Envelope::from_bytes(&reencode(&env, encode_batch(&items), 1, None)).is_err());
}
