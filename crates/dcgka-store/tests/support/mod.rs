//! Devices on SQLite stores in a temporary directory, on a lossless in-memory network,
//! shared by the store's test suites; devices listed in `offline` miss what is sent.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use dcgka::events::Event;
use dcgka::group::GroupConfig;
use dcgka::ids::{GroupId, MemberId};
use dcgka::prekeys::{Identity, InMemoryPrekeyDirectory};
use dcgka_device::{Destination, Device, DeviceError, Env, Report, Transmit};
use dcgka_store::{StorageKey, Store};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sha2::{Digest, Sha256};

/// A fixed "now" for prekey validity.
pub(crate) const NOW: u64 = 1_800_000_000;

/// The storage key of device `d` in the tests.
pub(crate) fn key(d: usize) -> StorageKey {
    StorageKey::from_bytes([0x40 + d as u8; 32])
}

/// Devices on stores, the prekey directory and the packets in flight.
pub(crate) struct Net {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) rng: ChaCha20Rng,
    pub(crate) pki: InMemoryPrekeyDirectory,
    devs: Vec<Option<Device<Store>>>,
    pub(crate) queue: VecDeque<(usize, Transmit)>,
    pub(crate) offline: BTreeSet<usize>,
    /// Every event each device reported, in order.
    pub(crate) events: Vec<Vec<(GroupId, Event)>>,
}

impl Net {
    /// `n` devices with published prekeys, in no group, each on its own store.
    pub(crate) fn new(n: usize, seed: u64) -> Self {
        Self::new_with(n, seed, |d, path| Store::create(path, &key(d)).unwrap())
    }

