//! Randomized schedules: a seeded random walk of adds, removes, updates, sends, partial
//! deliveries (reordered, duplicated, dropped and later retransmitted) and network
//! partitions, followed by a full heal and the oracles of [`crate::oracle`].
//!
//! ```
//! use dcgka_sim::random::{RunConfig, run};
//!
//! let cfg = RunConfig { members: 3, steps: 20, seed: 7, partitions: 1, ..RunConfig::default() };
//! let report = run(&cfg, &mut |_, _| {});
//! assert!(report.converged);
//! assert!(report.violations.is_empty(), "{:#?}", report.violations);
//! ```
//!
//! Everything is driven by seeded CSPRNGs, so a run (including every violation it finds)
//! is reproducible from its [`RunConfig`].

use std::collections::BTreeMap;
use std::time::Instant;

use dcgka::events::{Event, RejectReason};
use dcgka::group::GroupError;
use dcgka::ids::MemberId;
use dcgka::wire::EnvelopeKind;
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use crate::{Dev, Packet, PacketKind, Sim, SimError, oracle};

/// What a randomized run does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunConfig {
    /// Initial group size (device 0 creates the group with devices `1..members`).
    pub members: usize,
    /// Extra devices, outside the group at first, that may be added later.
    pub spares: usize,
    /// Number of random steps before the final heal.
    pub steps: usize,
    /// The seed of everything.
    pub seed: u64,
    /// At most this many network splits (each later healed); 0 disables partitions.
    pub partitions: usize,
    /// Probability (percent) that a delivered packet is also duplicated.
    pub dup_percent: u32,
    /// Probability (percent) that a packet is dropped (and retransmitted later).
    pub drop_percent: u32,
    /// Run adversarial shadows and check confidentiality (§11.1, §11.2).
    pub shadows: bool,
    /// Record a human-readable log of every action in [`RunReport::log`].
    pub trace: bool,
    /// Coalesced acks ([`dcgka::group::GroupConfig::coalesce_acks`]): members hold their
    /// acks until their next envelope; a retransmission step also makes one random member
    /// flush, and quiescence flushes everyone.
    pub coalesce_acks: bool,
    /// Every member withholds removed members' late operations
    /// ([`dcgka::group::GroupConfig::withhold_late_operations`]).
    pub withhold_late: bool,
    /// Members compact their membership history (§6.7; the default). Off, a run is the
    /// uncompacted twin a differential test compares it with.
    pub compaction: bool,
    /// At most this many times during the run the clock moves on by the retention period
    /// (§5.7) and every member collects garbage: secrets held for slow members expire and
    /// members removed without a farewell are retired. 0 (the default) keeps the clock
    /// still. With jumps, a message may legitimately be unreadable where secrets expired,
    /// so the delivery oracle covers only the final round, sent after every member updated.
    pub clock_jumps: usize,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            members: 4,
            spares: 2,
            steps: 100,
            seed: 0,
            partitions: 2,
            dup_percent: 5,
            drop_percent: 5,
            shadows: true,
            trace: false,
            coalesce_acks: false,
            withhold_late: false,
            compaction: true,
            clock_jumps: 0,
        }
    }
}

impl RunConfig {
    /// A configuration with `members`, `steps` and `seed`, a number of spare devices
    /// that grows with the group (`members / 2 + 1`), and defaults for the rest.
    pub fn new(members: usize, steps: usize, seed: u64) -> Self {
        RunConfig { members, steps, seed, spares: members / 2 + 1, ..RunConfig::default() }
    }
}

