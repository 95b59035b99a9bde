//! The security game of CCS §7 and Appendix A, played against the real library.
//!
//! An adversary, driven by a seeded CSPRNG, schedules operations (create, add, remove,
//! update, send) and deliveries (reordering, duplication, drops with later
//! retransmission, partitions healed at once or link by link), *compromises* devices and
//! *challenges* every application message. A compromise is a full copy of the device at
//! that moment: its [`dcgka_device::Device`] (identity with prekey secrets, every group
//! state with its 2SM sessions and ratchets, held Welcomes, logs). Besides the compromised
//! devices, the adversary holds the state of every removed member instance as it was when
//! the instance processed its removal (the simulator's shadows). All of these states are
//! *pooled*: a coalition of several compromised and removed members.
//!
//! The adversary sees all traffic. At the end of a run every state it holds is advanced
//! by processing the whole transcript (each state as an adversarial copy, which goes on
//! after its own removal and never erases anything), and then each challenge is checked by
//! actually trying to decrypt it: with the messages the states decrypted while processing
//! and with each state's ratchets directly ([`Group::can_decrypt`]).
//!
//! The safety predicate (the paper's dom-safe, restated for what the simulator knows)
//! decides which challenges count. A challenge `m`, sent by instance `S` at time `t` with
//! `S`'s view `V`, is *safe* when every state of the pool is in one of these cases:
//!
//! - [`Safe::NonMember`]: a compromised instance outside `V` (never added yet, or removed
//!   in `S`'s view);
//! - [`Safe::RemovedOutsideView`]: a removed instance's kept state, outside `V`;
//! - [`Safe::ForwardSecrecy`]: compromised after it had decrypted `m` (or after it sent
//!   `m`), so `m`'s key was deleted;
//! - [`Safe::PostCompromise`]: compromised before `t`, but afterwards the instance issued
//!   an update (or remove, or create) whose view held `S`, and that `S` had processed (or
//!   issued) before sending `m`.
//!
//! Otherwise the challenge is outside the predicate, and [`Unsafe`] names why (the first
//! reason in its order); it is counted, not failed. A failure is a safe challenge that
//! some state of the pool decrypts; it is reported with the seed and the schedule.
//!
//! Pooling is the union of what the pooled states can decrypt: a state is never
//! combined with another's secrets below the level of whole group states (for example, a
//! seed learned by one removed member mixed into another's ratchet). The dom-safe
//! caveat of concurrent removals (spec §11.6) is therefore exercised only as far as the
//! library's auto-heal makes each single state powerless; see `docs/protocol.md` §11.
//!
//! ```
//! use dcgka_sim::game::{GameConfig, play};
//!
//! let report = play(&GameConfig { seed: 3, steps: 30, ..GameConfig::default() });
//! assert!(report.failures.is_empty(), "{}", report.failures.join("\n"));
//! assert!(report.challenges > 0);
//! ```

use std::collections::{BTreeMap, BTreeSet};

use dcgka::events::Event;
use dcgka::group::{Context, Group};
use dcgka::ids::{MemberId, MessageIndex, SeqNo};
use dcgka::prekeys::{Identity, InMemoryPrekeyDirectory};
use dcgka::wire::EnvelopeKind;
use dcgka_device::Env;
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use crate::{Dev, NOW, PacketKind, Sim};

/// What one game does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GameConfig {
    /// Initial group size (device 0 creates the group with devices `1..members`).
    pub members: usize,
    /// Extra devices, outside the group at first, that may be added (or compromised
    /// before they join).
    pub spares: usize,
    /// Random adversary steps before the final heal.
    pub steps: usize,
    /// The seed of everything.
    pub seed: u64,
    /// Percent of steps that compromise a device.
    pub compromise_percent: u32,
    /// At most this many network splits.
    pub partitions: usize,
    /// Percent of delivered packets duplicated.
    pub dup_percent: u32,
    /// Percent of taken packets dropped (retransmitted later).
    pub drop_percent: u32,
    /// Coalesced acks ([`dcgka::group::GroupConfig::coalesce_acks`]); a retransmission
    /// step then also makes a random member send the acks it holds.
    pub coalesce_acks: bool,
}

