//! Explicit histories: §6.5 conflict outcomes in every processing order, error paths,
//! the post-removal rule, regressions and queries.

use super::*;

// ---------------------------------------------------------------------------------
// §6.5 conflict outcomes, as explicit histories, in every processing order
// ---------------------------------------------------------------------------------

/// create(A: B, C) and both acks.
fn base3() -> Vec<Op<Id>> {
    vec![create(A, 1, &[B, C]), ack(B, 1, (A, 1)), ack(C, 1, (A, 1))]
}

#[test]
fn mutual_removes_both_removed_in_every_order() {
    // A removes B ∥ B removes A; observer C processes them in either order.
    for c_order in [[(A, 2), (B, 2)], [(B, 2), (A, 2)]] {
        let mut ops = base3();
        ops.extend([rm(A, 2, B), rm(B, 2, A)]);
        ops.extend([ack(C, 2, c_order[0]), ack(C, 3, c_order[1])]);
        let n = check_all_orders(&ops, |h| {
            assert_eq!(h.view_me(), set(&[C]));
            assert_eq!(h.view_of(&C), set(&[C]));
            assert_eq!(h.view_of(&A), set(&[A, C]));
            assert_eq!(h.view_of(&B), set(&[B, C]));
            assert_eq!(h.removed_by(&A), vec![id(B, 2)]);
            assert_eq!(h.removed_by(&B), vec![id(A, 2)]);
        });
        assert!(n >= 2, "{n} orders");
    }
}

#[test]
fn remove_concurrent_with_add_by_removed_member_cancels_the_add() {
    // A removes B ∥ B adds D; D joins and acks its add; A add-acks B's add late.
    for c_order in [[(A, 2), (B, 2)], [(B, 2), (A, 2)]] {
        let mut ops = base3();
        ops.extend([rm(A, 2, B), add(B, 2, D), ack(D, 1, (B, 2)), ack(A, 3, (B, 2))]);
        ops.extend([ack(C, 2, c_order[0]), ack(C, 3, c_order[1])]);
        let n = check_all_orders(&ops, |h| {
            assert_eq!(h.view_me(), set(&[A, C]));
            assert_eq!(h.view_of(&A), set(&[A, C]));
            assert_eq!(h.view_of(&C), set(&[A, C]));
            // D's own view (inherited from B) still has everyone.
            assert_eq!(h.view_of(&D), set(&[A, B, C, D]));
            assert_eq!(h.targets(&id(A, 2)), Some(&set(&[B, D])));
            assert_eq!(h.removed_by(&D), vec![id(A, 2)]);
        });
        assert!(n >= 2, "{n} orders");
    }
    // When the remove comes first, D is cancelled the moment its add is applied, so
    // it is never in the observer's view.
    let mut h = build(&base3());
    h.apply(rm(A, 2, B)).unwrap();
    h.apply(ack(C, 2, (A, 2))).unwrap();
    h.apply(add(B, 2, D)).unwrap();
    assert!(!h.view_me().contains(&D));
    assert_eq!(h.removed_by(&D), vec![id(A, 2)]);
    assert_consistent(&h, true);
}

#[test]
fn transitively_cancelled_adds() {
    // A removes B ∥ (B adds C ≺ C adds D), A having seen neither add. Observer O
    // processes the three operations in each causally consistent order.
    let base = vec![create(A, 1, &[B, O]), ack(B, 1, (A, 1)), ack(O, 1, (A, 1))];
    let o_orders = [[(A, 2), (B, 2), (C, 2)], [(B, 2), (A, 2), (C, 2)], [(B, 2), (C, 2), (A, 2)]];
    for o_order in o_orders {
        let mut ops = base.clone();
        ops.extend([
            rm(A, 2, B),
            add(B, 2, C),
            ack(C, 1, (B, 2)),
            add(C, 2, D),
            ack(D, 1, (C, 2)),
            ack(A, 3, (B, 2)),
            ack(A, 4, (C, 2)),
        ]);
        for (k, &o) in o_order.iter().enumerate() {
            ops.push(ack(O, 2 + k as u64, o));
        }
        let n = check_all_orders(&ops, |h| {
            assert_eq!(h.view_me(), set(&[A, O]));
            assert_eq!(h.view_of(&A), set(&[A, O]));
            assert_eq!(h.view_of(&O), set(&[A, O]));
            assert_eq!(h.targets(&id(A, 2)), Some(&set(&[B, C, D])));
            assert_eq!(h.removed_by(&C), vec![id(A, 2)]);
            assert_eq!(h.removed_by(&D), vec![id(A, 2)]);
        });
        assert!(n >= 2, "{n} orders");
    }
}

