//! The ordering layer under attack (§7.3, §7.6), on real groups: each test reproduces an
//! attack of the adversarial review (items 1, 2, 3 and 7) and asserts what an honest member
//! sees afterwards: who is a member, who decrypted what, which event with which evidence.
//! The flood tests of each buffer bound on the ordering layer alone are its unit tests
//! (`ordering::tests`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;

use dcgka::BufferError;
use dcgka::codec::Encode;
use dcgka::consts::{MAX_AHEAD, MAX_BUFFERED_BYTES, MAX_BUFFERED_UNKNOWN, MAX_CANDIDATES_PER_SLOT, MAX_RECENT_HASHES};
use dcgka::crypto::SigningSecret;
use dcgka::events::{DropReason, EquivocationEvidence, Event, RejectReason};
use dcgka::group::{Context, Group, GroupError, Received};
use dcgka::ids::{MemberId, Origin, SeqNo};
use dcgka::wire::{AckRef, CertifiedKey, ControlBody, Envelope, EnvelopeKind};
use dcgka_sim::names::{A, B, C, D};
use dcgka_sim::{NOW, Sim};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// `genuine` claimed at `seq` with `body`, not re-signed: what anyone on the network can send.
fn unsigned(genuine: &Envelope, seq: u64, body: Vec<u8>) -> Vec<u8> {
    let mut e = genuine.clone();
    e.seq = SeqNo(seq);
    e.body = body;
    e.to_bytes()
}

fn hwm(sim: &Sim, at: usize, of: usize) -> u64 {
    group(sim, at).sync_state().get(&sim.mid(of).unwrap()).map_or(0, |s| s.0)
}

/// How many application messages device `d` failed to decrypt.
fn app_failures(sim: &Sim, d: usize) -> usize {
    sim.events_at(d, |e| matches!(e, Event::Rejected { reason: RejectReason::Application(_), .. })).len()
}

fn rejected(sim: &Sim, d: usize) -> Vec<Event> {
    sim.events_at(d, |e| matches!(e, Event::Rejected { .. }))
}

/// Item 1: one unsigned envelope near 16 MiB at `hwm + MAX_AHEAD`, and floods of small ones
/// under every tag, were buffered for good and then every verified envelope was refused
/// with `Buffer(Full)`, across snapshot and restore. Now they are refused by the claimed
/// sender's unverified budget and honest traffic flows, also after a restore.
#[test]
fn unsigned_floods_far_ahead_freeze_nobody() {
    let mut sim = created(3, &[B, C], 91);
    let m = *sim.send(A, b"hello").unwrap().last().unwrap();
    sim.deliver_all();
    let genuine = parse(&envelope_bytes(&sim, m));
    let far = hwm(&sim, B, A) + MAX_AHEAD;
    let big = unsigned(&genuine, far, vec![0; MAX_BUFFERED_BYTES - 300]);
    let r = recv(&mut sim, B, &big);
    assert!(matches!(r, Err(GroupError::Buffer(BufferError::Unverified { .. }))), "{:?}", outcome(&r));
    // Small ones under every known tag, near and far.
    let mut taken_count = 0;
    for who in [A, C] {
        let g = parse(&envelope_bytes(&sim, sim.last_from(who).unwrap()));
        let base = hwm(&sim, B, who);
        for k in 2..400 {
            let r = recv(&mut sim, B, &unsigned(&g, base + k * 25, vec![k as u8; 40]));
            taken_count += usize::from(taken(&r));
        }
    }
    let pending = group(&sim, B).pending();
    assert_eq!(pending, taken_count);
    assert!(pending <= 2 * dcgka::consts::MAX_UNVERIFIED_PER_SENDER, "{pending}");
    // Restore B from its snapshot: the same buffer, and it still takes verified traffic.
    let restored = Group::restore(&group(&sim, B).snapshot()).unwrap();
    assert_eq!((restored.pending(), restored.pending_bytes()), (pending, group(&sim, B).pending_bytes()));
    sim.devices[B].install(restored);
    let ma = *sim.send(A, b"after the flood").unwrap().last().unwrap();
    let mc = *sim.send(C, b"me too").unwrap().last().unwrap();
    sim.deliver_all();
    assert!(sim.decrypted(B, ma) && sim.decrypted(B, mc));
    assert_no_errors(&sim);
}