impl Default for GameConfig {
    fn default() -> Self {
        GameConfig {
            members: 4,
            spares: 2,
            steps: 40,
            seed: 0,
            compromise_percent: 6,
            partitions: 1,
            dup_percent: 5,
            drop_percent: 5,
            coalesce_acks: false,
        }
    }
}

/// Why a challenge lies outside the safety predicate: the adversary legitimately holds
/// its key, so the game does not count it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Unsafe {
    /// The sender itself was compromised before sending, and has not updated since.
    SenderCompromisedUnhealed,
    /// A member of the sender's view was compromised before the message was sent, and
    /// the sender had not processed an update of that member issued after the compromise.
    RecipientCompromisedUnhealed,
    /// A member of the sender's view was compromised after the message was sent but
    /// before it had decrypted it (the key was still held).
    KeyHeldAtCompromise,
    /// A removed member's kept state, for a message sent while it was still in the
    /// sender's view (concurrently with its removal, or before it).
    RemovedButInView,
}

/// Why one pooled state is harmless for a challenge (the challenge counts when every
/// state of the pool is harmless).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Safe {
    /// A compromised instance outside the sender's view (not added yet, or removed).
    NonMember,
    /// A removed instance's kept state, outside the sender's view (§11.2).
    RemovedOutsideView,
    /// Compromised after the message's key was deleted (§11.4).
    ForwardSecrecy,
    /// Compromised before the message, healed by the instance's own update (§11.5).
    PostCompromise,
}

/// What a game did and found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GameReport {
    /// The seed.
    pub seed: u64,
    /// Application messages challenged (every message sent).
    pub challenges: usize,
    /// Challenges inside the safety predicate, checked against the whole pool.
    pub safe: usize,
    /// Safe challenges checked against a pool of two or more states (a coalition).
    pub coalition: usize,
    /// (safe challenge, pooled state) pairs, by why the state is harmless.
    pub safe_pairs: BTreeMap<Safe, usize>,
    /// Challenges outside the predicate, by category.
    pub classified: BTreeMap<Unsafe, usize>,
    /// Of the challenges outside the predicate, how many the adversary did decrypt (so it
    /// is shown to be a working adversary).
    pub unsafe_read: usize,
    /// Devices compromised.
    pub compromises: usize,
    /// Removed instances whose kept state joined the pool.
    pub removed_states: usize,
    /// The largest pool of the run (compromised devices' instances and removed states).
    pub pool: usize,
    /// Safe challenges that the adversary decrypted: each line names the seed.
    pub failures: Vec<String>,
    /// Every challenge, in the order sent.
    pub verdicts: Vec<Verdict>,
    /// The schedule, one line per action.
    pub log: Vec<String>,
}

/// The outcome of one challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The transcript packet carrying the challenged message.
    pub packet: usize,
    /// `Ok` with why each pooled state is harmless (inside the predicate), or the
    /// category that puts the challenge outside it.
    pub predicate: Result<Vec<Safe>, Unsafe>,
    /// Whether the adversary decrypted it.
    pub read: bool,
}

impl GameReport {
    /// Adds another report's counts to this one (the seed, failures and log are kept
    /// from both: failures appended, the log left as is).
    pub fn absorb(&mut self, o: &GameReport) {
        self.challenges += o.challenges;
        self.safe += o.safe;
        self.coalition += o.coalition;
        for (k, n) in &o.safe_pairs {
            *self.safe_pairs.entry(*k).or_default() += n;
        }
        for (k, n) in &o.classified {
            *self.classified.entry(*k).or_default() += n;
        }
        self.unsafe_read += o.unsafe_read;
        self.compromises += o.compromises;
        self.removed_states += o.removed_states;
        self.pool = self.pool.max(o.pool);
        self.failures.extend(o.failures.iter().cloned());
    }
}

/// A compromised device: a full copy taken at `at`.
#[derive(Clone, Debug)]
struct Capture {
    dev: Dev,
    at: usize,
    /// The device's live instance at that moment, if any.
    instance: Option<MemberId>,
    /// Messages (sender, seq) that instance had decrypted by then.
    decrypted: BTreeSet<(MemberId, SeqNo)>,
    device: crate::Device,
}