#[test]
fn acknowledged_add_survives_removal_of_adder() {
    // B adds C; A acks the add; then A removes B. C (and O) ack the remove.
    let mut ops = vec![create(A, 1, &[B, O]), ack(B, 1, (A, 1)), ack(O, 1, (A, 1))];
    ops.extend([
        add(B, 2, C),
        ack(C, 1, (B, 2)),
        ack(A, 2, (B, 2)),
        rm(A, 3, B),
        ack(O, 2, (B, 2)),
        ack(O, 3, (A, 3)),
        ack(C, 2, (A, 3)),
    ]);
    let n = check_all_orders(&ops, |h| {
        assert_eq!(h.view_me(), set(&[A, C, O]));
        assert_eq!(h.targets(&id(A, 3)), Some(&set(&[B])));
        assert!(h.removed_by(&C).is_empty());
        assert_eq!(h.view_of(&C), set(&[A, C, O]));
    });
    assert!(n >= 2, "{n} orders");
}

#[test]
fn same_member_removed_twice() {
    let base = vec![create(A, 1, &[B, C, O]), ack(B, 1, (A, 1)), ack(C, 1, (A, 1)), ack(O, 1, (A, 1))];
    for o_order in [[(A, 2), (B, 2)], [(B, 2), (A, 2)]] {
        let mut ops = base.clone();
        ops.extend([rm(A, 2, C), rm(B, 2, C), ack(A, 3, (B, 2)), ack(B, 3, (A, 2))]);
        ops.extend([ack(O, 2, o_order[0]), ack(O, 3, o_order[1])]);
        let n = check_all_orders(&ops, |h| {
            assert_eq!(h.view_me(), set(&[A, B, O]));
            let rs: BTreeSet<OpId<Id>> = h.removed_by(&C).into_iter().collect();
            assert_eq!(rs, [id(A, 2), id(B, 2)].into_iter().collect());
            for x in [A, B, O] {
                assert_eq!(h.view_of(&x), set(&[A, B, O]));
            }
        });
        assert!(n >= 2, "{n} orders");
    }
}

#[test]
fn unrelated_add_survives_concurrent_remove() {
    // A removes B ∥ C adds D.
    let base = vec![create(A, 1, &[B, C, O]), ack(B, 1, (A, 1)), ack(C, 1, (A, 1)), ack(O, 1, (A, 1))];
    for o_order in [[(A, 2), (C, 2)], [(C, 2), (A, 2)]] {
        let mut ops = base.clone();
        ops.extend([
            rm(A, 2, B),
            add(C, 2, D),
            ack(D, 1, (C, 2)),
            ack(A, 3, (C, 2)),
            ack(C, 3, (A, 2)),
            ack(D, 2, (A, 2)),
        ]);
        ops.extend([ack(O, 2, o_order[0]), ack(O, 3, o_order[1])]);
        let n = check_all_orders(&ops, |h| {
            assert_eq!(h.view_me(), set(&[A, C, D, O]));
            assert_eq!(h.targets(&id(A, 2)), Some(&set(&[B])));
            for x in [A, C, D, O] {
                assert_eq!(h.view_of(&x), set(&[A, C, D, O]));
            }
        });
        assert!(n >= 2, "{n} orders");
    }
}

#[test]
fn views_before_acks() {
    let mut h = build(&base3());
    h.apply(rm(A, 2, B)).unwrap();
    assert_eq!(h.view_me(), set(&[A, C]));
    assert_eq!(h.view_of(&A), set(&[A, C]));
    // C has not acked the remove yet: its view still contains B.
    assert_eq!(h.view_of(&C), set(&[A, B, C]));
    assert_consistent(&h, true);
    h.apply(ack(C, 2, (A, 2))).unwrap();
    assert_eq!(h.view_of(&C), set(&[A, C]));
    assert_consistent(&h, true);
}

#[test]
fn tombstone_not_in_view_of_member_that_never_saw_its_add() {
    // Java's queryView bug (§6.4 notes, §13): D is tombstoned (cancelled by A's
    // remove of B); C has seen neither D's add nor the remove: D ∉ member-view(C).
    let mut ops = base3();
    ops.extend([rm(A, 2, B), add(B, 2, D), ack(D, 1, (B, 2))]);
    let h = build(&ops);
    assert_eq!(h.removed_by(&D), vec![id(A, 2)]);
    assert_eq!(h.view_of(&C), set(&[A, B, C]));
    assert_eq!(h.view_of(&D), set(&[A, B, C, D]));
}

