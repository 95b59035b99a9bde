//! One regression test per known pitfall of earlier implementations (spec §13, items 1–26),
//! each named after its item and quoting the pitfall in its doc comment. Items that concern
//! only another implementation's internals are tested through the nearest observable
//! property of this implementation, and say so.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;

use std::collections::BTreeSet;

use dcgka::codec::{Decode, Encode};
use dcgka::crypto::{Secret32, Signature, SigningSecret};
use dcgka::dgm::{OpId, reference_view};
use dcgka::events::{DropReason, Event, RejectReason};
use dcgka::group::{Context, Group, GroupConfig, GroupError, Received, Status};
use dcgka::ids::{Epoch, GroupId, MemberId, MessageIndex, Origin, SeqNo};
use dcgka::prekeys::{Identity, InMemoryPrekeyDirectory, PrekeyBundle, PrekeyProvider};
use dcgka::ratchet::{RatchetError, SenderRatchet};
use dcgka::two_party::{KeyRef, TwoPartySession};
use dcgka::welcome::Welcome;
use dcgka::wire::{ControlBody, Envelope, EnvelopeKind, SenderRef};
use dcgka_sim::names::{A, B, C, D, E};
use dcgka_sim::{Dev, NOW, Packet, PacketKind, Sim};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

// ------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------

fn last(ids: Vec<usize>) -> usize {
    *ids.last().unwrap()
}

/// The id of the latest envelope of kind `kind` sent by `d`.
fn last_of_kind(sim: &Sim, d: Dev, kind: EnvelopeKind) -> usize {
    sim.transcript
        .iter()
        .rev()
        .find(|p| p.from == d && matches!(p.kind, PacketKind::Envelope(k, _) if k == kind))
        .unwrap()
        .id
}

fn welcome_of(sim: &Sim, ids: &[usize]) -> usize {
    *ids.iter().find(|i| sim.transcript[**i].kind == PacketKind::Welcome).unwrap()
}

fn names(sim: &Sim, d: Dev) -> Vec<String> {
    sim.member_names(d).into_iter().collect()
}

/// S2 of §10: group {A, B, C}; A updates (A2) ∥ C adds D (C2). B processes C2 then A2 and
/// sends mB; C and A process the other's operation; then everything is delivered.
struct S2 {
    sim: Sim,
    a2: usize,
    b_ack: usize,
    m_b: usize,
    m_a2: usize,
}

fn s2(seed: u64) -> S2 {
    let mut sim = created(4, &[B, C], seed);
    let a2 = sim.update(A).unwrap()[0];
    let m_a2 = last(sim.send(A, b"mA@A2").unwrap());
    let c2 = sim.add(C, D).unwrap()[0];
    assert!(sim.deliver_id(B, c2));
    assert!(sim.deliver_id(B, a2));
    let b_ack = last_of_kind(&sim, B, EnvelopeKind::Ack);
    let m_b = last(sim.send(B, b"mB@B3").unwrap());
    assert!(sim.deliver_id(C, a2));
    assert!(sim.deliver_id(A, c2));
    sim.deliver_all();
    S2 { sim, a2, b_ack, m_b, m_a2 }
}

// ------------------------------------------------------------------------------------
// §13 items
// ------------------------------------------------------------------------------------

/// #1 (J): "The signature scheme is universally forgeable … 100 of 100 forgeries verified."
/// Here: 100 random signatures and 100 signatures by other keys over a real envelope's exact
/// signed bytes all fail verification and are dropped as `BadSignature`; a prekey bundle
/// whose signature is replaced fails verification too.
#[test]
fn p01_forged_signatures_never_verify() {
    let mut sim = created(3, &[B, C], 101);
    let m = last(sim.send(A, b"m").unwrap());
    let genuine = parse(&envelope_bytes(&sim, m));
    let gid = group(&sim, A).gid();
    let a_mid = sim.mid(A).unwrap();
    let before = observe(group(&sim, B));
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    for i in 0..200 {
        let mut f = genuine.clone();
        if i < 100 {
            let mut s = [0u8; 64];
            rng.fill_bytes(&mut s);
            f.signature = Signature(s);
        } else {
            let k = SigningSecret::generate(&mut rng);
            f = parse(&resign(&genuine, &gid, &a_mid, &k));
        }
        assert_eq!(outcome(&recv(&mut sim, B, &f.to_bytes())), Ok(Received::Dropped(DropReason::BadSignature)), "{i}");
    }
    assert_eq!(observe(group(&sim, B)), before);
    sim.deliver_all();
    assert!(sim.decrypted(B, m));
    // A prekey bundle re-signed by someone else.
    let mut dir = InMemoryPrekeyDirectory::new();
    let mut id = Identity::generate(&mut rng);
    dir.publish_identity(&mut rng, &mut id, NOW, 1).unwrap();
    let mut bundle = dir.bundle(&id.public_key()).unwrap();
    assert!(bundle.verify(&id.public_key(), NOW).is_ok());
    let other = SigningSecret::generate(&mut rng);
    bundle.signed_prekey.signature = other.sign("sig-signed-prekey", &[&bundle.signed_prekey.value.to_bytes()]);
    assert!(bundle.verify(&id.public_key(), NOW).is_err());
}

/// #2 (J): "Update ∥ add: the newcomer throws 'No PPRF for acked message' when processing acks
/// of the update." Here (S2): the newcomer D processes every ack of A's concurrent update
/// without an error, and all §10 oracles hold.
#[test]
fn p02_update_concurrent_with_add_newcomer_processes_acks() {
    let S2 { sim, a2, .. } = s2(102);
    assert_no_errors(&sim);
    let PacketKind::Envelope(_, q) = sim.transcript[a2].kind else { panic!() };
    let a_mid = sim.mid(A).unwrap();
    let g = group(&sim, D);
    assert!(g.sync_state()[&a_mid] >= q, "D processed A2");
    for d in [B, C] {
        assert!(g.sync_state()[&sim.mid(d).unwrap()] >= SeqNo(3), "D processed {d}'s ack of A2");
    }
    for d in 0..4 {
        assert_eq!(names(&sim, d), ["A", "B", "C", "D"]);
    }
    assert_oracles(&sim);
}