/// What a randomized run did and found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunReport {
    /// The seed of the run.
    pub seed: u64,
    /// All active members agree (the global oracles hold) and nothing is left undelivered.
    pub converged: bool,
    /// The final number of members (as seen by the active members).
    pub members: usize,
    /// Names of the final members' devices.
    pub member_names: Vec<String>,
    /// Devices in the simulation (initial members plus spares).
    pub devices: usize,
    /// Application messages sent.
    pub app_messages: usize,
    /// (message, recipient) pairs that must be decrypted: the recipient was in the
    /// sender's view when it was sent and is still a member at the end.
    pub deliveries_expected: usize,
    /// How many of those were decrypted.
    pub deliveries_ok: usize,
    /// Adds performed.
    pub adds: usize,
    /// Removes performed.
    pub removes: usize,
    /// Explicit updates performed (auto-heal updates not counted).
    pub updates: usize,
    /// Network splits performed.
    pub partitions: usize,
    /// Links healed one at a time during a partition (the two devices then sync).
    pub links: usize,
    /// Operations the library refused (allowed outcomes, not violations).
    pub refusals: usize,
    /// Times the clock moved past the retention period ([`RunConfig::clock_jumps`]).
    pub clock_jumps: usize,
    /// Members whose held secrets expired over those jumps ([`Event::SecretsExpired`],
    /// summed over devices).
    pub expired: usize,
    /// Members retired over those jumps ([`Event::MemberRetired`], summed over devices).
    /// A retired member's late operations are refused where it was retired and processed
    /// elsewhere, so views may then differ (docs/protocol.md §5.7, trade-off).
    pub retired: usize,
    /// Refusals by reason.
    pub refusal_reasons: BTreeMap<String, usize>,
    /// Packets put on the network (envelopes and Welcomes).
    pub packets: usize,
    /// Of those, batch envelopes (coalesced acks travelling with a later envelope).
    pub batches: usize,
    /// With withheld late operations: how many more groups than one the active members
    /// ended in (a fork, §7.5); always 0 otherwise.
    pub forks: usize,
    /// How many times the group emptied: a step after which no device held an active
    /// instance with another member, following one at which some device did. The next
    /// step then creates a new group among the devices.
    pub emptied: usize,
    /// Steps after which some device held an active instance with two or more members
    /// (the steps at which the run still exercised a group).
    pub steps_with_group: usize,
    /// Everything that went wrong; empty for a correct run.
    pub violations: Vec<String>,
    /// Wall-clock time of the run, in milliseconds.
    pub elapsed_ms: u128,
    /// The actions taken, when [`RunConfig::trace`] is set.
    pub log: Vec<String>,
}

/// Percent chance (out of 100) of each action, in order; the rest are partition actions.
const P_SEND: u32 = 44;
const P_DELIVER: u32 = 26;
const P_UPDATE: u32 = 6;
const P_ADD: u32 = 6;
const P_REMOVE: u32 = 5;
const P_RETRANSMIT: u32 = 6;

/// The payload of each random message: unique per run, so the oracles can match it.
fn payload(n: usize, from: &str) -> Vec<u8> {
    format!("m{n} from {from}").into_bytes()
}

struct Runner<'a, G: Rng> {
    cfg: &'a RunConfig,
    sim: Sim,
    /// The schedule's decisions (the devices' own randomness comes from the simulator).
    rng: G,
    report: RunReport,
    sent: usize,
    /// Per device: its live instance after the last delivery.
    instance: Vec<Option<MemberId>>,
    /// The first message the delivery oracle covers.
    checked_from: usize,
}