/// One message sent, as the predicate needs it.
#[derive(Clone, Debug)]
struct Sent {
    at: usize,
    /// The sender's `{sender → hwm}` when it sent.
    hwm: BTreeMap<MemberId, SeqNo>,
}

/// A decrypted message: sender, sequence number, plaintext.
type Plain = (MemberId, SeqNo, Vec<u8>);

/// An operation that carries a fresh seed (update, remove, create).
#[derive(Clone, Debug)]
struct Pcs {
    issuer: MemberId,
    seq: SeqNo,
    at: usize,
    /// The issuer's view after issuing it: who receives the seed.
    view: BTreeSet<MemberId>,
}

/// A group state the adversary holds, as an adversarial copy, with its identity.
struct Held {
    /// The compromise it comes from, or `None` for a removed instance's kept state.
    capture: Option<usize>,
    group: Group,
    identity: Identity,
}

/// The game: a simulation plus what the adversary did.
pub struct Game {
    /// The simulation (with shadows on: removed instances keep their state).
    pub sim: Sim,
    rng: ChaCha20Rng,
    cfg: GameConfig,
    clock: usize,
    captures: Vec<Capture>,
    sent: BTreeMap<usize, Sent>,
    /// PCS operations (update, remove, create): issuing instance, sequence number, time,
    /// and the issuer's view (the recipients of its fresh seed).
    pcs: Vec<Pcs>,
    payloads: usize,
    log: Vec<String>,
}

/// Plays one random game and checks it.
pub fn play(cfg: &GameConfig) -> GameReport {
    let mut g = Game::new(cfg.clone());
    let others: Vec<Dev> = (1..cfg.members.max(2)).collect();
    g.create(0, &others);
    for _ in 0..cfg.steps {
        g.step();
    }
    g.finish();
    g.check()
}

