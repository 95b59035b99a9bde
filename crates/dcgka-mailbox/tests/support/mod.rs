//! Real devices on a lossless in-memory network with a tap: every envelope and Welcome
//! transmitted is recorded, so tests can deposit them into a mailbox. Devices in
//! `offline` miss what is sent.

#![allow(dead_code)]

use std::collections::{BTreeSet, VecDeque};

use dcgka::codec::Writer;
use dcgka::events::Event;
use dcgka::group::GroupConfig;
use dcgka::ids::{GroupId, MemberId, MemberTag};
use dcgka::prekeys::{Identity, InMemoryPrekeyDirectory};
use dcgka::{IdentityKey, SenderRef};
use dcgka_device::{Destination, Device, DeviceError, Env, MemoryStore, Outcome, Report, SyncRequest, SyncResponse};
use dcgka_mailbox::Mailbox;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// A fixed "now" for prekey validity.
pub(crate) const NOW: u64 = 1_800_000_000;

/// Devices, the prekey directory, packets in flight and the tap.
pub(crate) struct World {
    pub(crate) rng: ChaCha20Rng,
    pub(crate) dir: InMemoryPrekeyDirectory,
    pub(crate) devs: Vec<Device>,
    pub(crate) queue: VecDeque<(usize, Vec<u8>, bool)>,
    pub(crate) offline: BTreeSet<usize>,
    pub(crate) events: Vec<Vec<(GroupId, Event)>>,
    /// Every group envelope transmitted, in order.
    pub(crate) tape: Vec<Vec<u8>>,
    /// Every Welcome transmitted: (recipient, group, bytes).
    pub(crate) directs: Vec<(IdentityKey, GroupId, Vec<u8>)>,
}

impl World {
    /// `n` devices with published prekeys, in no group.
    pub(crate) fn new(n: usize, seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut dir = InMemoryPrekeyDirectory::new();
        let devs = (0..n)
            .map(|_| {
                let mut id = Identity::generate(&mut rng);
                dir.publish_identity(&mut rng, &mut id, NOW, 16).unwrap();
                Device::new(id, GroupConfig::default(), MemoryStore::new()).unwrap()
            })
            .collect();
        World {
            rng,
            dir,
            devs,
            queue: VecDeque::new(),
            offline: BTreeSet::new(),
            events: vec![Vec::new(); n],
            tape: Vec::new(),
            directs: Vec::new(),
        }
    }

    /// Runs a device call that must succeed, records and queues what it transmits.
    pub(crate) fn call(
        &mut self,
        d: usize,
        f: impl FnOnce(&mut Device, &mut Env<'_, ChaCha20Rng>) -> Result<Report, DeviceError>,
    ) -> Report {
        let mut env = Env { rng: &mut self.rng, now: NOW, prekeys: &mut self.dir };
        let r = f(&mut self.devs[d], &mut env).unwrap();
        self.post(d, &r);
        r
    }

    /// [`World::call`] when the report is not needed.
    pub(crate) fn run(
        &mut self,
        d: usize,
        f: impl FnOnce(&mut Device, &mut Env<'_, ChaCha20Rng>) -> Result<Report, DeviceError>,
    ) {
        let _ = self.call(d, f);
    }

    /// Records a report's events and transmissions, queues them and marks them sent.
    pub(crate) fn post(&mut self, from: usize, r: &Report) {
        self.events[from].extend(r.events.iter().cloned());
        for t in &r.transmit {
            match t.to {
                Destination::Group => self.tape.push(t.bytes.clone()),
                Destination::Identity(ik) => self.directs.push((ik, t.gid, t.bytes.clone())),
                _ => {}
            }
            for to in 0..self.devs.len() {
                let (wanted, welcome) = match t.to {
                    Destination::Group => (to != from, false),
                    Destination::Identity(ik) => (self.devs[to].public_key() == ik, true),
                    _ => (false, false),
                };
                if wanted && !self.offline.contains(&to) {
                    self.queue.push_back((to, t.bytes.clone(), welcome));
                }
            }
        }
        let ids: Vec<u64> = r.transmit.iter().map(|t| t.id).collect();
        self.devs[from].mark_sent(&ids).unwrap();
    }

    /// Delivers everything in flight, and whatever that produces.
    pub(crate) fn pump(&mut self) {
        while let Some((to, bytes, welcome)) = self.queue.pop_front() {
            if self.offline.contains(&to) {
                continue;
            }
            self.run(to, |d, env| if welcome { d.receive_welcome(env, &bytes) } else { d.receive(env, &bytes) });
        }
    }

    /// Device `d`'s member instance in `gid`.
    pub(crate) fn me(&self, d: usize, gid: &GroupId) -> MemberId {
        self.devs[d].group(gid).unwrap().me()
    }

    /// Every plaintext device `d` decrypted, in order.
    pub(crate) fn plaintexts(&self, d: usize) -> Vec<Vec<u8>> {
        self.events[d]
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Message { plaintext, .. } => Some(plaintext.clone()),
                _ => None,
            })
            .collect()
    }