impl<G: Rng> Runner<'_, G> {
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.rng.next_u64() % n as u64) as usize }
    }

    fn percent(&mut self, p: u32) -> bool {
        self.rng.next_u32() % 100 < p
    }

    fn log(&mut self, f: impl FnOnce(&Sim) -> String) {
        if self.cfg.trace {
            let line = f(&self.sim);
            self.report.log.push(line);
        }
    }

    fn refused(&mut self, what: &str, d: Dev, e: &SimError) {
        self.report.refusals += 1;
        let reason = match e {
            SimError::NoGroup(_) => "no active group".to_string(),
            SimError::Group(GroupError::InvalidOperation(r)) => format!("invalid operation: {r}"),
            SimError::Group(g) => g.to_string(),
            SimError::Device(s) => s.clone(),
        };
        *self.report.refusal_reasons.entry(reason.clone()).or_default() += 1;
        let name = self.sim.devices[d].name.clone();
        self.log(|_| format!("{name}: {what} refused: {reason}"));
    }

    fn actives(&self) -> Vec<Dev> {
        (0..self.sim.devices.len()).filter(|d| self.sim.devices[*d].active()).collect()
    }

    /// Whether some device holds an active instance with another member in its view.
    fn has_group(&self) -> bool {
        self.actives().iter().any(|d| self.sim.members_at(*d).len() >= 2)
    }

    /// The group emptied (concurrent removals can remove everyone, which no single view
    /// can prevent): a random device creates a new group with a random set of others, so
    /// that the rest of the run keeps testing a live group.
    fn restart(&mut self) {
        let n = self.sim.devices.len();
        let d = self.below(n);
        let want = 1 + self.below(self.cfg.members.max(2) - 1);
        let mut pool: Vec<Dev> = (0..n).filter(|o| *o != d).collect();
        let mut others = Vec::new();
        while others.len() < want && !pool.is_empty() {
            let k = self.below(pool.len());
            others.push(pool.remove(k));
        }
        others.sort_unstable();
        match self.sim.create(d, &others) {
            Ok(_) => self.log(|s| {
                format!("{}: the group emptied; create a new one with {:?}", s.devices[d].name, s.member_names(d))
            }),
            Err(e) => self.refused("create", d, &e),
        }
    }

    fn step(&mut self) {
        if !self.has_group() {
            self.restart();
            return;
        }
        if self.report.clock_jumps < self.cfg.clock_jumps && self.percent(3) {
            self.jump();
            return;
        }
        let roll = self.rng.next_u32() % 100;
        let actives = self.actives();
        let mut t = 0;
        let mut band = |p: u32| {
            t += p;
            roll < t
        };
        if band(P_SEND) {
            if let Some(d) = self.pick(&actives) {
                self.send(d);
            }
        } else if band(P_DELIVER) {
            self.deliver_batch();
        } else if band(P_UPDATE) {
            if let Some(d) = self.pick(&actives) {
                self.update(d);
            }
        } else if band(P_ADD) {
            if let Some(d) = self.pick(&actives) {
                self.add(d);
            }
        } else if band(P_REMOVE) {
            if let Some(d) = self.pick(&actives) {
                self.remove(d);
            }
        } else if band(P_RETRANSMIT) {
            let _ = self.retransmit();
            if self.cfg.coalesce_acks
                && let Some(d) = self.pick(&actives)
                && self.sim.flush(d)
            {
                self.log(|s| format!("{}: flush held acks", s.devices[d].name));
            }
        } else if self.sim.partition.is_some() {
            // A partition heals either at once, or one link at a time: two devices on
            // different sides reach each other again and sync (what the partition held
            // for them stays held until the full heal).
            if self.percent(50) {
                self.link();
            } else {
                self.sim.heal();
                self.log(|_| "heal".to_string());
            }
        } else if self.report.partitions < self.cfg.partitions {
            self.split();
        } else if let Some(d) = self.pick(&actives) {
            self.send(d);
        }
    }

    /// The clock moves on by the retention period, and every member collects garbage.
    fn jump(&mut self) {
        self.sim.advance_clock(self.sim.config.retention_secs);
        self.report.clock_jumps += 1;
        for d in self.actives() {
            let before = self.sim.devices[d].events.len();
            if let Err(e) = self.sim.collect_garbage(d) {
                self.refused("collect garbage", d, &e);
            }
            for e in &self.sim.devices[d].events[before..] {
                match e {
                    Event::SecretsExpired { .. } => self.report.expired += 1,
                    Event::MemberRetired { .. } => self.report.retired += 1,
                    _ => {}
                }
            }
        }
        self.log(|s| format!("clock +{} s: every member collects garbage", s.config.retention_secs));
    }

    fn pick(&mut self, from: &[Dev]) -> Option<Dev> {
        let k = self.below(from.len());
        from.get(k).copied()
    }

    fn send(&mut self, d: Dev) {
        let pt = payload(self.sent, &self.sim.devices[d].name);
        self.sent += 1;
        match self.sim.send(d, &pt) {
            Ok(ids) => {
                let n = ids.len();
                self.log(|s| {
                    format!(
                        "{}: send #{} {:?}{} to {:?}",
                        s.devices[d].name,
                        ids.last().copied().unwrap_or_default(),
                        String::from_utf8_lossy(&pt),
                        if n > 1 { " (after a heal update)" } else { "" },
                        s.member_names(d)
                    )
                });
            }
            Err(e) => self.refused("send", d, &e),
        }
    }

    fn update(&mut self, d: Dev) {
        match self.sim.update(d) {
            Ok(_) => {
                self.report.updates += 1;
                self.log(|s| format!("{}: update", s.devices[d].name));
            }
            Err(e) => self.refused("update", d, &e),
        }
    }

    fn add(&mut self, d: Dev) {
        // Candidates: devices whose identity has no instance in d's own view.
        let Some(g) = self.sim.devices[d].group() else { return };
        let view_iks: Vec<_> = g.members().iter().filter_map(|m| g.identity_of(m)).collect();
        let candidates: Vec<Dev> =
            (0..self.sim.devices.len()).filter(|c| !view_iks.contains(&self.sim.ik(*c))).collect();
        let Some(target) = self.pick(&candidates) else { return };
        match self.sim.add(d, target) {
            Ok(_) => {
                self.report.adds += 1;
                self.log(|s| format!("{}: add {}", s.devices[d].name, s.devices[target].name));
            }
            Err(e) => self.refused("add", d, &e),
        }
    }

    fn remove(&mut self, d: Dev) {
        let Some(g) = self.sim.devices[d].group() else { return };
        let me = g.me();
        let members: Vec<_> = g.members().into_iter().filter(|m| *m != me).collect();
        // Keep the group from draining: remove only while at least half the initial size
        // (and two members in the remover's own view) would remain, so that long runs keep
        // exercising a live group; concurrent removals can still empty it (see `restart`).
        if members.len() < 2 || members.len() < self.cfg.members / 2 {
            return;
        }
        // During a partition, mostly remove members on one's own side: removing across the
        // split is the mutual-removal case, which is kept but rarer so that long runs do
        // not remove everybody.
        let members: Vec<_> = match self.sim.partition.clone() {
            Some(side) if !self.percent(20) => {
                members.into_iter().filter(|m| self.sim.device_of(m).is_some_and(|t| side[t] == side[d])).collect()
            }
            _ => members,
        };
        if members.is_empty() {
            return;
        }
        let k = self.below(members.len());
        let Some(&target) = members.get(k) else { return };
        match self.sim.remove_member(d, target) {
            Ok(_) => {
                self.report.removes += 1;
                self.log(|s| format!("{}: remove {}", s.devices[d].name, s.name_of_member(&target)));
            }
            Err(e) => self.refused("remove", d, &e),
        }
    }

    /// Delivers a random batch of the queued packets, in random order, duplicating and
    /// dropping some.
    fn deliver_batch(&mut self) {
        let queued: usize = self.sim.devices.iter().map(|d| d.inbox.len()).sum();
        if queued == 0 {
            return;
        }
        let batch = 1 + self.below(queued);
        let mut delivered = 0;
        for _ in 0..batch {
            match self.deliver_one_random() {
                None => break,
                Some(true) => delivered += 1,
                Some(false) => {}
            }
        }
        self.log(|_| format!("deliver {delivered} of {queued} queued packets"));
    }

    /// Takes one random queued packet and delivers it, duplicates it, or drops it for later
    /// retransmission. `None` when nothing is queued; `Some(true)` when it was delivered.
    fn deliver_one_random(&mut self) -> Option<bool> {
        let with: Vec<Dev> = (0..self.sim.devices.len()).filter(|d| !self.sim.devices[*d].inbox.is_empty()).collect();
        let to = self.pick(&with)?;
        let k = self.below(self.sim.devices[to].inbox.len());
        let p = self.sim.devices[to].inbox.remove(k)?;
        if p.kind != PacketKind::Welcome && self.percent(self.cfg.drop_percent) {
            self.sim.held[to].push(p);
            return Some(false);
        }
        if self.percent(self.cfg.dup_percent) {
            self.sim.devices[to].inbox.push_back(p.clone());
        }
        self.deliver(to, p);
        Some(true)
    }

    /// Delivers one packet, logging when the device joins as a new instance (the
    /// simulator then syncs it, §7.7).
    fn deliver(&mut self, to: Dev, p: Packet) {
        self.sim.deliver(to, p);
        let now = self.sim.mid(to);
        if now != self.instance[to] {
            self.instance[to] = now;
            if let Some(m) = now {
                let pending = self.sim.devices[to].pending_welcomes().len();
                self.log(|s| {
                    format!("{} joined as instance {m} ({pending} Welcomes still pending)", s.devices[to].name)
                });
            }
        }
    }

    /// Delivers everything in random order (with duplicates and drops, dropped packets
    /// being retransmitted once the rest is quiet) until nothing is left to deliver.
    fn deliver_everything(&mut self) {
        loop {
            while self.deliver_one_random().is_some() {}
            // Envelopes dropped because their sender's add had not arrived yet come back
            // through anti-entropy sync (§7.7).
            if self.retransmit() == 0 && !self.sim.sync() && !self.sim.flush_all() {
                break;
            }
        }
    }

    /// Retransmits dropped packets to devices that can take them now (same side of any
    /// partition; envelopes only to devices in the group).
    fn retransmit(&mut self) -> usize {
        let mut moved = 0;
        for to in 0..self.sim.devices.len() {
            let active = self.sim.devices[to].active();
            let held = std::mem::take(&mut self.sim.held[to]);
            let (now, later): (Vec<_>, Vec<_>) = held.into_iter().partition(|p| {
                let same_side = self.sim.partition.as_ref().is_none_or(|side| side[p.from] == side[to]);
                // A device outside the group takes what can make it join: a Welcome, or the
                // create that lists it.
                let joins = matches!(p.kind, PacketKind::Welcome | PacketKind::Envelope(EnvelopeKind::Create, _));
                same_side && (active || joins)
            });
            self.sim.held[to] = later;
            moved += now.len();
            self.sim.devices[to].inbox.extend(now);
        }
        self.log(|_| format!("retransmit {moved} packets"));
        moved
    }

    /// Two devices on different sides of the partition reach each other again and sync.
    fn link(&mut self) {
        let Some(side) = self.sim.partition.clone() else { return };
        let n = self.sim.devices.len();
        let pairs: Vec<(Dev, Dev)> =
            (0..n).flat_map(|a| (a + 1..n).map(move |b| (a, b))).filter(|(a, b)| side[*a] != side[*b]).collect();
        let Some(&(a, b)) = pairs.get(self.below(pairs.len())) else { return };
        self.sim.link(a, b);
        self.report.links += 1;
        let moved = self.sim.sync_pair(a, b) | self.sim.sync_pair(b, a);
        self.log(|s| format!("link {} and {} (sync moved something: {moved})", s.devices[a].name, s.devices[b].name));
    }

    fn split(&mut self) {
        let n = self.sim.devices.len();
        let mut sides: Vec<usize> = (0..n).map(|_| (self.rng.next_u32() % 2) as usize).collect();
        // Make both sides non-empty.
        if sides.iter().all(|s| *s == 0) || sides.iter().all(|s| *s == 1) {
            let k = self.below(n);
            if let Some(s) = sides.get_mut(k) {
                *s = 1 - *s;
            }
        }
        self.report.partitions += 1;
        self.log(|s| {
            let side = |x: usize| -> Vec<String> {
                (0..n).filter(|d| sides[*d] == x).map(|d| s.devices[d].name.clone()).collect()
            };
            format!("split {:?} | {:?}", side(0), side(1))
        });
        self.sim.split(sides);
    }

    /// Heal, deliver everything, one final message per active member, deliver everything.
    fn finish(&mut self) {
        self.sim.heal();
        self.deliver_everything();
        if self.report.clock_jumps > 0 {
            // What expired is re-keyed by every member's next update (§5.7).
            for d in self.actives() {
                self.update(d);
            }
            self.deliver_everything();
            self.checked_from = self.sim.messages.len();
        }
        for d in self.actives() {
            self.send(d);
        }
        self.deliver_everything();
        self.log(|_| "final heal and full delivery".to_string());
        self.log(|s| {
            let mut out = String::from("final state:");
            for (i, d) in s.devices.iter().enumerate() {
                let live = d.group().map(|g| format!("{} {:?}", g.me(), g.status()));
                let retired: Vec<String> = d.retired.iter().map(|g| format!("{} {:?}", g.me(), g.status())).collect();
                out.push_str(&format!(
                    "\n  {}: live {:?}, retired {:?}, pending Welcomes {}, held {}",
                    d.name,
                    live,
                    retired,
                    d.pending_welcomes().len(),
                    s.held[i].len()
                ));
                // §6.6: an instance whose add an earlier instance of the same device processed
                // must never be joined.
                let all: Vec<&dcgka::group::Group> = d.retired.iter().chain(d.group()).collect();
                for (k, later) in all.iter().enumerate() {
                    for earlier in &all[..k] {
                        if earlier.ever_added().contains(&later.me()) {
                            out.push_str(&format!(
                                "\n    joined {} although its earlier instance {} had processed that add",
                                later.me(),
                                earlier.me()
                            ));
                        }
                    }
                }
            }
            out
        });
    }

    fn check(&mut self) {
        let sim = &mut self.sim;
        let mut v = Vec::new();
        let global = oracle::global_oracles(sim);
        let undelivered: usize = sim.devices.iter().map(|d| d.inbox.len()).sum();
        self.report.converged = global.is_empty() && undelivered == 0;
        v.extend(global);
        if undelivered > 0 {
            v.push(format!("{undelivered} packets still queued after full delivery"));
        }
        v.extend(oracle::delivery_violations_from(sim, self.checked_from));
        if self.cfg.shadows {
            sim.feed_transcript_to_shadows();
            v.extend(oracle::confidentiality_violations(sim));
        }
        for (dev, errors) in sim.errors() {
            for e in errors {
                v.push(format!("library error at {dev}: {e}"));
            }
        }
        // Honest devices never equivocate nor send rejectable control envelopes (§5.6), and
        // an honest run never corrupts a group.
        for dev in &sim.devices {
            // A member retired here (§5.7) is cut off: what it still sends is refused.
            let retired: std::collections::BTreeSet<MemberId> = dev
                .events
                .iter()
                .filter_map(|e| match e {
                    Event::MemberRetired { member } => Some(*member),
                    _ => None,
                })
                .collect();
            for e in &dev.events {
                match e {
                    Event::Rejected { sender, reason: RejectReason::CutOff, .. } if retired.contains(sender) => {}
                    Event::GroupStateCorrupted { reason } => {
                        v.push(format!("{}: group state corrupted: {reason}", dev.name));
                    }
                    Event::Equivocation { sender, seq, .. } => v.push(format!(
                        "{}: equivocation reported for {} at seq {}",
                        dev.name,
                        sim.name_of_member(sender),
                        seq.0
                    )),
                    Event::Rejected { sender, seq, reason } => {
                        let kind = sim.transcript.iter().find_map(|p| match p.kind {
                            PacketKind::Envelope(k, s) if s == *seq && sim.device_of(sender) == Some(p.from) => Some(k),
                            _ => None,
                        });
                        if kind != Some(EnvelopeKind::Application) {
                            v.push(format!(
                                "{}: rejected {}'s envelope at seq {}: {reason}",
                                dev.name,
                                sim.name_of_member(sender),
                                seq.0
                            ));
                        }
                    }
                    _ => {}
                }
            }
        }
        // Delivery counts, as the delivery oracle defines them.
        let groups = oracle::active(sim);
        let final_members = groups.first().map(|(_, g)| g.members()).unwrap_or_default();
        for m in &sim.messages[self.checked_from.min(sim.messages.len())..] {
            for (d, g) in &groups {
                let own = if sim.config.withhold_late_operations { g.members() } else { final_members.clone() };
                if oracle::must_decrypt(sim, *d, g, m, &own) {
                    self.report.deliveries_expected += 1;
                    if sim.decrypted(*d, m.packet) {
                        self.report.deliveries_ok += 1;
                    }
                }
            }
        }
        let views: std::collections::BTreeSet<_> = groups.iter().map(|(_, g)| g.members()).collect();
        self.report.forks = views.len().saturating_sub(1);
        self.report.members = final_members.len();
        self.report.member_names = final_members.iter().map(|m| sim.name_of_member(m)).collect();
        self.report.app_messages = sim.messages.len();
        self.report.packets = sim.transcript.len();
        self.report.batches = sim
            .transcript
            .iter()
            .filter(|p| dcgka::group::Group::peek(&p.bytes).is_ok_and(|k| k.kind == EnvelopeKind::Batch))
            .count();
        self.report.violations = v;
    }
}