impl Game {
    /// A game with `cfg.members + cfg.spares` devices and no group yet.
    pub fn new(cfg: GameConfig) -> Self {
        let mut sim = Sim::new(cfg.members.max(2) + cfg.spares, cfg.seed);
        sim.shadows = true;
        sim.config.coalesce_acks = cfg.coalesce_acks;
        let rng = ChaCha20Rng::seed_from_u64(cfg.seed ^ 0x9a3e_5ec0_71f1_0007);
        Game {
            sim,
            rng,
            cfg,
            clock: 0,
            captures: Vec::new(),
            sent: BTreeMap::new(),
            pcs: Vec::new(),
            payloads: 0,
            log: Vec::new(),
        }
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.rng.next_u64() % n as u64) as usize }
    }

    fn percent(&mut self, p: u32) -> bool {
        self.rng.next_u32() % 100 < p
    }

    fn name(&self, d: Dev) -> String {
        self.sim.devices[d].name.clone()
    }

    fn actives(&self) -> Vec<Dev> {
        (0..self.sim.devices.len()).filter(|d| self.sim.devices[*d].active()).collect()
    }

    fn pick(&mut self, from: &[Dev]) -> Option<Dev> {
        let k = self.below(from.len());
        from.get(k).copied()
    }

    /// Runs a local operation at `d` and records the PCS operations it issued.
    fn op(&mut self, d: Dev, what: String, f: impl FnOnce(&mut Sim) -> Result<Vec<usize>, crate::SimError>) {
        self.clock += 1;
        let me = self.sim.mid(d);
        let start = self.sim.transcript.len();
        match f(&mut self.sim) {
            Ok(_) => {
                let me = me.or(self.sim.mid(d));
                let view = self.sim.members_at(d);
                for p in &self.sim.transcript[start..] {
                    if p.from != d {
                        continue;
                    }
                    if let (
                        PacketKind::Envelope(EnvelopeKind::Update | EnvelopeKind::Remove | EnvelopeKind::Create, q),
                        Some(m),
                    ) = (p.kind, me)
                    {
                        self.pcs.push(Pcs { issuer: m, seq: q, at: self.clock, view: view.clone() });
                    }
                }
                self.log.push(format!("t{} {}: {what}", self.clock, self.name(d)));
            }
            Err(e) => self.log.push(format!("t{} {}: {what} refused: {e:?}", self.clock, self.name(d))),
        }
    }

    /// `create` at `d` with `others`.
    pub fn create(&mut self, d: Dev, others: &[Dev]) {
        let names: Vec<String> = others.iter().map(|o| self.name(*o)).collect();
        let others = others.to_vec();
        self.op(d, format!("create with {names:?}"), |sim| sim.create(d, &others));
    }

    /// `update` at `d`.
    pub fn update(&mut self, d: Dev) {
        self.op(d, "update".into(), |sim| sim.update(d));
    }

    /// `add` of device `target` by `d`.
    pub fn add(&mut self, d: Dev, target: Dev) {
        let t = self.name(target);
        self.op(d, format!("add {t}"), |sim| sim.add(d, target));
    }

    /// `remove` by `d` of the member instance `m`.
    pub fn remove(&mut self, d: Dev, m: MemberId) {
        let t = self.sim.name_of_member(&m);
        self.op(d, format!("remove {t}"), |sim| sim.remove_member(d, m));
    }

    /// `send` at `d` of a fresh payload; returns its transcript id.
    pub fn send(&mut self, d: Dev) -> Option<usize> {
        let pt = format!("game message {} from {}", self.payloads, self.name(d)).into_bytes();
        self.payloads += 1;
        let before = self.sim.messages.len();
        let text = String::from_utf8_lossy(&pt).into_owned();
        self.op(d, format!("send {text:?}"), |sim| sim.send(d, &pt));
        if self.sim.messages.len() == before {
            return None;
        }
        let m = self.sim.messages.last()?;
        let hwm = self.sim.devices[d].group().map(Group::sync_state).unwrap_or_default();
        self.sent.insert(m.packet, Sent { at: self.clock, hwm });
        Some(m.packet)
    }

    /// The adversary copies device `d`'s whole state.
    pub fn compromise(&mut self, d: Dev) {
        self.clock += 1;
        let dev = &self.sim.devices[d];
        let instance = dev.group().filter(|g| *g.status() == dcgka::group::Status::Active).map(Group::me);
        let mut decrypted = BTreeSet::new();
        if instance.is_some() {
            for e in &dev.events[dev.instance_start.min(dev.events.len())..] {
                if let Event::Message { sender, seq, .. } = e {
                    decrypted.insert((*sender, *seq));
                }
            }
        }
        let mut device = dev.device.clone();
        device.set_adversarial_instances(true);
        let gids: Vec<_> = device.groups().map(|(g, _)| *g).collect();
        for gid in gids {
            if let Some((g, _)) = device.group_mut(&gid) {
                g.set_adversarial(true);
            }
        }
        let at = self.clock;
        self.captures.push(Capture { dev: d, at, instance, decrypted, device });
        let name = self.name(d);
        let inst = instance.map_or_else(|| "no instance".to_string(), |m| format!("instance {m}"));
        self.log.push(format!("t{at} compromise {name} ({inst})"));
    }

    /// Delivers `n` random queued packets (dropping or duplicating some).
    pub fn deliver(&mut self, n: usize) {
        self.clock += 1;
        let mut done = 0;
        for _ in 0..n {
            let with: Vec<Dev> =
                (0..self.sim.devices.len()).filter(|d| !self.sim.devices[*d].inbox.is_empty()).collect();
            let Some(to) = self.pick(&with) else { break };
            let k = self.below(self.sim.devices[to].inbox.len());
            let Some(p) = self.sim.devices[to].inbox.remove(k) else { break };
            if p.kind != PacketKind::Welcome && self.percent(self.cfg.drop_percent) {
                self.sim.held[to].push(p);
                continue;
            }
            if self.percent(self.cfg.dup_percent) {
                self.sim.devices[to].inbox.push_back(p.clone());
            }
            self.sim.deliver(to, p);
            done += 1;
        }
        self.log.push(format!("t{} deliver {done} packets", self.clock));
    }

    /// Delivers everything queued, in FIFO order per inbox, until quiet.
    pub fn deliver_all(&mut self) {
        self.clock += 1;
        self.sim.deliver_all();
        self.log.push(format!("t{} deliver everything", self.clock));
    }

    /// Queues dropped packets again where the network lets them through.
    fn retransmit(&mut self) {
        self.clock += 1;
        let mut moved = 0;
        for to in 0..self.sim.devices.len() {
            let active = self.sim.devices[to].active();
            let held = std::mem::take(&mut self.sim.held[to]);
            let (now, later): (Vec<_>, Vec<_>) = held.into_iter().partition(|p| {
                let same_side = self.sim.partition.as_ref().is_none_or(|side| side[p.from] == side[to]);
                let joins = matches!(p.kind, PacketKind::Welcome | PacketKind::Envelope(EnvelopeKind::Create, _));
                same_side && (active || joins)
            });
            self.sim.held[to] = later;
            moved += now.len();
            self.sim.devices[to].inbox.extend(now);
        }
        self.log.push(format!("t{} retransmit {moved} packets", self.clock));
    }

    fn network(&mut self) {
        self.clock += 1;
        let n = self.sim.devices.len();
        if let Some(side) = self.sim.partition.clone() {
            if self.percent(50) {
                let pairs: Vec<(Dev, Dev)> = (0..n)
                    .flat_map(|a| (a + 1..n).map(move |b| (a, b)))
                    .filter(|(a, b)| side[*a] != side[*b])
                    .collect();
                if let Some(&(a, b)) = pairs.get(self.below(pairs.len())) {
                    self.sim.link(a, b);
                    self.sim.sync_pair(a, b);
                    self.sim.sync_pair(b, a);
                    self.log.push(format!("t{} link {} and {}", self.clock, self.name(a), self.name(b)));
                }
            } else {
                self.sim.heal();
                self.log.push(format!("t{} heal", self.clock));
            }
        } else if self.cfg.partitions > 0 {
            let mut sides: Vec<usize> = (0..n).map(|_| (self.rng.next_u32() % 2) as usize).collect();
            if sides.iter().all(|s| *s == sides[0]) {
                let k = self.below(n);
                sides[k] = 1 - sides[k];
            }
            self.log.push(format!("t{} split {sides:?}", self.clock));
            self.sim.split(sides);
        }
    }

    /// One random adversary action.
    pub fn step(&mut self) {
        let actives = self.actives();
        if !actives.iter().any(|d| self.sim.members_at(*d).len() >= 2) {
            // The group emptied: start a new one among all devices.
            let d = self.below(self.sim.devices.len());
            let others: Vec<Dev> = (0..self.sim.devices.len()).filter(|o| *o != d).collect();
            self.create(d, &others);
            return;
        }
        let roll = self.rng.next_u32() % 100;
        let c = self.cfg.compromise_percent;
        if roll < c {
            let n = self.sim.devices.len();
            let d = self.below(n);
            self.compromise(d);
        } else if roll < c + 34 {
            if let Some(d) = self.pick(&actives) {
                self.send(d);
            }
        } else if roll < c + 62 {
            let queued: usize = self.sim.devices.iter().map(|d| d.inbox.len()).sum();
            let n = 1 + self.below(queued);
            self.deliver(n);
        } else if roll < c + 72 {
            if let Some(d) = self.pick(&actives) {
                self.update(d);
            }
        } else if roll < c + 80 {
            let Some(d) = self.pick(&actives) else { return };
            let Some(g) = self.sim.devices[d].group() else { return };
            let iks: Vec<_> = g.members().iter().filter_map(|m| g.identity_of(m)).collect();
            let cands: Vec<Dev> = (0..self.sim.devices.len()).filter(|c| !iks.contains(&self.sim.ik(*c))).collect();
            if let Some(t) = self.pick(&cands) {
                self.add(d, t);
            }
        } else if roll < c + 87 {
            let Some(d) = self.pick(&actives) else { return };
            let Some(g) = self.sim.devices[d].group() else { return };
            let me = g.me();
            let others: Vec<MemberId> = g.members().into_iter().filter(|m| *m != me).collect();
            if others.len() >= 2 {
                let k = self.below(others.len());
                self.remove(d, others[k]);
            }
        } else if roll < c + 93 {
            self.retransmit();
            if self.cfg.coalesce_acks
                && let Some(d) = self.pick(&actives)
                && self.sim.flush(d)
            {
                self.log.push(format!("t{} {}: flush held acks", self.clock, self.name(d)));
            }
        } else {
            self.network();
        }
    }

    /// Heals the network, delivers everything, has every active member send once more,
    /// and delivers everything again.
    pub fn finish(&mut self) {
        self.clock += 1;
        self.sim.heal();
        self.sim.deliver_random(0, 0);
        for d in self.actives() {
            self.send(d);
        }
        self.clock += 1;
        self.sim.deliver_random(0, 0);
        self.log.push(format!("t{} heal and deliver everything", self.clock));
    }

    /// The adversary's pool: every compromised device advanced through the whole
    /// transcript (its instances, including those it joins or is removed from on the
    /// way), and every removed instance's kept state advanced likewise.
    fn pool(&mut self) -> (Vec<Held>, BTreeSet<Plain>) {
        let mut rng = ChaCha20Rng::seed_from_u64(self.cfg.seed ^ 0xadd5);
        let mut dir: InMemoryPrekeyDirectory = self.sim.directory.clone();
        let transcript = self.sim.transcript.clone();
        let mut read = BTreeSet::new();
        let mut held = Vec::new();
        let note = |events: &mut dyn Iterator<Item = Event>, read: &mut BTreeSet<_>| {
            for e in events {
                if let Event::Message { sender, seq, plaintext, .. } = e {
                    read.insert((sender, seq, plaintext));
                }
            }
        };
        for (ci, c) in self.captures.iter().enumerate() {
            let mut device = c.device.clone();
            let mut retired = Vec::new();
            for p in &transcript {
                let mut env = Env { rng: &mut rng, now: NOW, prekeys: &mut dir };
                let r = if p.kind == PacketKind::Welcome {
                    device.receive_welcome(&mut env, &p.bytes)
                } else {
                    device.receive(&mut env, &p.bytes)
                };
                if let Ok(r) = r {
                    note(&mut r.events.into_iter().map(|(_, e)| e), &mut read);
                }
                for (_, g) in device.take_retired() {
                    retired.push(g);
                }
            }
            let identity = device.identity().clone();
            for g in retired {
                held.push(Held { capture: Some(ci), group: g, identity: identity.clone() });
            }
            for (_, g) in device.groups() {
                held.push(Held { capture: Some(ci), group: g.clone(), identity: identity.clone() });
            }
        }
        for dev in &self.sim.devices {
            for sh in &dev.shadows {
                note(&mut sh.events.clone().into_iter(), &mut read);
                held.push(Held { capture: None, group: sh.group.clone(), identity: sh.identity.clone() });
            }
        }
        // Every held state (a removed one included) processes the whole transcript.
        for h in &mut held {
            for p in &transcript {
                if p.kind == PacketKind::Welcome {
                    continue;
                }
                let mut ctx = Context { rng: &mut rng, now: NOW, prekeys: &mut dir, identity: &mut h.identity };
                if let Ok(out) = h.group.receive(&mut ctx, &p.bytes) {
                    note(&mut out.events.into_iter(), &mut read);
                }
            }
        }
        (held, read)
    }

    /// Judges one pooled state for a challenge.
    fn judge(&self, h: &Held, m: &crate::SentMessage, seq: SeqNo) -> Result<Safe, Unsafe> {
        let y = h.group.me();
        let Some(ci) = h.capture else {
            return if m.view.contains(&y) { Err(Unsafe::RemovedButInView) } else { Ok(Safe::RemovedOutsideView) };
        };
        let c = &self.captures[ci];
        let sent = self.sent.get(&m.packet);
        let t = sent.map_or(0, |s| s.at);
        let is_sender = y == m.sender;
        if !is_sender && !m.view.contains(&y) {
            return Ok(Safe::NonMember);
        }
        // The instance as it was compromised (a device compromised before it joined holds
        // the instance it joins with the copy; it counts as compromised at that time).
        let same = c.instance == Some(y);
        if c.at > t && same && (is_sender || c.decrypted.contains(&(m.sender, seq))) {
            return Ok(Safe::ForwardSecrecy);
        }
        if c.at > t && same {
            return Err(Unsafe::KeyHeldAtCompromise);
        }
        if c.at > t {
            // An instance the copy joined (or reached) only after the message: its key
            // was never deleted by the real device before the copy was taken.
            return Err(Unsafe::KeyHeldAtCompromise);
        }
        // Healed: after the compromise, the instance issued a fresh seed that the sender
        // received (it was in the issuer's view) and processed before sending; the
        // sender's key schedule has absorbed a secret the copy never sees. A sender added
        // concurrently derives its keys from its adder instead, and is not counted healed.
        let healed = self.pcs.iter().any(|u| {
            u.issuer == y
                && u.at > c.at
                && u.at < t
                && (is_sender
                    || (u.view.contains(&m.sender)
                        && sent.is_some_and(|s| s.hwm.get(&y).is_some_and(|h| h.0 >= u.seq.0))))
        });
        match (healed, is_sender) {
            (true, _) => Ok(Safe::PostCompromise),
            (false, true) => Err(Unsafe::SenderCompromisedUnhealed),
            (false, false) => Err(Unsafe::RecipientCompromisedUnhealed),
        }
    }

    /// Builds the pool and checks every challenge.
    pub fn check(&mut self) -> GameReport {
        let (held, read) = self.pool();
        let mut r = GameReport {
            seed: self.cfg.seed,
            compromises: self.captures.len(),
            removed_states: held.iter().filter(|h| h.capture.is_none()).count(),
            pool: held.len(),
            ..GameReport::default()
        };
        // Message indices as the recipients saw them.
        let mut index: BTreeMap<(MemberId, SeqNo), MessageIndex> = BTreeMap::new();
        for dev in &self.sim.devices {
            for e in &dev.events {
                if let Event::Message { sender, seq, index: i, .. } = e {
                    index.insert((*sender, *seq), *i);
                }
            }
        }
        for m in &self.sim.messages {
            let p = &self.sim.transcript[m.packet];
            let PacketKind::Envelope(_, seq) = p.kind else { continue };
            r.challenges += 1;
            let idx: Vec<MessageIndex> = match index.get(&(m.sender, seq)) {
                Some(i) => vec![*i],
                None => (0..16).map(MessageIndex).collect(),
            };
            let mut by: Vec<String> = Vec::new();
            if read.contains(&(m.sender, seq, m.plaintext.clone())) {
                by.push("a pooled state decrypted it while processing the transcript".into());
            }
            for h in &held {
                if idx.iter().any(|i| h.group.can_decrypt(&p.bytes, *i).as_deref() == Some(&m.plaintext[..])) {
                    let whose = match h.capture {
                        Some(ci) => format!(
                            "the copy of {} taken at t{}",
                            self.name(self.captures[ci].dev),
                            self.captures[ci].at
                        ),
                        None => "a removed instance's kept state".to_string(),
                    };
                    by.push(format!("the ratchets of {} ({whose}) decrypt it", self.sim.name_of_member(&h.group.me())));
                }
            }
            let verdicts: Vec<Result<Safe, Unsafe>> = held.iter().map(|h| self.judge(h, m, seq)).collect();
            if let Some(why) = verdicts.iter().filter_map(|v| v.err()).min() {
                *r.classified.entry(why).or_default() += 1;
                if !by.is_empty() {
                    r.unsafe_read += 1;
                }
                r.verdicts.push(Verdict { packet: m.packet, predicate: Err(why), read: !by.is_empty() });
                continue;
            }
            r.safe += 1;
            if held.len() >= 2 {
                r.coalition += 1;
            }
            let safe: Vec<Safe> = verdicts.into_iter().flatten().collect();
            for s in &safe {
                *r.safe_pairs.entry(*s).or_default() += 1;
            }
            r.verdicts.push(Verdict { packet: m.packet, predicate: Ok(safe), read: !by.is_empty() });
            if !by.is_empty() {
                let view: Vec<String> = m.view.iter().map(|v| self.sim.name_of_member(v)).collect();
                let pool: Vec<String> = held
                    .iter()
                    .map(|h| format!("{} {:?}", self.sim.name_of_member(&h.group.me()), self.judge(h, m, seq)))
                    .collect();
                r.failures.push(format!(
                    "seed {}: message #{} ({:?}) from {} at t{} to the view {view:?}: {}; pool: {pool:?}",
                    self.cfg.seed,
                    m.packet,
                    String::from_utf8_lossy(&m.plaintext),
                    self.sim.name_of_member(&m.sender),
                    self.sent.get(&m.packet).map_or(0, |s| s.at),
                    by.join("; ")
                ));
            }
        }
        r.log = self.log.clone();
        r
    }
}
