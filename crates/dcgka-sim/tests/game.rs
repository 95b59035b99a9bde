//! The security game (CCS §7, Appendix A; spec §11): thousands of random schedules with
//! compromises, coalitions of compromised and removed members pooling their states, and
//! every application message challenged. See [`dcgka_sim::game`].
//!
//! - `DCGKA_GAME_RUNS=N` sets the number of runs of `security_game_random_runs` (CI
//!   default below); `DCGKA_GAME_FIRST=S` its first seed.
//! - `DCGKA_GAME_SEED=S` makes `security_game_replays_one_seed` play that seed and print
//!   its schedule and report.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dcgka_sim::game::{Game, GameConfig, GameReport, Safe, Unsafe, Verdict, play};
use dcgka_sim::names::{A, B, C, D, E};

/// Runs of the CI-size game (`cargo test --release`); a debug build plays a tenth.
const CI_RUNS: u64 = if cfg!(debug_assertions) { 20 } else { 200 };

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The configuration of run `seed`: group size, spares, length and ack coalescing (one run
/// in four) vary with the seed.
fn config(seed: u64) -> GameConfig {
    GameConfig {
        seed,
        members: 3 + (seed % 3) as usize,
        spares: 1 + (seed % 2) as usize,
        steps: 30 + (seed % 31) as usize,
        coalesce_acks: seed % 4 == 3,
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

/// A scripted game of `n` initial members (devices 0..n), everyone having processed the
/// create.
fn scripted(n: usize, seed: u64) -> Game {
    let mut g = Game::new(GameConfig { members: n, spares: 0, seed, ..GameConfig::default() });
    let others: Vec<usize> = (1..n).collect();
    g.create(A, &others);
    g.deliver_all();
    g
}

fn verdict(r: &GameReport, packet: usize) -> &Verdict {
    r.verdicts.iter().find(|v| v.packet == packet).expect("challenged")
}

/// Post-compromise security (§11.5), and a working adversary: with a copy of B taken
/// before A's message, the adversary reads it (outside the predicate, classified, not a
/// failure); after B's update, processed by A, neither A's nor B's messages are read.
#[test]
fn game_compromise_is_read_until_the_member_updates() {
    let mut g = scripted(4, 101);
    g.compromise(B);
    let m1 = g.send(A).unwrap();
    g.deliver_all();
    let m2 = g.send(C).unwrap();
    g.deliver_all();
    g.update(B);
    g.deliver_all();
    let m3 = g.send(A).unwrap();
    let m4 = g.send(B).unwrap();
    g.deliver_all();
    let r = g.check();
    assert!(r.failures.is_empty(), "{}", r.failures.join("\n"));
    for m in [m1, m2] {
        let v = verdict(&r, m);
        assert_eq!(v.predicate, Err(Unsafe::RecipientCompromisedUnhealed), "#{m}");
        assert!(v.read, "the copy of B reads #{m}");
    }
    for m in [m3, m4] {
        let v = verdict(&r, m);
        assert_eq!(v.predicate, Ok(vec![Safe::PostCompromise]), "#{m}");
        assert!(!v.read, "#{m} is safe after B's update");
    }
    assert_eq!((r.compromises, r.safe, r.unsafe_read), (1, 2, 2));
}

/// Forward secrecy (§11.4): a copy of B taken after B decrypted A's message does not read
/// it; a message still in flight to B when the copy is taken is read (its key was held,
/// classified); a message sent afterwards is read too (B has not updated).
#[test]
fn game_compromise_after_decryption_reads_nothing_earlier() {
    let mut g = scripted(3, 102);
    let m1 = g.send(A).unwrap();
    g.deliver_all();
    let m2 = g.send(C).unwrap();
    g.compromise(B);
    g.deliver_all();
    let m3 = g.send(A).unwrap();
    g.deliver_all();
    let r = g.check();
    assert!(r.failures.is_empty(), "{}", r.failures.join("\n"));
    let v = verdict(&r, m1);
    assert_eq!(v.predicate, Ok(vec![Safe::ForwardSecrecy]));
    assert!(!v.read);
    let v = verdict(&r, m2);
    assert_eq!(v.predicate, Err(Unsafe::KeyHeldAtCompromise));
    assert!(v.read);
    let v = verdict(&r, m3);
    assert_eq!(v.predicate, Err(Unsafe::RecipientCompromisedUnhealed));
    assert!(v.read);
}

/// A coalition (§11.2, §11.6): D and E are compromised, then removed concurrently by A
/// and B. The pool holds both copies and both removed instances' kept states; what C
/// sends after processing both removals is read by none of them, alone or together.
/// What was sent while they were members is read (classified).
#[test]
fn game_coalition_of_removed_and_compromised_members_reads_nothing_after_removal() {
    let mut g = scripted(5, 103);
    let before = g.send(C).unwrap();
    g.deliver_all();
    g.compromise(D);
    g.compromise(E);
    let d = g.sim.mid(D).unwrap();
    let e = g.sim.mid(E).unwrap();
    g.remove(A, d);
    g.remove(B, e);
    g.deliver_all();
    let after = g.send(C).unwrap();
    let after_a = g.send(A).unwrap();
    g.deliver_all();
    let r = g.check();
    assert!(r.failures.is_empty(), "{}", r.failures.join("\n"));
    assert_eq!(r.compromises, 2);
    assert_eq!(r.removed_states, 2);
    assert!(r.pool >= 4, "{r:?}");
    for m in [after, after_a] {
        let v = verdict(&r, m);
        let Ok(safe) = &v.predicate else { panic!("#{m}: {v:?}") };
        assert!(safe.contains(&Safe::NonMember) && safe.contains(&Safe::RemovedOutsideView), "{safe:?}");
        assert!(!v.read, "#{m}");
    }
    assert_eq!(r.coalition, 2);
    // C's message before the compromises: the copies are forward secure, but the removed
    // states were in C's view; classified.
    let v = verdict(&r, before);
    assert_eq!(v.predicate, Err(Unsafe::RemovedButInView));
}