/// #3 (J): "Add ∥ add: the new members reject each other's first ack ('No PPRF') … they can
/// never decrypt each other." Here (S3): A adds C ∥ B adds D; C and D accept each other's
/// first ack, and after full delivery each decrypts the other's messages.
#[test]
fn p03_concurrent_adds_newcomers_accept_each_others_first_ack() {
    let mut sim = created(4, &[B], 103);
    sim.add(A, C).unwrap();
    sim.add(B, D).unwrap();
    sim.deliver_all();
    assert_no_errors(&sim);
    let c_mid = sim.mid(C).unwrap();
    let d_mid = sim.mid(D).unwrap();
    assert!(group(&sim, C).sync_state().get(&d_mid).is_some_and(|s| s.0 >= 1), "C processed D's first ack");
    assert!(group(&sim, D).sync_state().get(&c_mid).is_some_and(|s| s.0 >= 1), "D processed C's first ack");
    let mc = last(sim.send(C, b"from C").unwrap());
    let md = last(sim.send(D, b"from D").unwrap());
    sim.deliver_all();
    assert!(sim.decrypted(D, mc) && sim.decrypted(C, md));
    assert_oracles(&sim);
}

/// #4 (J): "Two concurrent removes of different members: the members being removed throw
/// 'Unrecognized input'." Here (S7): A removes C ∥ B removes D, C processing B's remove first
/// and D A's; both terminate without any error, and {A, B} remain.
#[test]
fn p04_two_concurrent_removes_of_different_members() {
    let mut sim = created(4, &[B, C, D], 104);
    let a2 = sim.remove(A, C).unwrap()[0];
    let b2 = sim.remove(B, D).unwrap()[0];
    assert!(sim.deliver_id(C, b2));
    assert!(sim.deliver_id(D, a2));
    sim.deliver_all();
    assert_no_errors(&sim);
    for d in [C, D] {
        assert!(sim.devices[d].group().is_none());
        assert!(matches!(sim.devices[d].retired[0].status(), Status::Removed { .. }), "{d}");
    }
    assert_eq!(names(&sim, A), ["A", "B"]);
    assert_eq!(names(&sim, B), ["A", "B"]);
    assert_oracles(&sim);
}

/// #5 (J): "The forwarded-secret branch of processAck is unreachable." Here (S2): B's ack of
/// A's update carries exactly one forward (to the concurrently added D), and D decrypts B's
/// next message only through it.
#[test]
fn p05_forwarded_member_secret_is_used() {
    let S2 { sim, b_ack, m_b, .. } = s2(105);
    let ControlBody::Ack { forwards, .. } = control_body(&sim, b_ack) else { panic!("not an ack") };
    let d_mid = sim.mid(D).unwrap();
    assert_eq!(forwards.iter().map(|f| f.recipient).collect::<Vec<_>>(), vec![d_mid.tag()]);
    assert!(sim.decrypted(D, m_b), "D decrypted mB@B3 through the forwarded secret");
    assert!(sim.decrypted(A, m_b) && sim.decrypted(C, m_b));
}

/// #6 (J): "Member secrets are never deleted … 4 secrets remained after a 3-member create,
/// and 8 after one update." Here: none remains at any member after a 3-member create with
/// full delivery, nor after one update with full delivery.
#[test]
fn p06_member_secrets_deleted_after_create_and_update() {
    let mut sim = created(3, &[B, C], 106);
    for d in [A, B, C] {
        assert_eq!(group(&sim, d).member_secret_count(), 0, "after create at {d}");
    }
    sim.update(B).unwrap();
    sim.deliver_all();
    for d in [A, B, C] {
        assert_eq!(group(&sim, d).member_secret_count(), 0, "after update at {d}");
    }
}

/// #7 (J): "One-time prekey secrets are never deleted." Here: the OPK named by B's seed
/// ciphertext in the create, and the OPK named by the Welcome's ratchet ciphertext, are in
/// their owners' key stores before and gone once consumed.
#[test]
fn p07_consumed_one_time_prekey_is_deleted() {
    let mut sim = Sim::new(4, 107);
    let create = sim.create(A, &[B, C]).unwrap()[0];
    let ControlBody::Create { seeds, .. } = control_body(&sim, create) else { panic!() };
    let gid = group(&sim, A).gid();
    let a_mid = sim.mid(A).unwrap();
    let mut r: Vec<(MemberId, Dev)> =
        [B, C].iter().map(|d| (MemberId::derive(&gid, &sim.ik(*d), Origin::Operation(a_mid, SeqNo(1))), *d)).collect();
    r.sort();
    let opk_of = |key_ref: KeyRef| match key_ref {
        KeyRef::Prekey { opk_id: Some(o), .. } => o,
        other => panic!("{other:?}"),
    };
    let mut consumed = Vec::new();
    for (k, (_, d)) in r.iter().enumerate() {
        let opk = opk_of(seeds.cts[k].key_ref);
        assert!(sim.devices[*d].identity().key_store().has_opk(opk), "before, at {d}");
        consumed.push((*d, opk));
    }
    sim.deliver_all();
    for (d, opk) in &consumed {
        assert!(!sim.devices[*d].identity().key_store().has_opk(*opk), "after, at {d}");
    }
    let ids = sim.add(B, D).unwrap();
    let w = Welcome::from_bytes(&envelope_bytes(&sim, welcome_of(&sim, &ids))).unwrap();
    let opk = opk_of(w.ratchet_ct.key_ref);
    assert!(sim.devices[D].identity().key_store().has_opk(opk));
    sim.deliver_all();
    assert!(sim.devices[D].active());
    assert!(!sim.devices[D].identity().key_store().has_opk(opk));
}

