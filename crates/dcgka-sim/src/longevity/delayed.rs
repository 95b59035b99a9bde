//! The workload over the full simulator ([`Sim`]) with random delays: after each
//! operation a random number of the packets in flight are delivered, each a random one to
//! its device, so operations overlap with messages of earlier ones still travelling.
//! Checkpoints and the end of the run deliver everything (anti-entropy sync and flushes
//! included) before measuring.
//!
//! The add/remove cycles re-add devices from a small pool of spares, each time as a new
//! member instance (the device layer's rules, §6.6): a spare is added again once no
//! long-lived member sees its previous instance and it has processed its own removal.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use dcgka::group::Status;
use dcgka::ids::MemberId;
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use super::{CONFIG, Checkpoint, LongevityError, Mix, Observer, Progress, Step, measure_states, sorted};
use crate::{Dev, PacketKind, Sim, SimError};

/// Deliveries a cycle may wait for its newcomer to join before everything is delivered.
const MAX_JOIN_DELIVERIES: usize = 10_000;

/// A run of the workload over the simulator, with random delays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DelayedWorkload {
    /// n, the long-lived members (at least 2): devices `0..n`.
    pub members: usize,
    /// The values of K at which to measure; the run does as many operations as the
    /// largest.
    pub checkpoints: Vec<usize>,
    /// The mix of operations.
    pub mix: Mix,
    /// Spare devices (`n..n + spares`) that the cycles add and remove in turn.
    pub spares: usize,
    /// Seed of everything: a run is deterministic per seed (bar times).
    pub seed: u64,
    /// Every member sends its held acks after this many operations (they travel with the
    /// rest of the traffic, delayed like it).
    pub flush_every: usize,
    /// Restores per checkpoint.
    pub restores: usize,
    /// [`Observer::progress`] is called after this many operations.
    pub progress_every: usize,
}

impl DelayedWorkload {
    /// `members` long-lived members, 10 updates per add/remove cycle, 4 spares, acks
    /// flushed every 12 operations (one block), one restore per checkpoint, progress every
    /// 500 operations.
    pub fn new(members: usize, checkpoints: Vec<usize>, seed: u64) -> Self {
        DelayedWorkload {
            members,
            checkpoints,
            mix: Mix { updates_per_cycle: 10 },
            spares: 4,
            seed,
            flush_every: 12,
            restores: 1,
            progress_every: 500,
        }
    }
}

/// What a delayed run measured and how it ended.
#[derive(Clone, Debug, PartialEq)]
pub struct DelayedReport {
    /// The checkpoints, in order of K.
    pub checkpoints: Vec<Checkpoint>,
    /// The long-lived members' instances.
    pub long_lived: BTreeSet<MemberId>,
    /// Each long-lived member's view at the end, after everything was delivered.
    pub final_views: Vec<BTreeSet<MemberId>>,
    /// (reader, sender) pairs of long-lived members where the reader did not decrypt the
    /// sender's final message.
    pub undecrypted: Vec<(Dev, Dev)>,
    /// Errors the devices reported, by device name (none in an honest run).
    pub errors: BTreeMap<String, Vec<String>>,
    /// Updates, adds and removes performed (measurement cycles included; heal updates not).
    pub updates: usize,
    /// Adds performed.
    pub adds: usize,
    /// Removes performed.
    pub removes: usize,
    /// Packets sent (envelopes and Welcomes).
    pub packets: usize,
}

struct Run<'a> {
    sim: Sim,
    /// The schedule's decisions (the devices' own randomness comes from the simulator).
    rng: ChaCha20Rng,
    w: &'a DelayedWorkload,
    /// The spare the last add added, until it is removed.
    newcomer: Option<Dev>,
    report: DelayedReport,
}

fn sim_error(operations: usize, what: &str, e: SimError) -> LongevityError {
    LongevityError::Sim { operations, detail: format!("{what}: {e:?}") }
}