    /// Device `d` syncs with the mailbox alone until the mailbox has nothing more for it
    /// (both messages go through their wire encodings). Returns the responses.
    pub(crate) fn sync_with(&mut self, d: usize, mailbox: &mut Mailbox) -> Vec<SyncResponse> {
        let mut out = Vec::new();
        for _ in 0..100 {
            let req = SyncRequest::from_bytes(&self.devs[d].sync_request().to_bytes()).unwrap();
            let resp = mailbox.answer_sync(&req).unwrap();
            let resp = SyncResponse::from_bytes(&resp.to_bytes()).unwrap();
            if resp.is_empty() {
                return out;
            }
            let r = self.call(d, |dev, env| dev.apply_sync(env, &resp));
            assert!(r.outcomes.iter().all(|o| !matches!(o, Outcome::Dropped(_))), "{:?}", r.outcomes);
            out.push(resp);
        }
        panic!("the mailbox kept answering");
    }
}

/// The scenario most tests use: A (0) creates a group with B (1) and C (2); messages, an
/// update by B; A adds D (3) while D is offline (D misses its Welcome and everything
/// after); then A and C send. Everything else is delivered.
pub(crate) struct Scenario {
    pub(crate) world: World,
    pub(crate) gid: GroupId,
}

/// Plaintexts sent after D's addition, in order.
pub(crate) const AFTER_ADD: [&[u8]; 2] = [b"after the add, from A", b"after the add, from C"];

impl Scenario {
    pub(crate) fn build(seed: u64) -> Self {
        let mut w = World::new(4, seed);
        let others = [w.devs[1].public_key(), w.devs[2].public_key()];
        let mut env = Env { rng: &mut w.rng, now: NOW, prekeys: &mut w.dir };
        let (gid, r) = w.devs[0].create(&mut env, &others).unwrap();
        w.post(0, &r);
        w.pump();
        w.run(0, |d, env| d.send(env, &gid, b"hello from A"));
        w.pump();
        w.run(1, |d, env| d.send(env, &gid, b"hello from B"));
        w.pump();
        w.run(1, |d, env| d.update(env, &gid));
        w.pump();
        w.offline.insert(3);
        let d_ik = w.devs[3].public_key();
        w.run(0, |d, env| d.add(env, &gid, d_ik));
        w.pump();
        w.run(0, |d, env| d.send(env, &gid, AFTER_ADD[0]));
        w.pump();
        w.run(2, |d, env| d.send(env, &gid, AFTER_ADD[1]));
        w.pump();
        Scenario { world: w, gid }
    }

    /// The identity key of device `d`.
    pub(crate) fn ik(&self, d: usize) -> IdentityKey {
        self.world.devs[d].public_key()
    }

    /// A mailbox serving the group with every envelope and Welcome of the tape.
    pub(crate) fn fill(&self, mailbox: &mut Mailbox) {
        mailbox.serve(self.gid).unwrap();
        for e in &self.world.tape {
            assert!(matches!(mailbox.deposit(&self.gid, e).unwrap(), dcgka_mailbox::Deposit::Stored { evicted: 0 }));
        }
        for (ik, gid, bytes) in &self.world.directs {
            mailbox.hold_direct(ik, gid, bytes).unwrap();
        }
    }
}

/// The sender of an envelope.
pub(crate) fn sender(envelope: &[u8]) -> SenderRef {
    dcgka::Group::peek(envelope).unwrap().sender
}

/// A well-formed application envelope that no member would accept (its signature is
/// garbage): enough for the mailbox, which verifies nothing. `filler` body bytes.
pub(crate) fn crafted(tag: MemberTag, seq: u64, filler: usize, salt: u64) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(dcgka::consts::WIRE_VERSION);
    w.u8(dcgka::EnvelopeKind::Application.tag());
    w.var(seq);
    w.raw(&tag.0);
    w.u8(0); // no signing-key rotation
    w.var(1); // epoch delta
    w.raw(&vec![0xAB; 16 + filler]);
    let mut sig = [0u8; 64];
    sig[..8].copy_from_slice(&salt.to_be_bytes());
    w.raw(&sig);
    w.into_bytes()
}

/// The same envelope with another signature: other bytes, same routing header.
pub(crate) fn variant(envelope: &[u8], salt: u64) -> Vec<u8> {
    let mut v = envelope.to_vec();
    let n = v.len();
    v[n - 8..].copy_from_slice(&salt.to_be_bytes());
    v
}
