//! Crash test: a child process applies a stream of device calls (creates, receives, sends,
//! adds, removes, updates, confirmations of sent items, consumption of the inbox) to a
//! store and is killed with SIGKILL at random points, at least 50 times. After each kill
//! the store opens and holds exactly the state after the last call the child reported or
//! after the one it was in (every call fully applied or not at all); the child is restarted
//! there. At the end the device is exactly where the stream leaves it, every application
//! message reached the application exactly once (its journal of consumed events plus the
//! inbox), and the outbox holds exactly what was not confirmed as sent.
//!
//! The stream is computed first, in this process, with the device on a store and the
//! other members in memory: each call's randomness is seeded by its number and each prekey
//! bundle the device asks for is recorded, so the child's calls produce the very same bytes.
//! Waits on the child are bounded (a reader thread, a channel with a timeout); the only
//! sleep is the random delay that places a kill within a call.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../src/bin/crash_child/stream.rs"]
mod stream;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::BufRead as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use dcgka::events::Event;
use dcgka::group::GroupConfig;
use dcgka::ids::GroupId;
use dcgka::prekeys::{Identity, InMemoryPrekeyDirectory};
use dcgka_device::{Destination, Device, Env, MemoryStore, Report, Transmit};
use dcgka_store::{StorageKey, Store};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

use stream::{Call, NOW, Op, Recording, Stream, read_journal};

/// Calls in the stream (about; the last action may add a few).
const CALLS: usize = 240;
/// Kills required.
const MIN_KILLS: usize = 50;
/// Longest wait for a line from the child.
const CHILD_TIMEOUT: Duration = Duration::from_secs(120);

/// Everything the device holds that a call may change, hashed: identity, groups, logs,
/// kept and held Welcomes, known instances, backlog, outbox (by bytes: item numbers are
/// the device's own) and inbox.
fn fingerprint(dev: &Device<Store>, gids: &BTreeSet<GroupId>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(dev.identity().snapshot().as_slice());
    for gid in gids {
        // A group the device knows nothing of yet adds nothing: the state before the
        // stream's first call (which creates the group) hashes as it did when computed.
        let known = dev.group(gid).is_some()
            || dev.log(gid).is_some()
            || !dev.known_instances(gid).is_empty()
            || !dev.pending_welcomes(gid).is_empty();
        if !known {
            continue;
        }
        h.update(gid.0);
        if let Some(g) = dev.group(gid) {
            h.update(g.snapshot().as_slice());
        }
        if let Some(log) = dev.log(gid) {
            for s in log.senders() {
                for e in log.after(s, 0) {
                    h.update(format!("{:?}{:?}{}{:?}", e.sender, e.seq, e.pos, e.hash));
                    h.update(&e.bytes);
                }
            }
            for w in log.welcomes() {
                h.update(&w.bytes);
            }
        }
        for m in dev.known_instances(gid) {
            h.update(m.0);
        }
        for w in dev.pending_welcomes(gid) {
            h.update(w);
        }
    }
    h.update(dev.backlog_len().to_be_bytes());
    for t in dev.outbox() {
        h.update(format!("{:?}{:?}", t.gid, t.to));
        h.update(&t.bytes);
    }
    for e in dev.store().inbox().unwrap() {
        h.update(format!("{} {:?} {:?}", e.id, e.gid, e.event));
    }
    h.finalize().into()
}

/// The device under test (on a store) and the others (in memory), computing the stream.
struct World {
    dut: Device<Store>,
    others: Vec<Device<MemoryStore>>,
    rng: ChaCha20Rng,
    pki: InMemoryPrekeyDirectory,
    queue: VecDeque<(usize, Transmit)>,
    stream: Stream,
    /// The fingerprint after each call (`fps[0]` before any).
    fps: Vec<[u8; 32]>,
    gids: BTreeSet<GroupId>,
    /// Application messages the device decrypted: inbox event number → plaintext.
    messages: BTreeMap<u64, Vec<u8>>,
    /// Events the application consumed (by number), as the journal will show them.
    consumed: BTreeMap<u64, Option<Vec<u8>>>,
}

impl World {
    fn ik(&self, d: usize) -> dcgka::IdentityKey {
        if d == 0 { self.dut.public_key() } else { self.others[d - 1].public_key() }
    }