// ---------------------------------------------------------------------------------
// Error paths: typed errors, all-or-nothing
// ---------------------------------------------------------------------------------

fn assert_rejected(h: &mut History<Id>, op: Op<Id>, expected: DgmError<Id>) {
    let before = h.clone();
    assert_eq!(h.apply(op), Err(expected));
    assert_eq!(*h, before, "history changed by a rejected operation");
}

#[test]
fn malformed_duplicate_and_unknown_operations_are_rejected_without_change() {
    let mut h = History::new();
    assert_rejected(&mut h, add(A, 1, B), DgmError::NoCreate { op: id(A, 1) });
    assert_rejected(&mut h, ack(B, 1, (A, 1)), DgmError::NoCreate { op: id(B, 1) });
    assert_rejected(&mut h, create(A, 0, &[B]), DgmError::ZeroSeq { op: id(A, 0) });
    assert_rejected(&mut h, create(A, 1, &[B, A]), DgmError::CreatorListed { op: id(A, 1) });
    assert_rejected(&mut h, create(A, 1, &[B, C, B]), DgmError::DuplicateInitialMember { op: id(A, 1), member: B });
    h.apply(create(A, 1, &[B, C])).unwrap();
    assert_rejected(&mut h, create(A, 1, &[B, C]), DgmError::DuplicateOp { op: id(A, 1) });
    assert_rejected(&mut h, create(A, 2, &[B]), DgmError::SecondCreate { op: id(A, 2) });
    assert_rejected(&mut h, create(B, 1, &[]), DgmError::SecondCreate { op: id(B, 1) });
    // B has not acked the create yet.
    assert_rejected(&mut h, add(B, 1, D), DgmError::SenderNotJoined { op: id(B, 1) });
    assert_rejected(&mut h, ack(C, 1, (A, 9)), DgmError::SenderNotJoined { op: id(C, 1) });
    assert_rejected(&mut h, rm(B, 1, C), DgmError::SenderNotJoined { op: id(B, 1) });
    assert_rejected(&mut h, add(D, 1, E), DgmError::UnknownSender { op: id(D, 1) });
    assert_rejected(&mut h, ack(A, 2, (A, 1)), DgmError::AckOfOwnOp { op: id(A, 2) });
    h.apply(ack(B, 1, (A, 1))).unwrap();
    assert_rejected(&mut h, ack(B, 2, (A, 7)), DgmError::UnknownOp { op: id(B, 2), of: id(A, 7) });
    assert_rejected(&mut h, ack(B, 1, (A, 1)), DgmError::DuplicateOp { op: id(B, 1) });
    assert_rejected(&mut h, ack(B, 2, (A, 1)), DgmError::DuplicateAck { op: id(B, 2), of: id(A, 1) });
    assert_rejected(&mut h, ack(A, 2, (B, 1)), DgmError::NotMembershipOp { op: id(A, 2), of: id(B, 1) });
    h.apply(ack(C, 3, (A, 1))).unwrap();
    assert_rejected(&mut h, rm(C, 2, B), DgmError::SeqNotIncreasing { op: id(C, 2), last: 3 });
    assert_rejected(&mut h, add(B, 5, B), DgmError::SelfAdd { op: id(B, 5) });
    assert_rejected(&mut h, add(B, 5, C), DgmError::AlreadyAdded { op: id(B, 5), target: C });
    assert_rejected(&mut h, rm(B, 5, B), DgmError::SelfRemove { op: id(B, 5) });
    assert_rejected(&mut h, rm(B, 5, D), DgmError::UnknownTarget { op: id(B, 5), target: D });
    h.apply(add(B, 5, D)).unwrap();
    assert_rejected(&mut h, add(C, 5, D), DgmError::AlreadyAdded { op: id(C, 5), target: D });
    // C has not seen D's add, so cannot remove D (V3).
    assert_rejected(&mut h, rm(C, 5, D), DgmError::TargetNotInView { op: id(C, 5), target: D });
    // D inherited `saw = 0` for its own add, but may still ack it once.
    assert!(h.seen_by(&D, &id(B, 5)) && !h.has_acked(&id(B, 5), &D));
    h.apply(ack(D, 1, (B, 5))).unwrap();
    assert!(h.has_acked(&id(B, 5), &D));
    assert_rejected(&mut h, ack(D, 2, (B, 5)), DgmError::DuplicateAck { op: id(D, 2), of: id(B, 5) });
    h.apply(rm(A, 2, B)).unwrap();
    h.apply(ack(C, 6, (A, 2))).unwrap();
    // B is no longer in C's view.
    assert_rejected(&mut h, rm(C, 7, B), DgmError::TargetNotInView { op: id(C, 7), target: B });
    // After all these rejections the history is still usable and consistent.
    h.apply(ack(C, 7, (B, 5))).unwrap();
    assert_consistent(&h, true);
    assert_eq!(h.view_me(), set(&[A, C]));
    // Errors display their data.
    let e = DgmError::SeqNotIncreasing { op: id(C, 2), last: 3 };
    assert!(e.to_string().contains('3'));
}

