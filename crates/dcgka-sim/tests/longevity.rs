//! Long-lived groups (issue 10): 16 members, many updates and add/remove cycles with
//! random delays ([`dcgka_sim::longevity::run_delayed`]: operations overlap with messages
//! still in flight, delivered in random order).
//!
//! CI runs 600 updates and 60 cycles; `DCGKA_LONG=1` runs the full size, 10,000
//! updates and 1,000 cycles (run it with `cargo test --release`). Every run measures, at
//! five checkpoints, the largest snapshot, a Welcome, the length of the membership history
//! (a proxy for the work of a restore; no test asserts a time) and prints them.
//!
//! - `members_converge_and_read_each_other_after_a_long_run`: every long-lived member ends
//!   with the same member set (the 16 of them) and decrypts a last message from every other.
//! - `state_welcome_and_history_stay_bounded`: the figures at every checkpoint stay within
//!   the bounds below, which do not depend on the number of operations (before compaction,
//!   §6.7, the history, and with it snapshots and Welcomes, grew linearly with the add/remove
//!   cycles).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dcgka_sim::longevity::{Checkpoint, DelayedReport, DelayedWorkload, Observer, Progress, run_delayed};

/// The long-lived members.
const MEMBERS: usize = 16;

/// Updates per add/remove cycle (10,000 updates and 1,000 cycles at full size).
const UPDATES_PER_CYCLE: usize = 10;

/// Add/remove cycles in CI, and with `DCGKA_LONG=1`.
const CI_CYCLES: usize = 60;
const FULL_CYCLES: usize = 1_000;

/// Bound on Welcome sizes (issue 10's target): at every checkpoint at most `GROWTH_FACTOR`
/// times their size at K = 0 plus `GROWTH_SLACK_BYTES`, whatever K is.
const GROWTH_FACTOR: usize = 2;
const GROWTH_SLACK_BYTES: usize = 4 * 1024;

/// Bound on snapshot sizes: at most `STATE_FACTOR` times the size at K = 0 plus
/// `STATE_SLACK_BYTES`, whatever K is. Looser than the Welcome's: a snapshot at K = 0 holds
/// no recent hashes (§7.6, up to `MAX_RECENT_HASHES` per sender) and no signing keys kept for
/// them, and a long-lived member's state fills both within the first few hundred operations
/// (about 5.3 KB at K = 0, 12–15 KB from then on at n = 16).
const STATE_FACTOR: usize = 3;
const STATE_SLACK_BYTES: usize = 8 * 1024;

/// Bound on the membership history of the largest snapshot, measured after everything is
/// delivered: at most this many operations per current member, whatever K is. Compaction
/// (§6.7) folds everything every live member has seen, so after delivery it holds nothing
/// (without it, every add, remove and acknowledgment ever processed: about 2n + 2 per
/// cycle).
const HISTORY_PER_MEMBER: usize = 8;

fn cycles() -> usize {
    if std::env::var("DCGKA_LONG").is_ok_and(|v| v == "1") { FULL_CYCLES } else { CI_CYCLES }
}

/// Prints progress and checkpoints to standard error (`--nocapture` shows them).
struct Print;

impl Observer for Print {
    fn progress(&mut self, p: &Progress) {
        eprintln!(
            "longevity: n = {}, {} of {} operations, {:.1} s",
            p.members,
            p.done,
            p.total,
            p.elapsed.as_secs_f64()
        );
    }

    fn checkpoint(&mut self, c: &Checkpoint) {
        eprintln!(
            "longevity: K = {:>6}: state {:>8} B (member {:>2}), history {:>6}, Welcome {:>8} B, restore {:.3} ms, {:.1} s",
            c.operations,
            c.state_bytes,
            c.largest,
            c.history_len,
            c.welcome_bytes,
            c.restore_ms,
            c.elapsed.as_secs_f64()
        );
    }
}

/// The workload: five checkpoints, K = 0 to the end, equally spaced.
fn long_run(seed: u64) -> DelayedReport {
    let total = cycles() * (UPDATES_PER_CYCLE + 2);
    let checkpoints = (0..=4).map(|i| i * total / 4).collect();
    let mut w = DelayedWorkload::new(MEMBERS, checkpoints, seed);
    w.mix.updates_per_cycle = UPDATES_PER_CYCLE;
    let report = run_delayed(&w, &mut Print).unwrap_or_else(|e| panic!("the long run failed: {e}"));
    eprintln!(
        "longevity: {} updates, {} adds, {} removes, {} packets",
        report.updates, report.adds, report.removes, report.packets
    );
    report
}

#[test]
fn members_converge_and_read_each_other_after_a_long_run() {
    let report = long_run(1);
    let total = cycles() * (UPDATES_PER_CYCLE + 2);
    // The workload ran in full: every cycle's add and remove, plus one measurement cycle
    // per checkpoint.
    assert_eq!(
        report.checkpoints.iter().map(|c| c.operations).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4].map(|i| i * total / 4)
    );
    assert_eq!(report.updates, cycles() * UPDATES_PER_CYCLE);
    assert_eq!(report.adds, cycles() + 5);
    assert_eq!(report.removes, cycles() + 5);
    assert!(report.errors.is_empty(), "{:#?}", report.errors);
    assert_eq!(report.long_lived.len(), MEMBERS);
    assert_eq!(report.final_views.len(), MEMBERS);
    for (d, view) in report.final_views.iter().enumerate() {
        assert_eq!(view, &report.long_lived, "member {d}'s final view");
    }
    assert!(report.undecrypted.is_empty(), "(reader, sender) pairs not decrypted: {:?}", report.undecrypted);
    for c in &report.checkpoints {
        assert!(c.state_bytes > 0 && c.welcome_bytes > 0, "{c:?}");
    }
}

#[test]
fn state_welcome_and_history_stay_bounded() {
    let report = long_run(2);
    let first = &report.checkpoints[0];
    let bound = |at_zero: usize| GROWTH_FACTOR * at_zero + GROWTH_SLACK_BYTES;
    let history_bound = HISTORY_PER_MEMBER * MEMBERS;
    let mut over = Vec::new();
    for c in &report.checkpoints {
        let k = c.operations;
        let state_bound = STATE_FACTOR * first.state_bytes + STATE_SLACK_BYTES;
        if c.state_bytes > state_bound {
            over.push(format!("K = {k}: snapshot {} B > {state_bound} B", c.state_bytes));
        }
        if c.welcome_bytes > bound(first.welcome_bytes) {
            over.push(format!("K = {k}: Welcome {} B > {} B", c.welcome_bytes, bound(first.welcome_bytes)));
        }
        if c.history_len > history_bound {
            over.push(format!("K = {k}: history of {} operations > {history_bound}", c.history_len));
        }
    }
    assert!(
        over.is_empty(),
        "over the bounds (K = 0: snapshot {} B, Welcome {} B):\n{}",
        first.state_bytes,
        first.welcome_bytes,
        over.join("\n")
    );
}