    /// Runs the device under test's next call and records it.
    fn dut(&mut self, op: Op) {
        let i = self.stream.calls.len();
        let mut rng = ChaCha20Rng::seed_from_u64(self.stream.call_seed(i));
        let mut pki = Recording { inner: &mut self.pki, seen: Vec::new() };
        let mut env = Env { rng: &mut rng, now: NOW, prekeys: &mut pki };
        let inbox_before: Vec<u64> = self.dut.store().inbox().unwrap().iter().map(|e| e.id).collect();
        let report = match &op {
            Op::Create(others) => self.dut.create(&mut env, others).map(|(g, r)| {
                self.gids.insert(g);
                r
            }),
            Op::Receive(b) => self.dut.receive(&mut env, b),
            Op::Welcome(b) => self.dut.receive_welcome(&mut env, b),
            Op::Send(g, t) => self.dut.send(&mut env, g, t),
            Op::Add(g, k) => self.dut.add(&mut env, g, *k),
            Op::Remove(g, m) => self.dut.remove(&mut env, g, *m),
            Op::Update(g) => self.dut.update(&mut env, g),
            Op::MarkSent(items) => {
                let ids: Vec<u64> =
                    self.dut.outbox().iter().filter(|t| items.contains(&t.bytes)).map(|t| t.id).collect();
                self.dut.mark_sent(&ids).map(|()| Report::default())
            }
            Op::Consume => {
                let events = self.dut.store().inbox().unwrap();
                for e in &events {
                    let plain = match &e.event {
                        Event::Message { plaintext, .. } => Some(plaintext.clone()),
                        _ => None,
                    };
                    self.consumed.insert(e.id, plain);
                }
                self.dut.store().mark_consumed(&events.iter().map(|e| e.id).collect::<Vec<_>>()).unwrap();
                Ok(Report::default())
            }
        };
        let report = report.unwrap_or_else(|e| panic!("call {i} ({op:?}) failed: {e}"));
        let bundles = pki.seen;
        for e in self.dut.store().inbox().unwrap() {
            if !inbox_before.contains(&e.id)
                && let Event::Message { plaintext, .. } = &e.event
            {
                self.messages.insert(e.id, plaintext.clone());
            }
        }
        for (gid, e) in &report.events {
            if matches!(e, Event::Joined { .. }) {
                self.gids.insert(*gid);
            }
        }
        self.route(0, &report.transmit);
        self.stream.calls.push(Call { op, bundles });
        self.fps.push(fingerprint(&self.dut, &self.gids));
    }

