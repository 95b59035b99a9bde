//! `dcgka sim`: one randomized schedule ([`dcgka_sim::random::run`]) with a human or JSON
//! summary.

use std::io::{IsTerminal, Write};

use clap::Args;
use dcgka_sim::random::{RunConfig, RunReport, run as run_schedule};
use serde_json::json;

/// Options of `dcgka sim`.
#[derive(Debug, Args)]
pub(crate) struct SimArgs {
    /// Initial group size.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    members: u16,
    /// Random steps before the final heal.
    #[arg(long, default_value_t = 200)]
    steps: usize,
    /// Seed of the run (a run is reproducible from its options).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// At most this many network splits (0: no partitions).
    #[arg(long, default_value_t = 2)]
    partitions: usize,
    /// Spare devices outside the group at first [default: members / 2 + 1].
    #[arg(long)]
    spares: Option<usize>,
    /// Percent of deliveries that are duplicated.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=100))]
    dup: u32,
    /// Percent of packets dropped (and retransmitted later).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=99))]
    drop: u32,
    /// Skip the adversarial shadows and the confidentiality check (faster).
    #[arg(long)]
    no_shadows: bool,
    /// Coalesce acknowledgments: members hold their acks and send them in one batch with
    /// their next envelope (spec §12).
    #[arg(long)]
    coalesce_acks: bool,
    /// Every member withholds removed members' late operations (spec §7.5).
    #[arg(long)]
    withhold_late: bool,
    /// Print every action of the run (to stdout, before the summary; not with --json).
    #[arg(long, conflicts_with = "json")]
    trace: bool,
    /// Print exactly one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

impl SimArgs {
    fn config(&self) -> RunConfig {
        let members = usize::from(self.members);
        let mut cfg = RunConfig::new(members, self.steps, self.seed);
        cfg.partitions = self.partitions;
        cfg.spares = self.spares.unwrap_or(cfg.spares);
        cfg.dup_percent = self.dup;
        cfg.drop_percent = self.drop;
        cfg.shadows = !self.no_shadows;
        cfg.trace = self.trace;
        cfg.coalesce_acks = self.coalesce_acks;
        cfg.withhold_late = self.withhold_late;
        cfg
    }
}

/// Runs `dcgka sim`; returns whether the run had no violations.
pub(crate) fn run(args: &SimArgs) -> bool {
    let cfg = args.config();
    let stderr = std::io::stderr();
    let show = stderr.is_terminal() || std::env::var_os("DCGKA_PROGRESS").is_some();
    let mut last = usize::MAX;
    let mut progress = |step: usize, steps: usize| {
        let pct = (step * 100).checked_div(steps).unwrap_or(100);
        if show && pct != last {
            last = pct;
            let mut e = stderr.lock();
            let _ = write!(e, "\rsimulating: {pct:3}% ({step}/{steps} steps)");
            if step == steps {
                let _ = writeln!(e);
            }
        }
    };
    let report = run_schedule(&cfg, &mut progress);
    if args.json {
        println!("{}", to_json(&cfg, &report));
    } else {
        for line in &report.log {
            println!("{line}");
        }
        print_summary(&cfg, &report);
    }
    report.violations.is_empty()
}

fn to_json(cfg: &RunConfig, r: &RunReport) -> serde_json::Value {
    json!({
        "seed": cfg.seed,
        "steps": cfg.steps,
        "initial_members": cfg.members,
        "devices": r.devices,
        "partitions_max": cfg.partitions,
        "converged": r.converged,
        "members": r.members,
        "member_names": r.member_names,
        "app_messages": r.app_messages,
        "deliveries_expected": r.deliveries_expected,
        "deliveries_ok": r.deliveries_ok,
        "adds": r.adds,
        "removes": r.removes,
        "updates": r.updates,
        "partitions": r.partitions,
        "refusals": r.refusals,
        "refusal_reasons": r.refusal_reasons,
        "packets": r.packets,
        "batches": r.batches,
        "coalesce_acks": cfg.coalesce_acks,
        "withhold_late": cfg.withhold_late,
        "forks": r.forks,
        "shadows": cfg.shadows,
        "elapsed_ms": u64::try_from(r.elapsed_ms).unwrap_or(u64::MAX),
        "violations": r.violations,
        "emptied": r.emptied,
        "steps_with_group": r.steps_with_group,
        "links": r.links,
    })
}

fn print_summary(cfg: &RunConfig, r: &RunReport) {
    println!(
        "dcgka sim: seed {}, {} initial members + {} spare devices, {} steps, up to {} partitions",
        cfg.seed, cfg.members, cfg.spares, cfg.steps, cfg.partitions
    );
    println!(
        "  operations:  {} adds, {} removes, {} updates, {} messages, {} partitions, {} refused",
        r.adds, r.removes, r.updates, r.app_messages, r.partitions, r.refusals
    );
    for (reason, n) in &r.refusal_reasons {
        println!("    refused {n}x: {reason}");
    }
    if cfg.coalesce_acks {
        println!("  network:     {} packets, {} of them batches of coalesced acks", r.packets, r.batches);
    } else {
        println!("  network:     {} packets", r.packets);
    }
    println!("  final group: {} members {:?}", r.members, r.member_names);
    println!("  converged:   {}", if r.converged { "yes" } else { "NO" });
    if cfg.withhold_late {
        println!("  forks:       {} (both sides of a partition withheld each other's removal)", r.forks);
    }
    println!(
        "  deliveries:  {}/{} intended (message, recipient) pairs decrypted",
        r.deliveries_ok, r.deliveries_expected
    );
    println!(
        "  confidentiality: {}",
        if cfg.shadows { "checked with adversarial shadows" } else { "not checked (--no-shadows)" }
    );
    println!("  time:        {} ms", r.elapsed_ms);
    if r.violations.is_empty() {
        println!("OK: no violations");
    } else {
        println!("FAILED: {} violations", r.violations.len());
        for v in &r.violations {
            println!("  - {v}");
        }
    }
}