/// #8 (J): "Application AEAD has no epoch or index in its associated data, and no
/// out-of-order support. When no update secret can be derived, the ratchet is re-initialised
/// with a null key." Here: the sender ratchet binds epoch, index and sequence number
/// (decrypting under any other value fails), decrypts out of order, and answers `NotForUs`
/// for an epoch it never held; in a group, the newcomer of S2 gets `Undecryptable` (not a
/// null-key decryption) for A's message sent before A knew it.
#[test]
fn p08_application_aead_binds_epoch_and_index_and_handles_reordering() {
    let gid = GroupId([1; 32]);
    let x = MemberId([2; 32]);
    let mut tx = SenderRatchet::new(gid, x, Epoch(5), Secret32::from_bytes([3; 32])).unwrap();
    let mut rx = SenderRatchet::new(gid, x, Epoch(5), Secret32::from_bytes([3; 32])).unwrap();
    let cts: Vec<Vec<u8>> = (0..3).map(|i| tx.encrypt(SeqNo(6 + i), format!("m{i}").as_bytes()).unwrap().1).collect();
    // Wrong index, sequence number or epoch: authentication fails (or the epoch is not held).
    let mut probe = rx.clone();
    assert_eq!(probe.decrypt(Epoch(5), MessageIndex(0), SeqNo(7), &cts[0]), Err(RatchetError::AuthenticationFailed));
    assert_eq!(probe.decrypt(Epoch(5), MessageIndex(1), SeqNo(6), &cts[0]), Err(RatchetError::AuthenticationFailed));
    assert!(matches!(probe.decrypt(Epoch(6), MessageIndex(0), SeqNo(6), &cts[0]), Err(RatchetError::NotForUs { .. })));
    // Out of order.
    assert_eq!(&rx.decrypt(Epoch(5), MessageIndex(2), SeqNo(8), &cts[2]).unwrap()[..], b"m2");
    assert_eq!(&rx.decrypt(Epoch(5), MessageIndex(0), SeqNo(6), &cts[0]).unwrap()[..], b"m0");
    assert_eq!(&rx.decrypt(Epoch(5), MessageIndex(1), SeqNo(7), &cts[1]).unwrap()[..], b"m1");
    // In a group: D was not in A's view at A2.
    let S2 { sim, m_a2, .. } = s2(108);
    let a_mid = sim.mid(A).unwrap();
    let PacketKind::Envelope(_, seq) = sim.transcript[m_a2].kind else { panic!() };
    assert!(!sim.decrypted(D, m_a2));
    assert!(sim.devices[D].events.iter().any(|e| matches!(
        e,
        Event::Undecryptable { sender, seq: s, reason: RatchetError::NotForUs { .. } } if *sender == a_mid && *s == seq
    )));
}

/// #9 (J): "The DGM is mutable and shared across 'immutable' states, so a failed message
/// cannot be rolled back." Here: an authentic but invalid control envelope (A, signing with
/// its real key, "removes" itself: V3) is REJECTed — only A's sequence number is consumed;
/// history and membership are untouched — and a failed local operation (an add with no
/// prekey bundle available) leaves the DGM exactly as before.
#[test]
fn p09_failed_operations_roll_back_the_dgm() {
    let (mut sim, k1) = created_recorded(5, &[B, C], 109, 1091);
    let g = group(&sim, A);
    let (gid, a_mid) = (g.gid(), g.me());
    let self_remove = ControlBody::Remove {
        target: a_mid.tag(),
        seeds: dcgka::wire::SeedBlock { recipients_digest: dcgka::crypto::Hash32([0; 32]), cts: vec![] },
    };
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let nk = SigningSecret::generate(&mut rng).verifying_key();
    let a_identity = sim.devices[A].identity().signing_key().clone();
    let cert = dcgka::wire::CertifiedKey::issue(&a_identity, &gid, &a_mid, SeqNo(2), nk).cert;
    let env = Envelope::seal(
        EnvelopeKind::Remove,
        &gid,
        SeqNo(2),
        &a_mid,
        None,
        Some(nk),
        Some(cert),
        self_remove.to_bytes(),
        &k1,
    );
    let before = observe(group(&sim, B));
    let out = recv(&mut sim, B, &env.to_bytes()).unwrap();
    assert!(
        out.events.iter().any(|e| matches!(e, Event::Rejected { reason: RejectReason::InvalidRemove(_), .. })),
        "{:?}",
        out.events
    );
    let after = observe(group(&sim, B));
    assert_eq!(after.history, before.history);
    assert_eq!(after.members, before.members);
    assert_eq!(after.sync[&a_mid], SeqNo(2), "the sequence number is consumed");
    // A failed local operation.
    let before = observe(group(&sim, C));
    let e_ik = sim.devices[E].identity().public_key();
    let (g, identity) = sim.devices[C].group_mut().unwrap();
    let mut empty = InMemoryPrekeyDirectory::new();
    let mut ctx = Context { rng: &mut rng, now: NOW, prekeys: &mut empty, identity };
    let r = g.add(&mut ctx, e_ik);
    assert!(matches!(r, Err(GroupError::MissingPrekeyBundle(_))), "{r:?}");
    assert_eq!(observe(group(&sim, C)), before);
}