// ---------------------------------------------------------------------------------
// The post-removal rule (§7.5)
// ---------------------------------------------------------------------------------

#[test]
fn post_removal_rule_flags_acks_after_own_removal_only() {
    let mut ops = base3();
    ops.extend([rm(A, 2, B)]);
    let mut h = build(&ops);
    // B acking its own removal.
    assert!(h.follows_own_removal(&B, &id(A, 2)));
    // C acking it is fine.
    assert!(!h.follows_own_removal(&C, &id(A, 2)));
    h.apply(ack(C, 2, (A, 2))).unwrap();
    // C then sends an add (C3) and an update (C4), both after it saw B's removal:
    // B acking either provably follows its removal.
    h.apply(add(C, 3, E)).unwrap();
    assert!(h.follows_own_removal(&B, &id(C, 3)));
    assert!(h.follows_own_removal(&B, &id(C, 4)));
    // Acks by members are fine, also of the update.
    assert!(!h.follows_own_removal(&A, &id(C, 3)));
    assert!(!h.follows_own_removal(&E, &id(C, 3)));
    assert!(!h.follows_own_removal(&A, &id(C, 4)));
    // An ID that was never added is not in any view.
    assert!(h.follows_own_removal(&STRANGER, &id(C, 3)));
}

#[test]
fn post_removal_rule_allows_honest_concurrent_acks() {
    // A removes B ∥ C adds E (C2, sent before C saw A2) ∥ C updates (C3).
    let mut ops = base3();
    ops.extend([rm(A, 2, B), add(C, 2, E)]);
    let h = build(&ops);
    // B processes C's add and update before it processes its own removal: honest.
    assert!(!h.follows_own_removal(&B, &id(C, 2)));
    assert!(!h.follows_own_removal(&B, &id(C, 3)));
    // B acked the create long ago; acking its add-ack-free ops is also fine.
    assert!(!h.follows_own_removal(&B, &id(A, 1)) || h.has_acked(&id(A, 1), &B));
    // E, added concurrently with B's removal by a member, acks its own add.
    assert!(!h.follows_own_removal(&E, &id(C, 2)));
}

#[test]
fn post_removal_rule_covers_cascaded_removal() {
    // B adds D ∥ A removes B (A had not seen the add): D is cancelled by A2, so D
    // acking A2 acknowledges its own (cascaded) removal; D acking its own add does not.
    let mut ops = base3();
    ops.extend([add(B, 2, D), rm(A, 2, B)]);
    let h = build(&ops);
    assert_eq!(h.targets(&id(A, 2)), Some(&set(&[B, D])));
    assert!(!h.follows_own_removal(&D, &id(B, 2)));
    assert!(h.follows_own_removal(&D, &id(A, 2)));
    // And anything A sends after A2.
    assert!(h.follows_own_removal(&D, &id(A, 3)));
    // Removed-but-unaware D may still ack C's concurrent operations.
    assert!(!h.follows_own_removal(&D, &id(C, 5)) || h.seen_by(&C, &id(A, 2)));
}

// ---------------------------------------------------------------------------------
// Spec discrepancy: saw must be closed over the causal past (regression)
// ---------------------------------------------------------------------------------