/// Runs one randomized schedule and checks the oracles. `progress(step, steps)` is
/// called after each step (and once more with `steps` at the end).
pub fn run(cfg: &RunConfig, progress: &mut dyn FnMut(usize, usize)) -> RunReport {
    run_with(cfg, &mut |_| Ok(()), progress)
}

/// [`run`], with `setup` applied to the simulation before the group is created: to put
/// every device on a persistent store and reopen it before each call
/// ([`Sim::use_stores`], [`Sim::reopen_stores`]), say. The schedule is the one [`run`]
/// follows for `cfg`. A setup failure is reported as a violation.
pub fn run_with(
    cfg: &RunConfig,
    setup: &mut dyn FnMut(&mut Sim) -> Result<(), SimError>,
    progress: &mut dyn FnMut(usize, usize),
) -> RunReport {
    run_inner(cfg, ChaCha20Rng::seed_from_u64(cfg.seed ^ 0x5eed_5c4e_d01e_0001), setup, progress).0
}

/// [`run`], with the schedule's every decision (which action, which device, which packet,
/// duplicate or drop) drawn from `schedule` instead of a generator seeded from
/// [`RunConfig::seed`]; the devices' own randomness still comes from the seed. A fuzzer
/// drives the simulator this way, with a source that reads its input bytes.
pub fn run_with_schedule(cfg: &RunConfig, schedule: impl Rng, progress: &mut dyn FnMut(usize, usize)) -> RunReport {
    run_inner(cfg, schedule, &mut |_| Ok(()), progress).0
}