    /// Runs a call of another device (`d ≥ 1`).
    fn other(&mut self, d: usize, f: impl FnOnce(&mut Device<MemoryStore>, &mut Env<'_, ChaCha20Rng>) -> Report) {
        let mut env = Env { rng: &mut self.rng, now: NOW, prekeys: &mut self.pki };
        let r = f(&mut self.others[d - 1], &mut env);
        self.route(d, &r.transmit);
        let ids: Vec<u64> = r.transmit.iter().map(|t| t.id).collect();
        self.others[d - 1].mark_sent(&ids).unwrap();
    }

    fn route(&mut self, from: usize, ts: &[Transmit]) {
        for t in ts {
            for to in 0..=self.others.len() {
                let wanted = match t.to {
                    Destination::Group => to != from,
                    Destination::Identity(ik) => self.ik(to) == ik,
                    _ => false,
                };
                if wanted {
                    self.queue.push_back((to, t.clone()));
                }
            }
        }
    }

    /// Delivers everything, the device under test's receipts becoming calls of the stream.
    fn pump(&mut self) {
        while let Some((to, t)) = self.queue.pop_front() {
            let welcome = matches!(t.to, Destination::Identity(_));
            if to == 0 {
                self.dut(if welcome { Op::Welcome(t.bytes) } else { Op::Receive(t.bytes) });
            } else {
                self.other(to, |d, env| {
                    if welcome { d.receive_welcome(env, &t.bytes) } else { d.receive(env, &t.bytes) }.unwrap()
                });
            }
        }
    }

    /// The members (device numbers) in the device under test's view.
    fn members(&self, gid: &GroupId) -> Vec<usize> {
        let g = self.dut.group(gid).unwrap();
        (0..=self.others.len()).filter(|d| g.members().iter().any(|m| g.identity_of(m) == Some(self.ik(*d)))).collect()
    }
}

/// Computes the stream: a group of A (the device under test), B and C, then random sends,
/// updates, adds and removes of D and E by A, others' messages and updates, confirmations
/// of A's outbox items (all but the newest) and consumption of A's inbox.
fn build(dir: &Path, seed: u64) -> (World, Vec<u8>) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut pki = InMemoryPrekeyDirectory::new();
    let mut ids: Vec<Identity> = (0..5)
        .map(|_| {
            let mut id = Identity::generate(&mut rng);
            pki.publish_identity(&mut rng, &mut id, NOW, 64).unwrap();
            id
        })
        .collect();
    let others: Vec<Device<MemoryStore>> =
        ids.drain(1..).map(|id| Device::new(id, GroupConfig::default(), MemoryStore::volatile()).unwrap()).collect();
    let identity = ids.remove(0);
    let initial = identity.snapshot().to_vec();
    let key = [0x5A; 32];
    let store = Store::create(dir.join("precompute.sqlite"), &StorageKey::from_bytes(key)).unwrap();
    let dut = Device::new(identity, GroupConfig::default(), store).unwrap();
    let mut w = World {
        dut,
        others,
        rng,
        pki,
        queue: VecDeque::new(),
        stream: Stream { key, seed: seed ^ 0xC0FFEE, calls: Vec::new() },
        fps: Vec::new(),
        gids: BTreeSet::new(),
        messages: BTreeMap::new(),
        consumed: BTreeMap::new(),
    };
    w.fps.push(fingerprint(&w.dut, &w.gids));
    let mut plan = ChaCha20Rng::seed_from_u64(seed ^ 0x91A4);
    w.dut(Op::Create(vec![w.ik(1), w.ik(2)]));
    let gid = *w.gids.iter().next().unwrap();
    w.pump();
    let mut texts = 0usize;
    let mut text = |who: &str| {
        texts += 1;
        format!("message {texts} from {who}").into_bytes()
    };
    while w.stream.calls.len() < CALLS {
        let members = w.members(&gid);
        let outsiders: Vec<usize> = (1..5).filter(|d| !members.contains(d)).collect();
        let others: Vec<usize> = members.iter().copied().filter(|d| *d != 0).collect();
        match plan.next_u32() % 100 {
            0..=21 => w.dut(Op::Send(gid, text("A"))),
            22..=45 if !others.is_empty() => {
                let d = others[plan.next_u32() as usize % others.len()];
                let t = text(&format!("device {d}"));
                w.other(d, |dev, env| dev.send(env, &gid, &t).unwrap());
            }
            46..=52 => w.dut(Op::Update(gid)),
            53..=58 if !others.is_empty() => {
                let d = others[plan.next_u32() as usize % others.len()];
                w.other(d, |dev, env| dev.update(env, &gid).unwrap());
            }
            59..=66 if !outsiders.is_empty() => {
                let d = outsiders[plan.next_u32() as usize % outsiders.len()];
                let ik = w.ik(d);
                w.dut(Op::Add(gid, ik));
            }
            67..=72 if others.len() > 2 => {
                let d = others[plan.next_u32() as usize % others.len()];
                let g = w.dut.group(&gid).unwrap();
                let m = *g.members().iter().find(|m| g.identity_of(m) == Some(w.ik(d))).unwrap();
                w.dut(Op::Remove(gid, m));
            }
            73..=86 => {
                // Confirm every outbox item but the newest.
                let items: Vec<Vec<u8>> = w.dut.outbox().iter().rev().skip(1).map(|t| t.bytes.clone()).collect();
                w.dut(Op::MarkSent(items));
            }
            87..=99 => w.dut(Op::Consume),
            _ => continue,
        }
        w.pump();
    }
    (w, initial)
}

