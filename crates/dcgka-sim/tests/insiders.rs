//! Insider misbehaviour (issue 9, items 6, 8 and 11): a member that signs what it sends can
//! still try to hurt the others; each test reproduces one such attack and asserts that it
//! is detected, blamed on its author and recoverable, or bounded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;

use std::collections::BTreeSet;

use dcgka::codec::Encode;
use dcgka::crypto::{SigningSecret, VerifyingKey};
use dcgka::events::{Event, Misbehaviour, RejectReason};
use dcgka::group::{Group, GroupConfig, Status};
use dcgka::ids::SeqNo;
use dcgka::prekeys::{CarriedPrekey, Identity, InMemoryPrekeyDirectory};
use dcgka::wire::{CertifiedKey, ControlBody, Envelope, EnvelopeKind};
use dcgka_sim::names::{A, B, C, D, E};
use dcgka_sim::{PacketKind, Sim, oracle};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

// ------------------------------------------------------------------------------------
// Item 8: one bad ciphertext
// ------------------------------------------------------------------------------------

/// A (an insider holding its own signing key) sends an update whose seed ciphertext for C
/// is garbage, correctly signed. C cannot follow the group any more (§5.6 FATAL), but it
/// now reports `Misbehaviour` naming A, with the signed envelope as evidence that verifies
/// under A's key; B, whose ciphertext is fine, carries on. Recovery: B removes A and the
/// stale instance of C, then re-adds C's device, which joins as a new instance and reads
/// the group again. (On the old code C only reported `GroupStateCorrupted`, naming nobody.)
#[test]
fn bad_seed_ciphertext_is_blamed_on_its_signer_and_the_victim_recovers() {
    let (mut sim, k1) = created_recorded(3, &[B, C], 81, 8101);
    let (gid, a_mid) = (group(&sim, A).gid(), sim.mid(A).unwrap());
    let old_c = sim.mid(C).unwrap();
    let u = sim.update(A).unwrap()[0];
    let genuine = parse(&envelope_bytes(&sim, u));
    let ControlBody::Update { mut seeds } = control_body(&sim, u) else { panic!("not an update") };
    // C's ciphertext: recipients are sorted by MID.
    let k = usize::from(old_c > sim.mid(B).unwrap());
    let last = seeds.cts[k].ct.len() - 1;
    seeds.cts[k].ct[last] ^= 1;
    let mut bad = genuine.clone();
    bad.body = ControlBody::Update { seeds }.to_bytes();
    let bad_bytes = resign(&bad, &gid, &a_mid, &k1);
    sim.devices[C].inbox.retain(|p| p.id != u);

    let out = recv(&mut sim, C, &bad_bytes).unwrap();
    let blamed: Vec<_> = out
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Misbehaviour { sender, seq, kind, envelope, batch } => {
                Some((*sender, *seq, *kind, envelope.clone(), *batch))
            }
            _ => None,
        })
        .collect();
    assert_eq!(blamed.len(), 1, "{:?}", out.events);
    let (sender, seq, kind, evidence, batch) = blamed[0].clone();
    assert_eq!((sender, seq, kind, batch), (a_mid, genuine.seq, Misbehaviour::BadSeedCiphertext, None));
    assert_eq!(evidence, bad_bytes, "the evidence is the signed envelope as received");
    assert!(parse(&evidence).verify(&gid, &a_mid, &k1.verifying_key()).is_ok(), "the evidence verifies under A's key");
    assert!(out.events.iter().any(|e| matches!(e, Event::GroupStateCorrupted { .. })));
    assert!(matches!(group(&sim, C).status(), Status::Corrupted { .. }));
    assert!(out.broadcast.is_empty(), "the victim acknowledges nothing");

    // B is unaffected.
    deliver_all_except(&mut sim, &[C]);
    assert_eq!(*group(&sim, B).status(), Status::Active);
    assert!(group(&sim, B).members().contains(&old_c), "nobody else can tell yet");

    // Recovery: remove the offender and the broken instance, re-add the victim's device.
    sim.remove(B, A).unwrap();
    sim.remove_member(B, old_c).unwrap();
    sim.deliver_all();
    sim.add(B, C).unwrap();
    sim.deliver_all();
    let new_c = sim.mid(C).unwrap();
    assert_ne!(new_c, old_c, "the victim joins as a new instance");
    assert_eq!(*group(&sim, C).status(), Status::Active);
    assert_eq!(group(&sim, B).members(), [sim.mid(B).unwrap(), new_c].into_iter().collect());
    let m = *sim.send(B, b"welcome back").unwrap().last().unwrap();
    sim.deliver_all();
    assert!(sim.decrypted(C, m), "the victim reads the group again");
    let r = *sim.send(C, b"thanks").unwrap().last().unwrap();
    sim.deliver_all();
    assert!(sim.decrypted(B, r));
}

