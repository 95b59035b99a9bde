//! Long-lived groups (issue 10): a workload of many updates and add/remove cycles, and
//! what a group's state costs at checkpoints along the way.
//!
//! The workload is a group of n long-lived members, then operations in a fixed [`Mix`]:
//! blocks of [`Mix::updates_per_cycle`] updates (senders rotating over the long-lived
//! members) followed by one add/remove cycle, which counts as two operations (a long-lived
//! member adds a fresh device; once the newcomer has joined, another long-lived member
//! removes it). [`Mix::BENCH`] is issue 10's mix: of every 10 operations, 8 are updates.
//! Every group uses coalesced acks ([`GroupConfig::coalesce_acks`]); members flush them
//! every few operations and before every measurement.
//!
//! At each checkpoint (a number K of operations done) everything is delivered and a
//! [`Checkpoint`] records, over the long-lived members:
//! - the largest snapshot ([`Group::snapshot`]) and the length of that member's membership
//!   history ([`Group::history`], a proxy for the work of a restore);
//! - the time of [`Group::restore`] of that snapshot (median of several) and, when the
//!   [`Observer`] can count heap bytes, the live heap of the restored group;
//! - the size of a Welcome: a long-lived member adds a fresh device, and another removes
//!   it again once it has joined. That measurement cycle is not counted in K.
//!
//! Two drivers run the workload: [`run`], over [`crate::lean`]'s FIFO network (every
//! operation delivered before the next; what `dcgka bench --longevity` uses), and
//! [`run_delayed`], over the full simulator ([`crate::Sim`]) with random delays (operations
//! overlap with messages still in flight, delivered in random order), which then checks
//! that every member converged and reads every other's last message.
//!
//! ```
//! use dcgka_sim::longevity::{Workload, run};
//!
//! let w = Workload::new(4, vec![0, 20], 1);
//! let rows = run(&w, &mut ())?;
//! assert_eq!(rows.iter().map(|c| c.operations).collect::<Vec<_>>(), [0, 20]);
//! assert!(rows.iter().all(|c| c.state_bytes > 0 && c.welcome_bytes > 0));
//! # Ok::<(), dcgka_sim::longevity::LongevityError>(())
//! ```

mod delayed;
mod fifo;

use std::fmt;
use std::time::{Duration, Instant};

use dcgka::group::{Group, GroupConfig};
use dcgka::snapshot::SnapshotError;

use crate::Dev;
use crate::lean::LeanError;

pub use delayed::{DelayedReport, DelayedWorkload, run_delayed};
pub use fifo::{Workload, run};

/// The group configuration of the workload: coalesced acks, the rest default.
pub const CONFIG: GroupConfig = GroupConfig {
    coalesce_acks: true,
    auto_heal: true,
    withhold_late_operations: false,
    retention_secs: dcgka::consts::DEFAULT_RETENTION_SECS,
};

/// How the workload interleaves updates and add/remove cycles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    /// Updates before each add/remove cycle. A block is these updates and the cycle's two
    /// operations.
    pub updates_per_cycle: usize,
}

/// One operation of the workload, by long-lived member index (`0..n`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Member `by` performs an update.
    Update {
        /// The updater.
        by: usize,
    },
    /// Member `by` adds a fresh device.
    Add {
        /// The adder.
        by: usize,
    },
    /// Member `by` removes the device the last [`Step::Add`] added.
    Remove {
        /// The remover (never the adder, for n >= 2).
        by: usize,
    },
}

impl Mix {
    /// Issue 10's mix: of every 10 operations, 8 updates and one add/remove cycle.
    pub const BENCH: Mix = Mix { updates_per_cycle: 8 };

    /// Operations per block: the updates and the cycle's add and remove.
    pub fn block(&self) -> usize {
        self.updates_per_cycle + 2
    }

    /// Operation `i` (from 0) in a group of `n` long-lived members. Updaters rotate over
    /// every member; block b's add is member b mod n's and its remove member (b + 1) mod
    /// n's.
    pub fn step(&self, i: usize, n: usize) -> Step {
        let n = n.max(1);
        let (b, r) = (i / self.block(), i % self.block());
        match r.checked_sub(self.updates_per_cycle) {
            None => Step::Update { by: (b * self.updates_per_cycle + r) % n },
            Some(0) => Step::Add { by: b % n },
            Some(_) => Step::Remove { by: (b + 1) % n },
        }
    }
}

/// What the workload cost at one checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// n, the long-lived members.
    pub members: usize,
    /// K, the operations done (measurement cycles not counted).
    pub operations: usize,
    /// The largest snapshot of a long-lived member, in bytes.
    pub state_bytes: usize,
    /// The device whose snapshot that is.
    pub largest: Dev,
    /// The length of that member's membership history ([`Group::history`]).
    pub history_len: usize,
    /// The Welcome of the measurement cycle's add, in bytes.
    pub welcome_bytes: usize,
    /// Wall-clock time of [`Group::restore`] of the largest snapshot, median over the
    /// restores, in milliseconds.
    pub restore_ms: f64,
    /// Live heap bytes of that restored group, if the [`Observer`] counts them.
    pub memory_bytes_per_member: Option<usize>,
    /// Time since the run started, measurement included.
    pub elapsed: Duration,
}

/// Progress of a run, reported every few operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// n, the long-lived members.
    pub members: usize,
    /// Operations done.
    pub done: usize,
    /// Operations the run will do.
    pub total: usize,
    /// Time since the run started.
    pub elapsed: Duration,
}

