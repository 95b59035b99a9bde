//! `dcgka bench`: the paper's evaluation (Figures 6 and 7, spec §12) with honest
//! accounting.
//!
//! Method, for every group size n and every iteration:
//! 1. Member 0 creates a group of n members and everyone processes everything, acks
//!    included. That run is the measured `create`.
//! 2. From a copy of the resulting state, member 0 performs each other selected operation
//!    once: `add` (a new device), `remove` (member 1), `update`, or `message` (a 32-byte
//!    application message). Delivery then runs until the network is quiet: every member
//!    has processed everything the operation causes, acks and add-acks included.
//!
//! Delivery is [`dcgka_sim::lean`]'s plain in-memory FIFO driving `Group` objects directly
//! (no devices, simulator shadows or bookkeeping): each broadcast goes to every other
//! member, each Welcome to its newcomer. Traffic is the bytes of every message sent, each broadcast counted once and
//! each Welcome once. CPU is per-thread CPU time (`CLOCK_THREAD_CPUTIME_ID`) of the
//! library calls made for a member: the initiator's own API call plus everything it
//! processes ("sender"), each other member's processing ("recipient"; for `remove`, the
//! removed member is not a recipient), and the newcomer's join and processing
//! ("newcomer", `add` only). Everything runs on one thread and is driven by one seeded
//! ChaCha20 generator, so traffic is deterministic per (op, n) for a given seed.
//!
//! With `--coalesce-acks` every member holds its acks (spec §12) and the figures of `add`,
//! `remove` and `update` are marginal: from the same state, (the operation, delivery, then
//! one 32-byte message from every member but the initiator and a removed member, which
//! carries its held acks, delivery) minus (the same messages alone), member by member, with
//! the newcomer's share of the messages taken as the median member's. `create` and
//! `message` hold nothing and are measured directly.
//!
//! With `--longevity`, the command measures long-lived groups instead (issue 10, see
//! [`longevity`]).
//!
//! The command line and the driver are here; [`measure`] runs and checks the operations,
//! [`csv`] writes the CSV, [`plot`] draws the figures.

mod csv;
mod longevity;
mod measure;
mod plot;
mod store;

use std::fmt;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use dcgka::group::GroupConfig;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use measure::Row;

/// The paper's group sizes (Figures 6 and 7).
const PAPER_SIZES: [u16; 9] = [8, 11, 16, 22, 32, 45, 64, 90, 128];

/// The measured operations, in the order of the paper's figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub(crate) enum Op {
    /// Group creation with n members (the setup itself).
    Create,
    /// Member 0 adds a new member.
    Add,
    /// Member 0 removes member 1.
    Remove,
    /// Member 0 performs a PCS update.
    Update,
    /// Member 0 sends a 32-byte application message.
    Message,
}

impl Op {
    const ALL: [Op; 5] = [Op::Create, Op::Add, Op::Remove, Op::Update, Op::Message];

