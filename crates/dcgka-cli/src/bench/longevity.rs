//! `dcgka bench --longevity`: issue 10's long-lived group figures.
//!
//! For every group size n, [`dcgka_sim::longevity::run`] runs the workload (8 updates and
//! one add/remove cycle in every 10 operations, coalesced acks, everything delivered) and
//! measures at K = 0, 1,000 and 10,000 operations: the largest snapshot of a long-lived
//! member, a Welcome, the median time of 5 restores of that snapshot, and the live heap of
//! one restored group (counted by the binary's allocator, [`crate::ALLOC`]). One CSV row
//! per (n, K); then, per n, whether issue 10's target holds at the largest K.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use dcgka_sim::longevity::{Checkpoint, Observer, Progress, Workload, run};

/// The checkpoints of issue 10.
pub(super) const CHECKPOINTS: [usize; 3] = [0, 1_000, 10_000];

/// The group sizes of issue 10.
pub(super) const SIZES: [u16; 2] = [16, 128];

/// The CSV header (issue 10). Scripts read these columns; keep them exactly as they are.
const CSV_HEADER: &str = "n,operations,state_bytes,welcome_bytes,restore_ms,memory_bytes_per_member";

/// Issue 10's target: at the largest K, state and Welcome at most `FACTOR` times their size
/// at K = 0 plus `SLACK_BYTES`, and a restored member's heap at most `MEMORY_FACTOR` times
/// its state.
const FACTOR: usize = 2;
const SLACK_BYTES: usize = 4 * 1024;
const MEMORY_FACTOR: usize = 3;

/// Counts heap bytes with the binary's allocator, reports progress on standard error and
/// keeps every checkpoint (so that a run that fails part-way still reports them).
#[derive(Default)]
struct Heap {
    rows: Vec<Checkpoint>,
}

impl Observer for Heap {
    fn live_heap_bytes(&self) -> Option<usize> {
        Some(crate::ALLOC.allocated())
    }

    fn progress(&mut self, p: &Progress) {
        eprintln!("longevity: n = {}: {} of {} operations, {}", p.members, p.done, p.total, clock(p.elapsed));
    }

    fn checkpoint(&mut self, c: &Checkpoint) {
        eprintln!(
            "longevity: n = {}: K = {} measured ({} B state, {} B Welcome), {}",
            c.members,
            c.operations,
            c.state_bytes,
            c.welcome_bytes,
            clock(c.elapsed)
        );
        self.rows.push(c.clone());
    }
}

fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}:{:02} elapsed", s / 3600, s / 60 % 60, s % 60)
}

fn csv_row(c: &Checkpoint) -> String {
    format!(
        "{},{},{},{},{:.3},{}",
        c.members,
        c.operations,
        c.state_bytes,
        c.welcome_bytes,
        c.restore_ms,
        c.memory_bytes_per_member.map(|m| m.to_string()).unwrap_or_default()
    )
}

