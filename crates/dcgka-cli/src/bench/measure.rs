//! The measurement: runs of each operation over [`dcgka_sim::lean`]'s in-memory network,
//! per-member CPU time, the checks every run must pass, and the statistics of a row.

use std::collections::BTreeMap;
use std::time::Duration;

use cpu_time::ThreadTime;
use dcgka::group::{Group, GroupConfig, GroupError, Status};
use dcgka_sim::lean::{Meter, Network, PAYLOAD, Traffic};
use rand_chacha::ChaCha20Rng;
use rand_core::Rng;

use std::path::Path;

use super::store::StoreRun;
use super::{Op, Progress, weight};

/// Per-thread CPU time (`CLOCK_THREAD_CPUTIME_ID`) of the library calls made for each
/// device since the last reset.
#[derive(Clone, Debug)]
pub(super) struct Cpu(Vec<Duration>);

impl Meter for Cpu {
    fn measure<T>(&mut self, node: usize, f: impl FnOnce() -> T) -> T {
        let start = ThreadTime::now();
        let result = f();
        if let Some(cpu) = self.0.get_mut(node) {
            *cpu += start.elapsed();
        }
        result
    }

    fn reset(&mut self) {
        self.0.fill(Duration::ZERO);
    }
}

impl Cpu {
    fn ms(&self, node: usize) -> f64 {
        self.0.get(node).map_or(0.0, |d| d.as_secs_f64() * 1e3)
    }
}

/// The network of one run: devices 0..n are the group's members, device n the newcomer
/// of `add`.
pub(super) type World = Network<Cpu>;

/// What one run of one operation cost.
#[derive(Clone, Debug)]
struct RunStats {
    traffic: Traffic,
    sender_ms: f64,
    recipients_ms: Vec<f64>,
    newcomer_ms: Option<f64>,
}

/// Member 0 performs `op` (not `create`); delivery runs until quiet.
fn operate(world: &mut World, op: Op) -> Result<(), String> {
    let newcomer = world.node(world.newcomer()).map(|d| d.identity().public_key()).ok_or("no newcomer")?;
    let target = world.node(1).and_then(|d| d.group()).map(Group::me).ok_or("member 1 has no group")?;
    world
        .perform(0, |g, ctx| match op {
            Op::Create => Err(GroupError::Internal("create is the setup")),
            Op::Add => g.add(ctx, newcomer),
            Op::Remove => g.remove(ctx, target),
            Op::Update => g.update(ctx),
            Op::Message => g.send(ctx, &PAYLOAD),
        })
        .and_then(|()| world.run_until_quiet())
        .map_err(|e| format!("{op}: {e}"))
}

/// The members that send a message after the operation in coalescing mode: every member
/// but the initiator and, for `remove`, the removed member 1.
fn round_senders(op: Op, n: usize) -> impl Iterator<Item = usize> {
    (1..n).filter(move |i| !(op == Op::Remove && *i == 1))
}

/// Coalescing mode: every round sender sends one 32-byte message (its held acks travel
/// with it, in one batch); delivery runs until quiet.
fn round(world: &mut World, op: Op, n: usize) -> Result<(), String> {
    for i in round_senders(op, n) {
        world.perform(i, |g, ctx| g.send(ctx, &PAYLOAD)).map_err(|e| format!("message round: {e}"))?;
    }
    world.run_until_quiet().map_err(|e| format!("message round: {e}"))
}

/// Checks that every member ended where `op` should leave it: the same member count
/// everywhere, nothing buffered or held, and every 32-byte message decrypted by every
/// member that was meant to read it (`round`: the operation whose message round followed,
/// if one did).
fn check(world: &World, op: Op, n: usize, round: Option<Op>) -> Result<(), String> {
    let expected = match op {
        Op::Create | Op::Update | Op::Message => n,
        Op::Add => n + 1,
        Op::Remove => n - 1,
    };
    let mut active = 0;
    for (i, d) in world.nodes().iter().enumerate() {
        let Some(g) = d.group() else { continue };
        match g.status() {
            Status::Active => {}
            Status::Removed { .. } if op == Op::Remove && i == 1 => continue,
            s => return Err(format!("{op}: device {i} is {s:?}")),
        }
        active += 1;
        if g.members().len() != expected {
            return Err(format!("{op}: device {i} sees {} members, expected {expected}", g.members().len()));
        }
        if g.pending() != 0 {
            return Err(format!("{op}: device {i} still buffers {} envelopes", g.pending()));
        }
        if g.held_acks() != 0 {
            return Err(format!("{op}: device {i} still holds {} acks", g.held_acks()));
        }
        let from_op = usize::from(op == Op::Message && i != 0);
        let from_round = round.map_or(0, |r| round_senders(r, n).filter(|s| *s != i).count());
        if op != Op::Create && d.decrypted() != from_op + from_round {
            return Err(format!(
                "{op}: device {i} decrypted {} messages, expected {}",
                d.decrypted(),
                from_op + from_round
            ));
        }
    }
    if active != expected {
        return Err(format!("{op}: {active} active members, expected {expected}"));
    }
    Ok(())
}