/// #10 (J): "The recipient's ciphertext is chosen by its index in a sorted recipient list,
/// with no check that sender and receiver agree on the set." Here: A's genuine update,
/// re-signed by A's real signing key with a wrong recipients digest (or one ciphertext too
/// few), is REJECTed with `RecipientsMismatch` (V5) without touching the history, and A is
/// cut off at that receiver.
#[test]
fn p10_recipient_set_disagreement_is_rejected() {
    let (mut sim, k1) = created_recorded(3, &[B, C], 110, 1101);
    let u = sim.update(A).unwrap()[0];
    let genuine = parse(&envelope_bytes(&sim, u));
    let ControlBody::Update { seeds } = control_body(&sim, u) else { panic!() };
    let g = group(&sim, A);
    let (gid, a_mid) = (g.gid(), g.me());
    let mut wrong_digest = seeds.clone();
    wrong_digest.recipients_digest.0[0] ^= 1;
    let mut too_few = seeds.clone();
    too_few.cts.pop();
    let later = last(sim.send(A, b"after").unwrap());
    for bad in [wrong_digest, too_few] {
        let mut env = genuine.clone();
        env.body = ControlBody::Update { seeds: bad }.to_bytes();
        let forged = resign(&env, &gid, &a_mid, &k1);
        let mut b = Detached::of(&sim, B);
        let before = observe(&b.group);
        let mut dir = sim.directory.clone();
        let out = b.recv(&mut dir, 1, &forged).unwrap();
        assert!(
            out.events.iter().any(|e| matches!(e, Event::Rejected { reason: RejectReason::RecipientsMismatch, .. })),
            "{:?}",
            out.events
        );
        let after = observe(&b.group);
        assert_eq!(after.history, before.history);
        assert_eq!(after.secrets, before.secrets);
        assert!(out.broadcast.is_empty(), "no ack of a rejected update");
        // Cut off: A's next genuine message is rejected too.
        let out = b.recv(&mut dir, 2, &envelope_bytes(&sim, later)).unwrap();
        assert!(
            out.events.iter().any(|e| matches!(e, Event::Rejected { reason: RejectReason::CutOff, .. })),
            "{:?}",
            out.events
        );
    }
    sim.deliver_all();
    assert_no_errors(&sim);
}

/// #11 (J): "queryView counts a tombstoned user as in a viewer's view without checking that
/// the viewer acknowledged the user's add." Here: A adds D and removes D before B has acked
/// the add; at A, `member_view(B)` does not contain D; and every member's incremental views
/// equal the §6.4 (a) reference evaluator, before and after full delivery.
#[test]
fn p11_tombstoned_member_not_in_view_of_viewer_that_never_saw_its_add() {
    // The reference evaluator needs the whole history: no compaction (§6.7).
    let mut sim = created_with(4, &[B, C], 111, |sim| sim.compaction = false);
    let add = sim.add(A, D).unwrap();
    let w = welcome_of(&sim, &add);
    // D joins (its copy of the add envelope is then an old duplicate); nobody else hears yet.
    assert!(sim.deliver_id(D, w));
    let d_mid = sim.mid(D).unwrap();
    sim.remove_member(A, d_mid).unwrap();
    let b_mid = sim.mid(B).unwrap();
    let check = |sim: &Sim, d: Dev| {
        let g = group(sim, d);
        for x in g.ever_added() {
            let want =
                if x == g.me() { reference_view(g.history(), None) } else { reference_view(g.history(), Some(&x)) };
            let got = if x == g.me() { g.members() } else { g.member_view(&x) };
            assert_eq!(got, want, "view of {} at {d}", sim.name_of_member(&x));
        }
    };
    assert!(!group(&sim, A).member_view(&b_mid).contains(&d_mid));
    check(&sim, A);
    sim.deliver_all();
    assert_no_errors(&sim);
    for d in [A, B, C] {
        check(&sim, d);
        assert!(!group(&sim, d).members().contains(&d_mid));
    }
}

/// #12 (J): "KDFs are plain concatenations … The identity key serves as ID, DH key and
/// signing key at once. Seeds are 16 B." Nearest observable here: labels are prefixed and
/// NUL-separated (no concatenation ambiguity); member IDs are neither identity keys nor
/// equal across groups or instances; every member's first envelope rotates its signing key
/// away from the identity key; 2SM ciphertexts use X25519 prekeys distinct from `IK`.
#[test]
fn p12_keys_and_derivations_are_separated() {
    use dcgka::crypto::info;
    assert!(info("member-secret", &[b"x"]).starts_with(b"DCGKA-v1 member-secret\0"));
    assert_ne!(info("ab", &[b"c"]), info("a", &[b"bc"]));
    let mut sim = Sim::new(3, 112);
    let ids = sim.create(A, &[B, C]).unwrap();
    sim.deliver_all();
    for d in [A, B, C] {
        let mid = sim.mid(d).unwrap();
        assert_ne!(mid.0, sim.ik(d).0, "MID is not the identity key");
        assert_ne!(mid, MemberId::derive(&GroupId([0; 32]), &sim.ik(d), Origin::Creator));
        let first = sim.transcript.iter().find(|p| p.from == d).unwrap();
        let env = parse(&first.bytes);
        assert_eq!(env.seq, SeqNo(1));
        assert_ne!(env.new_signing_key, Some(sim.ik(d)), "rotated away from IK");
        assert!(env.new_signing_key.is_some());
    }
    let ControlBody::Create { seeds, .. } = control_body(&sim, ids[0]) else { panic!() };
    for ct in &seeds.cts {
        assert!(matches!(ct.key_ref, KeyRef::Prekey { .. }));
        assert_ne!(ct.enc, sim.ik(B).0);
    }
}

/// #13 (J): "Its tests use only totally ordered delivery, and ModularDsgmTest has no
/// assertions." Here: random delivery orders with duplication and loss, concurrent
/// operations of every kind, and assertions on all §10 oracles and on delivery.
#[test]
fn p13_concurrent_random_delivery_with_assertions() {
    for seed in [1131u64, 1132] {
        let mut sim = Sim::new(6, seed);
        sim.create(A, &[B, C, D]).unwrap();
        sim.deliver_random(15, 15);
        sim.update(B).unwrap();
        sim.add(C, E).unwrap();
        sim.send(A, b"1").unwrap();
        sim.remove(D, A).unwrap();
        sim.deliver_random(15, 15);
        sim.send(B, b"2").unwrap();
        sim.add(B, 5).unwrap();
        sim.update(E).unwrap();
        sim.deliver_random(15, 15);
        sim.send(C, b"3").unwrap();
        sim.deliver_random(15, 15);
        assert_oracles(&sim);
        assert_eq!(names(&sim, B), ["B", "C", "D", "E", "F"], "seed {seed}");
    }
}

