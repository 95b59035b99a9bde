//! Insider misbehaviour (issue 9, items 6, 8 and 11): a member that signs what it sends can
//! still try to hurt the others; each test reproduces one such attack and asserts that it
//! is detected, blamed on its author and recoverable, or bounded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;

use dcgka::events::{Event, Misbehaviour};
use dcgka::group::Status;
use dcgka::wire::{ControlBody, EnvelopeKind};
use dcgka_sim::names::{A, B, C};
use dcgka_sim::{PacketKind, Sim};

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
