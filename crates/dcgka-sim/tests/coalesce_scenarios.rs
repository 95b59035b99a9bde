//! The concurrent scenarios of spec §10 (S2–S8, S11) and the conflict rows of §6.5, with
//! coalesced acknowledgments, under many random delivery orders.
//!
//! `enumerate.rs` explores every delivery order of these scenarios without coalescing.
//! With coalescing, *when* each member sends what it holds becomes one more choice, so
//! instead of enumerating, each scenario runs under random schedules: random delivery
//! order, duplicates, random flushes and random mid-flight messages. Before the concurrent
//! operations, one member updates and nobody flushes, so every member holds an ack and the
//! concurrent operations themselves travel inside batches (`[ack, operation]`). At the end
//! (quiet network, everyone flushed) each run checks the membership the spec's tables
//! give at every device, the removed devices' status, the global, delivery and
//! confidentiality oracles, the absence of errors, and that a last message from every
//! member reaches exactly the final members.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;

use common::{created_with, none};
use dcgka::events::Event;
use dcgka::group::Group;
use dcgka::ids::MemberId;
use dcgka::wire::EnvelopeKind;
use dcgka_sim::names::{A, B, C, D};
use dcgka_sim::{Dev, Sim, oracle};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

/// Random schedules per scenario.
const RUNS: u64 = 48;

/// What a scenario must end with.
struct Expect {
    /// Devices that end as the only members, at every one of them.
    members: Vec<Dev>,
    /// Devices whose instance ends removed (or never live).
    removed: Vec<Dev>,
}

/// `n` devices with coalescing on and adversarial shadows; A creates the group with `others`; everyone processes
/// everything; then `warm` updates and the update is delivered without any flush, so
/// every other member holds one ack.
fn setup(n: usize, others: &[Dev], seed: u64, warm: Dev) -> Sim {
    let mut sim = created_with(n, others, seed, |sim| {
        sim.config.coalesce_acks = true;
        // Every instance also runs as an adversarial copy that keeps its secrets past its
        // removal: the confidentiality oracle checks what those copies can read.
        sim.shadows = true;
    });
    sim.update(warm).unwrap();
    sim.deliver_queued();
    sim
}

/// Delivers in a random order with random flushes, duplicates and mid-flight messages,
/// then everything (with anti-entropy sync and flushes) until quiet.
fn random_schedule(sim: &mut Sim, rng: &mut ChaCha20Rng) {
    let n = sim.devices.len();
    let mut sent_mid = 0;
    loop {
        let queued: Vec<Dev> = (0..n).filter(|d| !sim.devices[*d].inbox.is_empty()).collect();
        if queued.is_empty() {
            break;
        }
        let roll = rng.next_u32() % 100;
        if roll < 12 {
            let d = (rng.next_u32() as usize) % n;
            sim.flush(d);
            continue;
        }
        if roll < 16 && sent_mid < 2 {
            let d = (rng.next_u32() as usize) % n;
            if sim.devices[d].active() && sim.send(d, format!("mid-flight {sent_mid}").as_bytes()).is_ok() {
                sent_mid += 1;
            }
            continue;
        }
        let to = queued[(rng.next_u32() as usize) % queued.len()];
        let k = (rng.next_u32() as usize) % sim.devices[to].inbox.len();
        let p = sim.devices[to].inbox[k].clone();
        if rng.next_u32() % 100 < 5 {
            sim.devices[to].inbox.push_back(p.clone());
        }
        sim.deliver_id(to, p.id);
    }
    sim.deliver_random(0, 0);
}

fn devices_of(sim: &Sim, members: &BTreeSet<MemberId>) -> BTreeSet<Option<Dev>> {
    members.iter().map(|m| sim.device_of(m)).collect()
}

/// Runs `build` under `RUNS` random schedules and checks `expect` (and `extra`) at the end.
fn check(name: &str, build: impl Fn(u64) -> Sim, expect: Expect, extra: impl Fn(&Sim) -> Vec<String>) {
    let mut batches = 0;
    for run in 0..RUNS {
        let mut sim = build(run);
        let mut rng = ChaCha20Rng::seed_from_u64(run ^ 0xc0a1_e5ce);
        random_schedule(&mut sim, &mut rng);
        let mut v = Vec::new();
        let want: BTreeSet<Option<Dev>> = expect.members.iter().map(|d| Some(*d)).collect();
        for d in &expect.members {
            if !sim.devices[*d].active() {
                v.push(format!("{} is not active", sim.devices[*d].name));
                continue;
            }
            let got = devices_of(&sim, &sim.members_at(*d));
            if got != want {
                v.push(format!("{} sees {:?}", sim.devices[*d].name, sim.member_names(*d)));
            }
        }
        for d in &expect.removed {
            if sim.devices[*d].active() {
                v.push(format!("{} is still active", sim.devices[*d].name));
            }
        }
        // A last message from every final member reaches exactly the final members.
        let mut last = Vec::new();
        for d in &expect.members {
            if let Ok(ids) = sim.send(*d, b"last") {
                last.push((*d, *ids.last().unwrap()));
            }
        }
        sim.deliver_random(0, 0);
        for (from, id) in &last {
            for to in 0..sim.devices.len() {
                let should = expect.members.contains(&to) && to != *from;
                if sim.decrypted(to, *id) != should {
                    v.push(format!("{}'s last message at {}: decrypted = {}", from, sim.devices[to].name, !should));
                }
            }
        }
        v.extend(oracle::global_oracles(&sim));
        v.extend(oracle::delivery_violations(&sim));
        sim.feed_transcript_to_shadows();
        v.extend(oracle::confidentiality_violations(&sim));
        v.extend(sim.errors().into_iter().map(|(d, e)| format!("{d}: {e:?}")));
        v.extend(extra(&sim));
        for d in 0..sim.devices.len() {
            if sim.devices[d].group().is_some_and(|g| g.held_acks() > 0) {
                v.push(format!("{} still holds acks", sim.devices[d].name));
            }
        }
        assert!(v.is_empty(), "{name}, run {run}: {v:#?}");
        batches += sim
            .transcript
            .iter()
            .filter(|p| Group::peek(&p.bytes).is_ok_and(|k| k.kind == EnvelopeKind::Batch))
            .count();
    }
    assert!(batches >= RUNS as usize, "{name}: the concurrent operations travelled in batches ({batches})");
}

