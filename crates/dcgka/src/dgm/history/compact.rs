//! Compaction of the membership history (§6.7): folding the operations that every member
//! who can still send has seen into a compact base, so that `H`, its snapshot and a
//! Welcome scale with the group and the operations in flight, not with the group's age.
//!
//! # The rule
//!
//! Call a member **live** when it may still send something this history must process:
//! every ever-added member that has not [departed](History::depart) (said farewell, §7.5,
//! or been retired by the caller). The fold point `P` is the longest prefix of the
//! membership operations (creates, adds, removes, in processing order) such that
//! 1. every live member has seen all of it (`P ≤ frontier(m)`);
//! 2. every live member has acknowledged its own add, if that add is in the prefix (a
//!    newcomer inherits its add before acking it, and that ack must still be accepted);
//! 3. every remove left after the prefix had all of the prefix in its causal past (a
//!    remove concurrent with a folded operation would be judged differently by a replay
//!    that counts folded operations as seen by everyone).
//!
//! Operations in the prefix are dropped with their `saw` rows and every ack of them; a
//! member removed by a folded remove that no remaining operation names is forgotten.
//!
//! # Why no view changes
//!
//! Everything a live member sends from now on has the whole prefix in its causal past
//! (FIFO: a member's later operations follow what it has seen), and so has everything a
//! member it adds will send (the newcomer inherits its adder's past). So for any
//! operation that can still arrive, "has its sender seen `o`?" is *yes* for every folded
//! `o`, which is what [`History::saw`] answers for them. The other questions about folded
//! operations have fixed answers too:
//! - a member removed by a folded remove was seen removed by every live member, so no live
//!   member can remove it again (V3) and no cascade passes through it;
//! - an add in the prefix was seen by every live member, so no later remove cancels it;
//! - an ack of a folded operation would come from a member that has seen it: refused
//!   either way ([`super::DgmError::AckOfSeenOp`] before compaction, `UnknownOp` after),
//!   except a newcomer's ack of its own add, which rule 2 keeps.
//!
//! The compacted history is *defined* as the replay of its base and its remaining
//! operations ([`History::rebuilt`]); snapshots and Welcomes carry exactly that.

use std::collections::{BTreeMap, BTreeSet};

use core::fmt::Debug;

use super::{History, Member};
use crate::dgm::{DgmError, Op, OpId};

/// One member of the compact base: a member whose add is folded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseMember<M> {
    /// The member.
    pub id: M,
    /// The operation that added it (folded; the create for initial members).
    pub addop: OpId<M>,
    /// Who added it (`None` for initial members).
    pub adder: Option<M>,
    /// The folded removes that remove or cancel it, in processing order (empty for a
    /// member that is still in the group as of the base).
    pub removed_by: Vec<OpId<M>>,
}

/// The compact base and the remaining operations of a history: what a snapshot and a
/// Welcome carry, and what [`History::rebuilt`] replays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Folded<M> {
    /// The create, once folded.
    pub create: Option<OpId<M>>,
    /// The members whose add is folded.
    pub members: Vec<BaseMember<M>>,
    /// The remaining operations, in processing order.
    pub ops: Vec<Op<M>>,
    /// The highest sequence number of each kept member whose last operation was folded
    /// away (only where the remaining operations show a lower one, or none).
    pub last_seq: BTreeMap<M, u64>,
    /// The kept members that departed.
    pub departed: BTreeSet<M>,
}

/// What one [`History::compact`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compaction<M> {
    /// How many creates, adds and removes were folded.
    pub folded: usize,
    /// How many operations the history held before and after.
    pub ops_before: usize,
    /// See `ops_before`.
    pub ops_after: usize,
    /// The members forgotten: removed by a folded remove, named by no remaining operation.
    /// The caller may forget them too (identity keys, tags, ordering state).
    pub forgotten: Vec<M>,
}

impl<M> Compaction<M> {
    fn none(ops: usize) -> Self {
        Compaction { folded: 0, ops_before: ops, ops_after: ops, forgotten: Vec::new() }
    }
}

impl<M: Ord + Clone + Debug> History<M> {
    /// Marks `m` as departed: it will send nothing more that this history must process
    /// (it said farewell after its removal, §7.5, or the caller retired it). Departed
    /// members do not hold compaction back. The caller must drop anything `m` sends
    /// afterwards.
    pub fn depart(&mut self, m: &M) {
        if self.members.contains_key(m) {
            self.departed.insert(m.clone());
        }
    }

    /// How many members departed ([`History::depart`]) and are still known.
    pub fn departed_count(&self) -> usize {
        self.departed.len()
    }