/// The child's output, line by line, through a reader thread (a bounded wait for each).
fn spawn(bin: &str, dir: &Path, from: usize) -> (Child, mpsc::Receiver<Option<String>>) {
    let mut child = Command::new(bin)
        .arg(dir.join("store.sqlite"))
        .arg(dir.join("stream.bin"))
        .arg(dir.join("journal.txt"))
        .arg(from.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            match line {
                Ok(l) => {
                    if tx.send(Some(l)).is_err() {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = tx.send(None);
    });
    (child, rx)
}

fn next_line(rx: &mpsc::Receiver<Option<String>>) -> Option<String> {
    rx.recv_timeout(CHILD_TIMEOUT).expect("the child answers within the timeout")
}

/// Runs the child over the whole stream, killing it at random points; after each kill,
/// checks that the store holds the state after a whole number of calls and restarts the
/// child there. Returns the kills, and how many found the call under way not applied or
/// applied.
fn replay(
    bin: &str,
    dir: &Path,
    stream: &Stream,
    fps: &[[u8; 32]],
    gids: &BTreeSet<GroupId>,
    plan: &mut ChaCha20Rng,
) -> (usize, usize, usize) {
    let calls = stream.calls.len();
    let key = StorageKey::from_bytes(stream.key);
    let path = dir.join("store.sqlite");
    // The store opens, and is in the state after `k` calls for one `k` in `lo..=hi`.
    let applied = |lo: usize, hi: usize| -> usize {
        let dev = Device::open(GroupConfig::default(), Store::open(&path, &key).unwrap()).unwrap();
        let fp = fingerprint(&dev, gids);
        (lo..=hi.min(calls))
            .find(|k| fps[*k] == fp)
            .unwrap_or_else(|| panic!("the store matches no state between call {lo} and {hi}: a call was torn"))
    };
    let (mut at, mut kills, mut torn_before, mut after_commit, mut runs) = (0usize, 0usize, 0usize, 0usize, 0usize);
    while at < calls {
        runs += 1;
        assert!(runs < 10 * calls, "no progress");
        let (mut child, rx) = spawn(bin, dir, at);
        assert_eq!(next_line(&rx).as_deref(), Some("ready"));
        // Let it report a random number of calls (0 to 6), then kill it a random moment later.
        let wait = plan.next_u32() % 7;
        let mut done = at;
        let mut finished = false;
        for _ in 0..wait {
            match next_line(&rx).as_deref() {
                Some("finished") | None => {
                    finished = true;
                    break;
                }
                Some(l) => done = l.strip_prefix("done ").unwrap().parse::<usize>().unwrap() + 1,
            }
        }
        if !finished {
            // The kill's random place within the call under way (not a wait for an event).
            std::thread::sleep(Duration::from_micros(u64::from(plan.next_u32() % 3000)));
            child.kill().unwrap();
        }
        // Drain the child's last words (bounded: the pipe closes when it dies), then reap it.
        while let Some(l) = next_line(&rx) {
            if let Some(i) = l.strip_prefix("done ") {
                done = i.parse::<usize>().unwrap() + 1;
            }
        }
        let status = child.wait().unwrap();
        if status.success() {
            assert_eq!(done, calls, "the child finished the stream");
        } else {
            kills += 1;
        }
        // Fully applied or not at all: the store is after the last reported call, or after
        // the one under way.
        let now = applied(done, done + 1);
        if now > done {
            after_commit += 1;
        } else if !status.success() {
            torn_before += 1;
        }
        at = now;
    }
    (kills, torn_before, after_commit)
}

/// The end of a replay: the device is where the stream leaves it, the outbox holds what
/// was not confirmed, and every message reached the application exactly once.
fn check_end(
    dir: &Path,
    key: &StorageKey,
    fp: &[u8; 32],
    gids: &BTreeSet<GroupId>,
    expected_outbox: &[Vec<u8>],
    consumed: &BTreeMap<u64, Option<Vec<u8>>>,
    messages: &BTreeMap<u64, Vec<u8>>,
) {
    let dev = Device::open(GroupConfig::default(), Store::open(dir.join("store.sqlite"), key).unwrap()).unwrap();
    assert_eq!(&fingerprint(&dev, gids), fp);
    let outbox: Vec<Vec<u8>> = dev.outbox().iter().map(|t| t.bytes.clone()).collect();
    assert_eq!(outbox, expected_outbox, "the outbox holds exactly what was not confirmed");
    // Every message reached the application exactly once: journal (consumed) + inbox.
    let (journal, twice) = read_journal(&std::fs::read_to_string(dir.join("journal.txt")).unwrap());
    assert!(twice.is_empty(), "events handled twice: {twice:?}");
    assert_eq!(&journal, consumed, "the application consumed exactly what the stream did");
    let mut delivered: BTreeMap<u64, Vec<u8>> = journal.into_iter().filter_map(|(id, p)| p.map(|p| (id, p))).collect();
    for e in dev.store().inbox().unwrap() {
        if let Event::Message { plaintext, .. } = e.event {
            assert!(delivered.insert(e.id, plaintext).is_none(), "event {} consumed and still in the inbox", e.id);
        }
    }
    assert_eq!(&delivered, messages, "every message once, under its number");
    let texts: BTreeSet<&Vec<u8>> = delivered.values().collect();
    assert_eq!(texts.len(), delivered.len(), "no message twice under different numbers");
}

#[test]
fn killed_at_random_points_the_store_applies_every_call_whole_or_not_at_all() {
    let bin = env!("CARGO_BIN_EXE_dcgka-store-crash-child");
    let dir = tempfile::tempdir().unwrap();
    let seed = 11;
    let (world, initial) = build(dir.path(), seed);
    let World { stream, fps, gids, messages, consumed, dut, .. } = world;
    let expected_outbox: Vec<Vec<u8>> = dut.outbox().iter().map(|t| t.bytes.clone()).collect();
    drop(dut);
    let calls = stream.calls.len();
    let kinds = |f: fn(&Op) -> bool| stream.calls.iter().filter(|c| f(&c.op)).count();
    let census = [
        ("receive", kinds(|o| matches!(o, Op::Receive(_) | Op::Welcome(_)))),
        ("send", kinds(|o| matches!(o, Op::Send(..)))),
        ("add", kinds(|o| matches!(o, Op::Add(..)))),
        ("remove", kinds(|o| matches!(o, Op::Remove(..)))),
        ("update", kinds(|o| matches!(o, Op::Update(_)))),
        ("mark sent", kinds(|o| matches!(o, Op::MarkSent(_)))),
        ("consume", kinds(|o| matches!(o, Op::Consume))),
    ];
    assert!(census.iter().all(|(_, n)| *n > 0), "every kind of call is in the stream: {census:?}");
    assert!(!expected_outbox.is_empty(), "the stream ends with unconfirmed items");
    std::fs::write(dir.path().join("stream.bin"), stream.to_bytes()).unwrap();
    let key = StorageKey::from_bytes(stream.key);
    let path = dir.path().join("store.sqlite");
    let mut plan = ChaCha20Rng::seed_from_u64(seed ^ 0x4B11);
    let (mut kills, mut torn_before, mut after_commit, mut passes) = (0usize, 0usize, 0usize, 0usize);
    // Replay the whole stream (from a fresh store) until there were enough kills.
    while kills < MIN_KILLS {
        passes += 1;
        assert!(passes <= 8, "{kills} kills in {passes} passes");
        for f in ["store.sqlite", "store.sqlite-journal", "journal.txt"] {
            let _ = std::fs::remove_file(dir.path().join(f));
        }
        let identity = Identity::restore(&initial).unwrap();
        drop(Device::new(identity, GroupConfig::default(), Store::create(&path, &key).unwrap()).unwrap());
        // A kill before the first call commits finds this state: it must be the first one.
        let fresh = Device::open(GroupConfig::default(), Store::open(&path, &key).unwrap()).unwrap();
        assert_eq!(fingerprint(&fresh, &gids), fps[0], "the fresh store is the state before the first call");
        drop(fresh);
        let (k, t, a) = replay(bin, dir.path(), &stream, &fps, &gids, &mut plan);
        (kills, torn_before, after_commit) = (kills + k, torn_before + t, after_commit + a);
        check_end(dir.path(), &key, &fps[calls], &gids, &expected_outbox, &consumed, &messages);
    }
    eprintln!(
        "{calls} calls {census:?}, {passes} passes, {kills} kills: {torn_before} with the call under way not applied, \
         {after_commit} after its commit"
    );
    assert!(torn_before > 0 && after_commit > 0, "kills landed both inside and after a commit");
    assert!(messages.len() > 20, "{} messages", messages.len());
}