/// The costs of `op` in `world`: the initiator (member 0), the other members but a
/// removed member 1, and the newcomer of `add`.
fn stats(world: &World, op: Op, n: usize) -> RunStats {
    let cpu = world.meter();
    RunStats {
        traffic: world.traffic().clone(),
        sender_ms: cpu.ms(0),
        recipients_ms: (1..n).filter(|i| !(op == Op::Remove && *i == 1)).map(|i| cpu.ms(i)).collect(),
        newcomer_ms: (op == Op::Add).then(|| cpu.ms(n)),
    }
}

impl RunStats {
    /// The cost of the operation alone: this run (operation, then the message round)
    /// minus `base` (the same round without the operation), member by member. The
    /// newcomer did not exist in `base`; its share of the round is taken as the median
    /// member's cost of processing it.
    fn minus(&self, base: &RunStats) -> RunStats {
        RunStats {
            traffic: Traffic {
                bytes: self.traffic.bytes.saturating_sub(base.traffic.bytes),
                messages: self.traffic.messages.saturating_sub(base.traffic.messages),
                // The Welcome and the breakdown stay gross: batches mix the operation's
                // acks with the round.
                ..self.traffic.clone()
            },
            sender_ms: self.sender_ms - base.sender_ms,
            recipients_ms: self.recipients_ms.iter().zip(&base.recipients_ms).map(|(a, b)| a - b).collect(),
            newcomer_ms: self.newcomer_ms.map(|x| x - median(&base.recipients_ms)),
        }
    }
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        l if l % 2 == 1 => v[l / 2],
        l => (v[l / 2 - 1] + v[l / 2]) / 2.0,
    }
}

/// Sample standard deviation (0 for fewer than two samples).
fn sd(xs: &[f64]) -> f64 {
    if xs.len() < 2 {
        return 0.0;
    }
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    (xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (xs.len() - 1) as f64).sqrt()
}

/// One result row: an operation at one group size, over all iterations.
#[derive(Clone, Debug)]
pub(super) struct Row {
    pub(super) op: Op,
    pub(super) n: usize,
    pub(super) iterations: u32,
    pub(super) traffic: u64,
    pub(super) by_kind: BTreeMap<&'static str, (usize, u64)>,
    pub(super) messages: usize,
    pub(super) welcome_bytes: u64,
    pub(super) sender_median: f64,
    pub(super) sender_sd: f64,
    pub(super) recipient_median: f64,
    pub(super) recipient_sd: f64,
    pub(super) newcomer_median: Option<f64>,
    /// With `--store`: the receiving members' commits of the operation.
    pub(super) store: Option<StoreFigures>,
}

/// A row's store figures (`--store`).
#[derive(Clone, Debug)]
pub(super) struct StoreFigures {
    /// Median row data written by a receiving member's commit.
    pub(super) write_bytes_median: f64,
    /// Median wall-clock time of that commit, in milliseconds.
    pub(super) commit_ms_median: f64,
    /// The first receiving member's database size after the operation, first iteration.
    pub(super) database_bytes: Option<u64>,
    /// Row data and time of that member's commit of another member's ack, first iteration.
    pub(super) ack: Option<(u64, f64)>,
}

