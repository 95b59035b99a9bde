//! The security game (CCS §7, Appendix A; spec §11): thousands of random schedules with
//! compromises, coalitions of compromised and removed members pooling their states, and
//! every application message challenged. See [`dcgka_sim::game`].
//!
//! - `DCGKA_GAME_RUNS=N` sets the number of runs of `security_game_random_runs` (CI
//!   default below); `DCGKA_GAME_FIRST=S` its first seed.
//! - `DCGKA_GAME_SEED=S` makes `security_game_replays_one_seed` play that seed and print
//!   its schedule and report.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dcgka_sim::game::{GameConfig, GameReport, play};

/// Runs of the CI-size game.
const CI_RUNS: u64 = 400;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The configuration of run `seed`: group size, spares and length vary with the seed.
fn config(seed: u64) -> GameConfig {
    GameConfig {
        seed,
        members: 3 + (seed % 3) as usize,
        spares: 1 + (seed % 2) as usize,
        steps: 30 + (seed % 31) as usize,
        ..GameConfig::default()
    }
}

#[test]
fn security_game_random_runs() {
    let runs = env_u64("DCGKA_GAME_RUNS").unwrap_or(CI_RUNS);
    let first = env_u64("DCGKA_GAME_FIRST").unwrap_or(0);
    let start = std::time::Instant::now();
    let mut total = GameReport::default();
    for seed in first..first + runs {
        let r = play(&config(seed));
        if !r.failures.is_empty() {
            panic!(
                "security game failed; replay with DCGKA_GAME_SEED={seed}\n{}\nschedule:\n{}",
                r.failures.join("\n"),
                r.log.join("\n")
            );
        }
        total.absorb(&r);
    }
    eprintln!(
        "security game: {runs} runs in {:.1} s: {} challenges, {} safe ({} against coalitions), {:?}; \
         classified {:?}, of which the adversary read {}; {} compromises, {} removed states, largest pool {}",
        start.elapsed().as_secs_f64(),
        total.challenges,
        total.safe,
        total.coalition,
        total.safe_pairs,
        total.classified,
        total.unsafe_read,
        total.compromises,
        total.removed_states,
        total.pool
    );
    assert!(total.safe > 0 && total.coalition > 0);
    assert!(total.classified.values().sum::<usize>() > 0);
}

/// Plays one seed (`DCGKA_GAME_SEED`, or a fixed one) twice: the two reports are equal
/// (a run is reproducible from its seed), and the schedule and figures are printed.
#[test]
fn security_game_replays_one_seed() {
    let seed = env_u64("DCGKA_GAME_SEED").unwrap_or(7);
    let a = play(&config(seed));
    let b = play(&config(seed));
    eprintln!("schedule of seed {seed}:\n{}", a.log.join("\n"));
    eprintln!("{:#?}", GameReport { log: Vec::new(), ..a.clone() });
    assert_eq!(a, b, "seed {seed} is not reproducible");
    assert!(a.failures.is_empty(), "{}", a.failures.join("\n"));
}
