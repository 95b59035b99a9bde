//! The workload over [`crate::lean`]'s FIFO network: every operation is delivered before
//! the next, so each checkpoint measures a quiet group.

use std::collections::BTreeSet;
use std::time::Instant;

use dcgka::group::{Group, Status};
use dcgka::ids::MemberId;

use super::{CONFIG, Checkpoint, LongevityError, Mix, Observer, Progress, Step, measure_states, sorted};
use crate::lean::Network;
use crate::{Dev, OPK_BATCH};

/// Flush rounds at a checkpoint before held acks count as a failure (one suffices: acks
/// are never acknowledged).
const MAX_FLUSH_ROUNDS: usize = 4;

/// A run of the workload over the lean network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// n, the long-lived members (at least 2).
    pub members: usize,
    /// The values of K at which to measure; the run does as many operations as the
    /// largest.
    pub checkpoints: Vec<usize>,
    /// The mix of operations.
    pub mix: Mix,
    /// Seed of the network's generator: a run is deterministic per seed (bar times).
    pub seed: u64,
    /// Every member flushes its held acks after this many operations (and before every
    /// measurement).
    pub flush_every: usize,
    /// Restores per checkpoint; the reported time is their median.
    pub restores: usize,
    /// [`Observer::progress`] is called after this many operations.
    pub progress_every: usize,
}

impl Workload {
    /// Issue 10's workload: `members` long-lived members, [`Mix::BENCH`], flushes every 10
    /// operations, 5 restores per checkpoint, progress every 500 operations.
    pub fn new(members: usize, checkpoints: Vec<usize>, seed: u64) -> Self {
        Workload { members, checkpoints, mix: Mix::BENCH, seed, flush_every: 10, restores: 5, progress_every: 500 }
    }
}

/// The run's state: the network and the long-lived members' instances.
struct Run<'a> {
    net: Network,
    n: usize,
    /// The device the last add added, until it is removed.
    newcomer: Option<Dev>,
    restores: usize,
    observer: &'a mut dyn Observer,
}