#[test]
fn skipped_ack_is_closed_over_the_causal_past() {
    // B adds D; D adds E. C acks D's add of E but never acks B's add of D, then
    // removes B. By Def. 4, B2 ≺ D2 ≺ C2 ≺ C3, so C had seen B's add of D: the edge
    // B → D is not cancelled, and D and E stay members. Recording saw only for the
    // acked operation (§6.4 (b) literally) gives {A, C, E} incrementally and {A, C}
    // from the reference evaluator.
    let mut ops = base3();
    ops.extend([add(B, 2, D), ack(D, 1, (B, 2)), add(D, 2, E), ack(E, 1, (D, 2)), ack(C, 2, (D, 2))]);
    let mut h = build(&ops);
    assert_eq!(h.saw(&id(B, 2), &C), Some(2));
    assert!(!h.has_acked(&id(B, 2), &C));
    assert_eq!(h.view_of(&C), set(&[A, B, C, D, E]));
    h.apply(rm(C, 3, B)).unwrap();
    assert_consistent(&h, true);
    assert_eq!(h.targets(&id(C, 3)), Some(&set(&[B])));
    assert_eq!(h.view_me(), set(&[A, C, D, E]));
    // A late ack of B2, which C had already seen, is refused (§6.4 (c)): nothing changes.
    let before = h.clone();
    assert_eq!(h.apply(ack(C, 4, (B, 2))), Err(DgmError::AckOfSeenOp { op: id(C, 4), of: id(B, 2) }));
    assert_eq!(h, before);
    assert!(!h.has_acked(&id(B, 2), &C));
    // Every order of this history agrees.
    let mut all = ops.clone();
    all.push(rm(C, 3, B));
    check_all_orders(&all, |h| assert_eq!(h.view_me(), set(&[A, C, D, E])));
}

#[test]
fn initial_member_must_ack_the_create_before_anything_else() {
    // Not in the spec's validity table: an initial member B whose first operation
    // is an add (before its ack of the create). The virtual add of B does not
    // precede B's add by `saw` (saw[create][B] is undefined), so the reference
    // evaluator leaves D out while the incremental state has D as a member, and D
    // inherits nothing of the create. `apply` rejects it.
    let mut h = build(&[create(A, 1, &[B, C]), ack(C, 1, (A, 1))]);
    assert_rejected(&mut h, add(B, 1, D), DgmError::SenderNotJoined { op: id(B, 1) });
    let mut bypass = h.clone();
    bypass.commit(add(B, 1, D));
    assert_eq!(bypass.view_me(), set(&[A, B, C, D]));
    assert_eq!(reference_view(&bypass, None), set(&[A, B, C]));
    assert!(!bypass.seen_by(&D, &id(A, 1)));
    // After its ack of the create, B may add D.
    h.apply(ack(B, 1, (A, 1))).unwrap();
    h.apply(add(B, 2, D)).unwrap();
    assert_consistent(&h, true);
    assert_eq!(h.view_me(), set(&[A, B, C, D]));
}

#[test]
fn before_and_queries() {
    let mut ops = base3();
    ops.extend([add(B, 2, D), ack(D, 1, (B, 2)), ack(A, 2, (B, 2)), rm(A, 3, B)]);
    let h = build(&ops);
    // o ≺ ack-of-o, although saw[o][A] equals the ack's seq (not below it).
    assert_eq!(h.saw(&id(A, 1), &B), Some(1));
    assert!(h.before(&id(A, 1), &id(B, 1)));
    assert!(h.before(&id(B, 2), &id(A, 2)));
    assert!(!h.before(&id(B, 2), &id(B, 1)));
    assert!(!h.before(&id(A, 2), &id(B, 3))); // an ack is never acknowledged in H
    assert!(h.before(&id(A, 1), &id(B, 2)));
    assert!(h.before(&id(B, 2), &id(A, 3)));
    assert!(h.before(&id(B, 2), &id(D, 1)));
    assert!(!h.before(&id(A, 3), &id(B, 2)));
    assert!(!h.before(&id(A, 3), &id(A, 3)));
    assert!(h.before(&id(A, 2), &id(A, 3))); // same sender
    assert_eq!(h.saw(&id(B, 2), &D), Some(0));
    assert_eq!(h.saw(&id(A, 1), &D), Some(0));
    assert_eq!(h.saw(&id(B, 2), &A), Some(2));
    assert_eq!(h.saw(&id(A, 3), &B), None);
    assert!(h.is_create(&id(A, 1)) && h.is_add(&id(B, 2)) && h.is_remove(&id(A, 3)));
    assert!(!h.is_add(&id(A, 2)) && h.kind(&id(A, 2)) == Some(OpKind::Ack));
    assert_eq!(h.target(&id(B, 2)), Some(D));
    assert_eq!(h.target(&id(A, 2)), None);
    assert_eq!(h.adder_of(&D), Some(B));
    assert_eq!(h.adder_of(&C), None);
    assert_eq!(h.addop(&C), Some(&id(A, 1)));
    assert_eq!(h.ever_added(), set(&[A, B, C, D]));
    assert_eq!(h.view_me(), set(&[A, C, D]));
    assert_eq!(h.len(), ops.len());
    assert_eq!(h.ops(), &ops[..]);
    assert_eq!(h.last_seq(&A), Some(3));
    assert_eq!(h.create_id(), Some(&id(A, 1)));
    assert_eq!(h.seen_ops(&D), [id(A, 1), id(B, 2)].into_iter().collect());
    let mut other = build(&ops[..ops.len() - 1]);
    assert!(!other.same_history(&h));
    other.apply(rm(A, 3, B)).unwrap();
    assert!(other.same_history(&h));
}