/// A garbage `ratchet_ct` in an add-ack: B (whose signing key we hold, as B would) answers
/// A's add of C with a ratchet state for C that does not decrypt. The newcomer C reports
/// `Misbehaviour` naming B, with the signed add-ack as evidence; A and B carry on.
#[test]
fn bad_ratchet_ciphertext_in_an_add_ack_is_blamed_on_the_acker() {
    let mut sim = Sim::new(3, 82);
    let (ids, draws) = create_recorded(&mut sim, B, &[A], 8201);
    sim.deliver_all();
    let kb = signing_key_for(&draws, &parse(&envelope_bytes(&sim, ids[0])).new_signing_key.unwrap());
    let (gid, b_mid) = (group(&sim, B).gid(), sim.mid(B).unwrap());
    let add = sim.add(A, C).unwrap();
    let welcome = add.iter().copied().find(|id| sim.transcript[*id].kind == PacketKind::Welcome).unwrap();
    deliver_all_except(&mut sim, &[C]);
    let ack_id = (0..sim.transcript.len())
        .rev()
        .find(|id| {
            sim.transcript[*id].from == B
                && matches!(sim.transcript[*id].kind, PacketKind::Envelope(EnvelopeKind::AddAck, _))
        })
        .unwrap();
    let genuine = parse(&envelope_bytes(&sim, ack_id));
    let ControlBody::AddAck { of, ratchet_ct: Some(mut rc) } = control_body(&sim, ack_id) else { panic!() };
    rc.ct[0] ^= 1;
    let mut bad = genuine.clone();
    bad.body = ControlBody::AddAck { of, ratchet_ct: Some(rc) }.to_bytes();
    let bad_bytes = resign(&bad, &gid, &b_mid, &kb);
    assert!(sim.deliver_id(C, welcome));
    sim.devices[C].inbox.retain(|p| p.id != ack_id);
    assert_eq!(*group(&sim, C).status(), Status::Active);
    let out = recv(&mut sim, C, &bad_bytes).unwrap();
    assert!(
        out.events.iter().any(|e| matches!(e,
            Event::Misbehaviour { sender, seq, kind: Misbehaviour::BadRatchetCiphertext, envelope, batch: None }
                if *sender == b_mid && *seq == genuine.seq && *envelope == bad_bytes)),
        "{:?}",
        out.events
    );
    assert!(matches!(group(&sim, C).status(), Status::Corrupted { .. }));
    assert_eq!(*group(&sim, A).status(), Status::Active);
    assert_eq!(*group(&sim, B).status(), Status::Active);
}