impl Run<'_> {
    fn identity(&self, d: Dev) -> Result<dcgka::IdentityKey, LongevityError> {
        self.net.node(d).map(|x| x.identity().public_key()).ok_or(LongevityError::Workload("no such device"))
    }

    fn member(&self, d: Dev) -> Result<MemberId, LongevityError> {
        self.net
            .node(d)
            .and_then(|x| x.group())
            .map(Group::me)
            .ok_or(LongevityError::Workload("device not in the group"))
    }

    /// Member `by` adds a fresh device; everything is delivered, the newcomer's join and
    /// first ack included. Returns the device and the Welcome's size.
    fn add(&mut self, by: Dev, done: usize) -> Result<(Dev, usize), LongevityError> {
        let x = self.net.add_device(self.n + OPK_BATCH)?;
        let ik = self.identity(x)?;
        let before = self.net.traffic().welcome_bytes;
        self.net.perform(by, |g, ctx| g.add(ctx, ik))?;
        let welcome = self.net.traffic().welcome_bytes - before;
        self.net.run_until_quiet()?;
        if self.net.node(x).and_then(|d| d.group()).is_none_or(|g| *g.status() != Status::Active) {
            return Err(LongevityError::Diverged { operations: done, detail: format!("device {x} did not join") });
        }
        Ok((x, usize::try_from(welcome).unwrap_or(usize::MAX)))
    }

    /// Member `by` removes device `x`; everything is delivered, then `x` is retired.
    fn remove(&mut self, by: Dev, x: Dev) -> Result<(), LongevityError> {
        let target = self.member(x)?;
        self.net.perform(by, |g, ctx| g.remove(ctx, target))?;
        self.net.run_until_quiet()?;
        self.net.retire(x);
        Ok(())
    }

    fn operate(&mut self, step: Step, done: usize) -> Result<(), LongevityError> {
        match step {
            Step::Update { by } => {
                self.net.perform(by, |g, ctx| g.update(ctx))?;
                self.net.run_until_quiet()?;
            }
            Step::Add { by } => {
                let (x, _) = self.add(by, done)?;
                self.newcomer = Some(x);
            }
            Step::Remove { by } => {
                let x = self.newcomer.take().ok_or(LongevityError::Workload("a remove without an add"))?;
                self.remove(by, x)?;
            }
        }
        Ok(())
    }

    /// Every member that holds acks flushes them, and everything is delivered, until
    /// nobody holds any.
    fn flush(&mut self, done: usize) -> Result<(), LongevityError> {
        for _ in 0..MAX_FLUSH_ROUNDS {
            let holders: Vec<Dev> = (0..self.net.nodes().len())
                .filter(|d| {
                    self.net
                        .node(*d)
                        .and_then(|x| x.group())
                        .is_some_and(|g| *g.status() == Status::Active && g.held_acks() > 0)
                })
                .collect();
            if holders.is_empty() {
                return Ok(());
            }
            for d in holders {
                self.net.perform(d, |g, _| g.flush_acks())?;
            }
            self.net.run_until_quiet()?;
        }
        Err(LongevityError::Diverged { operations: done, detail: "acks still held after flushing".to_string() })
    }

    /// Checks that every long-lived member is active, sees the same members (every
    /// long-lived one among them) and holds nothing back.
    fn check(&self, done: usize) -> Result<(), LongevityError> {
        let diverged = |detail: String| LongevityError::Diverged { operations: done, detail };
        let mut view: Option<BTreeSet<MemberId>> = None;
        for d in 0..self.n {
            let g = self.net.node(d).and_then(|x| x.group()).ok_or_else(|| diverged(format!("{d} holds no group")))?;
            if *g.status() != Status::Active {
                return Err(diverged(format!("member {d} is {:?}", g.status())));
            }
            if g.pending() != 0 || g.held_acks() != 0 {
                return Err(diverged(format!("member {d} buffers {} and holds {}", g.pending(), g.held_acks())));
            }
            let members = g.members();
            if view.as_ref().is_some_and(|v| *v != members) {
                return Err(diverged(format!("member {d} sees other members than member 0")));
            }
            view = Some(members);
        }
        let view = view.unwrap_or_default();
        for d in 0..self.n {
            if !view.contains(&self.member(d)?) {
                return Err(diverged(format!("member {d} is not in the group")));
            }
        }
        Ok(())
    }

    /// Everything delivered, the state figures, then a measurement cycle: member 0 adds a
    /// fresh device (its Welcome is measured) and member 1 removes it.
    fn measure(&mut self, done: usize, started: Instant) -> Result<Checkpoint, LongevityError> {
        self.flush(done)?;
        self.check(done)?;
        let groups = (0..self.n).filter_map(|d| self.net.node(d).and_then(|x| x.group()).map(|g| (d, g)));
        let figures = measure_states(groups, self.restores, &*self.observer)?;
        let (x, welcome_bytes) = self.add(0, done)?;
        self.remove(1, x)?;
        self.flush(done)?;
        Ok(Checkpoint {
            members: self.n,
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
}

/// Runs the workload over the lean network and measures it at every checkpoint. Progress
/// and checkpoints go to `observer` as they happen; the checkpoints are also returned, in
/// order of K.
pub fn run(w: &Workload, observer: &mut dyn Observer) -> Result<Vec<Checkpoint>, LongevityError> {
    if w.members < 2 {
        return Err(LongevityError::Workload("at least 2 long-lived members are needed"));
    }
    let started = Instant::now();
    let mut net = Network::new(w.members, w.seed, CONFIG, ())?;
    net.create()?;
    let mut run = Run { net, n: w.members, newcomer: None, restores: w.restores, observer };
    let checkpoints = sorted(&w.checkpoints);
    let total = checkpoints.last().copied().unwrap_or(0);
    let mut rows = Vec::with_capacity(checkpoints.len());
    let mut next = checkpoints.iter().copied().peekable();
    for done in 0..=total {
        if next.peek() == Some(&done) {
            next.next();
            let c = run.measure(done, started)?;
            run.observer.checkpoint(&c);
            rows.push(c);
        }
        if done == total {
            break;
        }
        run.operate(w.mix.step(done, w.members), done)?;
        if (done + 1) % w.flush_every.max(1) == 0 {
            run.flush(done + 1)?;
        }
        if (done + 1) % w.progress_every.max(1) == 0 {
            let p = Progress { members: w.members, done: done + 1, total, elapsed: started.elapsed() };
            run.observer.progress(&p);
        }
    }
    Ok(rows)
}