/// #14 (J, P): "The add-ack ratchet state is sent to the added user even when the add has
/// been cancelled by a concurrent removal of the adder." Here (S8): A removes B ∥ B adds E.
/// C, processing the remove first, add-acks with `ratchet_ct: None`, as does A; E never
/// becomes a member. In the other order C's add-ack does carry its ratchet (E was a member
/// in C's view then).
#[test]
fn p14_no_ratchet_sent_to_cancelled_add() {
    for remove_first in [true, false] {
        let mut sim = created(5, &[B, C], 114);
        let a2 = sim.remove(A, B).unwrap()[0];
        let b2 = sim.add(B, E).unwrap()[0];
        let order = if remove_first { [a2, b2] } else { [b2, a2] };
        for id in order {
            assert!(sim.deliver_id(C, id));
        }
        let c_ack = last_of_kind(&sim, C, EnvelopeKind::AddAck);
        let ControlBody::AddAck { ratchet_ct, .. } = control_body(&sim, c_ack) else { panic!() };
        assert_eq!(ratchet_ct.is_some(), !remove_first, "C's add-ack (remove first: {remove_first})");
        assert!(sim.deliver_id(A, b2));
        let a_ack = last_of_kind(&sim, A, EnvelopeKind::AddAck);
        let ControlBody::AddAck { ratchet_ct, .. } = control_body(&sim, a_ack) else { panic!() };
        assert!(ratchet_ct.is_none(), "A's add-ack to a cancelled add");
        sim.deliver_all();
        assert_no_errors(&sim);
        assert_eq!(names(&sim, A), ["A", "C"]);
        assert_eq!(names(&sim, C), ["A", "C"]);
        assert!(!sim.devices[E].active());
        let m = last(sim.send(C, b"after").unwrap());
        sim.deliver_all();
        assert!(!sim.decrypted(E, m));
    }
}

/// #15 (P): "process_ack records acks only if is_add && is_remove … Acks of creates, adds and
/// removes are never recorded, so member_view(acker) goes stale." Here: acks of the create,
/// of an add and of a remove are recorded in `history()` at every member, and the acker's
/// view drops the removed member once its ack is processed.
#[test]
fn p15_acks_of_create_add_remove_are_recorded() {
    // Compaction (§6.7) would fold acknowledged operations with their acks.
    let mut sim = created_with(4, &[B, C], 115, |sim| sim.compaction = false);
    let (a, b, c) = (sim.mid(A).unwrap(), sim.mid(B).unwrap(), sim.mid(C).unwrap());
    let create = OpId::new(a, 1);
    for d in [A, B, C] {
        let h = group(&sim, d).history();
        assert!(h.has_acked(&create, &b) && h.has_acked(&create, &c), "create acks at {d}");
    }
    let add = sim.add(A, D).unwrap()[0];
    sim.deliver_all();
    let PacketKind::Envelope(_, q) = sim.transcript[add].kind else { panic!() };
    let dm = sim.mid(D).unwrap();
    for d in [A, B, C, D] {
        let h = group(&sim, d).history();
        for x in [b, c, dm] {
            assert!(h.has_acked(&OpId::new(a, q.0), &x), "add ack by {} at {d}", sim.name_of_member(&x));
        }
    }
    let rm = sim.remove(B, C).unwrap()[0];
    sim.deliver_all();
    let PacketKind::Envelope(_, q) = sim.transcript[rm].kind else { panic!() };
    for d in [A, B, D] {
        let g = group(&sim, d);
        for x in [a, dm] {
            assert!(g.history().has_acked(&OpId::new(b, q.0), &x), "remove ack at {d}");
            assert!(!g.member_view(&x).contains(&c), "view of the acker at {d}");
        }
    }
}

/// #16 (P): "The newcomer is missing from its own member set, never sets is_welcomed, and
/// silently processes nothing." Here: after joining, the newcomer is in its own `members()`,
/// is active, and decrypts the next message.
#[test]
fn p16_newcomer_is_in_its_own_member_set_and_processes_traffic() {
    let mut sim = created(4, &[B, C], 116);
    sim.add(B, D).unwrap();
    sim.deliver_all();
    let g = group(&sim, D);
    assert!(g.members().contains(&g.me()));
    assert_eq!(*g.status(), Status::Active);
    assert!(sim.devices[D].events.iter().any(|e| matches!(e, Event::Joined { .. })));
    let m = last(sim.send(A, b"hi D").unwrap());
    sim.deliver_all();
    assert!(sim.decrypted(D, m));
}

/// #17 (P): "decrypt_from fetches and consumes the sender's one-time prekey bundle on the
/// receive path." Here: the newcomer joins and processes every add-ack (each a first 2SM
/// contact to it) with an empty prekey provider; nothing asks for a bundle, and it ends with
/// every member's ratchet state equal to the member's own.
#[test]
fn p17_receive_path_fetches_no_prekeys() {
    let mut sim = created(4, &[B, C], 117);
    sim.add(A, D).unwrap();
    deliver_all_except(&mut sim, &[D]);
    let inbox: Vec<Packet> = sim.devices[D].inbox.drain(..).collect();
    let mut empty = InMemoryPrekeyDirectory::new();
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let mut id = sim.devices[D].identity().clone();
    let w = inbox.iter().find(|p| p.kind == PacketKind::Welcome).unwrap();
    let mut ctx = Context { rng: &mut rng, now: NOW, prekeys: &mut empty, identity: &mut id };
    let (mut g, out) = Group::join(&mut ctx, &w.bytes, GroupConfig::default()).unwrap();
    let mut events = out.events;
    for p in inbox.iter().filter(|p| p.kind != PacketKind::Welcome) {
        let r = g.receive(&mut ctx, &p.bytes);
        match outcome(&r) {
            // The add envelope itself was already processed through the Welcome.
            Ok(Received::Duplicate) => {}
            _ => events.extend(r.unwrap().events),
        }
    }
    assert!(!events.iter().any(|e| matches!(e, Event::PrekeyBundleNeeded { .. })), "{events:?}");
    for d in [A, B, C] {
        let x = sim.mid(d).unwrap();
        assert!(g.same_ratchet_state(group(&sim, d), &x), "D's copy of {d}'s ratchet");
    }
}

