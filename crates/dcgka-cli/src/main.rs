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
//! The exit status is 0 exactly when every check holds.

#![forbid(unsafe_code)]

mod bench;
mod demo;
mod sim;
mod stores;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The allocator, counting live heap bytes for `dcgka bench --longevity`'s memory figure.
#[global_allocator]
static ALLOC: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

/// Decentralized continuous group key agreement: demo and simulation.
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ok = match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Sim(args) => sim::run(&args),
        Command::Bench(args) => bench::run(&args),
    };
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