    /// Whether `m` departed ([`History::depart`]).
    pub fn departed(&self, m: &M) -> bool {
        self.departed.contains(m)
    }

    /// The members that may still send something to process: ever added, not departed.
    pub fn live_members(&self) -> impl Iterator<Item = &M> {
        self.members.keys().filter(|m| !self.departed.contains(*m))
    }

    /// How many creates, adds and removes are not folded.
    pub fn unfolded_len(&self) -> usize {
        self.mops.len()
    }

    /// The fold point `P`: how many of the first membership operations may be folded
    /// (rules 1–3 of the module documentation).
    pub fn fold_point(&self) -> usize {
        let mut p = self.mops.len();
        for (m, r) in self.members.iter().filter(|(m, _)| !self.departed.contains(*m)) {
            p = p.min(r.frontier);
            // Rule 2: a newcomer that has not acked its own add yet.
            let a = &r.addop;
            if a.sender != *m
                && !self.folded.contains(a)
                && !self.acks.contains(&(a.clone(), m.clone()))
                && let Some(&pos) = self.mpos.get(a)
            {
                p = p.min(pos);
            }
        }
        // Rule 3: every remove after the prefix has the prefix in its causal past.
        loop {
            let cut = self
                .mops
                .iter()
                .enumerate()
                .skip(p)
                .filter(|(_, o)| self.targets.contains_key(*o))
                .map(|(i, r)| self.causal_cut(r, i))
                .min()
                .unwrap_or(p);
            if cut >= p {
                return p;
            }
            p = cut;
        }
    }

    /// The first position before `pos` (the position of `r`) whose operation is not in
    /// `r`'s causal past; `pos` if all are.
    fn causal_cut(&self, r: &OpId<M>, pos: usize) -> usize {
        self.mops
            .iter()
            .take(pos)
            .position(|o| self.saw(o, &r.sender).is_none_or(|s| s >= r.seq))
            .unwrap_or(pos)
    }

    /// The base and remaining operations after folding the first `p` membership
    /// operations, and the members that folding forgets.
    pub fn folded_at(&self, p: usize) -> (Folded<M>, Vec<M>) {
        self.folded_keeping(p, &|_| false)
    }

    /// [`History::folded_at`], keeping every member for which `keep` holds even if it
    /// could be forgotten (the caller still needs it, for example to accept acks of its
    /// updates, which `H` does not hold).
    pub fn folded_keeping(&self, p: usize, keep: &dyn Fn(&M) -> bool) -> (Folded<M>, Vec<M>) {
        let p = p.min(self.mops.len());
        let now: BTreeSet<&OpId<M>> = self.mops.iter().take(p).collect();
        let is_folded = |o: &OpId<M>| now.contains(o) || self.folded.contains(o);
        let ops: Vec<Op<M>> = self
            .ops
            .iter()
            .filter(|op| match op {
                Op::Ack { of, .. } => !is_folded(of),
                _ => !is_folded(&op.id()),
            })
            .cloned()
            .collect();
        let mut named: BTreeSet<&M> = BTreeSet::new();
        for op in &ops {
            named.insert(op.sender());
            match op {
                Op::Create { members, .. } => named.extend(members),
                Op::Add { target, .. } | Op::Remove { target, .. } => {
                    named.insert(target);
                }
                Op::Ack { of, .. } => {
                    named.insert(&of.sender);
                }
            }
        }
        let mut members = Vec::new();
        let mut forgotten = Vec::new();
        for (u, m) in &self.members {
            let removed_by: Vec<OpId<M>> = m.removes.iter().filter(|r| is_folded(r)).cloned().collect();
            if !removed_by.is_empty() && !named.contains(u) && !keep(u) {
                forgotten.push(u.clone());
            } else if is_folded(&m.addop) {
                members.push(BaseMember { id: u.clone(), addop: m.addop.clone(), adder: m.adder.clone(), removed_by });
            }
        }
        let kept = |u: &M| !forgotten.contains(u);
        // Only what the remaining operations do not show (canonical: nothing redundant).
        let shown = log_last_seq(&ops);
        let last_seq = self
            .members
            .iter()
            .filter(|(u, m)| m.last_seq > 0 && kept(u) && shown.get(*u).is_none_or(|q| *q < m.last_seq))
            .map(|(u, m)| (u.clone(), m.last_seq))
            .collect();
        let folded = Folded {
            create: self.create.clone().filter(|c| is_folded(c)),
            members,
            ops,
            last_seq,
            departed: self.departed.iter().filter(|u| kept(u)).cloned().collect(),
        };
        (folded, forgotten)
    }