/// A garbage forward in an ack: B updates while A adds D concurrently; C (whose signing
/// key we hold) processes the add, then the update, and forwards its member secret to D,
/// whom B did not know; the forward is garbage. D blames C with the signed ack as evidence.
#[test]
fn bad_forward_in_an_ack_is_blamed_on_the_acker() {
    let mut sim = Sim::new(4, 83);
    let (ids, draws) = create_recorded(&mut sim, C, &[A, B], 8301);
    sim.deliver_all();
    let kc = signing_key_for(&draws, &parse(&envelope_bytes(&sim, ids[0])).new_signing_key.unwrap());
    let (gid, c_mid) = (group(&sim, C).gid(), sim.mid(C).unwrap());
    let ub = sim.update(B).unwrap()[0];
    let add = sim.add(A, D).unwrap();
    let add_env = add.iter().copied().find(|id| sim.transcript[*id].kind != PacketKind::Welcome).unwrap();
    assert!(sim.deliver_id(C, add_env));
    assert!(sim.deliver_id(C, ub));
    let ack_id = sim.last_from(C).unwrap();
    let genuine = parse(&envelope_bytes(&sim, ack_id));
    let ControlBody::Ack { of, mut forwards } = control_body(&sim, ack_id) else { panic!("not an ack") };
    assert_eq!(forwards.len(), 1, "C forwards to D alone");
    forwards[0].ct.ct[0] ^= 1;
    let mut bad = genuine.clone();
    bad.body = ControlBody::Ack { of, forwards }.to_bytes();
    let bad_bytes = resign(&bad, &gid, &c_mid, &kc);
    for p in sim.devices[D].inbox.iter_mut().filter(|p| p.id == ack_id) {
        p.bytes = bad_bytes.clone();
    }
    deliver_all_except(&mut sim, &[D]);
    while sim.deliver_next(D) {}
    let blamed = sim.events_at(D, |e| matches!(e, Event::Misbehaviour { .. }));
    assert_eq!(
        blamed,
        vec![Event::Misbehaviour {
            sender: c_mid,
            seq: genuine.seq,
            kind: Misbehaviour::BadForward,
            envelope: bad_bytes,
            batch: None
        }]
    );
    assert!(!sim.events_at(D, |e| matches!(e, Event::GroupStateCorrupted { .. })).is_empty());
    assert!(!sim.devices[D].active(), "the device retired the broken instance");
    for x in [A, B, C] {
        assert_eq!(*group(&sim, x).status(), Status::Active);
    }
}

// ------------------------------------------------------------------------------------
// Item 6: a prekey bundle nobody can fetch
// ------------------------------------------------------------------------------------

/// A adds E, then E's bundle disappears from every directory before anyone else processes
/// the add (it was never there for them, or it expired, or a malicious adder used one it
/// had kept). On the old code every member reported `PrekeyBundleNeeded` for ever at A's
/// add, and every sender whose tag sorts after A's froze behind it. Now the add carries
/// E's signed prekey, every member seals its add-ack to it without fetching anything, E
/// joins and reads the group, and the other senders' traffic flows throughout.
#[test]
fn an_add_needs_no_bundle_at_the_members_and_blocks_no_one() {
    let mut sim = created(5, &[B, C, D], 61);
    sim.add(A, E).unwrap();
    // No member can fetch any bundle from now on.
    sim.directory = InMemoryPrekeyDirectory::new();
    let mb = *sim.send(B, b"from B").unwrap().last().unwrap();
    let mc = *sim.send(C, b"from C").unwrap().last().unwrap();
    let md = *sim.send(D, b"from D").unwrap().last().unwrap();
    sim.deliver_all();
    for d in [A, B, C, D, E] {
        assert!(sim.events_at(d, |e| matches!(e, Event::PrekeyBundleNeeded { .. })).is_empty(), "device {d}");
    }
    let e_mid = sim.mid(E).expect("E joined");
    let all: BTreeSet<_> = [A, B, C, D, E].iter().map(|d| sim.mid(*d).unwrap()).collect();
    for d in [A, B, C, D, E] {
        assert_eq!(group(&sim, d).members(), all, "device {d} agrees on the membership");
    }
    for (m, from) in [(mb, B), (mc, C), (md, D)] {
        for d in [A, B, C, D] {
            assert!(d == from || sim.decrypted(d, m), "device {d} decrypts packet {m}");
        }
    }
    // E received every add-ack (sealed to its carried signed prekey) and reads everyone.
    for from in [A, B, C, D] {
        let m = *sim.send(from, b"hello E").unwrap().last().unwrap();
        sim.deliver_all();
        assert!(sim.decrypted(E, m), "E reads device {from}");
    }
    let m = *sim.send(E, b"hello all").unwrap().last().unwrap();
    sim.deliver_all();
    for d in [A, B, C, D] {
        assert!(sim.decrypted(d, m));
    }
    assert!(group(&sim, A).members().contains(&e_mid));
    assert_oracles(&sim);
}