impl Row {
    fn from_runs(op: Op, n: usize, runs: &[RunStats], store: &[StoreRun]) -> Row {
        let sender: Vec<f64> = runs.iter().map(|r| r.sender_ms).collect();
        let recipients: Vec<f64> = runs.iter().flat_map(|r| r.recipients_ms.iter().copied()).collect();
        let newcomer: Vec<f64> = runs.iter().filter_map(|r| r.newcomer_ms).collect();
        let first = runs.first().map(|r| r.traffic.clone()).unwrap_or_default();
        Row {
            op,
            n,
            iterations: u32::try_from(runs.len()).unwrap_or(u32::MAX),
            traffic: first.bytes,
            by_kind: first.by_kind,
            messages: first.messages,
            welcome_bytes: first.welcome_bytes,
            sender_median: median(&sender),
            sender_sd: sd(&sender),
            recipient_median: median(&recipients),
            recipient_sd: sd(&recipients),
            newcomer_median: (!newcomer.is_empty()).then(|| median(&newcomer)),
            store: store.first().map(|first| {
                let bytes: Vec<f64> = store.iter().flat_map(|s| s.write_bytes.iter().copied()).collect();
                let ms: Vec<f64> = store.iter().flat_map(|s| s.commit_ms.iter().copied()).collect();
                StoreFigures {
                    write_bytes_median: median(&bytes),
                    commit_ms_median: median(&ms),
                    database_bytes: first.database_bytes,
                    ack: first.ack,
                }
            }),
        }
    }
}

/// Snapshot sizes in bytes after the setup: (member 0, member 1).
pub(super) type StateSizes = Option<(usize, usize)>;

/// Measures every selected operation at size `n`; also returns the snapshot sizes of
/// members 0 and 1 after the first iteration's setup. With `store` (a directory for the
/// member stores), also what receiving each operation writes to a member's store.
pub(super) fn bench_size(
    n: usize,
    ops: &[Op],
    iterations: u32,
    config: GroupConfig,
    seeds: &mut ChaCha20Rng,
    p: &mut Progress,
    store: Option<&Path>,
) -> Result<(Vec<Row>, StateSizes), String> {
    let mut runs: Vec<(Op, Vec<RunStats>)> = ops.iter().map(|op| (*op, Vec::new())).collect();
    let mut store_runs: Vec<Vec<StoreRun>> = vec![Vec::new(); ops.len()];
    let round_follows = config.coalesce_acks;
    let mut state_sizes = None;
    for it in 0..iterations {
        let mut world =
            World::new(n, seeds.next_u64(), config, Cpu(vec![Duration::ZERO; n + 1])).map_err(|e| e.to_string())?;
        let fresh = store.map(|_| world.clone());
        world.create().map_err(|e| format!("create: {e}"))?;
        check(&world, Op::Create, n, None)?;
        if it == 0 {
            let size = |d: usize| world.node(d).and_then(|d| d.group()).map(Group::state_size);
            state_sizes = size(0).zip(size(1));
        }
        let created = stats(&world, Op::Create, n);
        p.done += weight(n).saturating_sub(1);
        p.step(&format!("n={n} iteration {}/{iterations} create", it + 1));
        world.reset_costs();
        for (op, stats_of_op) in &mut runs {
            if *op == Op::Create {
                stats_of_op.push(created.clone());
                continue;
            }
            let mut w = world.clone();
            operate(&mut w, *op)?;
            // Nothing a create's first acks or a message causes is held: measured directly.
            if round_follows && *op != Op::Message {
                let mut base = world.clone();
                round(&mut base, *op, n)?;
                check(&base, Op::Create, n, Some(*op)).map_err(|e| format!("{op} baseline: {e}"))?;
                round(&mut w, *op, n)?;
                check(&w, *op, n, Some(*op))?;
                stats_of_op.push(stats(&w, *op, n).minus(&stats(&base, *op, n)));
            } else {
                check(&w, *op, n, None)?;
                stats_of_op.push(stats(&w, *op, n));
            }
            p.done += weight(n).saturating_sub(1);
            p.step(&format!("n={n} iteration {}/{iterations} {op}", it + 1));
        }
        if let (Some(dir), Some(fresh)) = (store, &fresh) {
            for (k, op) in ops.iter().enumerate() {
                let what = format!("n={n} iteration {}/{iterations} {op}: member stores", it + 1);
                let run = super::store::measure(&world, fresh, *op, n, config, dir, &mut |i, of| {
                    if i == of || i % 16 == 0 {
                        p.note(&format!("{what} {i}/{of}"));
                    }
                })?;
                store_runs[k].push(run);
                p.step(&what);
            }
        }
    }
    let mut rows = Vec::new();
    for (k, (op, stats_of_op)) in runs.iter().enumerate() {
        let first = stats_of_op.first().map(|s| s.traffic.bytes);
        if let Some(t) = stats_of_op.iter().map(|s| s.traffic.bytes).find(|t| Some(*t) != first) {
            eprintln!("warning: {op} at n = {n}: traffic differs between iterations ({t} B)");
        }
        rows.push(Row::from_runs(*op, n, stats_of_op, &store_runs[k]));
    }
    Ok((rows, state_sizes))
}
