//! Sync through the device layer (§7.7): envelopes travel from device logs to the devices
//! that can reach them, never from the simulator's transcript. An envelope whose only
//! holder goes offline reaches everyone through the one peer that synced with it; a
//! partition that heals one link at a time converges through sync alone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dcgka_sim::{Dev, Sim, oracle};

/// Syncs and delivers until nothing moves.
fn settle(sim: &mut Sim) {
    loop {
        sim.deliver_all();
        if !sim.sync() {
            sim.deliver_all();
            return;
        }
    }
}

fn held_ids(sim: &Sim, d: Dev) -> Vec<usize> {
    sim.held[d].iter().map(|p| p.id).collect()
}

#[test]
fn an_envelope_whose_only_holder_goes_offline_reaches_everyone_through_one_peer() {
    let (a, b, c, d) = (0, 1, 2, 3);
    let mut sim = Sim::new(4, 21);
    sim.create(a, &[b, c, d]).unwrap();
    sim.deliver_all();
    // D is cut off; what it sends now, only D holds.
    sim.split(vec![0, 0, 0, 1]);
    let upd = sim.update(d).unwrap()[0];
    let msg = *sim.send(d, b"only D has this").unwrap().last().unwrap();
    settle(&mut sim);
    assert!(!(0..3).any(|x| sim.decrypted(x, msg)));
    // D is reachable by B alone, for one exchange, then offline again.
    sim.link(b, d);
    assert!(sim.sync_pair(b, d), "B takes D's update and message from D's log");
    sim.unlink(b, d);
    assert!(sim.decrypted(b, msg));
    // A and C get both from B's log: the copies sent to them are still held by the
    // partition, so nothing came from the simulator's transcript.
    settle(&mut sim);
    for x in [a, c] {
        assert!(sim.decrypted(x, msg), "{x}");
        assert!(held_ids(&sim, x).contains(&upd) && held_ids(&sim, x).contains(&msg), "{x}");
    }
    // D comes back: the acks of its update reach it, everyone agrees.
    sim.heal();
    settle(&mut sim);
    assert!(oracle::global_oracles(&sim).is_empty(), "{:?}", oracle::global_oracles(&sim));
    assert!(oracle::delivery_violations(&sim).is_empty(), "{:?}", oracle::delivery_violations(&sim));
    assert!(sim.errors().is_empty(), "{:?}", sim.errors());
}

#[test]
fn a_partition_that_heals_one_link_at_a_time_converges_through_sync_alone() {
    let n = 6;
    let newcomer = 5;
    let mut sim = Sim::new(n, 22);
    sim.create(0, &[1, 2, 3, 4]).unwrap();
    sim.deliver_all();
    // Everyone on its own side; each member acts alone.
    sim.split((0..n).collect());
    sim.add(0, newcomer).unwrap();
    sim.update(1).unwrap();
    let mut msgs = Vec::new();
    for x in 0..5 {
        msgs.push(*sim.send(x, format!("alone: {x}").as_bytes()).unwrap().last().unwrap());
    }
    settle(&mut sim);
    // Links come back one at a time, along a chain that ends at the newcomer, whose
    // Welcome only its adder holds.
    for (x, y) in [(0, 1), (1, 2), (2, 3), (3, 4), (0, newcomer)] {
        sim.link(x, y);
        settle(&mut sim);
    }
    // All six agree, and every message reached everyone in its sender's view, while
    // every copy the partition held is still held.
    assert!(sim.devices.iter().all(|d| d.active()));
    let members = sim.member_names(0);
    assert_eq!(members.len(), 6, "{members:?}");
    assert!(oracle::global_oracles(&sim).is_empty(), "{:?}", oracle::global_oracles(&sim));
    assert!(oracle::delivery_violations(&sim).is_empty(), "{:?}", oracle::delivery_violations(&sim));
    for (x, m) in msgs.iter().enumerate() {
        for y in (0..5).filter(|y| *y != x) {
            assert!(sim.decrypted(y, *m), "{y} did not decrypt {x}'s message");
        }
    }
    assert!((0..n).any(|d| !sim.held[d].is_empty()), "the partition still holds its copies");
    let late = *sim.send(newcomer, b"the newcomer speaks").unwrap().last().unwrap();
    settle(&mut sim);
    assert!((0..5).all(|y| sim.decrypted(y, late)));
    assert!(sim.errors().is_empty(), "{:?}", sim.errors());
}