/// A signs an add of an identity that has no prekey bundle anywhere, so it cannot carry a
/// genuine signed prekey: with one signed by another key, or a tampered one, every member
/// rejects the add alike (`InvalidAdd`, V2; a control REJECT cuts A off), and nobody waits for a bundle. A
/// genuine but long-expired signed prekey is accepted alike by everyone (receivers consult
/// no clock), so the outcome never depends on a member's clock or directory.
#[test]
fn an_add_whose_carried_prekey_fails_is_rejected_by_every_member() {
    let (mut sim, k1) = created_recorded(4, &[B, C, D], 62, 6201);
    let (gid, a_mid) = (group(&sim, A).gid(), sim.mid(A).unwrap());
    let a_identity = sim.devices[A].identity().signing_key().clone();
    let cert = |k: &VerifyingKey| CertifiedKey::issue(&a_identity, &gid, &a_mid, SeqNo(2), *k).cert;
    let mut rng = ChaCha20Rng::seed_from_u64(0x9e05_7a11);
    let mut ghost = Identity::generate(&mut rng);
    let ghost_ik = ghost.public_key();
    let mut impostor = Identity::generate(&mut rng);
    let not_by_ghost = CarriedPrekey::of(&impostor.new_signed_prekey(&mut rng, 0, u64::MAX)).unwrap();
    let mut tampered = CarriedPrekey::of(&ghost.new_signed_prekey(&mut rng, 0, u64::MAX)).unwrap();
    tampered.not_after -= 1;
    for (i, prekey) in [not_by_ghost, tampered].into_iter().enumerate() {
        let mut sim = sim.clone();
        let body = ControlBody::Add { target: ghost_ik, prekey };
        let next_key = SigningSecret::generate(&mut rng).verifying_key();
        let env = Envelope::seal(
            EnvelopeKind::Add,
            &gid,
            SeqNo(2),
            &a_mid,
            None,
            Some(next_key),
            Some(cert(&next_key)),
            body.to_bytes(),
            &k1,
        );
        for d in [B, C, D] {
            let out = recv(&mut sim, d, &env.to_bytes()).unwrap();
            assert_eq!(
                out.events,
                vec![Event::Rejected {
                    sender: a_mid,
                    seq: SeqNo(2),
                    reason: RejectReason::InvalidAdd("the carried signed prekey does not verify")
                }],
                "variant {i}, device {d}"
            );
            assert!(group(&sim, d).members().iter().all(|m| group(&sim, d).identity_of(m) != Some(ghost_ik)));
        }
        let m = *sim.send(B, b"still flowing").unwrap().last().unwrap();
        sim.deliver_all();
        assert!(sim.decrypted(C, m) && sim.decrypted(D, m));
    }
    // A genuine signed prekey that expired long ago: every member accepts the add alike.
    let expired = CarriedPrekey::of(&ghost.new_signed_prekey(&mut rng, 10, 20)).unwrap();
    let body = ControlBody::Add { target: ghost_ik, prekey: expired };
    let next_key = SigningSecret::generate(&mut rng).verifying_key();
    let env = Envelope::seal(
        EnvelopeKind::Add,
        &gid,
        SeqNo(2),
        &a_mid,
        None,
        Some(next_key),
        Some(cert(&next_key)),
        body.to_bytes(),
        &k1,
    );
    let mut acked = 0;
    for d in [B, C, D] {
        let out = recv(&mut sim, d, &env.to_bytes()).unwrap();
        assert!(
            out.events
                .iter()
                .any(|e| matches!(e, Event::MemberAdded { by, identity, .. } if *by == a_mid && *identity == ghost_ik)),
            "device {d}: {:?}",
            out.events
        );
        acked += out.broadcast.len();
    }
    assert_eq!(acked, 3, "every member sends its add-ack without fetching a bundle");
}

// ------------------------------------------------------------------------------------
// Item 11: a removed member's late operations
// ------------------------------------------------------------------------------------

