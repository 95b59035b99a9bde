//! The networked subcommands: `dcgka node`, `dcgka node --mailbox`, `dcgka chat` and
//! `dcgka invite`.
//!
//! `node` and `chat` run one device as a libp2p node ([`dcgka_net::spawn`]) on a
//! current-thread tokio runtime, with its state in a data directory
//! ([`dcgka_net::DataDir`]). Both read line commands on stdin ([`commands`]) and print
//! one line per event on stdout ([`output`]). They differ in what ends them: `chat` stops
//! at `/quit` or at the end of its input; `node` runs headless until `/quit`, SIGINT or
//! SIGTERM, and the end of its input does not stop it. `node --mailbox` runs a mailbox
//! instead of a device ([`mailbox`]), with the same flags, output and ways to stop.
//!
//! Delivery is at least once: messages are numbered in the device's inbox, and a number
//! is confirmed to the node only after its line has been printed and flushed. A message
//! printed just before a crash is printed again, with the same `id`, when the node starts
//! again: consumers deduplicate by `id`.

pub(crate) mod bench;
mod commands;
mod mailbox;
mod output;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use clap::Args;
use dcgka::ids::GroupId;
use dcgka_net::{DataDir, Member, Multiaddr, NodeConfig, NodeEvent, NodeHandle};
use tokio::sync::mpsc;

use commands::{Cmd, Done};
use output::{Out, Printer, Role};

/// Where a node listens when no `--listen` is given: loopback only, on a free port.
const DEFAULT_LISTEN: &str = "/ip4/127.0.0.1/tcp/0";

