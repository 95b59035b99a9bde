//! Unit tests of the SR-DGM: builders and checkers shared by the test files, which
//! check the incremental [`History`] against the reference evaluator.
//!
//! - `histories`: explicit histories (§6.5 conflicts in every causally consistent
//!   processing order, error paths, the post-removal rule, regressions, queries);
//! - `scenarios`: the §10 scenarios, run on the DGM-level network of `net`;
//! - `properties`: random protocol runs on that network (seeded and `proptest`).

mod histories;
mod net;
mod properties;
mod scenarios;

use std::collections::{BTreeMap, BTreeSet};

use super::*;

type Id = u32;
const A: Id = 1;
const B: Id = 2;
const C: Id = 3;
const D: Id = 4;
const E: Id = 5;
const O: Id = 9;
/// An ID that is never added, to query views of strangers.
const STRANGER: Id = 999;

// ---------------------------------------------------------------------------------
// Builders and checkers
// ---------------------------------------------------------------------------------

fn id(s: Id, q: u64) -> OpId<Id> {
    OpId::new(s, q)
}
fn create(s: Id, q: u64, members: &[Id]) -> Op<Id> {
    Op::Create { sender: s, seq: q, members: members.to_vec() }
}
fn add(s: Id, q: u64, t: Id) -> Op<Id> {
    Op::Add { sender: s, seq: q, target: t }
}
fn rm(s: Id, q: u64, t: Id) -> Op<Id> {
    Op::Remove { sender: s, seq: q, target: t }
}
fn ack(s: Id, q: u64, of: (Id, u64)) -> Op<Id> {
    Op::Ack { sender: s, seq: q, of: id(of.0, of.1) }
}
fn set(xs: &[Id]) -> BTreeSet<Id> {
    xs.iter().copied().collect()
}
fn build(ops: &[Op<Id>]) -> History<Id> {
    let mut h = History::new();
    for op in ops {
        h.apply(op.clone()).unwrap();
        assert_consistent(&h, true);
    }
    h
}

/// The SR-DGM state as sets, which must not depend on processing order.
type Derived = (
    BTreeMap<Id, OpId<Id>>,
    BTreeMap<Id, Option<Id>>,
    BTreeMap<Id, BTreeSet<OpId<Id>>>,
    BTreeMap<OpId<Id>, BTreeSet<Id>>,
    BTreeSet<(OpId<Id>, Id)>,
);
fn derived(h: &History<Id>) -> Derived {
    (
        h.addop_table(),
        h.adder_table(),
        h.removes_table().into_iter().map(|(u, rs)| (u, rs.into_iter().collect())).collect(),
        h.targets.clone(),
        h.acks.clone(),
    )
}

/// Incremental views equal the reference evaluator, for `me` and for every viewer;
/// `removes` and `targets` mirror each other; with `deep`, every `seen` set is also
/// causally closed.
fn assert_consistent(h: &History<Id>, deep: bool) {
    let me = h.view_me();
    assert_eq!(me, reference_view(h, None), "view_me, history {:?}", h.ops());
    let mut viewers = h.ever_added();
    viewers.insert(STRANGER);
    for x in &viewers {
        assert_eq!(h.view_of(x), reference_view(h, Some(x)), "view_of({x}), history {:?}", h.ops());
    }
    for (r, ts) in &h.targets {
        for t in ts {
            assert!(h.removed_by(t).contains(r), "{t} in targets({r:?})");
        }
    }
    for (u, rs) in &h.removes_table() {
        for r in rs {
            assert!(h.targets[r].contains(u), "{r:?} in removes({u})");
        }
    }
    if deep {
        let all: BTreeSet<OpId<Id>> = h.saw.keys().cloned().collect();
        assert_eq!(reference_view_subset(h, &all), me);
        for x in &viewers {
            for o in h.seen_ops(x) {
                for o2 in h.saw.keys() {
                    if h.before(o2, &o) {
                        assert!(h.seen_by(x, o2), "seen({x}) not closed: {o2:?} ≺ {o:?}");
                    }
                }
            }
        }
    }
}

