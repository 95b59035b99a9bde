//! `dcgka bench-net`: the network engine's figures. N real nodes ([`dcgka_net::spawn`]) in
//! one process, each with its own SQLite store in a temporary directory, talking over TCP
//! on 127.0.0.1, form one group; then the command measures
//!
//! - `update`: PCS updates, one at a time, by each member in turn: from the call until
//!   every other member has processed it (reported `NodeEvent::Group` with
//!   `Event::Updated` by the updater). The next one starts once the acknowledgments the
//!   update caused have gone out and the network is quiet again.
//! - `message`: application messages by each member in turn, from the call until every
//!   other member has read it (`NodeEvent::Message`). First a stream with at most
//!   `--window` messages in flight (sent and not yet read by everyone; 1 by default, so
//!   that the latencies are not queueing behind the stream), for the latencies; then as
//!   many sent all at once, for the throughput.
//!
//! Output: one CSV row per (nodes, op), on stdout and with `--csv FILE` in FILE, with the
//! header [`HEADER`] (scripts depend on it: keep it exactly):
//!
//! - `p50_ms`, `p99_ms`: nearest-rank percentiles of those latencies;
//! - `msgs_per_s`: for `message`, the throughput of the messages sent all at once (their
//!   count divided by the time from the first call until everyone read the last one); for
//!   `update`, updates issued one at a time per second of latency (count divided by the
//!   sum of latencies);
//! - `wire_bytes_per_msg`: every byte the nodes wrote to their TCP connections during the
//!   phase (from the first call until the network was quiet after the last operation),
//!   divided by the number of operations (both message streams for `message`): Noise, yamux, gossipsub's copies and control
//!   messages, sync, identify, ping, and for updates the acknowledgments they cause
//!   ([`dcgka_net::traffic`]; TCP/IP headers are not counted).
//!
//! Topology: node i dials nodes i - 1, i - 2, i - 4, … (every earlier node at a power-of-two
//! distance), so that every node has about 2 log2 N connections and gossip crosses the
//! group in a few hops; node 0 creates the group and adds the others one by one. Nodes run
//! with [`NodeConfig`]'s defaults (sync every 5 s, acks after 150 ms of quiet, gossipsub
//! heartbeat 500 ms) on a multi-threaded tokio runtime with one worker per core. Every
//! store commit is synced to disk (`dcgka-store`), and the N stores share one disk: `--dir`
//! puts them elsewhere (a tmpfs takes the disk out of the figures). Progress goes to
//! stderr.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use dcgka::events::Event;
use dcgka::ids::{GroupId, MemberId};
use dcgka_net::traffic::tcp_bytes;
use dcgka_net::{DataDir, Multiaddr, NodeConfig, NodeEvent, NodeHandle};
use tokio::sync::mpsc;

/// The CSV header (a contract with scripts: keep it exactly).
pub(crate) const HEADER: &str = "nodes,op,p50_ms,p99_ms,msgs_per_s,wire_bytes_per_msg";

/// The bound on waiting for any one step (a node's start, a member's join, an update's
/// delivery, progress of the message stream).
const STEP_TIMEOUT: Duration = Duration::from_secs(120);

/// How long the network must write less than [`QUIET_BYTES_PER_NODE`] per node to count
/// as quiet.
const QUIET_WINDOW: Duration = Duration::from_millis(300);

/// Bytes per node per [`QUIET_WINDOW`] below which the network counts as quiet.
const QUIET_BYTES_PER_NODE: u64 = 2048;

/// The longest wait for quiet (periodic sync keeps a large group busy for a while).
const MAX_SETTLE: Duration = Duration::from_secs(20);

