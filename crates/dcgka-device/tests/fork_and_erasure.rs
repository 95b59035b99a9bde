//! A device that finds its own state forked (§7.3) and a removed member's erased secrets
//! (§5.6 TERMINATE, §5.7).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use dcgka::EnvelopeKind;
use dcgka::events::Event;
use dcgka::group::{Context, Group, GroupConfig, Status};
use dcgka::ids::{GroupId, SeqNo};
use dcgka_device::{Device, DeviceError, Outcome, StateKey, Storage};
use support::{NOW, Net};

/// Whether `needle` occurs in `hay`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Asserts that an ended instance holds no group key material: no member secret, no
/// outer or sender ratchet of anyone ever added.
fn no_group_secrets(g: &Group) {
    assert_eq!(g.member_secret_count(), 0);
    for id in g.ever_added() {
        assert!(!g.has_ratchet_state(&id), "outer ratchet of {id} kept");
        assert!(g.sender_epoch(&id).is_none(), "sender ratchet of {id} kept");
    }
}

/// Whether the device's store holds any record of the group's instance.
fn stores_instance(d: &Device, gid: &GroupId) -> bool {
    let stored = d.store().load().unwrap();
    stored.state.keys().any(|k| matches!(k, StateKey::Group(g) | StateKey::Sender(g, _) if g == gid))
}

/// Device C is restored from its store as it was before it sent an update and a message
/// (a backup restored, or a clone). Its newer envelopes, still in flight, come back to it.
/// A forged envelope under its tag, and the message signed under the key its update
/// rotated to, are dropped as echoes; the update, signed under the key the restored state
/// still holds, proves the fork: C reports `StateForkSuspected` with the group and both
/// sequence numbers, stops (it would otherwise sign other envelopes under used sequence
/// numbers), and recovers once it is removed and added again as a new instance.
#[test]
fn a_device_restored_from_an_old_state_reports_the_fork_and_stops() {
    let mut net = Net::group(3, 41);
    let gid = net.gid(0);
    let old_c = net.me(2);
    let backup = net.devs[2].store().clone();

    // C (before the restore) updates and sends; A and B process both.
    let update = net.call(2, |d, env| d.update(env, &gid)).transmit[0].bytes.clone();
    let message = net.call(2, |d, env| d.send(env, &gid, b"from the lost state")).transmit[0].bytes.clone();
    net.pump();
    assert_eq!(net.plaintexts(0), vec![b"from the lost state".to_vec()]);
    let mine = SeqNo(Group::peek(&update).unwrap().seq.0 - 1);
    let seen = Group::peek(&update).unwrap().seq;

    // C restarts from the backup.
    net.devs[2] = Device::open(GroupConfig::default(), backup).unwrap();
    assert_eq!(net.devs[2].group(&gid).unwrap().status(), &Status::Active);

    // A forgery under C's tag beyond its sequence number proves nothing.
    let mut forged = update.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let r = net.call(2, |d, env| d.receive(env, &forged));
    assert_eq!(r.outcomes, vec![Outcome::OwnEnvelope]);
    assert!(r.events.is_empty(), "{:?}", r.events);
    // The message is signed under the key the lost update rotated to: not verifiable here.
    let r = net.call(2, |d, env| d.receive(env, &message));
    assert_eq!(r.outcomes, vec![Outcome::OwnEnvelope]);
    assert!(r.events.is_empty(), "{:?}", r.events);
    assert_eq!(net.devs[2].group(&gid).unwrap().status(), &Status::Active);

    // What a corrupted instance keeps (§5.6): its signing secret, and no group key material.
    let mut copy = net.devs[2].group(&gid).unwrap().clone();
    let seed = copy.signing_secret().to_bytes();
    let mut identity = net.devs[2].identity().clone();
    let mut ctx = Context { rng: &mut net.rng, now: NOW, prekeys: &mut net.dir, identity: &mut identity };
    let out = copy.receive(&mut ctx, &update).unwrap();
    assert_eq!(out.events[0], Event::StateForkSuspected { mine, seen });
    assert!(matches!(copy.status(), Status::Corrupted { .. }));
    assert_eq!(copy.signing_secret().to_bytes(), seed);
    no_group_secrets(&copy);

    // The update is signed under the restored state's current key: the fork is proven.
    let r = net.call(2, |d, env| d.receive(env, &update));
    assert_eq!(r.outcomes, vec![Outcome::OwnEnvelope]);
    assert_eq!(r.events[0], (gid, Event::StateForkSuspected { mine, seen }));
    assert!(matches!(&r.events[1], (g, Event::GroupStateCorrupted { .. }) if *g == gid));
    assert!(r.transmit.is_empty());
    // The instance has ended: C sends nothing more in the group, and its store agrees.
    assert!(net.devs[2].group(&gid).is_none());
    let refused = net.try_call(2, |d, env| d.send(env, &gid, b"reused sequence number"));
    assert!(matches!(refused, Err(DeviceError::NoActiveGroup(g)) if g == gid));
    let reopened = Device::open(GroupConfig::default(), net.devs[2].store().clone()).unwrap();
    assert!(reopened.group(&gid).is_none());
    assert!(!stores_instance(&net.devs[2], &gid));
    assert!(net.devs[2].store().events().iter().any(|e| matches!(e, (_, Event::StateForkSuspected { .. }))));

    // Recovery: A removes the forked instance and adds C again; C reads the group again.
    net.run(0, |d, env| d.remove(env, &gid, old_c));
    net.pump();
    let c_key = net.devs[2].public_key();
    net.run(0, |d, env| d.add(env, &gid, c_key));
    net.pump();
    let new_c = net.devs[2].group(&gid).expect("C joined as a new instance").me();
    assert_ne!(new_c, old_c);
    assert_eq!(net.members(2), net.members(0));
    assert!(net.members(1).contains(&new_c) && !net.members(1).contains(&old_c));
    net.run(1, |d, env| d.send(env, &gid, b"welcome back"));
    net.pump();
    assert_eq!(net.plaintexts(2).last().unwrap(), b"welcome back");
    assert_eq!(net.plaintexts(0).last().unwrap(), b"welcome back");
}