/// [`run`], returning the simulation as it ended too, for a test to look into.
pub fn run_keeping_sim(cfg: &RunConfig) -> (RunReport, Sim) {
    run_inner(cfg, ChaCha20Rng::seed_from_u64(cfg.seed ^ 0x5eed_5c4e_d01e_0001), &mut |_| Ok(()), &mut |_, _| {})
}

fn run_inner(
    cfg: &RunConfig,
    schedule: impl Rng,
    setup: &mut dyn FnMut(&mut Sim) -> Result<(), SimError>,
    progress: &mut dyn FnMut(usize, usize),
) -> (RunReport, Sim) {
    let start = Instant::now();
    let members = cfg.members.max(1);
    let mut sim = Sim::new(members + cfg.spares, cfg.seed);
    sim.shadows = cfg.shadows;
    sim.config.coalesce_acks = cfg.coalesce_acks;
    sim.config.withhold_late_operations = cfg.withhold_late;
    sim.compaction = cfg.compaction;
    let rng = schedule;
    let mut report = RunReport { seed: cfg.seed, devices: sim.devices.len(), ..RunReport::default() };
    if let Err(e) = setup(&mut sim) {
        report.violations.push(format!("setup failed: {e:?}"));
        return (report, sim);
    }
    let n = sim.devices.len();
    let mut r = Runner { cfg, sim, rng, report, sent: 0, instance: vec![None; n], checked_from: 0 };
    let others: Vec<Dev> = (1..members).collect();
    match r.sim.create(0, &others) {
        Ok(_) => {
            r.instance[0] = r.sim.mid(0);
            r.log(|s| format!("A: create with {:?}", s.member_names(0)));
        }
        Err(e) => {
            r.report.violations.push(format!("create failed: {e:?}"));
            return (r.report, r.sim);
        }
    }
    let mut had_group = true;
    for i in 0..cfg.steps {
        r.step();
        let has_group = r.actives().iter().any(|d| r.sim.members_at(*d).len() >= 2);
        if has_group {
            r.report.steps_with_group += 1;
        } else if had_group {
            r.report.emptied += 1;
        }
        had_group = has_group;
        progress(i + 1, cfg.steps);
    }
    r.finish();
    r.check();
    progress(cfg.steps, cfg.steps);
    r.report.elapsed_ms = start.elapsed().as_millis();
    (r.report, r.sim)
}