/// Options of `dcgka bench-net`.
#[derive(Debug, Args)]
pub(crate) struct BenchNetArgs {
    /// Group sizes (nodes), comma-separated.
    #[arg(long, value_name = "N,…", value_delimiter = ',', default_value = "8,32",
          value_parser = clap::value_parser!(u16).range(2..=256))]
    nodes: Vec<u16>,
    /// Also write the CSV to FILE.
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Application messages per size [default: 200 up to 8 nodes, 1600 / N above, at
    /// least 20].
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..))]
    messages: Option<u32>,
    /// Updates per size [default: 20 up to 8 nodes, 160 / N above, at least 5].
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..))]
    updates: Option<u32>,
    /// Messages in flight at most (sent and not yet read by every member) while their
    /// latency is measured; 0: no limit. The throughput is measured apart, with every
    /// message sent at once.
    #[arg(long, value_name = "W", default_value_t = 1)]
    window: u32,
    /// Where the nodes' stores go (a temporary directory is made inside) [default: the
    /// system's temporary directory]. The N stores share its disk, and every commit is
    /// synced: on one disk the nodes wait for each other's syncs, which a device on its
    /// own disk does not (a tmpfs such as /dev/shm takes the disk out of the figures).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// One CSV row.
#[derive(Debug)]
struct Row {
    nodes: usize,
    op: &'static str,
    p50_ms: f64,
    p99_ms: f64,
    msgs_per_s: f64,
    wire_bytes_per_msg: f64,
}

impl Row {
    fn csv(&self) -> String {
        format!(
            "{},{},{:.2},{:.2},{:.1},{:.0}",
            self.nodes, self.op, self.p50_ms, self.p99_ms, self.msgs_per_s, self.wire_bytes_per_msg
        )
    }
}

/// `dcgka bench-net`.
pub(crate) fn run(args: &BenchNetArgs) -> bool {
    super::init_logging(0);
    let workers = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dcgka bench-net: cannot start the runtime: {e}");
            return false;
        }
    };
    match rt.block_on(bench(args)) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("dcgka bench-net: {e}");
            false
        }
    }
}

async fn bench(args: &BenchNetArgs) -> Result<(), String> {
    let mut rows = Vec::new();
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{HEADER}").and_then(|()| stdout.flush()).map_err(|e| format!("stdout: {e}"))?;
    for &n in &args.nodes {
        let n = usize::from(n);
        let updates = args.updates.map_or_else(|| default_count(n, 20, 5), |k| k as usize);
        let messages = args.messages.map_or_else(|| default_count(n, 200, 20), |k| k as usize);
        let mut group = Cluster::start(n, args.dir.as_deref()).await?;
        let result = measure(&mut group, updates, messages, args.window as usize).await;
        group.stop().await;
        for row in result? {
            writeln!(stdout, "{}", row.csv()).and_then(|()| stdout.flush()).map_err(|e| format!("stdout: {e}"))?;
            rows.push(row);
        }
    }
    if let Some(path) = &args.csv {
        write_csv(path, &rows)?;
    }
    Ok(())
}

/// `base` operations up to 8 nodes, `base * 8 / n` above, at least `min`.
fn default_count(n: usize, base: usize, min: usize) -> usize {
    if n <= 8 { base } else { (base * 8 / n).max(min) }
}