/// TERMINATE (§5.6, §5.7): once removed, C's instance holds no signing secret and no group
/// key material, in memory or in its snapshot, and the device's store keeps no record of
/// it. Before the fix the group signing secret stayed in the removed instance and in its
/// snapshot.
#[test]
fn a_removed_member_keeps_no_group_secret() {
    let mut net = Net::group(3, 42);
    let gid = net.gid(0);
    let (a, c) = (net.me(0), net.me(2));
    net.run(1, |d, env| d.send(env, &gid, b"to read"));
    net.run(2, |d, env| d.update(env, &gid));
    net.run(2, |d, env| d.send(env, &gid, b"mine"));
    net.pump();
    assert_eq!(net.plaintexts(2), vec![b"to read".to_vec()]);
    let before = net.devs[2].group(&gid).unwrap().clone();
    let seed = before.signing_secret().to_bytes();
    assert_ne!(*seed, [0; 32]);
    // The test looks for the right bytes: the live snapshot and the stored records hold them.
    assert!(contains(&before.snapshot(), &seed[..]));
    let stored = net.devs[2].store().load().unwrap();
    assert!(stored.state.values().any(|v| contains(v, &seed[..])));

    let removal = net.call(0, |d, env| d.remove(env, &gid, c)).transmit[0].bytes.clone();

    // The group layer: a copy of C's instance processes its removal.
    let mut g = before.clone();
    let mut identity = net.devs[2].identity().clone();
    let mut ctx = Context { rng: &mut net.rng, now: NOW, prekeys: &mut net.dir, identity: &mut identity };
    let out = g.receive(&mut ctx, &removal).unwrap();
    assert!(out.events.contains(&Event::RemovedFromGroup { by: a }));
    // Its only envelope is the farewell (§7.5, §6.7): an ack of the removal with no forward.
    assert_eq!(out.broadcast.len(), 1, "one farewell");
    let farewell = Group::peek(&out.broadcast[0]).unwrap();
    assert_eq!(farewell.kind, EnvelopeKind::Ack);
    assert_eq!(farewell.acknowledges, None);
    assert!(out.broadcast[0].len() < 200, "a farewell carries no forward");
    assert_eq!(g.status(), &Status::Removed { by: a });
    assert_eq!(*g.signing_secret().to_bytes(), [0; 32]);
    no_group_secrets(&g);
    let snap = g.snapshot();
    assert!(!contains(&snap, &seed[..]), "the removed instance's snapshot holds its signing secret");
    let records = g.records();
    assert!(!contains(&records.core, &seed[..]));
    assert!(records.senders.values().all(|r| !contains(r, &seed[..])));
    // The erased state still round-trips, and refuses to act.
    let restored = Group::restore(&snap).unwrap();
    assert_eq!(restored.snapshot(), snap);
    assert_eq!(restored.status(), &Status::Removed { by: a });

    // The device layer: the instance is retired and its records deleted.
    net.pump();
    assert!(net.devs[2].group(&gid).is_none());
    assert!(!stores_instance(&net.devs[2], &gid));
    let stored = net.devs[2].store().load().unwrap();
    assert!(stored.state.values().all(|v| !contains(v, &seed[..])));
    assert!(!net.members(0).contains(&c) && !net.members(1).contains(&c));
    let refused = net.try_call(2, |d, env| d.send(env, &gid, b"after removal"));
    assert!(matches!(refused, Err(DeviceError::NoActiveGroup(g)) if g == gid));
}
