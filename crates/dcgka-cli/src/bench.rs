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
//! Delivery is a plain in-memory FIFO driving [`Group`] objects directly (no simulator
//! shadows or bookkeeping): each broadcast goes to every other member, each Welcome to its
//! newcomer. Traffic is the bytes of every message sent, each broadcast counted once and
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

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use cpu_time::ThreadTime;
use dcgka::events::Event;
use dcgka::group::{Context, Group, GroupConfig, GroupError, Output, Received, Status};
use dcgka::prekeys::{Identity, InMemoryPrekeyDirectory};
use dcgka::wire::EnvelopeKind;
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

/// The paper's group sizes (Figures 6 and 7).
const PAPER_SIZES: [u16; 9] = [8, 11, 16, 22, 32, 45, 64, 90, 128];

/// The Unix time the benchmark runs at (prekey validity only).
const NOW: u64 = 1_800_000_000;

/// One-time prekeys each member publishes before the group is created (as the simulator's
/// devices do). The newcomer publishes n + this many, so every add-ack finds one.
const OPKS_PER_MEMBER: usize = 64;

/// The application payload of the `message` operation.
const PAYLOAD: [u8; 32] = [0x5a; 32];

/// The CSV header (issue 4).
pub(crate) const CSV_HEADER: &str = "op,n,iterations,traffic_bytes,sender_cpu_ms_median,sender_cpu_ms_sd,\
recipient_cpu_ms_median,recipient_cpu_ms_sd,newcomer_cpu_ms_median";

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
    /// Group sizes, comma-separated (2 to 1024) [default: the paper's sizes].
    #[arg(long, value_delimiter = ',', default_values_t = PAPER_SIZES, hide_default_value = true,
          value_parser = clap::value_parser!(u16).range(2..=1024))]
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
}

// ------------------------------------------------------------------------------------
// The in-memory network
// ------------------------------------------------------------------------------------

/// A message in flight.
#[derive(Clone, Debug)]
enum Packet {
    /// An envelope for every other member.
    Broadcast { from: usize, bytes: Vec<u8> },
    /// A Welcome for one device.
    Welcome { to: usize, bytes: Vec<u8> },
}

/// One device: devices 0..n are the group's members, device n is the newcomer of `add`.
#[derive(Clone, Debug)]
struct Device {
    identity: Identity,
    group: Option<Group>,
    /// Whether the device is about to join (listed in a create, or added): broadcasts that
    /// reach it before it has joined are kept in `backlog`.
    expecting: bool,
    backlog: Vec<Vec<u8>>,
    /// CPU time of the library calls made for this device since the last reset.
    cpu: Duration,
    /// Application messages decrypted.
    decrypted: usize,
}

/// Everything one benchmark run needs; cloned after the setup so every operation starts
/// from the same state.
#[derive(Clone, Debug)]
struct World {
    rng: ChaCha20Rng,
    directory: InMemoryPrekeyDirectory,
    devices: Vec<Device>,
    queue: VecDeque<Packet>,
    /// Bytes sent since the last reset.
    traffic: u64,
    /// Messages sent since the last reset.
    sent: usize,
    /// Bytes of the Welcomes sent since the last reset.
    welcome_bytes: u64,
    /// Messages and bytes sent since the last reset, by kind.
    by_kind: BTreeMap<&'static str, (usize, u64)>,
    /// The configuration of every member.
    config: GroupConfig,
}

/// What one run of one operation cost.
#[derive(Clone, Debug)]
struct RunStats {
    traffic: u64,
    by_kind: BTreeMap<&'static str, (usize, u64)>,
    messages: usize,
    welcome_bytes: u64,
    sender_ms: f64,
    recipients_ms: Vec<f64>,
    newcomer_ms: Option<f64>,
}

