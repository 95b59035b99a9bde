//! The reference evaluator of spec §6.4 (a): Def. 6 evaluated literally, from scratch.
//! It is the test oracle for the incremental [`History`] and the basis of
//! [`History::follows_own_removal_reference`].

use core::fmt::Debug;
use std::collections::{BTreeMap, BTreeSet};

use super::{History, Op, OpId};

/// The reference evaluator of §6.4 (a), normative for Def. 6: `SR-DGM(H)` when `viewer`
/// is `None`, and `SR-DGM(seen(H, viewer))` otherwise.
///
/// It rebuilds the add graph from scratch on every call; [`History::view_me`] and
/// [`History::view_of`] give the same answers incrementally.
pub fn reference_view<M: Ord + Clone + Debug>(history: &History<M>, viewer: Option<&M>) -> BTreeSet<M> {
    match viewer {
        None => sr_dgm(history, |_| true),
        Some(v) => sr_dgm(history, |o| history.seen_by(v, o)),
    }
}

/// The reference evaluator of §6.4 (a) over an arbitrary causally closed subset `ops` of
/// `H` (IDs of acks, or of operations not in `H`, are ignored). The causal order between
/// the chosen operations is read from the whole history's `saw` table.
pub fn reference_view_subset<M: Ord + Clone + Debug>(history: &History<M>, ops: &BTreeSet<OpId<M>>) -> BTreeSet<M> {
    sr_dgm(history, |o| ops.contains(o))
}

/// Def. 6 over the membership operations of `h` selected by `include`.
fn sr_dgm<M: Ord + Clone + Debug>(h: &History<M>, include: impl Fn(&OpId<M>) -> bool) -> BTreeSet<M> {
    let Some(create_id) = h.create_id().filter(|c| include(c)) else {
        return BTreeSet::new();
    };
    // The chosen adds, by sender, and the chosen removes, by target.
    let mut adds_by_sender: BTreeMap<&M, Vec<(OpId<M>, &M)>> = BTreeMap::new();
    let mut removes_of: BTreeMap<&M, Vec<OpId<M>>> = BTreeMap::new();
    let mut virtual_adds: Vec<(OpId<M>, &M)> = Vec::new();
    for op in h.ops() {
        match op {
            Op::Create { sender, members, .. } => {
                // Line 4: the create becomes the virtual adds a0 ≺ a1 ≺ … ≺ an, which
                // precede every other operation; their "before" is the create's.
                for u in core::iter::once(sender).chain(members) {
                    virtual_adds.push((create_id.clone(), u));
                }
            }
            Op::Add { sender, target, .. } if include(&op.id()) => {
                adds_by_sender.entry(sender).or_default().push((op.id(), target));
            }
            Op::Remove { target, .. } if include(&op.id()) => {
                removes_of.entry(target).or_default().push(op.id());
            }
            _ => {}
        }
    }
    let no_removes = Vec::new();
    let removes = |u: &M| removes_of.get(u).unwrap_or(&no_removes);
    // Line 3: the edge a1 → a2 (a1 adds u, a2 sent by u) is cut by a remove of u that a1
    // precedes and a2 does not.
    let cut =
        |a1: &OpId<M>, u: &M, a2: &OpId<M>| removes(u).iter().any(|r| h.saw_before(a1, r) && !h.saw_before(a2, r));
    // Line 5: reachability from the virtual adds in G_cancel.
    let mut reached: BTreeSet<(OpId<M>, &M)> = virtual_adds.iter().cloned().collect();
    let mut work = virtual_adds;
    while let Some((a1, u)) = work.pop() {
        for (a2, t2) in adds_by_sender.get(u).into_iter().flatten() {
            let vertex = (a2.clone(), *t2);
            if reached.contains(&vertex) {
                continue;
            }
            if h.saw_before(&a1, a2) && !cut(&a1, u, a2) {
                reached.insert(vertex.clone());
                work.push(vertex);
            }
        }
    }
    // Line 6: reached, and not removed by a remove that the add precedes.
    reached.iter().filter(|(a, u)| !removes(u).iter().any(|r| h.saw_before(a, r))).map(|(_, u)| (*u).clone()).collect()
}