#[test]
fn s2_update_concurrent_with_add() {
    let build = |seed| {
        let mut sim = setup(4, &[B, C], seed, B);
        sim.update(A).unwrap();
        sim.add(C, D).unwrap();
        sim
    };
    check("S2", build, Expect { members: vec![A, B, C, D], removed: vec![] }, none);
}

#[test]
fn s3_concurrent_adds() {
    let build = |seed| {
        let mut sim = setup(4, &[B], seed, A);
        sim.add(A, C).unwrap();
        sim.add(B, D).unwrap();
        sim
    };
    check("S3", build, Expect { members: vec![A, B, C, D], removed: vec![] }, none);
}

#[test]
fn s4_concurrent_updates() {
    let build = |seed| {
        let mut sim = setup(3, &[B, C], seed, C);
        sim.update(A).unwrap();
        sim.update(B).unwrap();
        sim
    };
    check("S4", build, Expect { members: vec![A, B, C], removed: vec![] }, none);
}

#[test]
fn s5_remove_concurrent_with_update() {
    let build = |seed| {
        let mut sim = setup(3, &[B, C], seed, B);
        sim.remove(A, C).unwrap();
        sim.update(C).unwrap();
        sim
    };
    check("S5", build, Expect { members: vec![A, B], removed: vec![C] }, |sim| {
        // The removed member's state lives on as an adversarial shadow, which the
        // confidentiality oracle has checked against every message.
        if sim.devices[C].shadows.is_empty() { vec!["no shadow of the removed C".to_string()] } else { Vec::new() }
    });
}

#[test]
fn s6_mutual_removes() {
    let build = |seed| {
        let mut sim = setup(4, &[B, C, D], seed, C);
        sim.remove(A, B).unwrap();
        sim.remove(B, A).unwrap();
        sim
    };
    check("S6", build, Expect { members: vec![C, D], removed: vec![A, B] }, none);
}

#[test]
fn s7_concurrent_removes() {
    let build = |seed| {
        let mut sim = setup(4, &[B, C, D], seed, C);
        sim.remove(A, C).unwrap();
        sim.remove(B, D).unwrap();
        sim
    };
    check("S7", build, Expect { members: vec![A, B], removed: vec![C, D] }, none);
}

#[test]
fn s8_remove_concurrent_with_add_by_the_removed_member() {
    let build = |seed| {
        let mut sim = setup(4, &[B, C], seed, C);
        sim.remove(A, B).unwrap();
        sim.add(B, D).unwrap();
        sim
    };
    check("S8", build, Expect { members: vec![A, C], removed: vec![B, D] }, |sim| {
        let mut v = Vec::new();
        if sim.devices[D].active() {
            v.push("the cancelled newcomer is active".to_string());
        }
        if !sim.devices[A].events.iter().any(|e| matches!(e, Event::AddCancelled { .. })) {
            v.push("no AddCancelled at A".to_string());
        }
        v
    });
}

#[test]
fn conflict_same_member_removed_twice() {
    let build = |seed| {
        let mut sim = setup(3, &[B, C], seed, C);
        sim.remove(A, C).unwrap();
        sim.remove(B, C).unwrap();
        sim
    };
    check("removed-twice", build, Expect { members: vec![A, B], removed: vec![C] }, none);
}

#[test]
fn conflict_unrelated_add() {
    let build = |seed| {
        let mut sim = setup(4, &[B, C], seed, B);
        sim.remove(A, B).unwrap();
        sim.add(C, D).unwrap();
        sim
    };
    check("unrelated-add", build, Expect { members: vec![A, C, D], removed: vec![B] }, none);
}

#[test]
fn s11_duplicate_concurrent_adds() {
    let build = |seed| {
        let mut sim = setup(3, &[B], seed, A);
        sim.add(A, C).unwrap();
        sim.add(B, C).unwrap();
        sim
    };
    check("S11-dup", build, Expect { members: vec![A, B, C], removed: vec![] }, |sim| {
        let ik = sim.ik(C);
        let mut v = Vec::new();
        for (d, g) in oracle::active(sim) {
            let inst: Vec<MemberId> = g.members().into_iter().filter(|m| g.identity_of(m) == Some(ik)).collect();
            if inst.len() != 1 || Some(inst[0]) != sim.mid(C) {
                v.push(format!("{}: {} instances of C", sim.devices[d].name, inst.len()));
            }
        }
        v
    });
}