/// The limit of strong removal (§7.5): A removes B while B is cut off from the network;
/// every remaining member processes and acknowledges the removal. Much later B, which never
/// received its removal, removes C. B's remove is concurrent with its own removal, so every
/// member applies it alike: C leaves at A, C and D, and the remaining members agree, and
/// each reports `LateOperation`. This is the default; `withhold_late_operations` bounds it
/// (the `with_withholding_*` tests below).
#[test]
fn a_removed_member_late_remove_applies_alike_everywhere() {
    let mut sim = created(4, &[B, C, D], 111);
    let (a, b, c, d) = (sim.mid(A).unwrap(), sim.mid(B).unwrap(), sim.mid(C).unwrap(), sim.mid(D).unwrap());
    let r = sim.remove(A, B).unwrap()[0];
    let PacketKind::Envelope(EnvelopeKind::Remove, r_seq) = sim.transcript[r].kind else { panic!("not a remove") };
    deliver_all_except(&mut sim, &[B]);
    for x in [A, C, D] {
        assert_eq!(group(&sim, x).members(), [a, c, d].into_iter().collect(), "device {x}");
    }
    // Messages flow meanwhile: the removal is long settled.
    let m = *sim.send(C, b"B is gone").unwrap().last().unwrap();
    deliver_all_except(&mut sim, &[B]);
    assert!(sim.decrypted(A, m) && sim.decrypted(D, m) && !sim.decrypted(B, m));
    // B still thinks it is a member and removes C.
    assert!(group(&sim, B).members().contains(&b));
    let late = sim.remove(B, C).unwrap()[0];
    let PacketKind::Envelope(EnvelopeKind::Remove, late_seq) = sim.transcript[late].kind else { panic!() };
    sim.deliver_all();
    // Every member that processes it says that it came late, and after whose removal.
    for x in [A, C, D] {
        assert_eq!(
            sim.events_at(x, |e| matches!(e, Event::LateOperation { .. })),
            vec![Event::LateOperation { sender: b, seq: late_seq, remover: a, removal: r_seq }],
            "device {x}"
        );
    }
    assert!(sim.mid(B).is_none() || *group(&sim, B).status() != Status::Active, "B processed its removal");
    assert!(
        !sim.events_at(C, |e| matches!(e, Event::RemovedFromGroup { by } if *by == b)).is_empty(),
        "C was removed by the late remove"
    );
    for x in [A, D] {
        assert_eq!(group(&sim, x).members(), [a, d].into_iter().collect(), "device {x}");
    }
}

/// Operations that merely cross a removal are not reported as late: a mutual removal in a
/// group of four (A removes B while B removes A), delivered at once, removes both at every
/// member and nobody reports `LateOperation`.
#[test]
fn a_mutual_removal_is_not_reported_as_late() {
    let mut sim = created(4, &[B, C, D], 112);
    let (c, d) = (sim.mid(C).unwrap(), sim.mid(D).unwrap());
    let b = sim.mid(B).unwrap();
    sim.remove(A, B).unwrap();
    sim.remove_member(B, sim.mid(A).unwrap()).unwrap();
    sim.deliver_all();
    for x in [C, D] {
        assert_eq!(group(&sim, x).members(), [c, d].into_iter().collect(), "device {x}");
        assert!(sim.events_at(x, |e| matches!(e, Event::LateOperation { .. })).is_empty(), "device {x}");
    }
    assert!(!group(&sim, C).members().contains(&b));
}

/// `created`, with every member withholding removed members' late operations (§7.5).
fn created_withholding(n: usize, others: &[usize], seed: u64) -> Sim {
    created_with(n, others, seed, |s| s.config.withhold_late_operations = true)
}