/// What a run asks of its caller: heap accounting, and where progress and results go.
/// Every method has a default that does nothing; `()` is the observer that observes
/// nothing.
pub trait Observer {
    /// The process's live heap bytes now, if an allocator counts them (the simulator
    /// installs none; a binary can, e.g. with the `cap` crate).
    fn live_heap_bytes(&self) -> Option<usize> {
        None
    }

    /// Called every [`Workload::progress_every`] operations.
    fn progress(&mut self, _progress: &Progress) {}

    /// Called with each checkpoint as soon as it is measured.
    fn checkpoint(&mut self, _checkpoint: &Checkpoint) {}
}

/// Observes nothing.
impl Observer for () {}

/// Why a run failed.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum LongevityError {
    /// The workload cannot run as configured.
    Workload(&'static str),
    /// The lean network failed (a library call failed, or an event an honest network
    /// never causes).
    Network(LeanError),
    /// A library call failed in the simulator.
    Sim {
        /// After this many operations.
        operations: usize,
        /// What failed.
        detail: String,
    },
    /// The members disagree, or something is left undelivered at a checkpoint.
    Diverged {
        /// After this many operations.
        operations: usize,
        /// What differs.
        detail: String,
    },
    /// A snapshot does not restore, or restores to a different state.
    Restore(SnapshotError),
}

impl fmt::Display for LongevityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LongevityError::Workload(what) => write!(f, "invalid workload: {what}"),
            LongevityError::Network(e) => write!(f, "{e}"),
            LongevityError::Sim { operations, detail } => write!(f, "after {operations} operations: {detail}"),
            LongevityError::Diverged { operations, detail } => {
                write!(f, "after {operations} operations, the members diverged: {detail}")
            }
            LongevityError::Restore(e) => write!(f, "restoring a snapshot: {e}"),
        }
    }
}

impl std::error::Error for LongevityError {}

impl From<LeanError> for LongevityError {
    fn from(e: LeanError) -> Self {
        LongevityError::Network(e)
    }
}

impl From<SnapshotError> for LongevityError {
    fn from(e: SnapshotError) -> Self {
        LongevityError::Restore(e)
    }
}

/// The state figures of a checkpoint (everything but the Welcome).
struct StateFigures {
    state_bytes: usize,
    largest: Dev,
    history_len: usize,
    restore_ms: f64,
    memory_bytes_per_member: Option<usize>,
}

/// Measures the long-lived members' `groups`: the largest snapshot, its history, the
/// median of `restores` restores of it, and the live heap of one restored copy (which
/// must snapshot back to the same bytes).
fn measure_states<'a>(
    groups: impl IntoIterator<Item = (Dev, &'a Group)>,
    restores: usize,
    observer: &dyn Observer,
) -> Result<StateFigures, LongevityError> {
    let mut largest: Option<(Dev, &Group, usize)> = None;
    for (d, g) in groups {
        let len = g.state_size();
        if largest.is_none_or(|(_, _, l)| len > l) {
            largest = Some((d, g, len));
        }
    }
    let (d, g, _) = largest.ok_or(LongevityError::Workload("no long-lived member holds a group"))?;
    let snapshot = g.snapshot();
    let mut times = Vec::with_capacity(restores);
    for _ in 0..restores.max(1) {
        let start = Instant::now();
        let restored = Group::restore(&snapshot)?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
        drop(restored);
    }
    let before = observer.live_heap_bytes();
    let restored = Group::restore(&snapshot)?;
    let after = observer.live_heap_bytes();
    let memory_bytes_per_member = before.zip(after).map(|(b, a)| a.saturating_sub(b));
    if restored.snapshot()[..] != snapshot[..] {
        return Err(LongevityError::Restore(SnapshotError::Inconsistent("a restored group snapshots differently")));
    }
    Ok(StateFigures {
        state_bytes: snapshot.len(),
        largest: d,
        history_len: g.history().len(),
        restore_ms: median(&mut times),
        memory_bytes_per_member,
    })
}

/// The median (0 for none).
fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => 0.0,
        l if l % 2 == 1 => xs[l / 2],
        l => (xs[l / 2 - 1] + xs[l / 2]) / 2.0,
    }
}

/// The checkpoints of a workload, sorted and without duplicates.
fn sorted(checkpoints: &[usize]) -> Vec<usize> {
    let mut v = checkpoints.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_mix_has_eight_updates_and_one_cycle_in_every_ten_operations() {
        let steps: Vec<Step> = (0..20).map(|i| Mix::BENCH.step(i, 4)).collect();
        for block in steps.chunks(10) {
            assert_eq!(block.iter().filter(|s| matches!(s, Step::Update { .. })).count(), 8);
            assert!(matches!(block[8], Step::Add { .. }));
            assert!(matches!(block[9], Step::Remove { .. }));
        }
        // Updaters rotate over every member; adder and remover differ.
        let updaters: Vec<usize> =
            steps.iter().filter_map(|s| if let Step::Update { by } = s { Some(*by) } else { None }).collect();
        assert_eq!(updaters, [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3]);
        assert_eq!((steps[8], steps[9]), (Step::Add { by: 0 }, Step::Remove { by: 1 }));
        assert_eq!((steps[18], steps[19]), (Step::Add { by: 1 }, Step::Remove { by: 2 }));
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }
}
