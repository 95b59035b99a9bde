//! The stateful target: the fuzzer's bytes drive the simulator's random runner (adds,
//! removes, updates, sends, deliveries with duplicates and drops, partitions healed at
//! once or link by link), and the run must satisfy every oracle.

use std::convert::Infallible;

use dcgka_sim::random::{RunConfig, RunReport, run_with_schedule};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng, TryRng};

/// A schedule source that reads the fuzzer's bytes, one byte per decision (the runner
/// reduces every draw modulo a small number, so one byte is enough), then a generator
/// seeded from the input once they run out (a constant would make the final delivery
/// duplicate or drop every packet for ever). Small mutations of the input then change
/// single decisions.
struct Bytes<'a> {
    data: &'a [u8],
    then: ChaCha20Rng,
}

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => self.then.next_u32() as u8,
        }
    }
}

impl TryRng for Bytes<'_> {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(u32::from(self.byte()))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(u64::from(self.byte()))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        dst.iter_mut().for_each(|b| *b = self.byte());
        Ok(())
    }
}

/// The most steps one input can ask for (a run stays well under a second).
pub(crate) const MAX_STEPS: usize = 48;

/// The configuration the first four bytes choose: members, steps, flags (coalesced acks,
/// partitions, adversarial shadows, withheld late operations) and the devices' seed.
fn config(head: [u8; 4]) -> RunConfig {
    let [m, s, flags, seed] = head;
    RunConfig {
        members: 2 + usize::from(m % 3),
        spares: 1 + usize::from(m / 3 % 2),
        steps: usize::from(s) % (MAX_STEPS + 1),
        seed: u64::from(seed),
        partitions: usize::from(flags >> 1 & 3).min(2),
        shadows: flags & 8 != 0,
        coalesce_acks: flags & 1 != 0,
        withhold_late: flags & 16 != 0,
        ..RunConfig::default()
    }
}

/// `members:u8 ‖ steps:u8 ‖ flags:u8 ‖ seed:u8 ‖ decisions…`. The run must converge and
/// every oracle hold (agreement, delivery, and with shadows confidentiality).
pub fn sim(data: &[u8]) {
    run(data);
}

/// [`sim`], returning the run's report.
fn run(data: &[u8]) -> Option<RunReport> {
    let (head, schedule) = data.split_first_chunk::<4>()?;
    let cfg = config(*head);
    let then = ChaCha20Rng::seed_from_u64(u64::from_le_bytes([head[0], head[1], head[2], head[3], 0, 0, 0, 0]));
    let report = run_with_schedule(&cfg, Bytes { data: schedule, then }, &mut |_, _| {});
    assert!(report.violations.is_empty(), "{cfg:?}: {:#?}", report.violations);
    assert!(report.converged, "{cfg:?}: the run did not converge");
    Some(report)
}

/// Seeds: a few configurations, each with a schedule from a simple generator.
pub(crate) fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut x: u32 = 0x9e37_79b9;
    for (i, head) in [[0u8, 40, 0, 1], [1, 48, 2, 2], [2, 48, 9, 3], [4, 30, 13, 4], [3, 48, 4, 5]].iter().enumerate() {
        let mut input = head.to_vec();
        for _ in 0..(200 + 50 * i) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            input.push(x as u8);
        }
        out.push(input);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The input really drives the runner: over the seeds, every kind of action happens,
    /// and every expected delivery succeeds.
    #[test]
    fn the_seeds_drive_every_kind_of_action() {
        let reports: Vec<RunReport> = seeds().iter().filter_map(|s| run(s)).collect();
        assert_eq!(reports.len(), seeds().len());
        let sum = |f: fn(&RunReport) -> usize| reports.iter().map(f).sum::<usize>();
        assert!(sum(|r| r.adds) > 0 && sum(|r| r.removes) > 0 && sum(|r| r.updates) > 0);
        assert!(sum(|r| r.partitions) > 0 && sum(|r| r.app_messages) > 0 && sum(|r| r.batches) > 0);
        assert_eq!(sum(|r| r.deliveries_ok), sum(|r| r.deliveries_expected));
        // The decision bytes choose the actions: 72 rolls an update, 0 a send.
        let with = |action: u8| [&[0u8, 20, 0, 1][..], &[action, 0].repeat(20)].concat();
        let (updates, sends) = (run(&with(72)), run(&with(0)));
        assert_eq!(updates.as_ref().map(|r| (r.updates, r.app_messages > 0)), Some((20, true)));
        assert_eq!(sends.as_ref().map(|r| (r.updates, r.app_messages > 20)), Some((0, true)));
    }
}