impl Run<'_> {
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.rng.next_u64() % n as u64) as usize }
    }

    /// Delivers one random packet in flight. False when nothing is in flight.
    fn deliver_one(&mut self) -> bool {
        let with: Vec<Dev> = (0..self.sim.devices.len()).filter(|d| !self.sim.devices[*d].inbox.is_empty()).collect();
        if with.is_empty() {
            return false;
        }
        let to = with[self.below(with.len())];
        let k = self.below(self.sim.devices[to].inbox.len());
        if let Some(p) = self.sim.devices[to].inbox.remove(k) {
            self.sim.deliver(to, p);
        }
        true
    }

    /// The random delay after an operation: between none and all of the packets in
    /// flight are delivered, in random order.
    fn deliver_some(&mut self) {
        let queued: usize = self.sim.devices.iter().map(|d| d.inbox.len()).sum();
        let k = self.below(queued + 1);
        for _ in 0..k {
            if !self.deliver_one() {
                break;
            }
        }
    }

    /// Delivers everything in random order, with anti-entropy sync and flushed acks,
    /// until quiet.
    fn settle(&mut self) {
        self.sim.deliver_random(0, 0);
    }

    /// The long-lived members' views (empty for one without an active group).
    fn views(&self) -> Vec<BTreeSet<MemberId>> {
        (0..self.w.members)
            .map(|d| self.sim.devices[d].group().filter(|g| *g.status() == Status::Active))
            .map(|g| g.map(|g| g.members()).unwrap_or_default())
            .collect()
    }

    /// A spare that can be added now: not active, and no long-lived member sees an
    /// instance of it.
    fn free_spare(&self) -> Option<Dev> {
        let views = self.views();
        (self.w.members..self.sim.devices.len()).find(|s| {
            let ik = self.sim.ik(*s);
            !self.sim.devices[*s].active()
                && (0..self.w.members).all(|d| {
                    let Some(g) = self.sim.devices[d].group() else { return true };
                    views[d].iter().all(|m| g.identity_of(m) != Some(ik))
                })
        })
    }

    /// Member `by` adds a spare; returns the spare and the Welcome's size.
    fn add(&mut self, by: Dev, done: usize) -> Result<(Dev, usize), LongevityError> {
        let s = match self.free_spare() {
            Some(s) => s,
            None => {
                self.settle();
                self.free_spare().ok_or(LongevityError::Workload("no spare device is free"))?
            }
        };
        let ids = self.sim.add(by, s).map_err(|e| sim_error(done, "add", e))?;
        self.report.adds += 1;
        let welcome = ids
            .iter()
            .filter_map(|id| self.sim.transcript.get(*id))
            .find(|p| p.kind == PacketKind::Welcome)
            .map_or(0, |p| p.bytes.len());
        Ok((s, welcome))
    }

    /// Whether spare `s` has joined and member `by` sees its instance.
    fn joined(&self, s: Dev, by: Dev) -> bool {
        self.sim.mid(s).is_some_and(|m| self.sim.devices[s].active() && self.sim.members_at(by).contains(&m))
    }

    /// Member `by` removes spare `s`, once `s` has joined and `by` has processed its add
    /// (delivering random packets until then).
    fn remove(&mut self, by: Dev, s: Dev, done: usize) -> Result<(), LongevityError> {
        for _ in 0..MAX_JOIN_DELIVERIES {
            if self.joined(s, by) || !self.deliver_one() {
                break;
            }
        }
        if !self.joined(s, by) {
            self.settle();
        }
        let target = self
            .sim
            .mid(s)
            .filter(|_| self.joined(s, by))
            .ok_or_else(|| LongevityError::Diverged { operations: done, detail: format!("spare {s} did not join") })?;
        self.sim.remove_member(by, target).map_err(|e| sim_error(done, "remove", e))?;
        self.report.removes += 1;
        Ok(())
    }

    fn operate(&mut self, step: Step, done: usize) -> Result<(), LongevityError> {
        match step {
            Step::Update { by } => {
                self.sim.update(by).map_err(|e| sim_error(done, "update", e))?;
                self.report.updates += 1;
            }
            Step::Add { by } => {
                let (s, _) = self.add(by, done)?;
                self.newcomer = Some(s);
            }
            Step::Remove { by } => {
                let s = self.newcomer.take().ok_or(LongevityError::Workload("a remove without an add"))?;
                self.remove(by, s, done)?;
            }
        }
        self.deliver_some();
        Ok(())
    }

    /// Checks, after everything was delivered, that every long-lived member is active,
    /// sees the same members (every long-lived one among them) and holds nothing back.
    fn check(&self, done: usize) -> Result<(), LongevityError> {
        let diverged = |detail: String| LongevityError::Diverged { operations: done, detail };
        let views = self.views();
        for d in 0..self.w.members {
            let g = self.sim.devices[d].group().ok_or_else(|| diverged(format!("member {d} holds no group")))?;
            if *g.status() != Status::Active || g.pending() != 0 || g.held_acks() != 0 {
                return Err(diverged(format!(
                    "member {d} is {:?}, buffers {} and holds {}",
                    g.status(),
                    g.pending(),
                    g.held_acks()
                )));
            }
            if views[d] != views[0] || !self.report.long_lived.is_subset(&views[d]) {
                return Err(diverged(format!("member {d} sees {} members", views[d].len())));
            }
        }
        Ok(())
    }

    /// Everything delivered, the state figures, then a measurement cycle (member 0 adds a
    /// spare, member 1 removes it, everything delivered).
    fn measure(
        &mut self,
        done: usize,
        started: Instant,
        observer: &dyn Observer,
    ) -> Result<Checkpoint, LongevityError> {
        self.settle();
        self.check(done)?;
        let groups = (0..self.w.members).filter_map(|d| self.sim.devices[d].group().map(|g| (d, g)));
        let figures = measure_states(groups, self.w.restores, observer)?;
        let (s, welcome_bytes) = self.add(0, done)?;
        self.settle();
        self.remove(1, s, done)?;
        self.settle();
        Ok(Checkpoint {
            members: self.w.members,
            operations: done,
            state_bytes: figures.state_bytes,
            largest: figures.largest,
            history_len: figures.history_len,
            welcome_bytes,
            restore_ms: figures.restore_ms,
            memory_bytes_per_member: figures.memory_bytes_per_member,
            elapsed: started.elapsed(),
        })
    }

    /// Every long-lived member sends a last message; after full delivery, who read whose.
    fn finish(&mut self, done: usize) -> Result<(), LongevityError> {
        self.settle();
        let mut sent = Vec::with_capacity(self.w.members);
        for d in 0..self.w.members {
            let ids = self
                .sim
                .send(d, format!("last message from {d}").as_bytes())
                .map_err(|e| sim_error(done, "send", e))?;
            sent.push(ids.last().copied());
        }
        self.settle();
        self.report.final_views = self.views();
        for (from, id) in sent.iter().enumerate() {
            for to in (0..self.w.members).filter(|to| *to != from) {
                if !id.is_some_and(|id| self.sim.decrypted(to, id)) {
                    self.report.undecrypted.push((to, from));
                }
            }
        }
        self.report.errors = self.sim.errors();
        self.report.packets = self.sim.transcript.len();
        Ok(())
    }
}

