//! Random DGM-level protocol runs: incremental == reference at every step, and
//! convergence after full delivery.

use proptest::prelude::*;

use super::net::{Net, Stats};
use super::*;

/// At most this many members are added on top of the initial ones.
const MAX_NEW: u32 = 8;

/// Runs a random protocol driven by `choices` (one step each), then delivers
/// everything and checks the global oracles.
fn run_sim(choices: &[u32], deep: bool, lazy: bool) -> Stats {
    let Some((&first, steps)) = choices.split_first() else {
        return Stats::default();
    };
    let n_init = 2 + first % 4;
    let others: Vec<Id> = (2..=n_init).collect();
    let mut net = Net::new(1, &others);
    net.deep = deep;
    net.lazy = lazy;
    let mut next_id: Id = 100;
    for &c in steps {
        let pick = |len: usize| (c >> 5) as usize % len;
        let live: Vec<Id> = net.live().into_iter().collect();
        match c % 20 {
            // Some member processes the next message of some sender.
            0..=9 => {
                let pairs: Vec<(Id, Id)> = net
                    .nodes
                    .keys()
                    .flat_map(|&n| net.log.keys().map(move |&y| (n, y)))
                    .filter(|&(n, y)| net.deliverable(n, y).is_some())
                    .collect();
                if !pairs.is_empty() {
                    let (n, y) = pairs[pick(pairs.len())];
                    net.step(n, y);
                }
            }
            10 | 11 | 13 if !live.is_empty() && next_id < 100 + MAX_NEW => {
                net.add(live[pick(live.len())], next_id);
                next_id += 1;
            }
            12 if !live.is_empty() => {
                let s = live[pick(live.len())];
                // In its own view, and in member-view(s) as the others compute it
                // (the same set unless s skipped acks).
                let view_of_s = net.hist(s).view_of(&s);
                let targets: Vec<Id> =
                    net.hist(s).view_me().into_iter().filter(|&t| t != s && view_of_s.contains(&t)).collect();
                if !targets.is_empty() {
                    let t = targets[(c >> 12) as usize % targets.len()];
                    net.remove(s, t);
                }
            }
            14 if !live.is_empty() => {
                net.update(live[pick(live.len())]);
            }
            15 | 16 => {
                let waiting: Vec<Id> = net.welcomes.keys().copied().collect();
                if !waiting.is_empty() {
                    net.join(waiting[pick(waiting.len())]);
                }
            }
            17 => {
                if net.side.is_some() {
                    net.side = None;
                } else {
                    let side = net.nodes.keys().map(|&n| (n, (c >> (5 + n % 16)) & 1 == 1)).collect();
                    net.side = Some(side);
                    net.stats.partitions += 1;
                }
            }
            // A burst: everyone that can processes everything it can.
            18 => {
                net.deliver_all();
            }
            _ => {}
        }
    }
    net.settle();
    net.assert_converged();
    net.stats
}

fn env_or(name: &str, default: u32) -> u32 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn seeded_protocol_runs_converge_and_match_the_reference() {
    let runs = env_or("DGM_SIM_RUNS", 150);
    let mut total = Stats::default();
    for seed in 0..u64::from(runs) {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let len = 40 + xorshift(&mut state) % 120;
        let choices: Vec<u32> = (0..len).map(|_| xorshift(&mut state)).collect();
        let st = run_sim(&choices, seed % 8 == 0, seed % 2 == 1);
        total.cascades += st.cascades;
        total.cancelled_at_once += st.cancelled_at_once;
        total.stopped += st.stopped;
        total.joins += st.joins;
        total.partitions += st.partitions;
        total.skipped_acks += st.skipped_acks;
        total.final_members += st.final_members;
        total.folded += st.folded;
        total.forgotten += st.forgotten;
    }
    // The runs exercise what they are meant to.
    assert!(total.cascades > 0, "{total:?}");
    assert!(total.cancelled_at_once > 0, "{total:?}");
    assert!(total.stopped > 0 && total.joins > 0 && total.partitions > 0, "{total:?}");
    assert!(total.final_members > 0 && total.skipped_acks > 0, "{total:?}");
    // Compaction folded operations and forgot departed members along the way.
    assert!(total.folded > 0 && total.forgotten > 0, "{total:?}");
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: env_or("PROPTEST_CASES", 64),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_protocol_runs_converge_and_match_the_reference(
        choices in proptest::collection::vec(any::<u32>(), 1..160)
    ) {
        run_sim(&choices, true, false);
    }

    #[test]
    fn random_runs_with_members_that_skip_acks(
        choices in proptest::collection::vec(any::<u32>(), 1..160)
    ) {
        run_sim(&choices, true, true);
    }
}