/// Item 2: unsigned acks of an operation that will never exist filled a sender's next slot
/// but one; once it became next the genuine envelope was refused on every delivery. Now
/// the whole slot is verified when it becomes next and the forgeries leave.
#[test]
fn four_unsigned_acks_freeze_no_sender() {
    let mut sim = created(3, &[B, C], 92);
    let m = *sim.send(A, b"hello").unwrap().last().unwrap();
    sim.deliver_all();
    let genuine = parse(&envelope_bytes(&sim, m));
    let next = hwm(&sim, B, A) + 1;
    for k in 0..MAX_CANDIDATES_PER_SLOT as u8 {
        let of = AckRef { of_sender: sim.mid(C).unwrap().tag(), of_seq: SeqNo(9_000), of_hash: [k; 16] };
        let mut e = parse(&unsigned(&genuine, next + 1, ControlBody::Ack { of, forwards: vec![] }.to_bytes()));
        e.kind = EnvelopeKind::Ack;
        assert_eq!(outcome(&recv(&mut sim, B, &e.to_bytes())), Ok(Received::Buffered));
    }
    let m1 = *sim.send(A, b"one").unwrap().last().unwrap();
    let m2 = *sim.send(A, b"two").unwrap().last().unwrap();
    sim.deliver_all();
    assert!(sim.decrypted(B, m1) && sim.decrypted(B, m2));
    let dropped = sim.events_at(B, |e| matches!(e, Event::Dropped { reason: DropReason::BadSignature, .. }));
    assert_eq!(dropped.len(), MAX_CANDIDATES_PER_SLOT);
    assert_eq!(group(&sim, B).pending(), 0);
    assert_no_errors(&sim);
}

/// Item 3: first envelopes signed by throwaway identities, acknowledging an operation that
/// never becomes ready, filled the unknown-sender buffer and every later newcomer's first
/// envelope was refused. Now stale entries are evicted, a first envelope whose operation
/// was processed is decided at once, and one beyond `MAX_AHEAD` is refused.
#[test]
fn junk_first_envelopes_lock_no_newcomer_out() {
    let mut sim = created(4, &[B, C], 93);
    let gid = group(&sim, B).gid();
    let c = sim.mid(C).unwrap();
    let a = sim.mid(A).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(93);
    let mut junk = |of_sender: MemberId, of_seq: u64| {
        let key = SigningSecret::generate(&mut rng);
        let ik = key.verifying_key();
        let id = MemberId::derive(&gid, &ik, Origin::Operation(of_sender, SeqNo(of_seq)));
        let of = AckRef { of_sender: of_sender.tag(), of_seq: SeqNo(of_seq), of_hash: [0; 16] };
        let body = ControlBody::Ack { of, forwards: vec![] }.to_bytes();
        let rot = SigningSecret::generate(&mut rng).verifying_key();
        let cert = CertifiedKey::issue(&key, &gid, &id, SeqNo(1), rot).cert;
        Envelope::seal(EnvelopeKind::Ack, &gid, SeqNo(1), &id, Some(ik), Some(rot), Some(cert), body, &key).to_bytes()
    };
    let base = hwm(&sim, B, C);
    for k in 0..(MAX_BUFFERED_UNKNOWN + 40) as u64 {
        let r = recv(&mut sim, B, &junk(c, base + 50 + k));
        assert_eq!(outcome(&r), Ok(Received::Buffered));
    }
    assert_eq!(group(&sim, B).pending(), MAX_BUFFERED_UNKNOWN);
    let r = recv(&mut sim, B, &junk(c, base + MAX_AHEAD + 1));
    assert!(matches!(r, Err(GroupError::Buffer(BufferError::TooFarAhead { .. }))), "{:?}", outcome(&r));
    // An operation already processed that introduced nobody with that key: decided now.
    let r = recv(&mut sim, B, &junk(a, 1));
    assert_eq!(outcome(&r), Ok(Received::Dropped(DropReason::NotAMember)));
    assert_eq!(group(&sim, B).pending(), MAX_BUFFERED_UNKNOWN);
    // A newcomer gets in, and B reads it.
    sim.add(A, D).unwrap();
    sim.deliver_all();
    let m = *sim.send(D, b"hi, I am new").unwrap().last().unwrap();
    sim.deliver_all();
    assert!(sim.decrypted(B, m) && sim.decrypted(C, m));
    assert!(group(&sim, B).members().contains(&sim.mid(D).unwrap()));
    assert_no_errors(&sim);
}