    fn name(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Add => "add",
            Op::Remove => "remove",
            Op::Update => "update",
            Op::Message => "message",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Options of `dcgka bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Group sizes, comma-separated (2 to 1024) [default: the paper's sizes; 16,128 with
    /// --longevity].
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u16).range(2..=1024))]
    sizes: Vec<u16>,
    /// Operations to measure, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Op::ALL)]
    ops: Vec<Op>,
    /// Runs per (operation, size); medians and standard deviations are over these.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    iterations: u32,
    /// Write the results as CSV to this file ("-": standard output).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Draw traffic and CPU against n as an SVG file.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Seed of the run (traffic is deterministic per seed).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Coalesced acknowledgments (spec §12): members hold their acks and send them with
    /// their next message. The figures of add, remove and update are then marginal costs:
    /// the operation followed by one message from every other member, minus those messages
    /// alone (create and message hold nothing and are measured directly).
    #[arg(long)]
    coalesce_acks: bool,
    /// Long-lived groups (issue 10) instead of the per-operation figures: for each size, a
    /// group runs 8 updates and one add/remove cycle in every 10 operations (coalesced
    /// acks, everything delivered), and after K operations one row gives the largest
    /// snapshot, a Welcome, the median time of 5 restores and the live heap of one
    /// restored group. CSV header:
    /// n,operations,state_bytes,welcome_bytes,restore_ms,memory_bytes_per_member
    #[arg(long, conflicts_with_all = ["ops", "iterations", "plot", "coalesce_acks", "store"])]
    longevity: bool,
    /// Also run every receiving member's device on its own SQLite store (dcgka-store):
    /// after the setup, each receiving member's device is opened from a store holding its
    /// state and receives the operation. Adds the CSV columns store_write_bytes_median (row
    /// data written by that commit) and store_commit_ms_median (its wall-clock time, synced
    /// to disk), and prints one member's database size.
    #[arg(long)]
    store: bool,
    /// With --longevity: the values of K at which to measure, comma-separated (the run
    /// does as many operations as the largest; e.g. 0,20,40 for a quick check).
    #[arg(long, value_delimiter = ',', requires = "longevity", default_values_t = longevity::CHECKPOINTS)]
    operations: Vec<usize>,
}

/// Progress on standard error (when it is a terminal, or `DCGKA_PROGRESS` is set).
struct Progress {
    show: bool,
    done: u64,
    total: u64,
}

impl Progress {
    fn step(&mut self, what: &str) {
        self.done += 1;
        if !self.show {
            return;
        }
        self.draw(what);
    }

    /// Redraws the bar with a note, without counting a step.
    fn note(&self, what: &str) {
        if self.show {
            self.draw(what);
        }
    }

    fn draw(&self, what: &str) {
        let pct = (self.done * 100).checked_div(self.total).unwrap_or(100);
        let width = 30;
        let filled = usize::try_from(pct * width / 100).unwrap_or(0);
        let mut e = std::io::stderr().lock();
        let bar = format!("{}{}", "#".repeat(filled), " ".repeat(30 - filled.min(30)));
        let _ = write!(e, "\rbench: [{bar}] {pct:3}% {what:<40}");
        if self.done >= self.total {
            let _ = writeln!(e);
        }
        let _ = e.flush();
    }
}

/// Weight of one run in the progress bar: roughly its cost, which grows with n².
fn weight(n: usize) -> u64 {
    (n as u64 * n as u64 / 64).max(1)
}

/// The process's peak resident set size (`VmHWM`), in KiB.
fn peak_memory_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The targets of issue 4 at n = 128: (description, limit, measured value, unit).
fn targets(rows: &[Row]) -> Vec<(String, f64, f64)> {
    let at = |op: Op| rows.iter().find(|r| r.op == op && r.n == 128);
    let mut out = Vec::new();
    if let Some(r) = at(Op::Update) {
        out.push(("update traffic (B) <= 34 KiB".to_string(), 34.0 * 1024.0, r.traffic as f64));
        out.push(("update CPU per recipient, median (ms) <= 3".to_string(), 3.0, r.recipient_median));
        out.push(("update CPU of the initiator, median (ms) <= 15".to_string(), 15.0, r.sender_median));
    }
    if let Some(r) = at(Op::Remove) {
        out.push(("remove traffic (B) <= 34 KiB".to_string(), 34.0 * 1024.0, r.traffic as f64));
    }
    if let Some(r) = at(Op::Add) {
        out.push(("add traffic (B) <= 48 KiB".to_string(), 48.0 * 1024.0, r.traffic as f64));
    }
    if let Some(r) = at(Op::Message) {
        out.push(("application overhead over 32 B (B) <= 110".to_string(), 110.0, r.traffic as f64 - 32.0));
    }
    out
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<8} {:>5} {:>10} {:>6} {:>9} {:>12} {:>13} {:>12}",
        "op", "n", "traffic B", "msgs", "welcome B", "sender ms", "recipient ms", "newcomer ms"
    );
    for r in rows {
        println!(
            "{:<8} {:>5} {:>10} {:>6} {:>9} {:>12} {:>13} {:>12}",
            r.op.name(),
            r.n,
            r.traffic,
            r.messages,
            if r.welcome_bytes > 0 { r.welcome_bytes.to_string() } else { "-".to_string() },
            format!("{:.3}±{:.2}", r.sender_median, r.sender_sd),
            format!("{:.3}±{:.2}", r.recipient_median, r.recipient_sd),
            r.newcomer_median.map_or_else(|| "-".to_string(), |x| format!("{x:.3}")),
        );
    }
}

/// The store figures (`--store`): per row, and one member's database at the largest n.
fn print_store(rows: &[Row]) {
    println!("store (each receiving member's device on its own SQLite store; its commit of the operation):");
    println!(
        "{:<8} {:>5} {:>16} {:>16} {:>14} {:>16}",
        "op", "n", "row bytes", "commit ms", "database B", "an ack: bytes, ms"
    );
    for r in rows {
        let Some(s) = &r.store else { continue };
        println!(
            "{:<8} {:>5} {:>16.0} {:>16.3} {:>14} {:>16}",
            r.op.name(),
            r.n,
            s.write_bytes_median,
            s.commit_ms_median,
            s.database_bytes.map_or_else(|| "-".to_string(), |b| b.to_string()),
            s.ack.map_or_else(|| "-".to_string(), |(b, ms)| format!("{b}, {ms:.3}")),
        );
    }
    if let Some(r) = rows.iter().filter(|r| r.store.is_some()).max_by_key(|r| (r.n, r.op == Op::Message))
        && let Some(b) = r.store.as_ref().and_then(|s| s.database_bytes)
    {
        println!("one device's database at n = {} (member 1, after receiving the {}): {b} bytes", r.n, r.op);
    }
    if let Some(r) = rows.iter().find(|r| r.op == Op::Message && r.n == 1024)
        && let Some(s) = &r.store
    {
        let verdict = if s.write_bytes_median <= 2048.0 { "met" } else { "MISSED" };
        println!("  [{verdict}] store_write_bytes_median for message at n = 1024 <= 2048: {:.0}", s.write_bytes_median);
    }
}

/// Runs `dcgka bench`; returns whether every run completed and checked out.
pub(crate) fn run(args: &BenchArgs) -> bool {
    match run_inner(args) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("\ndcgka bench: FAILED: {e}");
            false
        }
    }
}

fn run_inner(args: &BenchArgs) -> Result<(), String> {
    let defaults: &[u16] = if args.longevity { &longevity::SIZES } else { &PAPER_SIZES };
    let given = if args.sizes.is_empty() { defaults } else { &args.sizes };
    let mut sizes: Vec<usize> = given.iter().map(|s| usize::from(*s)).collect();
    sizes.sort_unstable();
    sizes.dedup();
    if args.longevity {
        return longevity::run_longevity(&sizes, &args.operations, args.seed, args.csv.as_deref());
    }
    let mut ops = args.ops.clone();
    ops.sort_unstable();
    ops.dedup();
    let runs_per_iteration =
        ops.iter().filter(|o| **o != Op::Create).count() as u64 + 1 + if args.store { ops.len() as u64 } else { 0 };
    let total = sizes.iter().map(|n| weight(*n) * runs_per_iteration * u64::from(args.iterations)).sum();
    let show = std::io::stderr().is_terminal() || std::env::var_os("DCGKA_PROGRESS").is_some();
    let mut progress = Progress { show, done: 0, total };
    let mut seeds = ChaCha20Rng::seed_from_u64(args.seed);
    let config = GroupConfig { coalesce_acks: args.coalesce_acks, ..GroupConfig::default() };
    let started = std::time::Instant::now();
    let mut by_size = Vec::new();
    let mut state_sizes = None;
    let store_dir = if args.store {
        Some(tempfile::tempdir().map_err(|e| format!("a temporary directory for the stores: {e}"))?)
    } else {
        None
    };
    for n in &sizes {
        let dir = store_dir.as_ref().map(|d| d.path());
        let (rows, states) = measure::bench_size(*n, &ops, args.iterations, config, &mut seeds, &mut progress, dir)?;
        by_size.extend(rows);
        state_sizes = states;
    }
    let elapsed = started.elapsed();
    // One row per (op, n), grouped by operation as in the figures.
    let mut rows = by_size;
    rows.sort_by_key(|r| (r.op, r.n));

    println!(
        "dcgka bench: seed {}, {} iteration(s), per-thread CPU time, {} s in all",
        args.seed,
        args.iterations,
        elapsed.as_secs()
    );
    if args.coalesce_acks {
        println!(
            "coalesced acks: the figures of add, remove and update are marginal costs: (operation, then one \
             32-byte message from each other member, carrying its held acks) minus (those messages alone); \
             create and message hold nothing and are measured directly"
        );
    }
    print_table(&rows);
    if let Some(largest) = sizes.last() {
        match peak_memory_kib() {
            Some(k) => println!("peak memory (VmHWM) after n = {largest}: {:.1} MiB", k as f64 / 1024.0),
            None => println!("peak memory: unavailable (no /proc/self/status)"),
        }
        match state_sizes {
            Some((m0, m1)) => {
                println!("serialized state at n = {largest} after setup: member 0 {m0} B, member 1 {m1} B")
            }
            None => println!("serialized state at n = {largest}: unavailable (n < 2)"),
        }
    }
    if let Some(largest) = sizes.last() {
        let gross = if args.coalesce_acks { ", operation and message round together" } else { "" };
        println!("traffic by message kind at n = {largest} (count x average size{gross}):");
        for r in rows.iter().filter(|r| r.n == *largest) {
            let parts: Vec<String> = r
                .by_kind
                .iter()
                .map(|(k, (c, b))| format!("{c} x {k} {:.0} B", *b as f64 / (*c).max(1) as f64))
                .collect();
            println!("  {:<8} {}", r.op.name(), parts.join(", "));
        }
    }
    if args.store {
        print_store(&rows);
    }
    let t = targets(&rows);
    if !t.is_empty() {
        println!("targets at n = 128 (issue 4):");
        for (what, limit, got) in &t {
            let verdict = if got <= limit { "met" } else { "MISSED" };
            println!("  [{verdict}] {what}: {got:.3}");
        }
    }
    if let Some(path) = &args.csv {
        csv::write_csv(path, &rows)?;
    }
    if let Some(path) = &args.plot {
        plot::draw(path, &rows, args.coalesce_acks).map_err(|e| format!("plotting to {}: {e}", path.display()))?;
    }
    Ok(())
}