/// For each operation, the operations that must be processed before it: the same
/// sender's earlier ones and, for an ack, the acknowledged operation.
fn deps(ops: &[Op<Id>]) -> Vec<Vec<usize>> {
    let pos: BTreeMap<OpId<Id>, usize> = ops.iter().enumerate().map(|(i, o)| (o.id(), i)).collect();
    ops.iter()
        .map(|o| {
            let mut d: Vec<usize> = ops
                .iter()
                .enumerate()
                .filter(|(_, p)| p.sender() == o.sender() && p.seq() < o.seq())
                .map(|(j, _)| j)
                .collect();
            if let Op::Ack { of, .. } = o {
                d.push(pos[of]);
            }
            d
        })
        .collect()
}

/// Every causally consistent processing order of `ops` (per-sender FIFO, an ack only
/// after what it acknowledges), at most `limit` of them.
fn orders(ops: &[Op<Id>], limit: usize) -> Vec<Vec<usize>> {
    fn rec(deps: &[Vec<usize>], done: &mut Vec<bool>, cur: &mut Vec<usize>, out: &mut Vec<Vec<usize>>, limit: usize) {
        if out.len() >= limit {
            return;
        }
        if cur.len() == deps.len() {
            out.push(cur.clone());
            return;
        }
        for i in 0..deps.len() {
            if !done[i] && deps[i].iter().all(|&j| done[j]) {
                done[i] = true;
                cur.push(i);
                rec(deps, done, cur, out, limit);
                cur.pop();
                done[i] = false;
            }
        }
    }
    let deps = deps(ops);
    let mut out = Vec::new();
    rec(&deps, &mut vec![false; ops.len()], &mut Vec::new(), &mut out, limit);
    out
}

/// A small deterministic generator for the seeded runs.
fn xorshift(state: &mut u64) -> u32 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state >> 16) as u32
}

/// `k` random causally consistent processing orders of `ops`.
fn sampled_orders(ops: &[Op<Id>], k: usize, seed: u64) -> Vec<Vec<usize>> {
    let deps = deps(ops);
    let mut state = seed | 1;
    (0..k)
        .map(|_| {
            let mut done = vec![false; ops.len()];
            let mut order = Vec::new();
            while order.len() < ops.len() {
                let ready: Vec<usize> =
                    (0..ops.len()).filter(|&i| !done[i] && deps[i].iter().all(|&j| done[j])).collect();
                let i = ready[xorshift(&mut state) as usize % ready.len()];
                done[i] = true;
                order.push(i);
            }
            order
        })
        .collect()
}

/// Applies `ops` in each of `orders`, checking the incremental views against the
/// reference after every step, that every order ends in the same history and SR-DGM
/// state, and `expect` on the final history.
fn check_orders(ops: &[Op<Id>], orders: &[Vec<usize>], expect: impl Fn(&History<Id>)) {
    let mut first: Option<History<Id>> = None;
    for order in orders {
        let mut h = History::new();
        for &i in order {
            h.apply(ops[i].clone()).unwrap_or_else(|e| panic!("order {order:?}: {e}"));
            assert_consistent(&h, false);
        }
        assert_consistent(&h, true);
        expect(&h);
        match &first {
            Some(f) => {
                assert!(f.same_history(&h), "order {order:?}");
                assert_eq!(derived(f), derived(&h), "order {order:?}");
                assert_eq!(f.view_me(), h.view_me());
            }
            None => first = Some(h),
        }
    }
}

/// [`check_orders`] over **every** causally consistent order; returns their number.
fn check_all_orders(ops: &[Op<Id>], expect: impl Fn(&History<Id>)) -> usize {
    const LIMIT: usize = 200_000;
    let all = orders(ops, LIMIT);
    assert!(all.len() < LIMIT, "too many orders to enumerate");
    check_orders(ops, &all, expect);
    all.len()
}