/// Item 7, application messages: a second authentic version of a processed application
/// message was a silent duplicate; now it is equivocation with the envelope as evidence,
/// while its sequence number is among the sender's last `MAX_RECENT_HASHES`.
/// Item 7, the camps: A's two versions of one update split B and D (version 1) from C
/// (version 2). B removes A while C and D each make an update, all three concurrently (the
/// network is split). After the partition heals, B's remove has re-initialised B's ratchet
/// and C's and D's updates theirs, from their fresh seeds, whatever the order in which the
/// others process them: every honest member reads every other; A reads nothing sent after
/// its removal.
#[test]
fn the_camps_read_each_other_after_a_removal_concurrent_with_updates() {
    let mut sim = created(4, &[B, C, D], 96);
    let a = sim.mid(A).unwrap();
    let mut twin = Detached::of(&sim, A);
    let v1 = sim.update(A).unwrap()[0];
    let v2 = {
        let mut rng = ChaCha20Rng::seed_from_u64(9601);
        let mut ctx = Context { rng: &mut rng, now: NOW, prekeys: &mut sim.directory, identity: &mut twin.identity };
        twin.group.update(&mut ctx).unwrap().broadcast.remove(0)
    };
    sim.devices[C].inbox.retain(|p| p.id != v1);
    let out = recv(&mut sim, C, &v2).unwrap();
    inject(&mut sim, C, out);
    sim.deliver_all();
    // C saw acks of the other version: its send first performs an update (auto-heal), so
    // the other camp reads it, even before the removal.
    let ids = sim.send(C, b"before").unwrap();
    assert_eq!(ids.len(), 2, "the resync update, then the message");
    let before = *ids.last().unwrap();
    sim.deliver_all();
    assert!(sim.decrypted(B, before) && sim.decrypted(D, before));
    // A's own device need not hold a live group any more (its twin advanced the 2SM
    // session with C that C's update is sealed to), so B removes A by its MID.
    sim.split(vec![0, 1, 2, 3]);
    sim.remove_member(B, a).unwrap();
    sim.update(C).unwrap();
    sim.update(D).unwrap();
    sim.deliver_all();
    sim.heal();
    sim.deliver_all();
    let (b, c, d_mid) = (sim.mid(B).unwrap(), sim.mid(C).unwrap(), sim.mid(D).unwrap());
    for x in [B, C, D] {
        assert_eq!(group(&sim, x).members(), [b, c, d_mid].into_iter().collect(), "device {x}");
    }
    assert!(!group(&sim, B).members().contains(&a));
    let mut sent = Vec::new();
    for x in [B, C, D] {
        sent.push((x, *sim.send(x, b"after").unwrap().last().unwrap()));
    }
    sim.deliver_all();
    for (x, m) in sent {
        for y in [B, C, D] {
            assert!(x == y || sim.decrypted(y, m), "device {y} does not read device {x}");
        }
        assert!(!sim.decrypted(A, m), "the equivocator reads device {x}");
    }
    for x in [B, C, D] {
        let cut_off = sim.events_at(x, |e| matches!(e, Event::Rejected { reason: RejectReason::CutOff, .. }));
        assert!(cut_off.is_empty(), "device {x}: {cut_off:?}");
    }
}