/// Runs the workload over the simulator with random delays and measures it at every
/// checkpoint (after delivering everything); at the end every long-lived member sends a
/// message, and the report says who converged and who read what. Progress and
/// checkpoints go to `observer` as they happen.
pub fn run_delayed(w: &DelayedWorkload, observer: &mut dyn Observer) -> Result<DelayedReport, LongevityError> {
    if w.members < 2 || w.spares < 1 {
        return Err(LongevityError::Workload("at least 2 long-lived members and one spare are needed"));
    }
    let started = Instant::now();
    let mut sim = Sim::new(w.members + w.spares, w.seed);
    sim.config = CONFIG;
    let others: Vec<Dev> = (1..w.members).collect();
    sim.create(0, &others).map_err(|e| sim_error(0, "create", e))?;
    let rng = ChaCha20Rng::seed_from_u64(w.seed ^ 0x10_6e_71_7e);
    let report = DelayedReport {
        checkpoints: Vec::new(),
        long_lived: BTreeSet::new(),
        final_views: Vec::new(),
        undecrypted: Vec::new(),
        errors: BTreeMap::new(),
        updates: 0,
        adds: 0,
        removes: 0,
        packets: 0,
    };
    let mut run = Run { sim, rng, w, newcomer: None, report };
    run.settle();
    run.report.long_lived = (0..w.members).filter_map(|d| run.sim.mid(d)).collect();
    let checkpoints = sorted(&w.checkpoints);
    let total = checkpoints.last().copied().unwrap_or(0);
    let mut next = checkpoints.iter().copied().peekable();
    for done in 0..=total {
        if next.peek() == Some(&done) {
            next.next();
            let c = run.measure(done, started, &*observer)?;
            observer.checkpoint(&c);
            run.report.checkpoints.push(c);
        }
        if done == total {
            break;
        }
        run.operate(w.mix.step(done, w.members), done)?;
        if (done + 1) % w.flush_every.max(1) == 0 {
            run.sim.flush_all();
        }
        if (done + 1) % w.progress_every.max(1) == 0 {
            observer.progress(&Progress { members: w.members, done: done + 1, total, elapsed: started.elapsed() });
        }
    }
    run.finish(total)?;
    Ok(run.report)
}
