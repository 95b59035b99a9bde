//! A few devices on a lossless in-memory network, shared by the device test suites; devices
//! listed in `offline` miss what is sent.

#![allow(dead_code)]

use std::collections::{BTreeSet, VecDeque};

use dcgka::events::Event;
use dcgka::group::GroupConfig;
use dcgka::ids::{GroupId, MemberId};
use dcgka::prekeys::{Identity, InMemoryPrekeyDirectory};
use dcgka_device::{
    Destination, Device, DeviceError, Env, MemoryStore, Outcome, Report, SyncRequest, SyncResponse, Transmit,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// A fixed "now" for prekey validity.
pub(crate) const NOW: u64 = 1_800_000_000;

/// Devices, the prekey directory and the packets in flight.
pub(crate) struct Net {
    pub(crate) rng: ChaCha20Rng,
    pub(crate) dir: InMemoryPrekeyDirectory,
    pub(crate) devs: Vec<Device>,
    pub(crate) queue: VecDeque<(usize, Transmit)>,
    pub(crate) offline: BTreeSet<usize>,
    pub(crate) events: Vec<Vec<(GroupId, Event)>>,
}

impl Net {
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
        Net { rng, dir, devs, queue: VecDeque::new(), offline: BTreeSet::new(), events: vec![Vec::new(); n] }
    }

    /// A group of `n` devices created by device 0, every packet delivered.
    pub(crate) fn group(n: usize, seed: u64) -> Self {
        let mut net = Net::new(n, seed);
        let others: Vec<_> = (1..n).map(|d| net.devs[d].public_key()).collect();
        let mut env = Env { rng: &mut net.rng, now: NOW, prekeys: &mut net.dir };
        let (_, r) = net.devs[0].create(&mut env, &others).unwrap();
        net.post(0, &r);
        net.pump();
        net
    }

    /// Runs a device call that must succeed and queues what it transmits.
    pub(crate) fn call(
        &mut self,
        d: usize,
        f: impl FnOnce(&mut Device, &mut Env<'_, ChaCha20Rng>) -> Result<Report, DeviceError>,
    ) -> Report {
        let r = self.try_call(d, f).unwrap();
        self.post(d, &r);
        r
    }

    /// [`Net::call`] when the report is not needed.
    pub(crate) fn run(
        &mut self,
        d: usize,
        f: impl FnOnce(&mut Device, &mut Env<'_, ChaCha20Rng>) -> Result<Report, DeviceError>,
    ) {
        let _ = self.call(d, f);
    }

    /// Runs a device call, returning its result (nothing is queued).
    pub(crate) fn try_call<T>(
        &mut self,
        d: usize,
        f: impl FnOnce(&mut Device, &mut Env<'_, ChaCha20Rng>) -> Result<T, DeviceError>,
    ) -> Result<T, DeviceError> {
        let mut env = Env { rng: &mut self.rng, now: NOW, prekeys: &mut self.dir };
        f(&mut self.devs[d], &mut env)
    }

    /// Queues a report's transmissions for every other device and marks them sent.
    pub(crate) fn post(&mut self, from: usize, r: &Report) {
        self.events[from].extend(r.events.iter().cloned());
        let ids: Vec<u64> = r.transmit.iter().map(|t| t.id).collect();
        for t in &r.transmit {
            for to in 0..self.devs.len() {
                let wanted = match t.to {
                    Destination::Group => to != from,
                    Destination::Identity(ik) => self.devs[to].public_key() == ik,
                    _ => false,
                };
                if wanted && !self.offline.contains(&to) {
                    self.queue.push_back((to, t.clone()));
                }
            }
        }
        self.devs[from].mark_sent(&ids).unwrap();
    }

    /// Delivers everything in flight, and whatever that produces.
    pub(crate) fn pump(&mut self) {
        while let Some((to, t)) = self.queue.pop_front() {
            if self.offline.contains(&to) {
                continue;
            }
            let welcome = matches!(t.to, Destination::Identity(_));
            let _ = self
                .call(to, |d, env| if welcome { d.receive_welcome(env, &t.bytes) } else { d.receive(env, &t.bytes) });
        }
    }

    /// `to` asks `from` until nothing more comes; returns how many items came.
    pub(crate) fn sync(&mut self, to: usize, from: usize) -> usize {
        let mut got = 0;
        loop {
            let req = self.devs[to].sync_request();
            let req = SyncRequest::from_bytes(&req.to_bytes()).unwrap();
            let resp = self.devs[from].answer_sync(&req);
            let resp = SyncResponse::from_bytes(&resp.to_bytes()).unwrap();
            got += resp.len();
            if resp.is_empty() {
                return got;
            }
            let r = self.call(to, |d, env| d.apply_sync(env, &resp));
            self.pump();
            if !resp.more && r.outcomes.iter().all(|o| !matches!(o, Outcome::Joined(_))) {
                return got;
            }
        }
    }

    /// The group of device `d` (its first).
    pub(crate) fn gid(&self, d: usize) -> GroupId {
        *self.devs[d].groups().next().unwrap().0
    }

    /// Device `d`'s member instance in its first group.
    pub(crate) fn me(&self, d: usize) -> MemberId {
        self.devs[d].groups().next().unwrap().1.me()
    }

    /// The members device `d` sees in its first group.
    pub(crate) fn members(&self, d: usize) -> BTreeSet<MemberId> {
        self.devs[d].groups().next().map(|(_, g)| g.members()).unwrap_or_default()
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
}