#[test]
fn a_second_version_of_a_message_is_equivocation() {
    let (mut sim, key) = created_recorded(3, &[B, C], 94, 9401);
    let (gid, a) = (group(&sim, A).gid(), sim.mid(A).unwrap());
    let m = *sim.send(A, b"the real one").unwrap().last().unwrap();
    sim.deliver_all();
    let genuine = parse(&envelope_bytes(&sim, m));
    let mut other = genuine.clone();
    let n = other.body.len();
    other.body[n - 1] ^= 1;
    let forged = other.to_bytes();
    let r = recv(&mut sim, B, &forged);
    assert_eq!(outcome(&r), Ok(Received::Dropped(DropReason::BadSignature)), "unsigned: a forgery");
    assert!(r.unwrap().events.is_empty(), "unsigned: frames nobody");
    let authentic = resign(&other, &gid, &a, &key);
    let out = recv(&mut sim, B, &authentic).unwrap();
    let evidence = EquivocationEvidence::Processed { processed: genuine.short_hash(), other: authentic.clone() };
    assert_eq!(out.events, vec![Event::Equivocation { sender: a, seq: genuine.seq, evidence }]);
    // Beyond the bound it is forgotten: a plain duplicate.
    for k in 0..MAX_RECENT_HASHES {
        sim.send(A, &[k as u8]).unwrap();
    }
    sim.deliver_all();
    assert_eq!(outcome(&recv(&mut sim, B, &authentic)), Ok(Received::Duplicate));
    // Both versions waiting in one slot: the second is reported with both envelopes.
    let m1 = *sim.send(A, b"one").unwrap().last().unwrap();
    let m2 = *sim.send(A, b"two").unwrap().last().unwrap();
    let (e1, e2) = (envelope_bytes(&sim, m1), envelope_bytes(&sim, m2));
    let mut twin = parse(&e2);
    let n = twin.body.len();
    twin.body[n - 1] ^= 1;
    let twin = resign(&twin, &gid, &a, &key);
    assert_eq!(outcome(&recv(&mut sim, B, &e2)), Ok(Received::Buffered));
    assert_eq!(outcome(&recv(&mut sim, B, &twin)), Ok(Received::Buffered));
    let out = recv(&mut sim, B, &e1).unwrap();
    let evidence = EquivocationEvidence::Envelopes { first: e2.clone(), second: twin.clone() };
    let seq = parse(&e2).seq;
    assert!(out.events.contains(&Event::Equivocation { sender: a, seq, evidence }), "{:?}", out.events);
    assert!(out.events.iter().any(|e| matches!(e, Event::Message { plaintext, .. } if plaintext == b"two")));
}