    /// The base and remaining operations of this history as it is (nothing more folded,
    /// nobody forgotten).
    pub fn folded(&self) -> Folded<M> {
        self.folded_keeping(0, &|_| true).0
    }

    /// Folds everything [`History::fold_point`] allows. The views, and the answer to every
    /// question about an operation that can still arrive, stay the same (module
    /// documentation). If the replay of the result were refused — which would be a bug —
    /// the history is left as it was and nothing is reported folded.
    pub fn compact(&mut self) -> Compaction<M> {
        self.compact_keeping(&|_| false)
    }

    /// [`History::compact`], forgetting no member for which `keep` holds.
    pub fn compact_keeping(&mut self, keep: &dyn Fn(&M) -> bool) -> Compaction<M> {
        let ops_before = self.ops.len();
        let p = self.fold_point();
        if p == 0 && self.forgettable(keep).is_empty() {
            return Compaction::none(ops_before);
        }
        let (folded, forgotten) = self.folded_keeping(p, keep);
        match History::rebuilt(folded) {
            Ok(h) => {
                *self = h;
                Compaction { folded: p, ops_before, ops_after: self.ops.len(), forgotten }
            }
            Err(_) => {
                debug_assert!(false, "a compacted history does not replay");
                Compaction::none(ops_before)
            }
        }
    }

    /// Rebuilds a history from its base and remaining operations (what
    /// [`History::folded`] returns). Every operation is checked as by
    /// [`History::apply`]; a base that names a member twice, or operations the base does
    /// not support, are refused.
    pub fn rebuilt(f: Folded<M>) -> Result<Self, DgmError<M>> {
        let mut h = History::new();
        if let Some(c) = &f.create {
            h.create = Some(c.clone());
            h.folded.insert(c.clone());
        }
        let mut named = BTreeSet::new();
        for b in &f.members {
            if !named.insert(&b.id) || h.create.is_none() {
                return Err(DgmError::InvalidBase { member: b.id.clone() });
            }
        }
        drop(named);
        // Collected at once (the base is sorted): full nodes, unlike inserting one by one.
        h.members = f
            .members
            .into_iter()
            .map(|b| {
                h.folded.insert(b.addop.clone());
                h.folded.extend(b.removed_by.iter().cloned());
                (b.id, Member::new(b.addop, b.adder, b.removed_by, 0))
            })
            .collect();
        for op in f.ops {
            h.apply(op)?;
        }
        for (u, s) in f.last_seq {
            if let Some(m) = h.members.get_mut(&u) {
                m.last_seq = m.last_seq.max(s);
            }
        }
        for u in f.departed {
            h.depart(&u);
        }
        Ok(h)
    }

    /// The members a compaction at the current fold would forget that are not forgotten
    /// yet (kept earlier by `keep`, which may have changed since).
    fn forgettable(&self, keep: &dyn Fn(&M) -> bool) -> Vec<M> {
        self.members
            .iter()
            .filter(|(u, m)| !keep(u) && m.removes.iter().any(|r| self.folded.contains(r)))
            .map(|(u, _)| u.clone())
            .collect()
    }

    /// Checks that a decoded base and log are canonical, as [`History::folded`] writes
    /// them: base members in ascending order, and every sequence number of `last_seq` at
    /// least 1 and above what the log shows for its member. Returns the reason otherwise.
    pub fn check_canonical(f: &Folded<M>) -> Result<(), &'static str> {
        if !f.members.windows(2).all(|w| w[0].id < w[1].id) {
            return Err("compact base members out of order");
        }
        let shown = log_last_seq(&f.ops);
        if f.last_seq.iter().any(|(u, s)| shown.get(u).is_some_and(|q| q >= s)) {
            return Err("a sequence number the log already shows");
        }
        // Sequence numbers start at 1: a member with none has no entry.
        if f.last_seq.values().any(|s| *s == 0) {
            return Err("a sequence number 0");
        }
        Ok(())
    }

    /// Whether anything has been folded.
    pub fn is_compacted(&self) -> bool {
        !self.folded.is_empty()
    }
}

/// Each sender's highest sequence number among `ops`.
fn log_last_seq<M: Ord + Clone>(ops: &[Op<M>]) -> BTreeMap<M, u64> {
    let mut m: BTreeMap<M, u64> = BTreeMap::new();
    for op in ops {
        let e = m.entry(op.sender().clone()).or_insert(0);
        *e = (*e).max(op.seq());
    }
    m
}