// ---------------------------------------------------------------------------------
// Compaction (§6.7)
// ---------------------------------------------------------------------------------

#[test]
fn add_remove_cycles_fold_into_a_base_of_the_current_members() {
    // A, B, C; then ten cycles: A adds a newcomer, everyone acks, B removes it, everyone
    // acks, the newcomer says farewell. After each cycle the compacted history holds the
    // three members and nothing else, and gives every answer the full history gives.
    let mut full = build(&base3());
    let mut compact = full.clone();
    let (mut qa, mut qb, mut qc) = (1, 1, 1);
    for i in 0..10u32 {
        let n = 100 + i;
        qa += 1;
        let ops = [add(A, qa, n), ack(n, 1, (A, qa)), ack(B, qb + 1, (A, qa)), ack(C, qc + 1, (A, qa))];
        qb += 2;
        qc += 1;
        let rm_op = rm(B, qb, n);
        let more = [rm_op.clone(), ack(A, qa + 1, (B, qb)), ack(C, qc + 1, (B, qb))];
        qa += 1;
        qc += 1;
        for op in ops.into_iter().chain(more) {
            full.apply(op.clone()).unwrap();
            compact.apply(op).unwrap();
        }
        compact.depart(&n);
        let c = compact.compact();
        assert!(c.folded >= 2, "cycle {i}: {c:?}");
        assert_eq!(c.forgotten, vec![n], "cycle {i}");
        assert_eq!(compact.view_me(), set(&[A, B, C]));
        assert_eq!(full.view_me(), compact.view_me());
        for x in [A, B, C] {
            assert_eq!(full.view_of(&x), compact.view_of(&x));
        }
        assert_eq!(compact.len(), 0, "cycle {i}: {:?}", compact.folded());
        assert_eq!(compact.ever_added(), set(&[A, B, C]));
        assert_eq!(History::rebuilt(compact.folded()).unwrap(), compact);
    }
    assert_eq!(full.len(), 3 + 10 * 7);
    // The base keeps each member's last sequence number; a canonical base has none of 0.
    let mut f = compact.folded();
    assert_eq!(f.last_seq.get(&A), Some(&qa));
    assert_eq!(History::check_canonical(&f), Ok(()));
    f.last_seq.insert(A, 0);
    assert!(History::check_canonical(&f).is_err());
    // A second ack of a folded operation is refused, as the full history refuses it.
    let late = ack(C, qc + 1, (A, 2));
    assert!(matches!(full.apply(late.clone()), Err(DgmError::DuplicateAck { .. })));
    assert!(matches!(compact.apply(late), Err(DgmError::UnknownOp { .. })));
}

#[test]
fn a_removed_member_that_has_not_said_farewell_holds_compaction_back() {
    // B removes C; A acks; C never processes it. C's late add must still be judged as the
    // full history judges it, so nothing C has not seen is folded.
    let mut ops = base3();
    ops.extend([rm(B, 2, C), ack(A, 2, (B, 2))]);
    let mut h = build(&ops);
    let c = h.compact();
    assert_eq!(h.unfolded_len(), 1, "only the create folds: {c:?}");
    h.apply(add(C, 2, D)).unwrap();
    assert!(!h.view_me().contains(&D), "C's late add is cancelled at once");
    assert_eq!(h.removed_by(&D), vec![id(B, 2)]);
    // Once C says farewell (and D, whose add it cancelled), everything folds.
    h.apply(ack(A, 3, (C, 2))).unwrap();
    h.apply(ack(B, 3, (C, 2))).unwrap();
    h.depart(&C);
    h.depart(&D);
    h.compact();
    assert_eq!(h.unfolded_len(), 0, "{:?}", h.folded());
    assert_eq!(h.ever_added(), set(&[A, B]));
    assert_eq!(h.view_me(), set(&[A, B]));
}