/// A change to a prekey bundle.
type Mutation = Box<dyn Fn(&mut PrekeyBundle)>;

/// #18 (P): "The prekey signature covers neither the lifetime nor the one-time key." Here:
/// changing the signed prekey's validity window or suite, or the one-time prekey's key or
/// expiry, makes the bundle fail verification.
#[test]
fn p18_prekey_signatures_cover_lifetime_and_one_time_key() {
    let mut rng = ChaCha20Rng::seed_from_u64(118);
    let mut id = Identity::generate(&mut rng);
    let mut dir = InMemoryPrekeyDirectory::new();
    dir.publish_identity(&mut rng, &mut id, NOW, 2).unwrap();
    let ik = id.public_key();
    let good: PrekeyBundle = dir.bundle(&ik).unwrap();
    assert!(good.verify(&ik, NOW).is_ok());
    let mutations: Vec<(&str, Mutation)> = vec![
        ("spk not_after", Box::new(|b| b.signed_prekey.value.not_after += 3600)),
        ("spk not_before", Box::new(|b| b.signed_prekey.value.not_before -= 3600)),
        ("spk suite", Box::new(|b| b.signed_prekey.value.suite = 2)),
        ("spk key", Box::new(|b| b.signed_prekey.value.spk_pub.0[0] ^= 1)),
        ("opk key", Box::new(|b| b.one_time_prekey.as_mut().unwrap().value.opk_pub.0[0] ^= 1)),
        ("opk not_after", Box::new(|b| b.one_time_prekey.as_mut().unwrap().value.not_after += 3600)),
        ("opk id", Box::new(|b| b.one_time_prekey.as_mut().unwrap().value.opk_id.0 += 1)),
    ];
    for (what, m) in mutations {
        let mut b = good.clone();
        m(&mut b);
        assert!(b.verify(&ik, NOW).is_err(), "{what}");
    }
}

/// #19 (P): "Panics are reachable from input: assert_ne!(sender, my_id) on an echoed own
/// message …" Here: every own envelope echoed back (including one re-numbered ahead) returns
/// an error, changes nothing, and does not panic.
#[test]
fn p19_echoed_own_envelope_is_an_error_not_a_panic() {
    let mut sim = created(4, &[B, C], 119);
    sim.update(A).unwrap();
    sim.send(A, b"x").unwrap();
    sim.add(A, D).unwrap();
    sim.deliver_all();
    for d in [A, B] {
        let before = observe(group(&sim, d));
        let own: Vec<Vec<u8>> = sim
            .transcript
            .iter()
            .filter(|p| p.from == d && matches!(p.kind, PacketKind::Envelope(..)))
            .map(|p| p.bytes.clone())
            .collect();
        assert!(!own.is_empty());
        for bytes in &own {
            let r = recv(&mut sim, d, bytes);
            assert!(
                matches!(outcome(&r), Ok(Received::OwnEnvelope | Received::Duplicate | Received::Dropped(_))),
                "{d}: {r:?}"
            );
            let mut ahead = parse(bytes);
            if let SenderRef::Tag(_) = ahead.sender {
                ahead.seq = SeqNo(ahead.seq.0 + 50);
                let r = recv(&mut sim, d, &ahead.to_bytes());
                assert!(!matches!(outcome(&r), Ok(Received::Processed | Received::Buffered)), "{r:?}");
            }
        }
        assert_eq!(observe(group(&sim, d)), before);
    }
}

/// #20 (P): "Application AEAD has no associated data (no group, sender or epoch), and the
/// decryption ratchet advances before authentication." Here: a ciphertext of another group
/// or sender fails; a tampered ciphertext fails without advancing the ratchet (the genuine
/// one then decrypts); in a group, A's application envelope with a tampered ciphertext,
/// re-signed with A's real key, is REJECTed and leaves B able to decrypt the genuine one.
#[test]
fn p20_application_aead_has_associated_data_and_advances_after_authentication() {
    let gid = GroupId([1; 32]);
    let x = MemberId([2; 32]);
    let secret = [4u8; 32];
    let mut tx = SenderRatchet::new(gid, x, Epoch(1), Secret32::from_bytes(secret)).unwrap();
    let (_, ct) = tx.encrypt(SeqNo(2), b"m").unwrap();
    let mut other_group = SenderRatchet::new(GroupId([9; 32]), x, Epoch(1), Secret32::from_bytes(secret)).unwrap();
    assert!(other_group.decrypt(Epoch(1), MessageIndex(0), SeqNo(2), &ct).is_err());
    let mut other_sender = SenderRatchet::new(gid, MemberId([8; 32]), Epoch(1), Secret32::from_bytes(secret)).unwrap();
    assert!(other_sender.decrypt(Epoch(1), MessageIndex(0), SeqNo(2), &ct).is_err());
    let mut rx = SenderRatchet::new(gid, x, Epoch(1), Secret32::from_bytes(secret)).unwrap();
    let mut bad = ct.clone();
    bad[0] ^= 1;
    assert_eq!(rx.decrypt(Epoch(1), MessageIndex(0), SeqNo(2), &bad), Err(RatchetError::AuthenticationFailed));
    assert_eq!(rx.next_index(), MessageIndex(0));
    assert_eq!(&rx.decrypt(Epoch(1), MessageIndex(0), SeqNo(2), &ct).unwrap()[..], b"m");
    // In a group.
    let (mut sim, k1) = created_recorded(3, &[B, C], 120, 1201);
    let m = last(sim.send(A, b"genuine").unwrap());
    assert!(sim.deliver_id(C, m));
    let idx = index_at(&sim, C, m);
    let genuine = parse(&envelope_bytes(&sim, m));
    let mut tampered = genuine.clone();
    let n = tampered.body.len();
    tampered.body[n - 1] ^= 1;
    let g = group(&sim, A);
    let forged = resign(&tampered, &g.gid(), &g.me(), &k1);
    let mut b = Detached::of(&sim, B);
    let mut dir = sim.directory.clone();
    let out = b.recv(&mut dir, 1, &forged).unwrap();
    assert!(out.events.iter().any(|e| matches!(
        e,
        Event::Rejected { reason: RejectReason::Application(RatchetError::AuthenticationFailed), .. }
    )));
    assert_eq!(b.group.can_decrypt(&genuine.to_bytes(), idx).as_deref(), Some(&b"genuine"[..]));
}

