//! Property test: randomized schedules (adds, removes, updates, sends, reordering,
//! duplication, drops with retransmission, partitions) converge, deliver every message to
//! every intended recipient, and leak nothing to devices outside the sender's view.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dcgka_sim::random::{RunConfig, run};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_schedules_have_no_violations(
        seed in any::<u64>(),
        members in 2usize..=6,
        steps in 20usize..=150,
        partitions in 0usize..=3,
        coalesce_acks in any::<bool>(),
    ) {
        let cfg = RunConfig { partitions, coalesce_acks, ..RunConfig::new(members, steps, seed) };
        let report = run(&cfg, &mut |_, _| {});
        prop_assert!(report.violations.is_empty(), "{cfg:?}: {:#?}", report.violations);
        prop_assert!(report.converged, "{cfg:?}");
        prop_assert_eq!(report.deliveries_ok, report.deliveries_expected, "{:?}", cfg);
        // Every active member's final message was sent, so something was delivered.
        prop_assert!(report.app_messages >= report.members.min(1), "{:?}", cfg);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    /// With every member withholding removed members' late operations (§7.5), random
    /// schedules with partitions still converge: the members that remain agree on the
    /// group, its history and its keys, whichever late operations were withheld or released.
    #[test]
    fn random_schedules_withholding_late_operations_converge(
        seed in any::<u64>(),
        members in 3usize..=6,
        steps in 40usize..=150,
        partitions in 1usize..=3,
    ) {
        let cfg = RunConfig { partitions, withhold_late: true, ..RunConfig::new(members, steps, seed) };
        let report = run(&cfg, &mut |_, _| {});
        prop_assert!(report.violations.is_empty(), "{cfg:?}: {:#?}", report.violations);
        prop_assert!(report.converged, "{cfg:?}");
        prop_assert_eq!(report.deliveries_ok, report.deliveries_expected, "{:?}", cfg);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    /// Compaction of the membership history (§6.7) changes nothing anyone observes: the same
    /// random schedule run with and without it passes every oracle in both; where the two
    /// runs took the same actions, they end with the same members and deliver the same
    /// messages to the same devices. (The schedules can part: sync traffic differs, since a
    /// member that forgot a departed member no longer lists it in its sync state, and the
    /// runner draws its next action from what is queued. The lockstep comparison, after every
    /// step, is the DGM-level twin of `dcgka::dgm`'s random runs.)
    #[test]
    fn random_schedules_with_and_without_compaction_agree(
        seed in any::<u64>(),
        members in 2usize..=6,
        steps in 20usize..=150,
        partitions in 0usize..=3,
        coalesce_acks in any::<bool>(),
        withhold_late in any::<bool>(),
    ) {
        let base = RunConfig { partitions, coalesce_acks, withhold_late, trace: true, ..RunConfig::new(members, steps, seed) };
        let on = run(&base, &mut |_, _| {});
        let off = run(&RunConfig { compaction: false, ..base.clone() }, &mut |_, _| {});
        prop_assert!(on.violations.is_empty(), "{base:?}: {:#?}", on.violations);
        prop_assert!(off.violations.is_empty(), "{base:?} without compaction: {:#?}", off.violations);
        prop_assert!(on.converged && off.converged, "{:?}", base);
        if on.log == off.log {
            prop_assert_eq!(&on.member_names, &off.member_names, "{:?}", base);
            prop_assert_eq!(on.deliveries_expected, off.deliveries_expected, "{:?}", base);
            prop_assert_eq!(on.deliveries_ok, off.deliveries_ok, "{:?}", base);
            prop_assert_eq!(on.forks, off.forks, "{:?}", base);
        }
    }
}

/// Schedules that split the group under earlier versions of the withholding rule (§7.5):
/// withholding as soon as a removal was known, and looking for evidence only in the
/// acker's next envelope. Mutual removals with supporters on both sides left two groups.
#[test]
fn schedules_that_split_earlier_withholding_rules_converge() {
    let runs: [(usize, usize, u64, usize, bool); 8] = [
        (4, 95, 10950764489276683678, 1, true),
        // A fork in which each side adds the device that lives on in the other: its Welcome
        // stays pending there, so the member secrets for that instance are kept for good.
        (3, 113, 5790235938956145690, 2, false),
        (3, 112, 1548764720268313609, 2, false),
        (3, 136, 16911503352091354625, 2, false),
        (4, 137, 9865474097705001494, 3, false),
        (3, 132, 8802065995613016993, 3, false),
        (4, 145, 9437406057138184370, 1, true),
        (4, 83, 3269395173365163170, 1, false),
    ];
    for (members, steps, seed, partitions, coalesce_acks) in runs {
        let cfg = RunConfig { partitions, coalesce_acks, withhold_late: true, ..RunConfig::new(members, steps, seed) };
        let report = run(&cfg, &mut |_, _| {});
        assert!(report.violations.is_empty(), "{cfg:?}: {:#?}", report.violations);
        assert!(report.converged, "{cfg:?}");
    }
}

/// The same fixed run with coalesced acks: members hold their acks and send them in
/// batches with their next envelope.
#[test]
fn a_fixed_run_with_coalesced_acks_converges() {
    let cfg = RunConfig { partitions: 3, coalesce_acks: true, ..RunConfig::new(6, 150, 42) };
    let report = run(&cfg, &mut |_, _| {});
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
    assert!(report.converged);
    assert!(report.deliveries_expected > 0);
    assert_eq!(report.deliveries_ok, report.deliveries_expected);
}

/// A fixed, larger run, so that regressions in a known-good schedule show up with a
/// stable reproduction.
#[test]
fn a_fixed_run_with_partitions_converges() {
    let cfg = RunConfig { partitions: 3, ..RunConfig::new(6, 150, 42) };
    let report = run(&cfg, &mut |_, _| {});
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
    assert!(report.converged);
    assert!(report.partitions >= 1, "{report:?}");
    assert!(report.links >= 1, "a partition healed link by link: {report:?}");
    assert!(report.deliveries_expected > 0);
    assert_eq!(report.deliveries_ok, report.deliveries_expected);
}

/// A run in which concurrent removals empty the group: the runner creates a new group
/// among the devices, and the rest of the run keeps testing a live group (the oracles
/// then judge the new group).
#[test]
fn a_run_whose_group_empties_goes_on_with_a_new_group() {
    let cfg = RunConfig { partitions: 3, ..RunConfig::new(4, 400, 22) };
    let report = run(&cfg, &mut |_, _| {});
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
    assert!(report.converged);
    assert!(report.emptied >= 1, "{report:?}");
    assert!(report.steps_with_group >= 390, "{report:?}");
    assert!(report.members >= 2, "{report:?}");
    assert!(report.deliveries_expected > 0);
    assert_eq!(report.deliveries_ok, report.deliveries_expected);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

    /// The retention period running out at random moments (§5.7). Whatever happens, no
    /// group is corrupted, the library never fails, and nobody reads outside the sender's
    /// view (the adversarial shadows). Where only secrets expired (nobody was retired),
    /// every oracle holds: the members converge, and after every member's next update
    /// everyone reads everyone again. A retired member's late operations are refused where
    /// it was retired and processed elsewhere, so once someone was retired views may differ
    /// (the documented trade-off); the safety properties above still hold.
    #[test]
    fn random_schedules_with_the_retention_period_running_out(
        seed in any::<u64>(),
        members in 3usize..=6,
        steps in 40usize..=150,
        partitions in 0usize..=2,
        withhold_late in any::<bool>(),
    ) {
        let cfg = RunConfig { partitions, withhold_late, clock_jumps: 3, ..RunConfig::new(members, steps, seed) };
        let report = run(&cfg, &mut |_, _| {});
        let fatal: Vec<&String> = report
            .violations
            .iter()
            .filter(|v| v.contains("corrupted") || v.contains("library error") || v.contains("confidentiality") || v.contains("equivocation"))
            .collect();
        prop_assert!(fatal.is_empty(), "{cfg:?}: {:#?}", fatal);
        if report.retired == 0 {
            prop_assert!(report.violations.is_empty(), "{cfg:?}: {:#?}", report.violations);
            prop_assert!(report.converged, "{cfg:?}");
            prop_assert_eq!(report.deliveries_ok, report.deliveries_expected, "{:?}", cfg);
        }
    }
}

/// Over a fixed set of schedules, the retention period does run out on secrets and on
/// members, so the property above is not vacuous.
#[test]
fn the_retention_schedules_expire_and_retire_something() {
    let (mut expired, mut retired, mut strict) = (0, 0, 0);
    for seed in 0..16 {
        let cfg = RunConfig { partitions: 1, clock_jumps: 3, ..RunConfig::new(4, 80, seed) };
        let report = run(&cfg, &mut |_, _| {});
        expired += report.expired;
        retired += report.retired;
        if report.retired == 0 && report.expired > 0 {
            strict += 1;
            assert!(report.violations.is_empty(), "seed {seed}: {:#?}", report.violations);
        }
    }
    assert!(expired > 0 && retired > 0 && strict > 0, "expired {expired}, retired {retired}, strict runs {strict}");
}