/// The commands and events, after `dcgka node --help` and `dcgka chat --help`.
const SESSION_HELP: &str = "\
Commands (one per line on stdin; GROUP is any unique prefix of a group ID in hex, and
where it is optional the current group is meant: the last one created, joined or used):
  /create                  create a group; prints `joined` with its ID
  /invite                  print this device's invitation and short name
  /add GROUP INVITATION    add the device of an invitation (a line from /invite or
                           `dcgka invite`); it joins by itself
  /remove GROUP MEMBER     remove a member, named by its short name (8 hex digits)
  /update [GROUP]          refresh this device's keys in a group
  /members [GROUP]         list a group's members
  /send GROUP TEXT         send the rest of the line
  TEXT                     a line without a leading / goes to the current group
                           (//TEXT sends /TEXT)
  /groups, /help, /quit
A failed command prints an error and the process goes on.

Output: one line per event, flushed at once. With --json, one JSON object per line:
  {\"event\":\"ready\",\"name\":N,\"peer\":P}        first line
  {\"event\":\"listening\",\"address\":A}
  {\"event\":\"connected\"|\"disconnected\",\"peer\":P}
  {\"event\":\"joined\",\"group\":G}
  {\"event\":\"members\",\"group\":G,\"members\":[N…],\"me\":N}
  {\"event\":\"message\",\"id\":I,\"group\":G,\"from\":N,\"text\":T}
  {\"event\":\"undecryptable\",\"id\":I,\"group\":G,\"from\":N}
  {\"event\":\"group\",\"id\":I,\"group\":G,\"kind\":K}      other protocol events
  {\"event\":\"removed\",\"group\":G}                  this device was removed
  {\"event\":\"synced\",\"peer\":P,\"items\":n}
  {\"event\":\"misbehaved\",\"peer\":P,\"what\":W,\"strikes\":n}, {\"event\":\"banned\",\"peer\":P}
  {\"event\":\"invite\",\"code\":C,\"name\":N}
  {\"event\":\"groups\",\"groups\":[G…],\"current\":G|null}
  {\"event\":\"ok\",\"command\":\"add\"|\"remove\"|\"update\"|\"send\",\"group\":G[,\"name\":N]}
  {\"event\":\"help\",\"commands\":[…]}
  {\"event\":\"error\",\"message\":M}
G is a full group ID in hex, N a member's short name, P a peer ID.

Delivery is at least once: a message or event with an id is confirmed to the store only
after its line is printed; after a crash, unconfirmed ones are printed again with the
same id. Consumers deduplicate by id.

Logs go to stderr (warnings only; -v, -vv for more).

With --mailbox, `dcgka node` runs a mailbox instead of a device: it holds no group key,
keeps the envelopes of the groups devices ask it to serve, Welcomes for devices that are
away and their one-time prekeys, all in DIR/mailbox.sqlite. Devices that have it as a
--peer use it by themselves and name it in their invitations. It prints `ready` (with
\"name\":null and \"role\":\"mailbox\"), `listening` (its `dial` address is what devices give
to --peer), `connected`, `disconnected`, `stored` ({\"event\":\"stored\",\"group\":G,
\"envelopes\":n}), `misbehaved`, `banned` and `error`; it takes /help and /quit.";

/// Options shared by `dcgka node` and `dcgka chat`.
#[derive(Debug, Args)]
pub(crate) struct NodeOpts {
    /// The device's data directory, made on first use: its store (`device.sqlite`), its
    /// keys and its last listening addresses.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// An address to listen on, repeatable [default: /ip4/127.0.0.1/tcp/0, loopback on a
    /// free port; give /ip4/0.0.0.0/tcp/PORT to be reachable from other machines].
    #[arg(long, value_name = "MULTIADDR")]
    listen: Vec<Multiaddr>,
    /// A peer to dial, and to redial while it is away, repeatable; with or without
    /// `/p2p/<peer id>` (e.g. /ip4/127.0.0.1/tcp/4001).
    #[arg(long, value_name = "MULTIADDR")]
    peer: Vec<Multiaddr>,
    /// Print one JSON object per line (`--help` lists the events).
    #[arg(long)]
    json: bool,
    /// How often the node syncs with its peers and redials the away ones [default: 5000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    sync_interval_ms: Option<u64>,
    /// How long a group must be quiet before the acknowledgments it holds are sent
    /// [default: 150].
    #[arg(long, value_name = "N")]
    ack_delay_ms: Option<u64>,
    /// Log more on stderr (-v: info, -vv: debug); quiet by default (warnings only).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

/// Options of `dcgka node`.
#[derive(Debug, Args)]
#[command(after_long_help = SESSION_HELP)]
pub(crate) struct NodeArgs {
    #[command(flatten)]
    opts: NodeOpts,
    /// Run a mailbox for other devices instead of a device: it holds no group key; it
    /// keeps the envelopes of the groups devices ask it to serve, Welcomes for devices
    /// that are away and their prekeys, in DIR/mailbox.sqlite.
    #[arg(long)]
    mailbox: bool,
}

/// Options of `dcgka chat`.
#[derive(Debug, Args)]
#[command(after_long_help = SESSION_HELP)]
pub(crate) struct ChatArgs {
    #[command(flatten)]
    opts: NodeOpts,
}

/// Options of `dcgka invite`.
#[derive(Debug, Args)]
pub(crate) struct InviteArgs {
    /// The device's data directory (its node may be running).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// Print `{"event":"invite","code":…,"name":…}`.
    #[arg(long)]
    json: bool,
}

/// `dcgka node`.
pub(crate) fn run_node(args: &NodeArgs) -> bool {
    init_logging(args.opts.verbose);
    if args.mailbox {
        return mailbox::run(&args.opts);
    }
    run_session(&args.opts, false)
}

/// `dcgka chat`.
pub(crate) fn run_chat(args: &ChatArgs) -> bool {
    init_logging(args.opts.verbose);
    run_session(&args.opts, true)
}

/// `dcgka invite`: the invitation from the directory's public files (so it works while
/// the node runs). A directory no node has used yet gets its device first.
pub(crate) fn run_invite(args: &InviteArgs) -> bool {
    let inv = DataDir::new(&args.data_dir).and_then(|dir| {
        if !dir.path().join(dcgka_net::datadir::IDENTITY_FILE).exists() {
            drop(dir.device()?);
        }
        dir.invitation()
    });
    match inv {
        Ok(inv) => {
            let line =
                if args.json { Out::Invite { code: inv.encode(), name: inv.name() }.json_line() } else { inv.encode() };
            let mut stdout = std::io::stdout().lock();
            match writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
                Ok(()) => true,
                Err(e) => fail(false, &format!("stdout: {e}")),
            }
        }
        Err(e) => fail(args.json, &e.to_string()),
    }
}

/// Reports an error that ends the command (on stdout with `--json`, always on stderr).
fn fail(json: bool, message: &str) -> bool {
    if json {
        let _ = Printer::new(true, String::new()).print(&Out::Error(message.to_string()));
    }
    eprintln!("dcgka: {message}");
    false
}

/// Logs on stderr: warnings by default, more with `-v`.
fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => tracing::Level::WARN,
        1 => tracing::Level::INFO,
        _ => tracing::Level::DEBUG,
    };
    let _ = tracing_subscriber::fmt().with_writer(std::io::stderr).with_max_level(level).try_init();
}

fn run_session(opts: &NodeOpts, eof_quits: bool) -> bool {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(opts.json, &format!("cannot start the runtime: {e}")),
    };
    match rt.block_on(session(opts, eof_quits)) {
        Ok(()) => true,
        Err(message) => fail(opts.json, &message),
    }
}

/// The node configuration `opts` asks for.
fn node_config(opts: &NodeOpts) -> Result<NodeConfig, String> {
    let defaults = NodeConfig::default();
    let listen = if opts.listen.is_empty() {
        vec![DEFAULT_LISTEN.parse().map_err(|e| format!("{DEFAULT_LISTEN}: {e}"))?]
    } else {
        opts.listen.clone()
    };
    Ok(NodeConfig {
        listen,
        peers: opts.peer.clone(),
        sync_interval: opts.sync_interval_ms.map_or(defaults.sync_interval, Duration::from_millis),
        ack_delay: opts.ack_delay_ms.map_or(defaults.ack_delay, Duration::from_millis),
        auto_consume: false,
        ..defaults
    })
}

/// The device of `opts`'s directory on a running node, until the session ends.
async fn session(opts: &NodeOpts, eof_quits: bool) -> Result<(), String> {
    let dir = DataDir::new(&opts.data_dir).map_err(|e| e.to_string())?;
    let device = dir.device().map_err(|e| e.to_string())?;
    let key = dir.network_key().map_err(|e| e.to_string())?;
    let config = node_config(opts)?;
    // Signals are caught from before `ready` on, so that one sent right after it stops the
    // node cleanly.
    let signals = Signals::new().map_err(|e| format!("cannot watch signals: {e}"))?;
    let (node, events, task) = dcgka_net::spawn(device, key, config).map_err(|e| e.to_string())?;
    let printer = Printer::new(opts.json, node.name());
    let mut s = Session {
        node,
        events,
        printer,
        dir,
        listening: Vec::new(),
        current: None,
        joined: BTreeSet::new(),
        members: BTreeMap::new(),
    };
    // The device's groups so far; with only one, plain lines go to it.
    if let Ok(groups) = s.node.groups().await {
        if let [g] = groups.as_slice() {
            s.current = Some(*g);
        }
        s.joined.extend(groups);
    }
    s.show(Out::Ready { name: Some(s.node.name()), peer: s.node.peer_id().to_string(), role: Role::Device }).await;
    let result = s.run(signals, eof_quits).await;
    // Events already reported are printed (and confirmed) before the node stops; any
    // later ones stay in the inbox for the next start.
    while let Ok(e) = s.events.try_recv() {
        s.on_event(e).await;
    }
    let stopped = s.node.shutdown().await;
    let joined = task.await;
    result?;
    stopped.map_err(|e| format!("stopping the node: {e}"))?;
    joined.map_err(|e| format!("the node task failed: {e}"))
}

/// A command running, as a future the session polls beside events.
type Running = Pin<Box<dyn Future<Output = Done>>>;

struct Session {
    node: NodeHandle,
    events: mpsc::UnboundedReceiver<NodeEvent>,
    printer: Printer,
    dir: DataDir,
    /// The addresses listened on (for `dcgka invite`).
    listening: Vec<Multiaddr>,
    /// The group plain lines go to: the last one created, joined or used.
    current: Option<GroupId>,
    /// The groups this device is in, to print each `joined` once (the node may report
    /// one twice).
    joined: BTreeSet<GroupId>,
    /// The members last printed per group, to print a change once.
    members: BTreeMap<GroupId, Vec<Member>>,
}

impl Session {
    /// Prints events and runs commands (one at a time, in order) until `/quit`, a signal,
    /// or, with `eof_quits`, the end of the input.
    async fn run(&mut self, mut signals: Signals, eof_quits: bool) -> Result<(), String> {
        let mut lines = stdin_lines();
        let mut stdin_open = true;
        let mut running: Option<Running> = None;
        loop {
            tokio::select! {
                e = self.events.recv() => match e {
                    Some(e) => self.on_event(e).await,
                    None => return Err("the node stopped".into()),
                },
                done = poll(&mut running), if running.is_some() => {
                    running = None;
                    if let Some(g) = done.current {
                        self.current = Some(g);
                    }
                    for out in done.outs {
                        self.show(out).await;
                    }
                }
                line = lines.recv(), if stdin_open && running.is_none() => match line.map(|l| commands::parse(&l)) {
                    Some(Ok(Cmd::Quit)) => return Ok(()),
                    Some(Ok(Cmd::Nothing)) => {}
                    Some(Ok(cmd)) => running = Some(Box::pin(commands::execute(self.node.clone(), cmd, self.current))),
                    Some(Err(message)) => self.show(Out::Error(message)).await,
                    None if eof_quits => return Ok(()),
                    None => stdin_open = false,
                },
                () = signals.recv() => {
                    tracing::info!("signal received: stopping");
                    return Ok(());
                }
            }
        }
    }

    async fn on_event(&mut self, e: NodeEvent) {
        match &e {
            NodeEvent::Listening(a) => self.listened(a.clone()),
            NodeEvent::Joined(g) => {
                self.current = Some(*g);
                if !self.joined.insert(*g) {
                    return;
                }
            }
            NodeEvent::Removed(g) => {
                self.joined.remove(g);
                self.members.remove(g);
                if self.current == Some(*g) {
                    self.current = None;
                }
            }
            NodeEvent::Members { gid, members } => {
                if self.members.get(gid) == Some(members) {
                    return;
                }
                self.members.insert(*gid, members.clone());
            }
            _ => {}
        }
        if let Some(out) = Out::from_event(e, &self.node.peer_id()) {
            self.show(out).await;
        }
    }

    /// Prints a line; once it is out, confirms its inbox event to the node.
    async fn show(&mut self, out: Out) {
        if let Err(e) = self.printer.print(&out) {
            tracing::warn!("stdout: {e}; the event stays unconfirmed");
            return;
        }
        if let Some(id) = out.inbox_id()
            && let Err(e) = self.node.consumed(vec![id]).await
        {
            tracing::warn!("confirming event {id}: {e}");
        }
    }

    fn listened(&mut self, addr: Multiaddr) {
        record_listening(&self.dir, &mut self.listening, addr);
    }
}

/// Adds a listening address to the directory's `addresses` file (for `dcgka invite` and
/// scripts), unless it is unspecified or known.
fn record_listening(dir: &DataDir, listening: &mut Vec<Multiaddr>, addr: Multiaddr) {
    if is_unspecified(&addr) || listening.contains(&addr) {
        return;
    }
    listening.push(addr);
    if let Err(e) = dir.record_addresses(listening) {
        tracing::warn!("recording the addresses: {e}");
    }
}

/// Whether an address names the unspecified IP (`0.0.0.0`, `::`): a listening address
/// that is no place to dial. (Read from the address's text, `/ip4/A/…` or `/ip6/A/…`, so
/// that this crate needs no libp2p types beyond `dcgka_net`'s re-exports.)
fn is_unspecified(addr: &Multiaddr) -> bool {
    let text = addr.to_string();
    let mut parts = text.split('/').skip(1);
    match (parts.next(), parts.next()) {
        (Some("ip4" | "ip6"), Some(ip)) => ip.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_unspecified()),
        _ => false,
    }
}

async fn poll(running: &mut Option<Running>) -> Done {
    match running {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// Stdin's lines, read on a thread of their own: a blocking read cannot be cancelled, and
/// a thread left blocked in it does not keep the process from exiting (a runtime's
/// blocking task would hold up its shutdown). The channel closes at the end of the input
/// or on a read error.
fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    let spawned = std::thread::Builder::new().name("stdin".into()).spawn(move || {
        for line in std::io::stdin().lines() {
            match line {
                Ok(l) => {
                    if tx.send(l).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!("stdin: {e}");
                    break;
                }
            }
        }
    });
    if let Err(e) = spawned {
        tracing::warn!("cannot read stdin: {e}");
    }
    rx
}

/// SIGINT and SIGTERM (Ctrl-C elsewhere).
struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    #[cfg(unix)]
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals { int: signal(SignalKind::interrupt())?, term: signal(SignalKind::terminate())? })
    }

    #[cfg(not(unix))]
    fn new() -> std::io::Result<Signals> {
        Ok(Signals {})
    }

    #[cfg(unix)]
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }

    #[cfg(not(unix))]
    async fn recv(&mut self) {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn unspecified_addresses_are_recognised() {
        let yes = ["/ip4/0.0.0.0/tcp/4001", "/ip6/::/tcp/4001"];
        let no = [
            "/ip4/127.0.0.1/tcp/4001",
            "/ip6/::1/tcp/0",
            "/ip4/192.168.1.2/tcp/1/p2p/12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp",
        ];
        for a in yes {
            assert!(is_unspecified(&a.parse().unwrap()), "{a}");
        }
        for a in no {
            assert!(!is_unspecified(&a.parse().unwrap()), "{a}");
        }
    }
}