/// #21 (P): "The same HKDF 'update' salt is used for member secrets and update secrets; the
/// X25519 identity key stands in for the member ID; the constants are BLAKE3 digests."
/// Nearest observable: every derivation label yields a distinct `info` prefix; member IDs
/// are derived (SHA-256) per group and per membership instance, never an identity key.
#[test]
fn p21_derivations_are_domain_separated() {
    use dcgka::crypto::info;
    let labels = [
        "member-secret",
        "input-member",
        "input-welcome",
        "input-add",
        "ratchet-update",
        "ratchet-next",
        "app-chain-init",
        "app-message-key",
        "app-chain-next",
        "member-id",
    ];
    let set: BTreeSet<Vec<u8>> = labels.iter().map(|l| info(l, &[])).collect();
    assert_eq!(set.len(), labels.len());
    let mut rng = ChaCha20Rng::seed_from_u64(121);
    let ik = Identity::generate(&mut rng).public_key();
    let g1 = GroupId([1; 32]);
    let g2 = GroupId([2; 32]);
    let creator = MemberId::derive(&g1, &ik, Origin::Creator);
    let mids = [
        creator,
        MemberId::derive(&g2, &ik, Origin::Creator),
        MemberId::derive(&g1, &ik, Origin::Operation(creator, SeqNo(2))),
        MemberId::derive(&g1, &ik, Origin::Operation(creator, SeqNo(3))),
    ];
    let distinct: BTreeSet<_> = mids.iter().collect();
    assert_eq!(distinct.len(), mids.len());
    assert!(mids.iter().all(|m| m.0 != ik.0));
}

/// #22 (P): "An error consumes the state (Clone exists only under test_utils); wall-clock
/// time drives key selection; there is no format versioning; encoding overhead is about 30%."
/// Here: `Group` is `Clone` in normal builds and an error leaves it usable; the same traffic
/// processed with different `now` gives identical bytes; a wrong version byte is refused as
/// `UnsupportedVersion`; an application envelope's overhead is within the §12 budget.
#[test]
fn p22_state_survives_errors_time_does_not_select_keys_and_format_is_versioned() {
    fn assert_clone<T: Clone>() {}
    assert_clone::<Group>();
    let mut sim = created(3, &[B, C], 122);
    let u = sim.update(A).unwrap()[0];
    let m = last(sim.send(A, &[7u8; 100]).unwrap());
    let envelope = envelope_bytes(&sim, m);
    assert!(envelope.len() - 100 <= 110, "overhead {}", envelope.len() - 100);
    let mut bad = envelope.clone();
    bad[0] ^= 0x20;
    assert!(matches!(
        recv(&mut sim, B, &bad),
        Err(GroupError::Malformed(dcgka::codec::DecodeError::UnsupportedVersion(_)))
    ));
    let b = Detached::of(&sim, B);
    let run = |now: u64| {
        let mut x = b.clone();
        let mut dir = sim.directory.clone();
        let mut out = Vec::new();
        for id in [u, m] {
            let mut rng = ChaCha20Rng::seed_from_u64(id as u64);
            let mut ctx = Context { rng: &mut rng, now, prekeys: &mut dir, identity: &mut x.identity };
            out.push(x.group.receive(&mut ctx, &envelope_bytes(&sim, id)));
        }
        (out, observe(&x.group))
    };
    let (o1, s1) = run(NOW);
    let (o2, s2) = run(NOW + 20 * 24 * 3600);
    assert_eq!(o1, o2);
    assert_eq!(s1, s2);
    assert!(o1[1].as_ref().unwrap().events.iter().any(|e| matches!(e, Event::Message { .. })));
}

/// #23 (P): "No production DGM or orderer, and no re-add support. member_secrets for members
/// who never ack grow without bound." Here: a member C that is offline (never acks) is
/// removed; repeated updates afterwards do not grow anyone's member-secret store; C's device
/// is then re-added as a new instance that reads new messages but nothing from before.
#[test]
fn p23_member_secrets_bounded_and_re_add_creates_new_instance() {
    let mut sim = created(3, &[B, C], 123);
    let old_c = sim.mid(C).unwrap();
    sim.update(A).unwrap();
    sim.remove(A, C).unwrap();
    deliver_all_except(&mut sim, &[C]);
    let counts = |sim: &Sim| [A, B].map(|d| group(sim, d).member_secret_count());
    sim.update(B).unwrap();
    deliver_all_except(&mut sim, &[C]);
    let after_one = counts(&sim);
    for _ in 0..5 {
        sim.update(A).unwrap();
        sim.update(B).unwrap();
        deliver_all_except(&mut sim, &[C]);
    }
    assert_eq!(counts(&sim), after_one, "member secrets grow with updates");
    for d in [A, B] {
        let members = group(&sim, d).members();
        assert!(group(&sim, d).member_secret_keys().iter().all(|(_, _, m)| !members.contains(m)));
    }
    let before = last(sim.send(B, b"while C is out").unwrap());
    sim.add(A, C).unwrap();
    sim.deliver_all();
    assert_no_errors(&sim);
    let new_c = sim.mid(C).unwrap();
    assert_ne!(new_c, old_c);
    assert!(group(&sim, A).members().contains(&new_c) && !group(&sim, A).members().contains(&old_c));
    let after = last(sim.send(B, b"welcome back").unwrap());
    sim.deliver_all();
    assert!(sim.decrypted(C, after));
    assert!(!sim.decrypted(C, before));
}