/// The bound of item 11: with `withhold_late_operations`, B's late remove of C, which
/// reaches every member only after it processed B's removal, is withheld everywhere: C
/// stays, every member reports `LateOperationWithheld` once, nothing of B's is processed
/// after it, and the state survives a snapshot. A newcomer added afterwards withholds it
/// too, and the group goes on.
#[test]
fn with_withholding_a_late_remove_after_the_removal_is_withheld_everywhere() {
    let mut sim = created_withholding(5, &[B, C, D], 113);
    let (a, b, c, d) = (sim.mid(A).unwrap(), sim.mid(B).unwrap(), sim.mid(C).unwrap(), sim.mid(D).unwrap());
    sim.remove(A, B).unwrap();
    deliver_all_except(&mut sim, &[B]);
    let late = sim.remove(B, C).unwrap()[0];
    let PacketKind::Envelope(EnvelopeKind::Remove, late_seq) = sim.transcript[late].kind else { panic!() };
    sim.deliver_all();
    let withheld = vec![Event::LateOperationWithheld { sender: b, seq: late_seq }];
    for x in [A, C, D] {
        assert_eq!(group(&sim, x).members(), [a, c, d].into_iter().collect(), "device {x}");
        assert_eq!(sim.events_at(x, |e| matches!(e, Event::LateOperationWithheld { .. })), withheld, "device {x}");
        assert!(sim.events_at(x, |e| matches!(e, Event::LateOperation { .. })).is_empty(), "device {x}");
        assert!(group(&sim, x).sync_state()[&b] < late_seq, "device {x} processed nothing of B's from there on");
    }
    assert!(sim.events_at(C, |e| matches!(e, Event::RemovedFromGroup { .. })).is_empty(), "C stays");
    // The withholding survives a restart, and is not reported twice.
    let restored = Group::restore(&group(&sim, A).snapshot()).unwrap();
    assert_eq!(restored.snapshot(), group(&sim, A).snapshot());
    sim.devices[A].install(restored);
    sim.sync();
    sim.deliver_all();
    assert_eq!(sim.events_at(A, |e| matches!(e, Event::LateOperationWithheld { .. })), withheld);
    // A newcomer withholds it as well once sync brings it; messages flow among the members.
    sim.add(A, E).unwrap();
    sim.deliver_all();
    sim.sync();
    sim.deliver_all();
    let e = sim.mid(E).unwrap();
    assert_eq!(group(&sim, E).members(), [a, c, d, e].into_iter().collect());
    let m = *sim.send(C, b"still here").unwrap().last().unwrap();
    sim.deliver_all();
    assert!([A, D, E].iter().all(|x| sim.decrypted(*x, m)));
    assert!(oracle::global_oracles(&sim).is_empty(), "{:?}", oracle::global_oracles(&sim));
}

/// A late operation that some member processed before it learnt of the removal is
/// released everywhere by that member's acknowledgment. A removes B and then E, and A, C
/// and D settle both removals; E and B, cut off, know nothing of it. B removes D late: A,
/// C and D withhold it, but E, which has not heard of B's removal (nor of its own),
/// processes it and acknowledges it, and that releases it at A, C and D. Every member ends
/// with the same group, as without the option.
#[test]
fn with_withholding_a_late_operation_that_one_member_processed_is_released_everywhere() {
    let mut sim = created_withholding(5, &[B, C, D, E], 114);
    let (a, b, c) = (sim.mid(A).unwrap(), sim.mid(B).unwrap(), sim.mid(C).unwrap());
    sim.remove(A, B).unwrap();
    sim.remove(A, E).unwrap();
    deliver_all_except(&mut sim, &[B, E]);
    let late = sim.remove(B, D).unwrap()[0];
    let PacketKind::Envelope(EnvelopeKind::Remove, late_seq) = sim.transcript[late].kind else { panic!() };
    assert!(sim.deliver_id(A, late));
    assert_eq!(
        sim.events_at(A, |e| matches!(e, Event::LateOperationWithheld { .. })),
        vec![Event::LateOperationWithheld { sender: b, seq: late_seq }]
    );
    assert!(group(&sim, A).members().contains(&sim.mid(D).unwrap()), "withheld at A");
    // E has not seen the removals: it applies the remove and acknowledges it.
    assert!(sim.deliver_id(E, late));
    assert!(!group(&sim, E).members().contains(&sim.mid(D).unwrap()));
    sim.deliver_all();
    for x in [A, C] {
        assert_eq!(group(&sim, x).members(), [a, c].into_iter().collect(), "device {x}");
    }
    assert!(!sim.events_at(D, |e| matches!(e, Event::RemovedFromGroup { by } if *by == b)).is_empty());
    assert!(oracle::global_oracles(&sim).is_empty(), "{:?}", oracle::global_oracles(&sim));
}