/// Writes the rows as CSV to `path` ("-": standard output).
fn write_csv(path: &Path, rows: &[Checkpoint]) -> Result<(), String> {
    let mut text = format!("{CSV_HEADER}\n");
    for c in rows {
        text.push_str(&csv_row(c));
        text.push('\n');
    }
    if path == Path::new("-") {
        print!("{text}");
        return Ok(());
    }
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

fn print_table(rows: &[Checkpoint]) {
    println!(
        "{:>5} {:>10} {:>12} {:>13} {:>11} {:>14} {:>9}",
        "n", "operations", "state B", "Welcome B", "restore ms", "memory B", "history"
    );
    for c in rows {
        println!(
            "{:>5} {:>10} {:>12} {:>13} {:>11.3} {:>14} {:>9}",
            c.members,
            c.operations,
            c.state_bytes,
            c.welcome_bytes,
            c.restore_ms,
            c.memory_bytes_per_member.map_or_else(|| "-".to_string(), |m| m.to_string()),
            c.history_len
        );
    }
}

/// One line of the target check: ✓ or ✗, what, the measured value and the limit.
fn verdict(what: &str, got: usize, limit: usize) -> String {
    let mark = if got <= limit { "✓" } else { "✗" };
    format!("  {mark} {what}: {got} <= {limit}")
}

/// Issue 10's target for one size at the largest K: state and Welcome against K = 0 (no
/// verdict without both), and the heap against the state.
fn print_targets(n: usize, rows: &[Checkpoint]) {
    let Some(last) = rows.last() else {
        println!("n = {n}: no target check (no checkpoint)");
        return;
    };
    let k = last.operations;
    match rows.iter().find(|c| c.operations == 0).filter(|_| k != 0) {
        Some(first) => {
            println!("n = {n}: issue 10's target at K = {k} against K = 0:");
            let bound = |x: usize| FACTOR * x + SLACK_BYTES;
            println!(
                "{}",
                verdict(
                    &format!("state_bytes at K = {k} <= 2 x {} + 4096", first.state_bytes),
                    last.state_bytes,
                    bound(first.state_bytes)
                )
            );
            println!(
                "{}",
                verdict(
                    &format!("welcome_bytes at K = {k} <= 2 x {} + 4096", first.welcome_bytes),
                    last.welcome_bytes,
                    bound(first.welcome_bytes)
                )
            );
        }
        None => {
            println!("n = {n}: issue 10's target at K = {k} (state and Welcome need K = 0 and a later checkpoint):")
        }
    }
    match last.memory_bytes_per_member {
        Some(m) => println!(
            "{}",
            verdict(
                &format!("memory_bytes_per_member at K = {k} <= 3 x state_bytes"),
                m,
                MEMORY_FACTOR * last.state_bytes
            )
        ),
        None => println!("  ? memory_bytes_per_member: not counted"),
    }
}

/// Runs `dcgka bench --longevity` over `sizes` with `checkpoints` (K values). A size whose
/// run fails ends the command with an error, after the table and CSV of every checkpoint
/// measured until then.
pub(super) fn run_longevity(
    sizes: &[usize],
    checkpoints: &[usize],
    seed: u64,
    csv: Option<&Path>,
) -> Result<(), String> {
    let mut rows = Vec::new();
    let mut failed = None;
    println!(
        "dcgka bench --longevity: seed {seed}, checkpoints K = {checkpoints:?}; 8 updates and one add/remove cycle \
         in every 10 operations, coalesced acks, everything delivered"
    );
    let _ = std::io::stdout().flush();
    for &n in sizes {
        let w = Workload::new(n, checkpoints.to_vec(), seed);
        let mut heap = Heap::default();
        let result = run(&w, &mut heap);
        let verb = if result.is_ok() { "done" } else { "failed" };
        eprintln!("longevity: n = {n} {verb}, {} checkpoint(s) measured", heap.rows.len());
        rows.push((n, heap.rows));
        if let Err(e) = result {
            failed = Some(format!("n = {n}: {e}"));
            break;
        }
    }
    let all: Vec<Checkpoint> = rows.iter().flat_map(|(_, r)| r.iter().cloned()).collect();
    println!(
        "state: the largest snapshot of a long-lived member; restore: median of 5; memory: live heap of one restored group"
    );
    print_table(&all);
    for (n, of_n) in &rows {
        print_targets(*n, of_n);
    }
    if let Some(path) = csv {
        write_csv(path, &all)?;
    }
    failed.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(operations: usize, state: usize, welcome: usize, memory: Option<usize>) -> Checkpoint {
        Checkpoint {
            members: 16,
            operations,
            state_bytes: state,
            largest: 0,
            history_len: 16,
            welcome_bytes: welcome,
            restore_ms: 0.123_456,
            memory_bytes_per_member: memory,
            elapsed: Duration::ZERO,
        }
    }

    #[test]
    fn csv_rows_follow_the_header() {
        assert_eq!(CSV_HEADER.split(',').count(), 6);
        assert_eq!(csv_row(&row(1000, 5367, 2776, Some(9000))), "16,1000,5367,2776,0.123,9000");
        assert_eq!(csv_row(&row(0, 1, 2, None)), "16,0,1,2,0.123,");
    }

    #[test]
    fn verdicts_compare_against_the_limit() {
        assert!(verdict("x", 10, 10).contains('✓'));
        assert!(verdict("x", 11, 10).contains('✗'));
    }
}