/// #24 (E): "Fig. 2's receive condition is inverted (the key-origin field is written from the
/// sender's perspective)." Here: the key reference names the receiver's key from the
/// receiver's side — a first message is `Prekey`; a second message before any reply is
/// `KeyIGaveYou` (the key pair whose secret the sender gave); the reply is `YourKey(2)` (the
/// key the original sender generated at its index 2). Each decrypts; a ciphertext whose
/// reference is switched to the other kind, or to another index, does not.
#[test]
fn p24_two_party_key_reference_is_named_from_the_receiver() {
    let mut rng = ChaCha20Rng::seed_from_u64(124);
    let mut alice = Identity::generate(&mut rng);
    let mut bob = Identity::generate(&mut rng);
    let mut dir = InMemoryPrekeyDirectory::new();
    dir.publish_identity(&mut rng, &mut alice, NOW, 2).unwrap();
    dir.publish_identity(&mut rng, &mut bob, NOW, 2).unwrap();
    let gid = GroupId([5; 32]);
    let a = MemberId::derive(&gid, &alice.public_key(), Origin::Creator);
    let b = MemberId::derive(&gid, &bob.public_key(), Origin::Operation(a, SeqNo(1)));
    let mut at_a = TwoPartySession::new(gid, a, b, bob.public_key());
    let mut at_b = TwoPartySession::new(gid, b, a, alice.public_key());
    let c1 = at_a.send(&mut rng, &mut dir, NOW, b"1").unwrap();
    let c2 = at_a.send(&mut rng, &mut dir, NOW, b"2").unwrap();
    assert!(matches!(c1.key_ref, KeyRef::Prekey { .. }));
    assert_eq!(c2.key_ref, KeyRef::KeyIGaveYou);
    // The wrong reading of the field fails.
    let mut swapped = c2.clone();
    swapped.key_ref = KeyRef::YourKey(1);
    let mut probe = at_b.clone();
    let mut keys = bob.key_store().clone();
    probe.receive(&mut keys, &c1).unwrap();
    assert!(probe.receive(&mut keys, &swapped).is_err());
    assert_eq!(&at_b.receive(bob.key_store_mut(), &c1).unwrap()[..], b"1");
    assert_eq!(&at_b.receive(bob.key_store_mut(), &c2).unwrap()[..], b"2");
    let r = at_b.send(&mut rng, &mut dir, NOW, b"3").unwrap();
    assert_eq!(r.key_ref, KeyRef::YourKey(2));
    for wrong in [KeyRef::KeyIGaveYou, KeyRef::YourKey(1)] {
        let mut w = r.clone();
        w.key_ref = wrong;
        let mut probe = at_a.clone();
        let mut keys = alice.key_store().clone();
        assert!(probe.receive(&mut keys, &w).is_err(), "{wrong:?}");
    }
    assert_eq!(&at_a.receive(alice.key_store_mut(), &r).unwrap()[..], b"3");
    let r2 = at_a.send(&mut rng, &mut dir, NOW, b"4").unwrap();
    assert_eq!(r2.key_ref, KeyRef::YourKey(1), "Bob's key at its index 1");
    assert_eq!(&at_b.receive(bob.key_store_mut(), &r2).unwrap()[..], b"4");
}

/// #25 (E): "Fig. 4 read literally has a removed member ack its own removal, and sends the
/// add-ack ratchet to cancelled adds." Here: the removed member sends only its farewell when
/// it processes its removal (§7.5: an ack with no secret and no forward, which the others
/// do not record as an ack of the removal), reports `RemovedFromGroup` and ends `Removed`
/// with no member secrets. (The cancelled-add half is
/// asserted by `p14_no_ratchet_sent_to_cancelled_add`.)
#[test]
fn p25_removed_member_does_not_ack_its_own_removal() {
    let mut sim = created(3, &[B, C], 125);
    let sent_by_c = |sim: &Sim| sim.transcript.iter().filter(|p| p.from == C).count();
    let before = sent_by_c(&sim);
    sim.remove(A, C).unwrap();
    sim.deliver_all();
    assert_no_errors(&sim);
    assert_eq!(sent_by_c(&sim), before + 1, "C sent more than its farewell after its removal");
    let g = &sim.devices[C].retired[0];
    assert!(matches!(g.status(), Status::Removed { .. }));
    assert_eq!(g.member_secret_count(), 0);
    assert!(sim.devices[C].events.iter().any(|e| matches!(e, Event::RemovedFromGroup { .. })));
    let c = g.me();
    for d in [A, B] {
        assert!(!group(&sim, d).history().has_acked(&OpId::new(sim.mid(A).unwrap(), 2), &c));
    }
}

/// #26 (E): "member-view(me) must cover the whole local history. Filtering on one's own acks
/// would forward member secrets to a just-removed member." Here: group {A, B, C, D}; D adds E
/// ∥ A removes C. B processes the add, then the remove: its ack of the remove forwards its
/// member secret to E (whom A did not know) and to nobody else — in particular not to C,
/// whom the remove being processed has just removed.
#[test]
fn p26_no_forward_to_a_just_removed_member() {
    let mut sim = created(5, &[B, C, D], 126);
    let add = sim.add(D, E).unwrap()[0];
    let rm = sim.remove(A, C).unwrap()[0];
    assert!(sim.deliver_id(B, add));
    assert!(sim.deliver_id(B, rm));
    let ack = last_of_kind(&sim, B, EnvelopeKind::Ack);
    let ControlBody::Ack { of, forwards } = control_body(&sim, ack) else { panic!() };
    assert_eq!(of.of_sender, sim.mid(A).unwrap().tag());
    sim.deliver_all();
    assert_no_errors(&sim);
    let e = sim.mid(E).unwrap();
    assert_eq!(forwards.iter().map(|f| f.recipient).collect::<Vec<_>>(), vec![e.tag()]);
    assert_eq!(names(&sim, B), ["A", "B", "D", "E"]);
    assert_oracles(&sim);
}