/// The option is safe to set per member: D does not withhold, so it applies B's late
/// remove of C and acknowledges it, and that acknowledgment releases it at A and C, which
/// withhold. The group stays whole; the bound only holds where every member sets it.
#[test]
fn withholding_at_some_members_only_never_splits_the_group() {
    let mut sim = created_withholding(4, &[B, C, D], 115);
    let (a, b, d) = (sim.mid(A).unwrap(), sim.mid(B).unwrap(), sim.mid(D).unwrap());
    sim.remove(A, B).unwrap();
    deliver_all_except(&mut sim, &[B]);
    let (g, _) = sim.devices[D].group_mut().unwrap();
    g.set_config(GroupConfig { withhold_late_operations: false, ..g.config() });
    sim.config.withhold_late_operations = true;
    sim.remove(B, C).unwrap();
    sim.deliver_all();
    for x in [A, D] {
        assert_eq!(group(&sim, x).members(), [a, d].into_iter().collect(), "device {x}");
    }
    assert!(sim.events_at(D, |e| matches!(e, Event::LateOperationWithheld { .. })).is_empty());
    assert!(!sim.events_at(C, |e| matches!(e, Event::RemovedFromGroup { by } if *by == b)).is_empty());
    assert!(oracle::global_oracles(&sim).is_empty(), "{:?}", oracle::global_oracles(&sim));
}

/// The trade-off: a mutual removal (A removes B while B removes A) in which every other
/// member, and A, receive A's remove first removes only B; without the option both leave
/// (`a_mutual_removal_is_not_reported_as_late`).
#[test]
fn with_withholding_a_mutual_removal_seen_one_way_removes_one_side() {
    let mut sim = created_withholding(4, &[B, C, D], 116);
    let (a, c, d) = (sim.mid(A).unwrap(), sim.mid(C).unwrap(), sim.mid(D).unwrap());
    let r = sim.remove(A, B).unwrap()[0];
    for x in [C, D] {
        assert!(sim.deliver_id(x, r));
    }
    sim.remove_member(B, a).unwrap();
    sim.deliver_all();
    for x in [A, C, D] {
        assert_eq!(group(&sim, x).members(), [a, c, d].into_iter().collect(), "device {x}");
        assert_eq!(sim.events_at(x, |e| matches!(e, Event::LateOperationWithheld { .. })).len(), 1, "device {x}");
    }
    assert!(oracle::global_oracles(&sim).is_empty(), "{:?}", oracle::global_oracles(&sim));
}

/// An operation that crosses a removal that is not yet settled is not withheld: C, the
/// target of B's remove, receives it before A's removal of B and leaves, and since C never
/// acknowledges that removal, it never settles at A or D, which apply B's remove too. The
/// outcome is the paper's, and nobody is left listed as a member that has gone.
#[test]
fn with_withholding_an_operation_crossing_an_unsettled_removal_applies_everywhere() {
    let mut sim = created_withholding(4, &[B, C, D], 117);
    let (a, b, d) = (sim.mid(A).unwrap(), sim.mid(B).unwrap(), sim.mid(D).unwrap());
    let r = sim.remove(A, B).unwrap()[0];
    assert!(sim.deliver_id(D, r));
    let late = sim.remove(B, C).unwrap()[0];
    assert!(sim.deliver_id(C, late));
    assert!(!sim.events_at(C, |e| matches!(e, Event::RemovedFromGroup { by } if *by == b)).is_empty());
    sim.deliver_all();
    for x in [A, D] {
        assert_eq!(group(&sim, x).members(), [a, d].into_iter().collect(), "device {x}");
        assert!(sim.events_at(x, |e| matches!(e, Event::LateOperationWithheld { .. })).is_empty(), "device {x}");
    }
    assert!(oracle::global_oracles(&sim).is_empty(), "{:?}", oracle::global_oracles(&sim));
}