/// Item 7: A signs two versions of one update and sends one to B and D, the other to C.
/// Before, B and D rejected C's honest ack (`HashMismatch`) and cut C off, and C cut them
/// off, while A was cut off by nobody. Now no honest member is rejected or cut off, each
/// reports A with the acker's signed ack as evidence, and once an honest member removes A
/// every honest member holds the same membership and history.
#[test]
fn equivocation_blames_the_equivocator_not_the_ackers() {
    let mut sim = created(4, &[B, C, D], 95);
    let a = sim.mid(A).unwrap();
    let mut twin = Detached::of(&sim, A);
    let v1 = sim.update(A).unwrap()[0];
    let v2 = {
        let mut rng = ChaCha20Rng::seed_from_u64(9501);
        let mut ctx = Context { rng: &mut rng, now: NOW, prekeys: &mut sim.directory, identity: &mut twin.identity };
        twin.group.update(&mut ctx).unwrap().broadcast.remove(0)
    };
    let (p1, p2) = (parse(&envelope_bytes(&sim, v1)), parse(&v2));
    assert_eq!(p1.seq, p2.seq);
    assert_ne!(p1.short_hash(), p2.short_hash());
    sim.devices[C].inbox.retain(|p| p.id != v1);
    let out = recv(&mut sim, C, &v2).unwrap();
    assert!(out.events.contains(&Event::Updated { by: a }));
    inject(&mut sim, C, out);
    sim.deliver_all();
    let ack_evidence = |d: usize, acker: usize| {
        sim.events_at(d, |e| {
            matches!(e, Event::Equivocation { sender, seq, evidence: EquivocationEvidence::Ack { acker: x, .. } }
                if *sender == a && *seq == p1.seq && Some(*x) == sim.mid(acker))
        })
    };
    assert_eq!(ack_evidence(B, C).len(), 1);
    assert_eq!(ack_evidence(D, C).len(), 1);
    assert_eq!(ack_evidence(C, B).len(), 1);
    assert_eq!(ack_evidence(C, D).len(), 1);
    for d in [A, B, C, D] {
        assert!(rejected(&sim, d).is_empty(), "device {d}: {:?}", rejected(&sim, d));
    }
    // Every honest member saw an ack of the other version: its own next send or add first
    // performs an update (auto-heal), which re-initialises its ratchet from a fresh seed.
    for x in [B, C, D] {
        assert!(group(&sim, x).heal_pending(), "device {x}");
        assert_eq!(sim.events_at(x, |e| *e == Event::HealPending).len(), 1, "device {x}");
    }
    // The application removes the equivocator; every honest member converges on the
    // membership and the history, and nobody honest was cut off. B's remove re-initialised
    // B's ratchet, so no update is pending there any more.
    sim.remove(B, A).unwrap();
    sim.deliver_all();
    assert!(!group(&sim, B).heal_pending());
    let (b, c, d_mid) = (sim.mid(B).unwrap(), sim.mid(C).unwrap(), sim.mid(D).unwrap());
    for x in [B, C, D] {
        assert_eq!(group(&sim, x).members(), [b, c, d_mid].into_iter().collect(), "device {x}");
        // Compared over the members: a removed member may be forgotten at one device and
        // still known at another (§6.7).
        let views = |d: dcgka_sim::Dev| {
            let mut v = observe(group(&sim, d)).views;
            v.retain(|(m, _)| [b, c, d_mid].contains(m));
            v
        };
        assert_eq!(views(x), views(B), "device {x}");
    }
    for x in [B, C, D] {
        let cut_off = sim.events_at(x, |e| matches!(e, Event::Rejected { reason: RejectReason::CutOff, .. }));
        assert!(cut_off.is_empty(), "device {x}: {cut_off:?}");
    }
    // C and D update before their first send (auto-heal): the camps read each other again,
    // with nothing but sends from the application (docs/protocol.md §5.5, §7.6).
    let before: Vec<usize> = [B, C, D].into_iter().map(|x| app_failures(&sim, x)).collect();
    let mut sent = Vec::new();
    for x in [B, C, D] {
        sent.push((x, *sim.send(x, b"after").unwrap().last().unwrap()));
        sim.deliver_all();
    }
    for (x, m) in sent {
        for y in [B, C, D] {
            assert!(x == y || sim.decrypted(y, m), "device {y} does not read device {x}");
        }
        assert!(!sim.decrypted(A, m), "the equivocator reads device {x}");
    }
    for x in [B, C, D] {
        assert!(!group(&sim, x).heal_pending(), "device {x}");
    }
    let after: Vec<usize> = [B, C, D].into_iter().map(|x| app_failures(&sim, x)).collect();
    assert_eq!(before, after, "no application message failed after the resync");
}