fn write_csv(path: &Path, rows: &[Row]) -> Result<(), String> {
    let mut text = format!("{HEADER}\n");
    for r in rows {
        text.push_str(&r.csv());
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

async fn measure(c: &mut Cluster, updates: usize, messages: usize, window: usize) -> Result<Vec<Row>, String> {
    let n = c.handles.len();
    let t = Instant::now();
    let gid = c.form_group().await?;
    eprintln!("bench-net: {n} nodes: group formed in {:.1} s; settling", t.elapsed().as_secs_f64());
    c.settle().await;
    let update = c.updates(gid, updates).await?;
    let message = c.messages(gid, messages, window).await?;
    Ok(vec![update, message])
}

/// A node's event and when the bench heard of it.
struct Stamped {
    node: usize,
    at: Instant,
    event: NodeEvent,
}

/// N nodes and the one channel their events come through.
struct Cluster {
    handles: Vec<NodeHandle>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    events: mpsc::UnboundedReceiver<Stamped>,
    /// The nodes' data directories (removed when the cluster is dropped).
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` nodes on 127.0.0.1, node i dialling nodes i - 1, i - 2, i - 4, …
    async fn start(n: usize, under: Option<&Path>) -> Result<Cluster, String> {
        let mut builder = tempfile::Builder::new();
        builder.prefix("dcgka-bench-net-");
        let dir = match under {
            Some(d) => builder.tempdir_in(d),
            None => builder.tempdir(),
        }
        .map_err(|e| format!("temporary directory: {e}"))?;
        let (tx, events) = mpsc::unbounded_channel();
        let mut c = Cluster { handles: Vec::new(), tasks: Vec::new(), events, dir };
        let mut addrs: Vec<Multiaddr> = Vec::new();
        eprintln!("bench-net: starting {n} nodes");
        for i in 0..n {
            let data = DataDir::new(c.dir.path().join(format!("node{i}"))).map_err(|e| e.to_string())?;
            let device = data.device().map_err(|e| e.to_string())?;
            let key = data.network_key().map_err(|e| e.to_string())?;
            let peers = (0..usize::BITS).map_while(|k| i.checked_sub(1 << k)).map(|j| addrs[j].clone()).collect();
            let config = NodeConfig {
                listen: vec!["/ip4/127.0.0.1/tcp/0".parse().map_err(|e| format!("{e}"))?],
                peers,
                ..NodeConfig::default()
            };
            let (handle, mut rx, task) = dcgka_net::spawn(device, key, config).map_err(|e| e.to_string())?;
            let tx = tx.clone();
            // Each node's events, stamped as soon as they arrive.
            tokio::spawn(async move {
                while let Some(event) = rx.recv().await {
                    if tx.send(Stamped { node: i, at: Instant::now(), event }).is_err() {
                        break;
                    }
                }
            });
            let peer = handle.peer_id();
            c.handles.push(handle);
            c.tasks.push(task);
            let listening = c
                .wait(&format!("node {i} listening"), |s| match &s.event {
                    NodeEvent::Listening(a) if s.node == i => Some(a.clone()),
                    _ => None,
                })
                .await?;
            addrs.push(format!("{listening}/p2p/{peer}").parse().map_err(|e| format!("{listening}: {e}"))?);
        }
        Ok(c)
    }

    /// Waits (bounded) for the first event for which `f` gives a value; others are dropped.
    async fn wait<T>(&mut self, what: &str, mut f: impl FnMut(&Stamped) -> Option<T>) -> Result<T, String> {
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        loop {
            let s = self.next(deadline, what).await?;
            if let Some(v) = f(&s) {
                return Ok(v);
            }
        }
    }

    async fn next(&mut self, deadline: tokio::time::Instant, what: &str) -> Result<Stamped, String> {
        match tokio::time::timeout_at(deadline, self.events.recv()).await {
            Ok(Some(s)) => Ok(s),
            Ok(None) => Err(format!("the nodes stopped while waiting for {what}")),
            Err(_) => Err(format!("timed out after {STEP_TIMEOUT:?} waiting for {what}")),
        }
    }

    /// Node 0 creates a group and adds the others one by one; returns once every node
    /// lists all N members.
    async fn form_group(&mut self) -> Result<GroupId, String> {
        let n = self.handles.len();
        let gid = self.handles[0].create().await.map_err(|e| format!("create: {e}"))?;
        let mut sizes: BTreeMap<usize, usize> = BTreeMap::new();
        let note = |sizes: &mut BTreeMap<usize, usize>, s: &Stamped| {
            if let NodeEvent::Members { gid: g, members } = &s.event
                && *g == gid
            {
                sizes.insert(s.node, members.len());
            }
        };
        for i in 1..n {
            let inv = self.handles[i].invitation().await.map_err(|e| format!("invitation of node {i}: {e}"))?;
            self.handles[0].add(gid, inv).await.map_err(|e| format!("adding node {i}: {e}"))?;
            self.wait(&format!("node {i} joining"), |s| {
                note(&mut sizes, s);
                matches!(s.event, NodeEvent::Joined(g) if g == gid && s.node == i).then_some(())
            })
            .await?;
            if i % 8 == 0 {
                eprintln!("bench-net: {n} nodes: {} members", i + 1);
            }
        }
        let all = |sizes: &BTreeMap<usize, usize>| (0..n).all(|i| sizes.get(&i) == Some(&n));
        if !all(&sizes) {
            self.wait(&format!("all {n} nodes listing {n} members"), |s| {
                note(&mut sizes, s);
                all(&sizes).then_some(())
            })
            .await?;
        }
        Ok(gid)
    }

    /// Waits until the nodes write less than [`QUIET_BYTES_PER_NODE`] each over a
    /// [`QUIET_WINDOW`] (at most [`MAX_SETTLE`]), dropping the events meanwhile.
    async fn settle(&mut self) {
        let quiet = QUIET_BYTES_PER_NODE * self.handles.len() as u64;
        let until = Instant::now() + MAX_SETTLE;
        loop {
            let before = tcp_bytes().written;
            tokio::time::sleep(QUIET_WINDOW).await;
            while self.events.try_recv().is_ok() {}
            if tcp_bytes().written.saturating_sub(before) < quiet || Instant::now() >= until {
                return;
            }
        }
    }

    /// The member ID of each node in `gid`.
    async fn member_ids(&self, gid: GroupId) -> Result<Vec<MemberId>, String> {
        let mut ids = Vec::new();
        for (i, h) in self.handles.iter().enumerate() {
            let members = h.members(gid).await.map_err(|e| format!("members at node {i}: {e}"))?;
            let me = members.iter().find(|m| m.me).ok_or_else(|| format!("node {i} is not in the group"))?;
            ids.push(me.id);
        }
        Ok(ids)
    }

    /// `k` updates, one at a time, by node 0, 1, 2, … in turn.
    async fn updates(&mut self, gid: GroupId, k: usize) -> Result<Row, String> {
        let n = self.handles.len();
        let ids = self.member_ids(gid).await?;
        let mut latencies = Vec::with_capacity(k);
        let bytes = tcp_bytes().written;
        for u in 0..k {
            let s = u % n;
            let t0 = Instant::now();
            self.handles[s].update(gid).await.map_err(|e| format!("update at node {s}: {e}"))?;
            let mut done = BTreeSet::new();
            let mut last = t0;
            self.wait(&format!("update {u} by node {s} at every member"), |e| {
                if let NodeEvent::Group { gid: g, event: Event::Updated { by }, .. } = &e.event
                    && *g == gid
                    && *by == ids[s]
                    && e.node != s
                    && done.insert(e.node)
                {
                    last = last.max(e.at);
                }
                (done.len() == n - 1).then_some(())
            })
            .await?;
            latencies.push(last - t0);
            // The acks the update causes go out after a quiet period: let them.
            self.settle().await;
            progress(n, "update", u + 1, k);
        }
        let wire = tcp_bytes().written.saturating_sub(bytes);
        let total: Duration = latencies.iter().sum();
        Ok(row(n, "update", &mut latencies, k as f64 / total.as_secs_f64().max(1e-9), wire, k))
    }

    /// The `message` row: `k` messages at most `window` in flight for the latencies, then
    /// `k` more all at once for the throughput; the wire bytes of both over `2k`.
    async fn messages(&mut self, gid: GroupId, k: usize, window: usize) -> Result<Row, String> {
        let n = self.handles.len();
        let bytes = tcp_bytes().written;
        let (mut latencies, _) = self.stream(gid, "latency", k, window).await?;
        let (_, elapsed) = self.stream(gid, "throughput", k, 0).await?;
        self.settle().await;
        let wire = tcp_bytes().written.saturating_sub(bytes);
        Ok(row(n, "message", &mut latencies, k as f64 / elapsed.as_secs_f64().max(1e-9), wire, 2 * k))
    }

    /// `k` messages by node 0, 1, 2, … in turn, at most `window` in flight (0: all at
    /// once). Returns each one's latency (from its call until every other member read
    /// it) and the time from the first call until everyone read the last one.
    async fn stream(
        &mut self,
        gid: GroupId,
        tag: &str,
        k: usize,
        window: usize,
    ) -> Result<(Vec<Duration>, Duration), String> {
        let n = self.handles.len();
        let prefix = format!("bench-net {tag} #");
        let mut sent_at: Vec<Option<Instant>> = vec![None; k];
        let mut read_by: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); k];
        let mut last: Vec<Option<Instant>> = vec![None; k];
        let mut latencies = Vec::with_capacity(k);
        let (mut next, mut complete) = (0, 0);
        let start = Instant::now();
        let mut finished = start;
        let mut deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        while complete < k {
            if next < k && (window == 0 || next - complete < window) {
                let s = next % n;
                sent_at[next] = Some(Instant::now());
                let text = format!("{prefix}{next}");
                self.handles[s].send(gid, text.as_bytes()).await.map_err(|e| format!("send at node {s}: {e}"))?;
                next += 1;
                continue;
            }
            let what = format!("{tag} messages ({complete} of {k} read by everyone)");
            let e = self.next(deadline, &what).await?;
            let NodeEvent::Message { gid: g, text, .. } = &e.event else { continue };
            let Some(i) = std::str::from_utf8(text)
                .ok()
                .and_then(|t| t.strip_prefix(prefix.as_str()))
                .and_then(|t| t.parse::<usize>().ok())
                .filter(|i| *i < k && *g == gid && e.node != i % n)
            else {
                continue;
            };
            if read_by[i].insert(e.node) {
                last[i] = Some(last[i].map_or(e.at, |l| l.max(e.at)));
                if read_by[i].len() == n - 1
                    && let (Some(t0), Some(t1)) = (sent_at[i], last[i])
                {
                    latencies.push(t1 - t0);
                    finished = finished.max(t1);
                    complete += 1;
                    deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
                    if complete % 50 == 0 || complete == k {
                        eprintln!("bench-net: {n} nodes: message ({tag}) {complete}/{k}");
                    }
                }
            }
        }
        Ok((latencies, finished - start))
    }

    async fn stop(self) {
        for h in &self.handles {
            let _ = h.shutdown().await;
        }
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

fn progress(n: usize, op: &str, done: usize, of: usize) {
    eprintln!("bench-net: {n} nodes: {op} {done}/{of}");
}

fn row(n: usize, op: &'static str, latencies: &mut [Duration], rate: f64, wire: u64, k: usize) -> Row {
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Row {
        nodes: n,
        op,
        p50_ms: ms(percentile(latencies, 50)),
        p99_ms: ms(percentile(latencies, 99)),
        msgs_per_s: rate,
        wire_bytes_per_msg: wire as f64 / k as f64,
    }
}

/// The nearest-rank `p`-th percentile of sorted `xs` (zero when empty).
fn percentile(xs: &[Duration], p: usize) -> Duration {
    if xs.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * xs.len()).div_ceil(100).max(1);
    xs[rank.min(xs.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let xs: Vec<Duration> = (1..=200).map(Duration::from_millis).collect();
        assert_eq!(percentile(&xs, 50), Duration::from_millis(100));
        assert_eq!(percentile(&xs, 99), Duration::from_millis(198));
        assert_eq!(percentile(&xs[..1], 99), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50), Duration::ZERO);
        assert_eq!(default_count(8, 200, 20), 200);
        assert_eq!(default_count(32, 200, 20), 50);
        assert_eq!(default_count(256, 20, 5), 5);
        let r =
            Row { nodes: 8, op: "message", p50_ms: 1.234, p99_ms: 5.0, msgs_per_s: 99.95, wire_bytes_per_msg: 1234.4 };
        assert_eq!(r.csv(), "8,message,1.23,5.00,100.0,1234");
    }
}
