//! `dcgka`: the command-line tool of the dcgka workspace.
//!
//! - `dcgka demo [--data-dir DIR]`: a narrated, deterministic run of the paper's story (a
//!   partitioned group that adds, removes, updates and chats on both sides, then heals and
//!   converges), ending with a verification block. Every device keeps its state in its own
//!   SQLite file (a temporary directory by default); run again on the same `DIR`, the demo
//!   resumes the devices from disk and shows that they still read each other.
//! - `dcgka sim --members M --steps S --seed X [--partitions P] [--json]`: one randomized
//!   schedule checked by the simulator's oracles.
//! - `dcgka bench [--sizes …] [--ops …] [--iterations K] [--csv F] [--plot F.svg]`: the
//!   paper's Figures 6 and 7 (traffic and per-member CPU per operation).
//! - `dcgka bench --longevity [--sizes 16,128] [--csv F]`: long-lived groups (issue 10):
//!   state, Welcome, restore time and memory after 0, 1,000 and 10,000 operations.
//!
//! - `dcgka node --data-dir DIR [--listen A]... [--peer A]... [--json]`: one device as a
//!   headless libp2p node (`dcgka-net`), driven by line commands on stdin.
//! - `dcgka chat --data-dir DIR [--listen A] [--peer A]... [--json]`: the same with a
//!   line-based chat; `dcgka invite --data-dir DIR` prints the device's invitation.
//! - `dcgka node --mailbox --data-dir DIR [--listen A]... [--peer A]... [--json]`: a
//!   mailbox for other devices (no device, no group key).
//! - `dcgka bench-net [--nodes 8,32] [--csv F] [--messages K] [--updates K] [--window W]`:
//!   N in-process nodes on loopback in one group: update and message latency, throughput
//!   and bytes on the wire per operation.
//!
//! The exit status is 0 exactly when every check holds (for `node` and `chat`: when the
//! node ran and stopped cleanly).

#![forbid(unsafe_code)]

mod bench;
mod demo;
mod net;
mod sim;
mod stores;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The allocator, counting live heap bytes for `dcgka bench --longevity`'s memory figure.
#[global_allocator]
static ALLOC: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

/// Decentralized continuous group key agreement: networked nodes and chat, demo, simulation
/// and benchmark.
#[derive(Debug, Parser)]
#[command(name = "dcgka", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// A narrated, deterministic run: create, partition, concurrent changes, heal, verify.
    Demo(demo::DemoArgs),
    /// One randomized schedule over the simulated network, checked by the oracles.
    Sim(sim::SimArgs),
    /// The paper's evaluation: traffic and CPU per operation against group size.
    Bench(bench::BenchArgs),
    /// Run a device as a headless network node, its state in --data-dir.
    ///
    /// One process per device. It prints events (JSON lines with --json) and reads the
    /// same line commands as `dcgka chat` on stdin; the end of stdin does not stop it:
    /// /quit, SIGINT or SIGTERM do, after which it shuts the node down and exits 0.
    ///
    /// With --mailbox it runs a mailbox for other devices instead (no device, no group
    /// key): devices that have it as --peer keep their groups' mail and prekeys there.
    ///
    /// Example: dcgka node --data-dir alice --listen /ip4/127.0.0.1/tcp/4001 --json
    ///          dcgka node --mailbox --data-dir mbox --listen /ip4/127.0.0.1/tcp/4000
    #[command(verbatim_doc_comment)]
    Node(net::NodeArgs),
    /// Run a device as a network node with a line-based chat on stdin and stdout.
    ///
    /// The node of `dcgka node` plus a chat that is pleasant by hand; it stops at /quit,
    /// at the end of stdin, or at SIGINT/SIGTERM.
    ///
    /// Example, two devices on one machine:
    ///   dcgka chat --data-dir alice --listen /ip4/127.0.0.1/tcp/4001
    ///   dcgka chat --data-dir bob --peer /ip4/127.0.0.1/tcp/4001
    /// Bob types /invite; Alice types /create, then /add GROUP INVITATION with Bob's line.
    #[command(verbatim_doc_comment)]
    Chat(net::ChatArgs),
    /// Print the invitation of the device in --data-dir (works while its node runs).
    ///
    /// The line starts with dcgka1- and names the device's identity key, its peer ID and
    /// the addresses its node last listened on. A directory no node has used yet gets its
    /// device first (with no addresses: run the node, then ask again).
    Invite(net::InviteArgs),
    /// Measure the network engine: N nodes on 127.0.0.1 in one group, update and message
    /// latency (p50, p99), throughput and bytes on the wire per operation.
    ///
    /// Prints one CSV row per (nodes, op) with the header
    /// nodes,op,p50_ms,p99_ms,msgs_per_s,wire_bytes_per_msg (op: update, message) on
    /// stdout, and with --csv FILE in FILE too; progress goes to stderr.
    ///
    /// Example: dcgka bench-net --nodes 8,32 --csv net.csv
    BenchNet(net::bench::BenchNetArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ok = match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Sim(args) => sim::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Node(args) => net::run_node(&args),
        Command::Chat(args) => net::run_chat(&args),
        Command::Invite(args) => net::run_invite(&args),
        Command::BenchNet(args) => net::bench::run(&args),
    };
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