    /// [`Net::new`], with the stores made by `make` (given the device and its file).
    pub(crate) fn new_with(n: usize, seed: u64, make: impl Fn(usize, &Path) -> Store) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut pki = InMemoryPrekeyDirectory::new();
        let devs = (0..n)
            .map(|d| {
                let mut id = Identity::generate(&mut rng);
                pki.publish_identity(&mut rng, &mut id, NOW, 16).unwrap();
                let store = make(d, &dir.path().join(format!("dev{d}.sqlite")));
                Some(Device::new(id, GroupConfig::default(), store).unwrap())
            })
            .collect();
        Net { dir, rng, pki, devs, queue: VecDeque::new(), offline: BTreeSet::new(), events: vec![Vec::new(); n] }
    }

    /// A network of devices opened elsewhere (their files in `dir`), with an empty
    /// prekey directory.
    pub(crate) fn adopt(dir: tempfile::TempDir, devs: Vec<Device<Store>>, seed: u64) -> Self {
        let n = devs.len();
        Net {
            dir,
            rng: ChaCha20Rng::seed_from_u64(seed),
            pki: InMemoryPrekeyDirectory::new(),
            devs: devs.into_iter().map(Some).collect(),
            queue: VecDeque::new(),
            offline: BTreeSet::new(),
            events: vec![Vec::new(); n],
        }
    }

    /// A group of `n` devices created by device 0, every packet delivered.
    pub(crate) fn group(n: usize, seed: u64) -> Self {
        let mut net = Net::new(n, seed);
        let others: Vec<_> = (1..n).map(|d| net.dev(d).public_key()).collect();
        let (_, r) = net.try_call(0, |dev, env| dev.create(env, &others)).unwrap();
        net.post(0, &r);
        net.pump();
        net
    }

    /// The file of device `d`.
    pub(crate) fn path(&self, d: usize) -> PathBuf {
        self.dir.path().join(format!("dev{d}.sqlite"))
    }

    /// A file named `name` in the network's directory.
    pub(crate) fn path_of(&self, _d: usize, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn dev(&self, d: usize) -> &Device<Store> {
        self.devs[d].as_ref().unwrap()
    }

    pub(crate) fn dev_mut(&mut self, d: usize) -> &mut Device<Store> {
        self.devs[d].as_mut().unwrap()
    }

    /// Closes device `d`'s store and opens the device again from its file.
    pub(crate) fn reopen(&mut self, d: usize) {
        self.close(d);
        self.open(d);
    }

    /// Opens the closed device `d` from its file.
    pub(crate) fn open(&mut self, d: usize) {
        assert!(self.devs[d].is_none(), "device {d} is open");
        let store = Store::open(self.path(d), &key(d)).unwrap();
        self.devs[d] = Some(Device::open(GroupConfig::default(), store).unwrap());
    }

    /// Runs `f` on a plain SQLite connection to device `d`'s file, with the device closed
    /// meanwhile (the store holds the file's lock while open).
    pub(crate) fn raw<T>(&mut self, d: usize, f: impl FnOnce(&rusqlite::Connection) -> T) -> T {
        let was_open = self.devs[d].is_some();
        self.close(d);
        let t = {
            let conn = rusqlite::Connection::open_with_flags(self.path(d), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .unwrap();
            f(&conn)
        };
        if was_open {
            self.open(d);
        }
        t
    }

    /// Closes device `d` (its file stays).
    pub(crate) fn close(&mut self, d: usize) {
        self.devs[d] = None;
    }

    /// Runs a device call that must succeed and queues what it transmits.
    pub(crate) fn call(
        &mut self,
        d: usize,
        f: impl FnOnce(&mut Device<Store>, &mut Env<'_, ChaCha20Rng>) -> Result<Report, DeviceError>,
    ) -> Report {
        let r = self.try_call(d, f).unwrap();
        self.post(d, &r);
        r
    }

    /// [`Net::call`] when the report is not needed.
    pub(crate) fn run(
        &mut self,
        d: usize,
        f: impl FnOnce(&mut Device<Store>, &mut Env<'_, ChaCha20Rng>) -> Result<Report, DeviceError>,
    ) {
        let _ = self.call(d, f);
    }

    /// Runs a device call, returning its result (nothing is queued).
    pub(crate) fn try_call<T>(
        &mut self,
        d: usize,
        f: impl FnOnce(&mut Device<Store>, &mut Env<'_, ChaCha20Rng>) -> Result<T, DeviceError>,
    ) -> Result<T, DeviceError> {
        let mut env = Env { rng: &mut self.rng, now: NOW, prekeys: &mut self.pki };
        f(self.devs[d].as_mut().unwrap(), &mut env)
    }

    /// Queues a report's transmissions for every other device and marks them sent.
    pub(crate) fn post(&mut self, from: usize, r: &Report) {
        self.events[from].extend(r.events.iter().cloned());
        let ids: Vec<u64> = r.transmit.iter().map(|t| t.id).collect();
        for t in &r.transmit {
            for to in 0..self.devs.len() {
                let wanted = match t.to {
                    Destination::Group => to != from,
                    Destination::Identity(ik) => self.devs[to].as_ref().is_some_and(|d| d.public_key() == ik),
                    _ => false,
                };
                if wanted && !self.offline.contains(&to) {
                    self.queue.push_back((to, t.clone()));
                }
            }
        }
        self.dev_mut(from).mark_sent(&ids).unwrap();
    }

    /// Delivers everything in flight, and whatever that produces.
    pub(crate) fn pump(&mut self) {
        while let Some((to, t)) = self.queue.pop_front() {
            if self.offline.contains(&to) || self.devs[to].is_none() {
                continue;
            }
            let welcome = matches!(t.to, Destination::Identity(_));
            let _ = self
                .call(to, |d, env| if welcome { d.receive_welcome(env, &t.bytes) } else { d.receive(env, &t.bytes) });
        }
    }

    /// `to` asks `from` until nothing more comes (sync, §7.7), delivering what that causes.
    pub(crate) fn sync(&mut self, to: usize, from: usize) {
        for _ in 0..64 {
            let req = self.dev(to).sync_request();
            let resp = self.dev(from).answer_sync(&req);
            if resp.is_empty() {
                return;
            }
            let r = self.call(to, |d, env| d.apply_sync(env, &resp));
            self.pump();
            if !resp.more && r.outcomes.iter().all(|o| !matches!(o, dcgka_device::Outcome::Joined(_))) {
                return;
            }
        }
    }

    /// Delivers everything in flight except to `held`, whose packets are returned.
    pub(crate) fn pump_except(&mut self, held: usize) -> Vec<(usize, Transmit)> {
        let mut kept = Vec::new();
        while let Some((to, t)) = self.queue.pop_front() {
            if to == held {
                kept.push((to, t));
                continue;
            }
            self.queue.push_front((to, t));
            let Some((to, t)) = self.queue.pop_front() else { break };
            if self.offline.contains(&to) || self.devs[to].is_none() {
                continue;
            }
            let welcome = matches!(t.to, Destination::Identity(_));
            let _ = self
                .call(to, |d, env| if welcome { d.receive_welcome(env, &t.bytes) } else { d.receive(env, &t.bytes) });
        }
        kept
    }

    /// The group of device `d` (its first).
    pub(crate) fn gid(&self, d: usize) -> GroupId {
        *self.dev(d).groups().next().unwrap().0
    }

    /// Device `d`'s member instance in its first group.
    pub(crate) fn me(&self, d: usize) -> MemberId {
        self.dev(d).groups().next().unwrap().1.me()
    }

    /// The members device `d` sees in its first group.
    pub(crate) fn members(&self, d: usize) -> BTreeSet<MemberId> {
        self.dev(d).groups().next().map(|(_, g)| g.members()).unwrap_or_default()
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

/// SHA-256 of a file's bytes, and whether the file exists, for every file of a store
/// (main, journal, WAL).
pub(crate) fn fingerprint(path: &Path) -> Vec<(String, Option<[u8; 32]>)> {
    ["", "-journal", "-wal", "-shm"]
        .iter()
        .map(|s| {
            let mut p = path.as_os_str().to_owned();
            p.push(s);
            let h = std::fs::read(&p).ok().map(|b| Sha256::digest(&b).into());
            (s.to_string(), h)
        })
        .collect()
}

/// The raw bytes of every file in `dir` (main files, journals, WAL, anything else).
pub(crate) fn raw_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| (e.path(), std::fs::read(e.path()).unwrap()))
        .collect();
    v.sort();
    v
}

/// Which of `needles` has any 16-byte window in any file of `dir` (raw bytes: main
/// databases, journals, WAL, anything else).
pub(crate) fn found_in_files(dir: &Path, needles: &[Vec<u8>]) -> Vec<usize> {
    found_windows(dir, needles, 16)
}

/// Which of `needles` has any `width`-byte window in any file of `dir`.
pub(crate) fn found_windows(dir: &Path, needles: &[Vec<u8>], width: usize) -> Vec<usize> {
    use std::collections::HashMap;
    let mut windows: HashMap<&[u8], usize> = HashMap::new();
    for (i, n) in needles.iter().enumerate() {
        assert!(n.len() >= width, "needle {i} is too short to search");
        for w in n.windows(width) {
            windows.insert(w, i);
        }
    }
    let mut found = BTreeSet::new();
    for (_, bytes) in raw_files(dir) {
        for w in bytes.windows(width) {
            if let Some(i) = windows.get(w) {
                found.insert(*i);
            }
        }
    }
    found.into_iter().collect()
}

/// Whether `needle` occurs in `hay`.
pub(crate) fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}
