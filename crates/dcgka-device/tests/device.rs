//! The device layer's own tests: the §6.6 rules, the backlog, the envelope log, sync
//! between devices, and the storage seam (commit, reopen, failure).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use dcgka::events::Event;
use dcgka::group::{GroupConfig, Status};
use dcgka::ids::{GroupId, MemberId, SeqNo};
use dcgka::prekeys::{Identity, InMemoryPrekeyDirectory};
use dcgka_device::consts::{MAX_BACKLOG_ENVELOPES, MAX_SYNC_GROUPS};
use dcgka_device::{
    Commit, Destination, Device, DeviceError, Env, MemoryStore, Outcome, StateKey, Storage, Stored, SyncError,
    SyncRequest, SyncResponse,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

mod support;

use support::{NOW, Net};

#[test]
fn a_group_forms_and_messages_flow_through_devices() {
    let mut net = Net::group(3, 1);
    let gid = net.gid(0);
    assert!((0..3).all(|d| net.members(d) == net.members(0) && net.members(d).len() == 3));
    net.run(1, |d, env| d.send(env, &gid, b"hi"));
    net.pump();
    assert_eq!(net.plaintexts(0), vec![b"hi".to_vec()]);
    assert_eq!(net.plaintexts(2), vec![b"hi".to_vec()]);
    // The store received every event too.
    let stored: Vec<&Event> = net.devs[2].store().events().iter().map(|(_, e)| e).collect();
    assert!(stored.iter().any(|e| matches!(e, Event::Message { plaintext, .. } if plaintext == b"hi")));
    // The outbox is empty once the transport confirmed everything.
    assert!(net.devs.iter().all(|d| d.outbox().is_empty()));
}

#[test]
fn the_envelope_log_holds_every_envelope_accepted_or_sent() {
    let mut net = Net::group(3, 2);
    let gid = net.gid(0);
    net.run(1, |d, env| d.update(env, &gid));
    net.pump();
    net.run(2, |d, env| d.send(env, &gid, b"m"));
    net.pump();
    // Every device logged the same envelopes: create, two acks of the create, the update,
    // two acks of the update, the message: 7 in all.
    for d in 0..3 {
        let log = net.devs[d].log(&gid).unwrap();
        assert_eq!(log.len(), 7, "device {d}");
        let senders: BTreeSet<MemberId> = log.senders().copied().collect();
        assert_eq!(senders, net.members(0), "device {d}");
    }
    // By sender and sequence number: B's update is its second envelope.
    let b = net.me(1);
    let log0 = net.devs[0].log(&gid).unwrap();
    let entry = log0.get(&b, SeqNo(2)).unwrap();
    assert_eq!(entry.bytes, net.devs[1].log(&gid).unwrap().get(&b, SeqNo(2)).unwrap().bytes);
    assert_eq!(log0.after(&b, 1).count(), 1);
}

#[test]
fn an_envelope_before_the_join_waits_in_the_backlog() {
    let mut net = Net::new(3, 3);
    // A creates with B only; C is added later, but C receives an envelope of the group
    // (B's message) before its Welcome.
    let b_ik = net.devs[1].public_key();
    let c_ik = net.devs[2].public_key();
    let mut env = Env { rng: &mut net.rng, now: NOW, prekeys: &mut net.dir };
    let (gid, r) = net.devs[0].create(&mut env, &[b_ik]).unwrap();
    net.post(0, &r);
    net.pump();
    net.offline.insert(2);
    let add = net.call(0, |d, env| d.add(env, &gid, c_ik));
    net.pump();
    let sent = net.call(1, |d, env| d.send(env, &gid, b"early"));
    net.pump();
    net.offline.clear();
    // C gets the message first: no group recognises it.
    // (C already keeps B's ack of the create, which it saw before it was invited.)
    let msg = sent.transmit[0].bytes.clone();
    let before = net.devs[2].backlog_len();
    let r = net.call(2, |d, env| d.receive(env, &msg));
    assert_eq!(r.outcomes, vec![Outcome::Backlogged]);
    assert_eq!(net.devs[2].backlog_len(), before + 1);
    // Then the Welcome: C joins, and the backlog is offered again at once.
    let welcome = add.transmit.iter().find(|t| matches!(t.to, Destination::Identity(_))).unwrap().bytes.clone();
    let r = net.call(2, |d, env| d.receive_welcome(env, &welcome));
    assert_eq!(r.outcomes, vec![Outcome::Joined(gid)]);
    assert_eq!(r.joined, vec![gid]);
    assert_eq!(net.devs[2].backlog_len(), 0, "every backlogged envelope belonged to the group");
    // The message waits in the group's buffer behind B's add-ack, which C missed; one
    // sync exchange with B brings it, and the message is decrypted.
    assert!(net.plaintexts(2).is_empty());
    assert_eq!(net.devs[2].group(&gid).unwrap().pending(), 1);
    net.sync(2, 1);
    assert_eq!(net.plaintexts(2), vec![b"early".to_vec()]);
}

#[test]
fn a_stale_create_is_refused_once_the_device_held_the_group() {
    let mut net = Net::new(3, 4);
    let others = [net.devs[1].public_key(), net.devs[2].public_key()];
    let mut env = Env { rng: &mut net.rng, now: NOW, prekeys: &mut net.dir };
    let (gid, created) = net.devs[0].create(&mut env, &others).unwrap();
    net.post(0, &created);
    net.pump();
    let create = created.transmit[0].bytes.clone();
    // While C holds the group, the create is the live instance's duplicate.
    let r = net.call(2, |d, env| d.receive(env, &create));
    assert_eq!(r.outcomes, vec![Outcome::Duplicate]);
    // A removes C; C's instance ends and is retired.
    let c = net.me(2);
    net.run(0, |d, env| d.remove(env, &gid, c));
    net.pump();
    assert!(net.devs[2].group(&gid).is_none());
    assert!(net.events[2].iter().any(|(_, e)| matches!(e, Event::RemovedFromGroup { .. })));
    // The same create again: stale, never a second instance.
    let r = net.call(2, |d, env| d.receive(env, &create));
    assert_eq!(r.outcomes, vec![Outcome::Stale]);
    assert!(net.devs[2].group(&gid).is_none());
    assert!(net.devs[2].known_instances(&gid).contains(&c));
}

#[test]
fn a_welcome_waits_while_an_instance_is_live_and_is_used_after_its_removal() {
    let mut net = Net::group(3, 5);
    let gid = net.gid(0);
    let c_old = net.me(2);
    let c_ik = net.devs[2].public_key();
    // A removes C and B, having seen the removal, adds C's identity again: a second
    // instance of C (§6.6). B's Welcome reaches C before A's removal does, while C's
    // first instance is still live.
    net.offline.insert(2);
    let removal = net.call(0, |d, env| d.remove(env, &gid, c_old));
    net.pump();
    let readd = net.call(1, |d, env| d.add(env, &gid, c_ik));
    net.pump();
    net.offline.clear();
    let welcome = readd.transmit.iter().find(|t| matches!(t.to, Destination::Identity(_))).unwrap().bytes.clone();
    let r = net.call(2, |d, env| d.receive_welcome(env, &welcome));
    assert_eq!(r.outcomes, vec![Outcome::WelcomePending(gid)]);
    assert_eq!(net.devs[2].pending_welcomes(&gid).len(), 1);
    // The removal reaches C: its first instance ends, and it joins through the held Welcome.
    let rm = removal.transmit[0].bytes.clone();
    let r = net.call(2, |d, env| d.receive(env, &rm));
    assert_eq!(r.joined, vec![gid]);
    let c_new = net.me(2);
    assert_ne!(c_new, c_old);
    assert_eq!(*net.devs[2].group(&gid).unwrap().status(), Status::Active);
    assert!(net.devs[2].pending_welcomes(&gid).is_empty());
    // The same Welcome again is stale now.
    let r = net.call(2, |d, env| d.receive_welcome(env, &welcome));
    assert_eq!(r.outcomes, vec![Outcome::Stale]);
}

#[test]
fn sync_brings_a_device_that_missed_everything_including_its_own_addition() {
    let mut net = Net::group(2, 6);
    let gid = net.gid(0);
    let c_ik;
    {
        c_ik = {
            let mut id = Identity::generate(&mut net.rng);
            net.dir.publish_identity(&mut net.rng, &mut id, NOW, 16).unwrap();
            let ik = id.public_key();
            net.devs.push(Device::new(id, GroupConfig::default(), MemoryStore::new()).unwrap());
            net.events.push(Vec::new());
            ik
        };
    }
    // C is offline: it misses its own Welcome and everything after.
    net.offline.insert(2);
    net.run(0, |d, env| d.add(env, &gid, c_ik));
    net.pump();
    net.run(1, |d, env| d.send(env, &gid, b"while C was away"));
    net.pump();
    net.run(0, |d, env| d.update(env, &gid));
    net.pump();
    assert!(net.devs[2].groups().next().is_none());
    net.offline.clear();
    // B never held C's Welcome: syncing with B brings nothing C can join from.
    assert_eq!(net.sync(2, 1), 0);
    assert!(net.devs[2].groups().next().is_none());
    // A re-offers its Welcome; C joins, then fetches what it lacks.
    assert!(net.sync(2, 0) > 0);
    assert_eq!(net.members(2), net.members(0));
    assert_eq!(net.members(0).len(), 3);
    net.sync(2, 1);
    assert_eq!(net.plaintexts(2), vec![b"while C was away".to_vec()]);
    // Everyone agrees, and A stopped re-offering the Welcome once C's ack arrived.
    assert_eq!(net.members(1), net.members(0));
    assert!(net.devs[0].log(&gid).unwrap().welcomes().is_empty());
    net.run(2, |d, env| d.send(env, &gid, b"back"));
    net.pump();
    assert_eq!(net.plaintexts(0).last().unwrap(), b"back");
    // A second exchange sends nothing: the answer holds only what the requester lacks.
    assert_eq!(net.sync(2, 0), 0);
    assert_eq!(net.sync(0, 2), 0);
}

#[test]
fn sync_answers_only_what_is_missing_in_log_order() {
    let mut net = Net::group(3, 7);
    let gid = net.gid(0);
    net.offline.insert(2);
    for i in 0..5u8 {
        net.run(0, |d, env| d.send(env, &gid, &[i]));
        net.pump();
    }
    net.offline.clear();
    let req = net.devs[2].sync_request();
    let resp = net.devs[1].answer_sync(&req);
    assert_eq!(resp.envelopes.len(), 5);
    assert!(!resp.more);
    net.run(2, |d, env| d.apply_sync(env, &resp));
    assert_eq!(net.plaintexts(2), (0..5u8).map(|i| vec![i]).collect::<Vec<_>>());
    assert!(net.devs[1].answer_sync(&net.devs[2].sync_request()).is_empty());
}

#[test]
fn sync_messages_are_canonical_and_bounded() {
    let net = Net::group(3, 8);
    let req = net.devs[2].sync_request();
    let bytes = req.to_bytes();
    assert_eq!(SyncRequest::from_bytes(&bytes).unwrap(), req);
    for cut in 0..bytes.len() {
        assert!(SyncRequest::from_bytes(&bytes[..cut]).is_err(), "truncation at {cut}");
    }
    let flood = SyncRequest {
        identity: req.identity,
        groups: Vec::new(),
        known: (0..=MAX_SYNC_GROUPS as u32)
            .map(|i| {
                let mut g = [0u8; 32];
                g[..4].copy_from_slice(&i.to_be_bytes());
                GroupId(g)
            })
            .collect(),
    };
    assert_eq!(SyncRequest::from_bytes(&flood.to_bytes()), Err(SyncError::TooManyGroups(MAX_SYNC_GROUPS + 1)));
    let resp = SyncResponse { envelopes: vec![vec![1, 2, 3]], welcomes: vec![], more: true };
    assert_eq!(SyncResponse::from_bytes(&resp.to_bytes()).unwrap(), resp);
    assert!(SyncResponse::from_bytes(&[0x52, 0, 0, 2]).is_err(), "a flag must be 0 or 1");
}

#[test]
fn the_backlog_is_bounded_and_evicts_the_oldest() {
    let mut net = Net::group(2, 9);
    let gid = net.gid(0);
    let msg = net.call(0, |d, env| d.send(env, &gid, b"x")).transmit[0].bytes.clone();
    net.queue.clear();
    // A third device that is in no group: every distinct envelope goes to its backlog.
    let mut id = Identity::generate(&mut net.rng);
    net.dir.publish_identity(&mut net.rng, &mut id, NOW, 4).unwrap();
    net.devs.push(Device::new(id, GroupConfig::default(), MemoryStore::new()).unwrap());
    net.events.push(Vec::new());
    for i in 0..MAX_BACKLOG_ENVELOPES + 10 {
        let mut e = msg.clone();
        let n = e.len();
        e[n - 70..n - 66].copy_from_slice(&(i as u32).to_be_bytes());
        let r = net.call(2, |d, env| d.receive(env, &e));
        assert_eq!(r.outcomes, vec![Outcome::Backlogged]);
    }
    assert_eq!(net.devs[2].backlog_len(), MAX_BACKLOG_ENVELOPES);
}

#[test]
fn a_reopened_device_resumes_where_the_last_commit_left_off() {
    let mut net = Net::group(3, 10);
    let gid = net.gid(0);
    net.run(1, |d, env| d.send(env, &gid, b"before"));
    net.pump();
    // Reopen C from its store.
    let store = net.devs[2].store().clone();
    let reopened = Device::open(GroupConfig::default(), store).unwrap();
    let g_old = net.devs[2].group(&gid).unwrap();
    let g_new = reopened.group(&gid).unwrap();
    assert_eq!(g_new.snapshot(), g_old.snapshot());
    assert_eq!(reopened.identity().snapshot(), net.devs[2].identity().snapshot());
    assert_eq!(reopened.log(&gid), net.devs[2].log(&gid));
    assert_eq!(reopened.known_instances(&gid), net.devs[2].known_instances(&gid));
    net.devs[2] = reopened;
    // It goes on: a message after the restart is decrypted, a replay is recognised.
    let sent = net.call(1, |d, env| d.send(env, &gid, b"after"));
    net.pump();
    assert_eq!(net.plaintexts(2), vec![b"before".to_vec(), b"after".to_vec()]);
    let again = sent.transmit[0].bytes.clone();
    let r = net.call(2, |d, env| d.receive(env, &again));
    assert_eq!(r.outcomes, vec![Outcome::Duplicate]);
}

/// A store that fails every commit after the first `ok` ones.
#[derive(Clone, Debug)]
struct Flaky {
    inner: MemoryStore,
    ok: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("disk full")]
struct DiskFull;

impl Storage for Flaky {
    type Error = DiskFull;
    fn commit(&mut self, c: &Commit) -> Result<(), DiskFull> {
        if self.ok == 0 {
            return Err(DiskFull);
        }
        self.ok -= 1;
        let _ = self.inner.commit(c);
        Ok(())
    }
    fn load(&self) -> Result<Stored, DiskFull> {
        Ok(self.inner.load().unwrap_or_default())
    }
}

#[test]
fn a_failed_commit_returns_nothing_to_send_and_the_store_keeps_the_last_committed_state() {
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let mut dir = InMemoryPrekeyDirectory::new();
    let mut a = Identity::generate(&mut rng);
    let mut b = Identity::generate(&mut rng);
    dir.publish_identity(&mut rng, &mut a, NOW, 4).unwrap();
    dir.publish_identity(&mut rng, &mut b, NOW, 4).unwrap();
    let b_ik = b.public_key();
    let mut dev = Device::new(a, GroupConfig::default(), Flaky { inner: MemoryStore::new(), ok: 2 }).unwrap();
    let mut env = Env { rng: &mut rng, now: NOW, prekeys: &mut dir };
    let (gid, created) = dev.create(&mut env, &[b_ik]).unwrap();
    assert_eq!(created.transmit.len(), 1);
    let committed = dev.store().inner.load().unwrap();
    // The next commit fails: the call fails, nothing is handed out for transmission.
    let err = dev.send(&mut env, &gid, b"lost").unwrap_err();
    assert!(matches!(err, DeviceError::Storage(_)), "{err}");
    assert!(matches!(dev.send(&mut env, &gid, b"again"), Err(DeviceError::Poisoned)));
    // The store holds the state after create; reopening resumes from it.
    assert_eq!(dev.store().inner.load().unwrap().state.len(), committed.state.len());
    let reopened = Device::open(GroupConfig::default(), dev.store().inner.clone()).unwrap();
    let g = reopened.group(&gid).unwrap();
    assert_eq!(g.seq(), SeqNo(1), "the failed send consumed nothing");
    assert_eq!(
        committed.state.get(&StateKey::Group(gid)).map(|v| v.to_vec()),
        Some(g.records().core.to_vec()),
        "the stored group is the committed one"
    );
    assert_eq!(reopened.outbox().len(), 1, "the create is still to be sent");
}

#[test]
fn a_received_message_commits_once() {
    let mut net = Net::group(3, 12);
    let gid = net.gid(0);
    let before = net.devs[2].store().commits();
    net.run(1, |d, env| d.send(env, &gid, b"m"));
    net.pump();
    // One commit for the receive (confirming that C sent nothing writes nothing).
    let after = net.devs[2].store().commits();
    assert_eq!(after - before, 1);
}

/// A store that remembers the last commit, to see what one call wrote.
#[derive(Clone, Debug, Default)]
struct Recording {
    inner: MemoryStore,
    last: Vec<(StateKey, usize)>,
    log: usize,
}

impl Storage for Recording {
    type Error = std::convert::Infallible;
    fn commit(&mut self, c: &Commit) -> Result<(), Self::Error> {
        self.last = c.state.iter().map(|(k, v)| (*k, v.as_ref().map_or(0, |v| v.len()))).collect();
        self.log = c.log.iter().map(|(_, e)| e.bytes.len()).sum();
        self.inner.commit(c)
    }
    fn load(&self) -> Result<Stored, Self::Error> {
        self.inner.load()
    }
}

#[test]
fn a_received_message_writes_only_its_senders_record() {
    for n in [3, 24] {
        let mut net = Net::group(n, 12);
        let gid = net.gid(0);
        let b = net.me(1);
        let sent = net.call(1, |d, env| d.send(env, &gid, b"m"));
        net.queue.clear();
        // C's device over a recording store: what does receiving the message write?
        let stored = net.devs[2].store().clone();
        let mut c = Device::open(GroupConfig::default(), Recording { inner: stored, ..Recording::default() }).unwrap();
        let mut env = Env { rng: &mut net.rng, now: NOW, prekeys: &mut net.dir };
        let r = c.receive(&mut env, &sent.transmit[0].bytes).unwrap();
        assert!(r.events.iter().any(|(_, e)| matches!(e, Event::Message { .. })));
        let written = &c.store().last;
        assert_eq!(written.len(), 1, "n = {n}: {written:?}");
        assert_eq!(written[0].0, StateKey::Sender(gid, b), "n = {n}");
        let bytes: usize = written.iter().map(|(_, l)| l).sum::<usize>() + c.store().log;
        assert!(bytes <= 2048, "n = {n}: {bytes} bytes written for one message");
        // And the device reopened from those writes is the same device.
        let again = Device::open(GroupConfig::default(), c.store().inner.clone()).unwrap();
        assert_eq!(again.group(&gid).unwrap().snapshot(), c.group(&gid).unwrap().snapshot());
    }
}

#[test]
fn every_device_reopens_exactly_after_a_busy_history() {
    let mut net = Net::new(5, 14);
    let others: Vec<_> = (1..4).map(|d| net.devs[d].public_key()).collect();
    let mut env = Env { rng: &mut net.rng, now: NOW, prekeys: &mut net.dir };
    let (gid, r) = net.devs[0].create(&mut env, &others).unwrap();
    net.post(0, &r);
    net.pump();
    let e_ik = net.devs[4].public_key();
    net.run(1, |d, env| d.update(env, &gid));
    net.run(2, |d, env| d.send(env, &gid, b"one"));
    net.pump();
    net.run(0, |d, env| d.add(env, &gid, e_ik));
    net.pump();
    let c = net.me(2);
    net.run(3, |d, env| d.remove(env, &gid, c));
    net.run(4, |d, env| d.send(env, &gid, b"two"));
    net.pump();
    net.run(1, |d, env| d.send(env, &gid, b"three"));
    net.pump();
    for d in 0..5 {
        let again = Device::open(GroupConfig::default(), net.devs[d].store().clone()).unwrap();
        assert_eq!(again.identity().snapshot(), net.devs[d].identity().snapshot(), "device {d}");
        let snap = |dev: &Device| dev.group(&gid).map(|g| g.snapshot());
        assert_eq!(snap(&again), snap(&net.devs[d]), "device {d}");
        assert_eq!(again.log(&gid), net.devs[d].log(&gid), "device {d}");
        assert_eq!(again.known_instances(&gid), net.devs[d].known_instances(&gid), "device {d}");
        net.devs[d] = again;
    }
    // The reopened devices go on together.
    net.run(4, |d, env| d.update(env, &gid));
    net.run(0, |d, env| d.send(env, &gid, b"after"));
    net.pump();
    for d in [1, 3, 4] {
        assert_eq!(net.plaintexts(d).last().unwrap(), b"after", "device {d}");
        assert_eq!(net.members(d), net.members(0));
    }
    assert!(net.devs[2].group(&gid).is_none(), "C was removed");
}

#[test]
fn hostile_bytes_change_nothing_a_member_holds() {
    use rand_core::Rng;
    let mut net = Net::group(3, 13);
    let gid = net.gid(0);
    let sent = net.call(1, |d, env| d.send(env, &gid, b"genuine"));
    net.queue.clear();
    let genuine = sent.transmit[0].bytes.clone();
    let snapshot = net.devs[2].group(&gid).unwrap().snapshot();
    let members = net.members(2);
    let mut rng = ChaCha20Rng::seed_from_u64(99);
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for i in 0..400 {
        let mut v = vec![0u8; 1 + (rng.next_u32() % 300) as usize];
        rng.fill_bytes(&mut v);
        if i % 2 == 0 {
            // Looks like an envelope of the group: version, kind, the sender's tag.
            let k = genuine.len().min(v.len()).min(20);
            v[..k].copy_from_slice(&genuine[..k]);
        }
        inputs.push(v);
    }
    inputs.extend((0..genuine.len()).map(|cut| genuine[..cut].to_vec()));
    for (i, v) in inputs.iter().enumerate() {
        let mut env = Env { rng: &mut net.rng, now: NOW, prekeys: &mut net.dir };
        for r in [net.devs[2].receive(&mut env, v), net.devs[2].receive_welcome(&mut env, v)].into_iter().flatten() {
            assert!(r.transmit.is_empty() && r.events.is_empty(), "input {i}: {r:?}");
        }
        assert!(SyncRequest::from_bytes(v).is_err() || v.first() == Some(&0x51), "input {i}");
        let _ = SyncResponse::from_bytes(v);
    }
    // Nothing the member holds changed; the genuine message still decrypts.
    assert_eq!(net.members(2), members);
    assert_eq!(net.devs[2].group(&gid).unwrap().snapshot(), snapshot);
    let r = net.call(2, |d, env| d.receive(env, &genuine));
    assert_eq!(r.outcomes, vec![Outcome::Accepted(gid)]);
    assert_eq!(net.plaintexts(2), vec![b"genuine".to_vec()]);
}