/// The name of an envelope kind in the traffic breakdown.
fn kind_name(kind: Option<EnvelopeKind>) -> &'static str {
    match kind {
        Some(EnvelopeKind::Create) => "create",
        Some(EnvelopeKind::Ack) => "ack",
        Some(EnvelopeKind::Update) => "update",
        Some(EnvelopeKind::Remove) => "remove",
        Some(EnvelopeKind::Add) => "add",
        Some(EnvelopeKind::AddAck) => "add-ack",
        Some(EnvelopeKind::Application) => "application",
        Some(EnvelopeKind::Batch) => "batch",
        None => "unreadable",
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl World {
    /// `n` members and one spare device, every identity's prekeys published.
    fn new(n: usize, seed: u64, config: GroupConfig) -> Result<World, String> {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut directory = InMemoryPrekeyDirectory::new();
        let mut devices = Vec::with_capacity(n + 1);
        for i in 0..=n {
            let mut identity = Identity::generate(&mut rng);
            let opks = if i == n { n + OPKS_PER_MEMBER } else { OPKS_PER_MEMBER };
            directory
                .publish_identity(&mut rng, &mut identity, NOW, opks)
                .map_err(|e| format!("publishing prekeys: {e}"))?;
            devices.push(Device {
                identity,
                group: None,
                expecting: false,
                backlog: Vec::new(),
                cpu: Duration::ZERO,
                decrypted: 0,
            });
        }
        Ok(World {
            rng,
            directory,
            devices,
            queue: VecDeque::new(),
            traffic: 0,
            sent: 0,
            welcome_bytes: 0,
            by_kind: BTreeMap::new(),
            config,
        })
    }

    /// Forgets the costs measured so far.
    fn reset_costs(&mut self) {
        self.traffic = 0;
        self.sent = 0;
        self.welcome_bytes = 0;
        self.by_kind.clear();
        for d in &mut self.devices {
            d.cpu = Duration::ZERO;
            d.decrypted = 0;
        }
    }

    /// Runs `f` for device `d` and charges its thread CPU time to `d`.
    fn measured<T>(&mut self, d: usize, f: impl FnOnce(&mut Context<'_, ChaCha20Rng>, &mut Option<Group>) -> T) -> T {
        let dev = &mut self.devices[d];
        let mut ctx =
            Context { rng: &mut self.rng, now: NOW, prekeys: &mut self.directory, identity: &mut dev.identity };
        let start = ThreadTime::now();
        let result = f(&mut ctx, &mut dev.group);
        dev.cpu += start.elapsed();
        result
    }

    /// Sends a call's output and checks its events.
    fn post(&mut self, from: usize, out: Output) -> Result<(), String> {
        for e in &out.events {
            match e {
                Event::Message { plaintext, .. } if plaintext[..] == PAYLOAD[..] => self.devices[from].decrypted += 1,
                Event::Rejected { .. }
                | Event::Undecryptable { .. }
                | Event::Dropped { .. }
                | Event::Equivocation { .. }
                | Event::GroupStateCorrupted { .. }
                | Event::PrekeyBundleNeeded { .. }
                | Event::Message { .. } => return Err(format!("device {from}: unexpected event {e:?}")),
                _ => {}
            }
        }
        for bytes in out.broadcast {
            self.count(kind_name(Group::peek(&bytes).ok().map(|p| p.kind)), bytes.len());
            self.queue.push_back(Packet::Broadcast { from, bytes });
        }
        for w in out.direct {
            let bytes = w.bytes;
            let to = self
                .devices
                .iter()
                .position(|d| d.identity.public_key() == w.identity)
                .ok_or_else(|| "a Welcome for an unknown device".to_string())?;
            self.welcome_bytes += bytes.len() as u64;
            self.count("welcome", bytes.len());
            self.devices[to].expecting = true;
            self.queue.push_back(Packet::Welcome { to, bytes });
        }
        Ok(())
    }

    /// Counts one message sent.
    fn count(&mut self, kind: &'static str, len: usize) {
        self.traffic += len as u64;
        self.sent += 1;
        let e = self.by_kind.entry(kind).or_default();
        e.0 += 1;
        e.1 += len as u64;
    }

    /// Delivers until the network is quiet.
    fn run_until_quiet(&mut self) -> Result<(), String> {
        while let Some(p) = self.queue.pop_front() {
            match p {
                Packet::Broadcast { from, bytes } => {
                    for to in 0..self.devices.len() {
                        if to != from {
                            self.deliver(to, &bytes)?;
                        }
                    }
                }
                Packet::Welcome { to, bytes } => {
                    let config = self.config;
                    let out = self.measured(to, |ctx, slot| {
                        let (g, out) = Group::join(ctx, &bytes, config)?;
                        *slot = Some(g);
                        Ok::<_, GroupError>(out)
                    });
                    let out = out.map_err(|e| format!("device {to}: join failed: {e}"))?;
                    self.devices[to].expecting = false;
                    self.post(to, out)?;
                    for b in std::mem::take(&mut self.devices[to].backlog) {
                        self.deliver(to, &b)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Delivers one broadcast envelope to device `to`.
    fn deliver(&mut self, to: usize, bytes: &[u8]) -> Result<(), String> {
        let dev = &mut self.devices[to];
        let state = dev.group.as_ref().map(|g| *g.status() == Status::Active);
        match state {
            None if dev.expecting => {
                let is_create = Group::peek(bytes).is_ok_and(|p| p.kind == EnvelopeKind::Create);
                if !is_create {
                    dev.backlog.push(bytes.to_vec());
                    return Ok(());
                }
                let config = self.config;
                let out = self.measured(to, |ctx, slot| {
                    let (g, out) = Group::from_create(ctx, bytes, config)?;
                    *slot = Some(g);
                    Ok::<_, GroupError>(out)
                });
                let out = out.map_err(|e| format!("device {to}: joining from the create failed: {e}"))?;
                self.devices[to].expecting = false;
                self.post(to, out)
            }
            // Not in the group: broadcasts do not reach it.
            None => Ok(()),
            // A removed member gets nothing more.
            Some(false) => Ok(()),
            Some(true) => {
                let res = self.measured(to, |ctx, slot| match slot {
                    Some(g) => g.receive(ctx, bytes),
                    None => Err(GroupError::Internal("no group")),
                });
                match res {
                    // The add envelope reaches its newcomer a second time after the Welcome.
                    Ok(out) if matches!(out.received, Some(Received::Duplicate | Received::OwnEnvelope)) => Ok(()),
                    Ok(out) if matches!(out.received, Some(Received::Dropped(_))) => {
                        Err(format!("device {to}: envelope dropped: {:?}", out.received))
                    }
                    Ok(out) => self.post(to, out),
                    Err(e) => Err(format!("device {to}: receive failed: {e}")),
                }
            }
        }
    }

    /// Member 0 creates the group with devices 1..n; delivery runs until quiet.
    fn create(&mut self, n: usize) -> Result<(), String> {
        let others: Vec<_> = self.devices[1..n].iter().map(|d| d.identity.public_key()).collect();
        for d in &mut self.devices[1..n] {
            d.expecting = true;
        }
        let config = self.config;
        let out = self.measured(0, |ctx, slot| {
            let (g, out) = Group::create(ctx, &others, config)?;
            *slot = Some(g);
            Ok::<_, GroupError>(out)
        });
        let out = out.map_err(|e| format!("create failed: {e}"))?;
        self.post(0, out)?;
        self.run_until_quiet()
    }

    /// Member 0 performs `op` (not `create`); delivery runs until quiet.
    fn operate(&mut self, op: Op, n: usize) -> Result<(), String> {
        let newcomer = self.devices[n].identity.public_key();
        let target = self.devices[1].group.as_ref().map(Group::me).ok_or("member 1 has no group")?;
        let out = self.measured(0, |ctx, slot| {
            let Some(g) = slot else { return Err(GroupError::Internal("member 0 has no group")) };
            match op {
                Op::Create => Err(GroupError::Internal("create is the setup")),
                Op::Add => g.add(ctx, newcomer),
                Op::Remove => g.remove(ctx, target),
                Op::Update => g.update(ctx),
                Op::Message => g.send(ctx, &PAYLOAD),
            }
        });
        let out = out.map_err(|e| format!("{op} failed: {e}"))?;
        self.post(0, out)?;
        self.run_until_quiet()
    }

    /// The members that send a message after the operation in coalescing mode: every
    /// member but the initiator and, for `remove`, the removed member 1.
    fn round_senders(op: Op, n: usize) -> impl Iterator<Item = usize> {
        (1..n).filter(move |i| !(op == Op::Remove && *i == 1))
    }

    /// Coalescing mode: every round sender sends one 32-byte message (its held acks travel
    /// with it, in one batch); delivery runs until quiet.
    fn round(&mut self, op: Op, n: usize) -> Result<(), String> {
        for i in World::round_senders(op, n) {
            let out = self.measured(i, |ctx, slot| match slot {
                Some(g) => g.send(ctx, &PAYLOAD),
                None => Err(GroupError::Internal("no group")),
            });
            let out = out.map_err(|e| format!("device {i}: send failed: {e}"))?;
            self.post(i, out)?;
        }
        self.run_until_quiet()
    }

    /// Checks that every member ended where `op` should leave it: the same member count
    /// everywhere, nothing buffered or held, and every 32-byte message decrypted by every
    /// member that was meant to read it (`round`: the operation whose message round
    /// followed, if one did).
    fn check(&self, op: Op, n: usize, round: Option<Op>) -> Result<(), String> {
        let expected = match op {
            Op::Create | Op::Update | Op::Message => n,
            Op::Add => n + 1,
            Op::Remove => n - 1,
        };
        let mut active = 0;
        for (i, d) in self.devices.iter().enumerate() {
            let Some(g) = &d.group else { continue };
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
            let from_round = round.map_or(0, |r| World::round_senders(r, n).filter(|s| *s != i).count());
            if op != Op::Create && d.decrypted != from_op + from_round {
                return Err(format!(
                    "{op}: device {i} decrypted {} messages, expected {}",
                    d.decrypted,
                    from_op + from_round
                ));
            }
        }
        if active != expected {
            return Err(format!("{op}: {active} active members, expected {expected}"));
        }
        Ok(())
    }

    fn stats(&self, op: Op, n: usize) -> RunStats {
        let recipients = self.devices[1..n]
            .iter()
            .enumerate()
            .filter(|(i, _)| !(op == Op::Remove && *i == 0))
            .map(|(_, d)| ms(d.cpu))
            .collect();
        RunStats {
            traffic: self.traffic,
            by_kind: self.by_kind.clone(),
            messages: self.sent,
            welcome_bytes: self.welcome_bytes,
            sender_ms: ms(self.devices[0].cpu),
            recipients_ms: recipients,
            newcomer_ms: (op == Op::Add).then(|| ms(self.devices[n].cpu)),
        }
    }
}

impl RunStats {
    /// The cost of the operation alone: this run (operation, then the message round)
    /// minus `base` (the same round without the operation), member by member. The
    /// newcomer did not exist in `base`; its share of the round is taken as the median
    /// member's cost of processing it.
    fn minus(&self, base: &RunStats) -> RunStats {
        RunStats {
            traffic: self.traffic.saturating_sub(base.traffic),
            // The breakdown stays gross: batches mix the operation's acks with the round.
            by_kind: self.by_kind.clone(),
            messages: self.messages.saturating_sub(base.messages),
            welcome_bytes: self.welcome_bytes,
            sender_ms: self.sender_ms - base.sender_ms,
            recipients_ms: self.recipients_ms.iter().zip(&base.recipients_ms).map(|(a, b)| a - b).collect(),
            newcomer_ms: self.newcomer_ms.map(|x| x - median(&base.recipients_ms)),
        }
    }
}

// ------------------------------------------------------------------------------------
// Statistics and results
// ------------------------------------------------------------------------------------

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

/// One CSV row: an operation at one group size, over all iterations.
#[derive(Clone, Debug)]
struct Row {
    op: Op,
    n: usize,
    iterations: u32,
    traffic: u64,
    by_kind: BTreeMap<&'static str, (usize, u64)>,
    messages: usize,
    welcome_bytes: u64,
    sender_median: f64,
    sender_sd: f64,
    recipient_median: f64,
    recipient_sd: f64,
    newcomer_median: Option<f64>,
}

impl Row {
    fn from_runs(op: Op, n: usize, runs: &[RunStats]) -> Row {
        let sender: Vec<f64> = runs.iter().map(|r| r.sender_ms).collect();
        let recipients: Vec<f64> = runs.iter().flat_map(|r| r.recipients_ms.iter().copied()).collect();
        let newcomer: Vec<f64> = runs.iter().filter_map(|r| r.newcomer_ms).collect();
        let first = runs.first();
        Row {
            op,
            n,
            iterations: u32::try_from(runs.len()).unwrap_or(u32::MAX),
            traffic: first.map_or(0, |r| r.traffic),
            by_kind: first.map(|r| r.by_kind.clone()).unwrap_or_default(),
            messages: first.map_or(0, |r| r.messages),
            welcome_bytes: first.map_or(0, |r| r.welcome_bytes),
            sender_median: median(&sender),
            sender_sd: sd(&sender),
            recipient_median: median(&recipients),
            recipient_sd: sd(&recipients),
            newcomer_median: (!newcomer.is_empty()).then(|| median(&newcomer)),
        }
    }

    fn csv(&self) -> String {
        format!(
            "{},{},{},{},{:.3},{:.3},{:.3},{:.3},{}",
            self.op,
            self.n,
            self.iterations,
            self.traffic,
            self.sender_median,
            self.sender_sd,
            self.recipient_median,
            self.recipient_sd,
            self.newcomer_median.map(|x| format!("{x:.3}")).unwrap_or_default()
        )
    }
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

/// Snapshot sizes in bytes after the setup: (member 0, member 1).
type StateSizes = Option<(usize, usize)>;

/// Measures every selected operation at size `n`; also returns the snapshot sizes of
/// members 0 and 1 after the first iteration's setup.
fn bench_size(
    n: usize,
    ops: &[Op],
    iterations: u32,
    config: GroupConfig,
    seeds: &mut ChaCha20Rng,
    p: &mut Progress,
) -> Result<(Vec<Row>, StateSizes), String> {
    let mut runs: Vec<(Op, Vec<RunStats>)> = ops.iter().map(|op| (*op, Vec::new())).collect();
    let round = config.coalesce_acks;
    let mut state_sizes = None;
    for it in 0..iterations {
        let mut world = World::new(n, seeds.next_u64(), config)?;
        world.create(n)?;
        world.check(Op::Create, n, None)?;
        if it == 0 {
            let size = |d: usize| world.devices.get(d).and_then(|d| d.group.as_ref()).map(Group::state_size);
            state_sizes = size(0).zip(size(1));
        }
        let created = world.stats(Op::Create, n);
        p.done += weight(n).saturating_sub(1);
        p.step(&format!("n={n} iteration {}/{iterations} create", it + 1));
        world.reset_costs();
        for (op, stats) in &mut runs {
            if *op == Op::Create {
                stats.push(created.clone());
                continue;
            }
            let mut w = world.clone();
            w.operate(*op, n)?;
            // Nothing a create's first acks or a message causes is held: measured directly.
            if round && *op != Op::Message {
                let mut base = world.clone();
                base.round(*op, n)?;
                base.check(Op::Create, n, Some(*op)).map_err(|e| format!("{op} baseline: {e}"))?;
                w.round(*op, n)?;
                w.check(*op, n, Some(*op))?;
                stats.push(w.stats(*op, n).minus(&base.stats(*op, n)));
            } else {
                w.check(*op, n, None)?;
                stats.push(w.stats(*op, n));
            }
            p.done += weight(n).saturating_sub(1);
            p.step(&format!("n={n} iteration {}/{iterations} {op}", it + 1));
        }
    }
    let mut rows = Vec::new();
    for (op, stats) in &runs {
        if let Some(t) = stats.iter().map(|s| s.traffic).find(|t| Some(*t) != stats.first().map(|s| s.traffic)) {
            eprintln!("warning: {op} at n = {n}: traffic differs between iterations ({t} B)");
        }
        rows.push(Row::from_runs(*op, n, stats));
    }
    Ok((rows, state_sizes))
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

fn write_csv(path: &Path, rows: &[Row]) -> Result<(), String> {
    let mut text = format!("{CSV_HEADER}\n");
    for r in rows {
        text.push_str(&r.csv());
        text.push('\n');
    }
    if path == Path::new("-") {
        print!("{text}");
        return Ok(());
    }
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
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
    let mut sizes: Vec<usize> = args.sizes.iter().map(|s| usize::from(*s)).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let mut ops = args.ops.clone();
    ops.sort_unstable();
    ops.dedup();
    let runs_per_iteration = ops.iter().filter(|o| **o != Op::Create).count() as u64 + 1;
    let total = sizes.iter().map(|n| weight(*n) * runs_per_iteration * u64::from(args.iterations)).sum();
    let show = std::io::stderr().is_terminal() || std::env::var_os("DCGKA_PROGRESS").is_some();
    let mut progress = Progress { show, done: 0, total };
    let mut seeds = ChaCha20Rng::seed_from_u64(args.seed);
    let config = GroupConfig { coalesce_acks: args.coalesce_acks, ..GroupConfig::default() };
    let started = std::time::Instant::now();
    let mut by_size = Vec::new();
    let mut state_sizes = None;
    for n in &sizes {
        let (rows, states) = bench_size(*n, &ops, args.iterations, config, &mut seeds, &mut progress)?;
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
    let t = targets(&rows);
    if !t.is_empty() {
        println!("targets at n = 128 (issue 4):");
        for (what, limit, got) in &t {
            let verdict = if got <= limit { "met" } else { "MISSED" };
            println!("  [{verdict}] {what}: {got:.3}");
        }
    }
    if let Some(path) = &args.csv {
        write_csv(path, &rows)?;
    }
    if let Some(path) = &args.plot {
        plot::draw(path, &rows, args.coalesce_acks).map_err(|e| format!("plotting to {}: {e}", path.display()))?;
    }
    Ok(())
}

// ------------------------------------------------------------------------------------
// The figures
// ------------------------------------------------------------------------------------

mod plot {
    //! Figures 6 and 7 as one SVG: traffic against n, and CPU time against n.

    use std::path::Path;

    use plotters::prelude::*;

    use super::{Op, Row};

    fn color(op: Op) -> RGBColor {
        match op {
            Op::Create => RGBColor(31, 119, 180),
            Op::Add => RGBColor(214, 39, 40),
            Op::Remove => RGBColor(44, 160, 44),
            Op::Update => RGBColor(148, 103, 189),
            Op::Message => RGBColor(255, 127, 14),
        }
    }

    /// The value range of `ys`, widened for a log axis.
    fn log_range(ys: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
        let (lo, hi) = ys.fold((f64::MAX, f64::MIN), |(lo, hi), y| (lo.min(y), hi.max(y)));
        if lo > hi {
            return 0.001..1.0;
        }
        (lo.max(1e-3) / 1.5)..(hi.max(1e-3) * 1.5)
    }

    /// Draws both figures into `path` (`coalesced`: the marginal costs with coalesced acks).
    pub(super) fn draw(path: &Path, rows: &[Row], coalesced: bool) -> Result<(), Box<dyn std::error::Error>> {
        let mode = if coalesced { ", coalesced acks, marginal" } else { "" };
        let mut ops: Vec<Op> = rows.iter().map(|r| r.op).collect();
        ops.dedup();
        let n_lo = rows.iter().map(|r| r.n).min().unwrap_or(1) as f64;
        let n_hi = rows.iter().map(|r| r.n).max().unwrap_or(2) as f64;
        let xs = (n_lo / 1.1)..(n_hi * 1.1);
        let series = |op: Op, f: &dyn Fn(&Row) -> Option<f64>| -> Vec<(f64, f64)> {
            rows.iter().filter(|r| r.op == op).filter_map(|r| f(r).map(|y| (r.n as f64, y.max(1e-3)))).collect()
        };

        let root = SVGBackend::new(path, (960, 1280)).into_drawing_area();
        root.fill(&WHITE)?;
        let (top, bottom) = root.split_vertically(620);

        let kib = |r: &Row| Some(r.traffic as f64 / 1024.0);
        let mut chart = ChartBuilder::on(&top)
            .caption(format!("Network traffic per operation (each message once{mode})"), ("sans-serif", 22))
            .margin(20)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(xs.clone().log_scale(), log_range(rows.iter().filter_map(kib)).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("group size n")
            .y_desc("traffic (KiB)")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .draw()?;
        for op in &ops {
            let c = color(*op);
            chart
                .draw_series(LineSeries::new(series(*op, &kib), c.stroke_width(2)))?
                .label(op.name())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        }
        chart.configure_series_labels().position(SeriesLabelPosition::UpperLeft).border_style(BLACK).draw()?;

        let cpu =
            rows.iter().flat_map(|r| [Some(r.sender_median), Some(r.recipient_median), r.newcomer_median]).flatten();
        let mut chart = ChartBuilder::on(&bottom)
            .caption(
                format!("CPU time per member (median{mode}; solid: sender, dashed: recipient, dotted: newcomer)"),
                ("sans-serif", 18),
            )
            .margin(20)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(xs.log_scale(), log_range(cpu).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("group size n")
            .y_desc("CPU time (ms)")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .draw()?;
        for op in &ops {
            let c = color(*op);
            chart
                .draw_series(LineSeries::new(series(*op, &|r| Some(r.sender_median)), c.stroke_width(2)))?
                .label(format!("{} (sender)", op.name()))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
            chart
                .draw_series(DashedLineSeries::new(
                    series(*op, &|r| Some(r.recipient_median)),
                    6,
                    4,
                    c.stroke_width(2),
                ))?
                .label(format!("{} (recipient)", op.name()))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 8, y)], c.stroke_width(2)));
            if *op == Op::Add {
                chart
                    .draw_series(DashedLineSeries::new(series(*op, &|r| r.newcomer_median), 2, 3, c.stroke_width(2)))?
                    .label("add (newcomer)")
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 3, y)], c.stroke_width(2)));
            }
        }
        chart.configure_series_labels().position(SeriesLabelPosition::UpperLeft).border_style(BLACK).draw()?;
        root.present()?;
        Ok(())
    }
}