/// The target of a late remove leaves with a farewell ack. C learns of B's removal but not
/// yet that D saw it too, so at C the removal is not settled, while at A and D it is. B's
/// late remove of C reaches all three: A and D withhold it, C processes it and leaves, and
/// its farewell ack (no secret) releases the remove at A and D, which then drop C too.
/// Without the farewell A and D would list C for good although it has left.
#[test]
fn with_withholding_a_target_that_leaves_releases_its_removal_everywhere() {
    let mut sim = created_withholding(4, &[B, C, D], 118);
    let (a, b, d) = (sim.mid(A).unwrap(), sim.mid(B).unwrap(), sim.mid(D).unwrap());
    let r = sim.remove(A, B).unwrap()[0];
    assert!(sim.deliver_id(C, r));
    let c_ack = sim.last_from(C).unwrap();
    assert!(sim.deliver_id(D, r));
    let d_ack = sim.last_from(D).unwrap();
    for (to, id) in [(A, c_ack), (D, c_ack), (A, d_ack)] {
        assert!(sim.deliver_id(to, id));
    }
    let late = sim.remove(B, C).unwrap()[0];
    let PacketKind::Envelope(EnvelopeKind::Remove, late_seq) = sim.transcript[late].kind else { panic!() };
    for x in [A, D] {
        assert!(sim.deliver_id(x, late));
        assert_eq!(
            sim.events_at(x, |e| matches!(e, Event::LateOperationWithheld { .. })),
            vec![Event::LateOperationWithheld { sender: b, seq: late_seq }],
            "device {x}"
        );
    }
    assert!(sim.deliver_id(C, late));
    assert!(!sim.events_at(C, |e| matches!(e, Event::RemovedFromGroup { by } if *by == b)).is_empty());
    let farewell = sim.last_from(C).unwrap();
    assert_eq!(sim.transcript[farewell].kind, PacketKind::Envelope(EnvelopeKind::Ack, SeqNo(3)));
    sim.deliver_all();
    for x in [A, D] {
        assert_eq!(group(&sim, x).members(), [a, d].into_iter().collect(), "device {x}");
        assert!(sim.events_at(x, |e| matches!(e, Event::Rejected { .. })).is_empty(), "device {x}");
    }
    assert!(oracle::global_oracles(&sim).is_empty(), "{:?}", oracle::global_oracles(&sim));
}

/// The fork (trade-off 3 of §7.5): A and B are cut apart; A removes B and adds C, B removes
/// A and adds D. Each side's removal settles on its side (the newcomer joined after it), so
/// after the partition heals each side withholds the other's removal: the group becomes
/// two groups with no member in common, each told `LateOperationWithheld`. Without the
/// option both removals would apply and neither side would keep the group.
#[test]
fn with_withholding_two_sides_that_remove_each_other_fork() {
    let mut sim = created_withholding(4, &[B], 119);
    let (a, b) = (sim.mid(A).unwrap(), sim.mid(B).unwrap());
    sim.split(vec![0, 1, 0, 1]);
    sim.remove(A, B).unwrap();
    sim.add(A, C).unwrap();
    sim.remove(B, A).unwrap();
    sim.add(B, D).unwrap();
    sim.deliver_all();
    sim.heal();
    sim.deliver_all();
    sim.sync();
    sim.deliver_all();
    let (c, d) = (sim.mid(C).unwrap(), sim.mid(D).unwrap());
    for x in [A, C] {
        assert_eq!(group(&sim, x).members(), [a, c].into_iter().collect(), "device {x}");
        assert!(
            sim.events_at(x, |e| matches!(e, Event::LateOperationWithheld { sender, .. } if *sender == b)).len() == 1,
            "device {x}"
        );
    }
    for x in [B, D] {
        assert_eq!(group(&sim, x).members(), [b, d].into_iter().collect(), "device {x}");
        assert!(
            sim.events_at(x, |e| matches!(e, Event::LateOperationWithheld { sender, .. } if *sender == a)).len() == 1,
            "device {x}"
        );
    }
    assert!(oracle::global_oracles(&sim).is_empty(), "{:?}", oracle::global_oracles(&sim));
    // Each fork goes on by itself.
    let m = *sim.send(C, b"our side").unwrap().last().unwrap();
    sim.deliver_all();
    assert!(sim.decrypted(A, m) && !sim.decrypted(B, m) && !sim.decrypted(D, m));
}
