//! The incremental SR-DGM evaluator of spec §6.4 (b): the membership history [`History`],
//! its validity checks, views, causal-order queries and snapshot encoding.

use core::fmt::Debug;
use std::collections::{BTreeMap, BTreeSet};

use crate::codec::DecodeError;
use crate::snapshot::{SnapshotError, StateReader, StateWriter};

use super::reference::reference_view_subset;
use super::{DgmError, Op, OpId, OpKind};

mod compact;
pub use compact::{BaseMember, Compaction, Folded};

/// The membership history `H` of one group at one member, with the incremental SR-DGM
/// state of spec §6.4 (b).
///
/// The history does not know which member holds it: [`History::view_me`] is the view of
/// whoever has processed all of it. `PartialEq` compares the complete state, processing
/// order included; [`History::same_history`] compares only the operation set and the
/// `saw` entries (§10, oracle 5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History<M> {
    // The tables the tests inspect are `pub(super)`; only the methods below change them.
    /// All operations, in processing order.
    ops: Vec<Op<M>>,
    /// Operation ID → position in `ops`.
    index: BTreeMap<OpId<M>, usize>,
    /// The create, once applied.
    create: Option<OpId<M>>,
    /// Every ever-added ID with what `H` says about it ([`Member`]): one record per member,
    /// so that a group of n members costs n entries here, not n in each of seven tables.
    members: BTreeMap<M, Member<M>>,
    /// `targets(r)`: the IDs each remove removes or cancels.
    pub(super) targets: BTreeMap<OpId<M>, BTreeSet<M>>,
    /// `saw[o][A]` for every create, add and remove `o`: the entries set explicitly (a
    /// sender's own operation, an ack, an inheritance past the adder's frontier). The
    /// inherited entries of a prefix of `mops` are implicit (`inherited`); read `saw` through
    /// [`History::saw`].
    pub(super) saw: BTreeMap<OpId<M>, BTreeMap<M, u64>>,
    /// `(o, A)` for every ack recorded in `ops` (as opposed to inherited or implied
    /// knowledge).
    pub(super) acks: BTreeSet<(OpId<M>, M)>,
    /// The creates, adds and removes in processing order, and each one's position in it.
    mops: Vec<OpId<M>>,
    mpos: BTreeMap<OpId<M>, usize>,
    /// Members that will send nothing more to process: removed members that said farewell
    /// (§7.5), or that the caller retired. They no longer hold compaction back.
    departed: BTreeSet<M>,
    /// The operations folded into the compact base that are still named somewhere (the
    /// create, the adds of members kept, the removes of kept members): every member that
    /// can still send has seen them (see [`History::compact`]).
    folded: BTreeSet<OpId<M>>,
}

/// What `H` says about one ever-added ID (the per-member state of §6.4 (b)).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Member<M> {
    /// `addop(ID)`: the operation that added it (the create for initial members).
    addop: OpId<M>,
    /// `adder(ID)`: `None` for initial members.
    adder: Option<M>,
    /// The IDs it added (the inverse of `adder`), in processing order. Not kept for adds
    /// folded into the compact base: no remove can cancel those any more.
    children: Vec<M>,
    /// `removes(ID)`: the removes that remove or cancel it, in processing order. Empty for
    /// current members.
    removes: Vec<OpId<M>>,
    /// Its highest sequence number in `H` (kept across compaction); 0 for none (sequence
    /// numbers start at 1).
    last_seq: u64,
    /// The length of the prefix of `mops` it inherited from its adder: `saw[o][ID] = 0` for
    /// every `o` in that prefix without an explicit entry (0 for initial members). An add
    /// costs O(1) here instead of one entry per operation.
    inherited: usize,
    /// The first position in `mops` it has not seen: it has seen everything before.
    /// Recording an ack scans `mops` from there, so it costs O(what the acker had not seen,
    /// and what followed), and an add or remove touches no other member.
    frontier: usize,
}

impl<M> Member<M> {
    /// A member added by `addop` (from `adder`), that inherited the first `inherited`
    /// membership operations and has seen nothing else yet.
    fn new(addop: OpId<M>, adder: Option<M>, removes: Vec<OpId<M>>, inherited: usize) -> Self {
        Member { addop, adder, children: Vec::new(), removes, last_seq: 0, inherited, frontier: inherited }
    }
}

impl<M: Ord + Clone + Debug> Default for History<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M: Ord + Clone + Debug> History<M> {
    /// An empty history (before the create).
    pub fn new() -> Self {
        Self {
            ops: Vec::new(),
            index: BTreeMap::new(),
            create: None,
            members: BTreeMap::new(),
            targets: BTreeMap::new(),
            saw: BTreeMap::new(),
            acks: BTreeSet::new(),
            mops: Vec::new(),
            mpos: BTreeMap::new(),
            departed: BTreeSet::new(),
            folded: BTreeSet::new(),
        }
    }

    // ----------------------------------------------------------------------------------
    // Applying operations
    // ----------------------------------------------------------------------------------

    /// Applies one operation (§6.4 (b)).
    ///
    /// The caller delivers operations in a causally consistent order (per-sender FIFO,
    /// and an ack only after what it acknowledges); this is checked as far as `H` allows.
    /// On error nothing changes.
    pub fn apply(&mut self, op: Op<M>) -> Result<(), DgmError<M>> {
        self.check(&op)?;
        self.commit(op);
        Ok(())
    }

    /// Every validity check of [`History::apply`], without changing anything.
    pub fn check(&self, op: &Op<M>) -> Result<(), DgmError<M>> {
        let id = op.id();
        if id.seq == 0 {
            return Err(DgmError::ZeroSeq { op: id });
        }
        if self.index.contains_key(&id) {
            return Err(DgmError::DuplicateOp { op: id });
        }
        if let Some(last) = self.last_seq(&id.sender)
            && id.seq <= last
        {
            return Err(DgmError::SeqNotIncreasing { op: id, last });
        }
        if let Op::Create { sender, members, .. } = op {
            if self.create.is_some() {
                return Err(DgmError::SecondCreate { op: id });
            }
            if members.contains(sender) {
                return Err(DgmError::CreatorListed { op: id });
            }
            let mut distinct = BTreeSet::new();
            for m in members {
                if !distinct.insert(m) {
                    return Err(DgmError::DuplicateInitialMember { op: id, member: m.clone() });
                }
            }
            return Ok(());
        }
        if self.create.is_none() {
            return Err(DgmError::NoCreate { op: id });
        }
        let sender = &id.sender;
        let Some(own_add) = self.addop(sender) else {
            return Err(DgmError::UnknownSender { op: id });
        };
        let acks_own_add = matches!(op, Op::Ack { of, .. } if of == own_add);
        if !acks_own_add && !self.seen_by(sender, own_add) {
            return Err(DgmError::SenderNotJoined { op: id });
        }
        match op {
            Op::Create { .. } => Ok(()), // handled above
            Op::Add { target, .. } => {
                if target == sender {
                    Err(DgmError::SelfAdd { op: id })
                } else if self.members.contains_key(target) {
                    Err(DgmError::AlreadyAdded { op: id, target: target.clone() })
                } else {
                    Ok(())
                }
            }
            Op::Remove { target, .. } => {
                if target == sender {
                    Err(DgmError::SelfRemove { op: id })
                } else if !self.members.contains_key(target) {
                    Err(DgmError::UnknownTarget { op: id, target: target.clone() })
                } else if !self.in_view_of(target, sender) {
                    Err(DgmError::TargetNotInView { op: id, target: target.clone() })
                } else {
                    Ok(())
                }
            }
            Op::Ack { of, .. } => {
                if &of.sender == sender {
                    Err(DgmError::AckOfOwnOp { op: id })
                } else if !self.index.contains_key(of) {
                    Err(DgmError::UnknownOp { op: id, of: of.clone() })
                } else if !self.saw.contains_key(of) {
                    Err(DgmError::NotMembershipOp { op: id, of: of.clone() })
                } else if self.acks.contains(&(of.clone(), sender.clone())) {
                    Err(DgmError::DuplicateAck { op: id, of: of.clone() })
                } else if !acks_own_add && self.seen_by(sender, of) {
                    // An honest member acks what it processes, when it processes it; it has
                    // seen nothing before acking it but its own add (inherited). Refusing
                    // this ack is what makes compaction invisible (`compact`).
                    Err(DgmError::AckOfSeenOp { op: id, of: of.clone() })
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Applies an operation that [`History::check`] accepted. Infallible.
    pub(super) fn commit(&mut self, op: Op<M>) {
        let id = op.id();
        match &op {
            Op::Create { sender, members, .. } => {
                for u in core::iter::once(sender).chain(members) {
                    self.members.insert(u.clone(), Member::new(id.clone(), None, Vec::new(), 0));
                }
                self.saw.insert(id.clone(), BTreeMap::from([(sender.clone(), id.seq)]));
                self.create = Some(id.clone());
                self.push_membership_op(&id);
                self.advance_frontier(sender);
            }
            Op::Add { sender, target, .. } => {
                if let Some(s) = self.members.get_mut(sender) {
                    s.children.push(target.clone());
                }
                self.saw.insert(id.clone(), BTreeMap::from([(sender.clone(), id.seq)]));
                self.push_membership_op(&id);
                self.advance_frontier(sender);
                // The target inherits everything its adder had seen up to and including
                // this add: {o | saw[o][S] <= q}, with value 0 (every entry of S is at most
                // q here). The prefix before S's frontier implicitly; S's entries past it
                // explicitly.
                let start = self.members.get(sender).map_or(0, |s| s.frontier);
                let past: Vec<OpId<M>> =
                    self.mops.get(start..).unwrap_or(&[]).iter().filter(|o| self.seen_by(sender, o)).cloned().collect();
                for o in past {
                    if let Some(row) = self.saw.get_mut(&o) {
                        row.entry(target.clone()).or_insert(0);
                    }
                }
                // An add by an already removed or cancelled member is cancelled at once.
                let inherited = self.removed_by(sender);
                for r in &inherited {
                    if let Some(t) = self.targets.get_mut(r) {
                        t.insert(target.clone());
                    }
                }
                self.members.insert(target.clone(), Member::new(id.clone(), Some(sender.clone()), inherited, start));
                self.advance_frontier(target);
            }
            Op::Remove { sender, target, .. } => {
                self.saw.insert(id.clone(), BTreeMap::from([(sender.clone(), id.seq)]));
                self.push_membership_op(&id);
                self.advance_frontier(sender);
                let mut targets = BTreeSet::from([target.clone()]);
                let mut cancelled = Vec::new();
                // Cascade to a fixpoint: every addition by a removed or cancelled member
                // that the remover had not seen is cancelled.
                let mut work = vec![target.clone()];
                while let Some(v) = work.pop() {
                    for u in self.members.get(&v).into_iter().flat_map(|m| &m.children) {
                        if targets.contains(u) {
                            continue;
                        }
                        let seen = self.addop(u).is_some_and(|a| self.seen_by(sender, a));
                        if !seen {
                            targets.insert(u.clone());
                            cancelled.push(u.clone());
                            work.push(u.clone());
                        }
                    }
                }
                for u in core::iter::once(target).chain(&cancelled) {
                    if let Some(m) = self.members.get_mut(u) {
                        m.removes.push(id.clone());
                    }
                }
                self.targets.insert(id.clone(), targets);
            }
            Op::Ack { sender, of, .. } => {
                // saw[o][A] is A's first operation with o in its causal past: record it
                // for the acked operation and for everything before it (a no-op for an
                // acker that acknowledged each of those in turn).
                let start = self.members.get(sender).map_or(0, |s| s.frontier);
                let now_seen: Vec<OpId<M>> = self
                    .mops
                    .get(start..)
                    .unwrap_or(&[])
                    .iter()
                    .filter(|o| {
                        !self.seen_by(sender, o)
                            && (*o == of || self.saw(o, &of.sender).is_some_and(|s| s < of.seq))
                    })
                    .cloned()
                    .collect();
                for o in now_seen {
                    if let Some(row) = self.saw.get_mut(&o) {
                        row.insert(sender.clone(), id.seq);
                    }
                }
                self.advance_frontier(sender);
                self.acks.insert((of.clone(), sender.clone()));
            }
        }
        if let Some(m) = self.members.get_mut(&id.sender) {
            m.last_seq = id.seq;
        }
        self.index.insert(id, self.ops.len());
        self.ops.push(op);
    }

    /// Appends a create, add or remove to `mops`.
    fn push_membership_op(&mut self, id: &OpId<M>) {
        self.mpos.insert(id.clone(), self.mops.len());
        self.mops.push(id.clone());
    }

    /// Moves `m`'s frontier past every operation it has seen.
    fn advance_frontier(&mut self, m: &M) {
        let Some(mut f) = self.members.get(m).map(|r| r.frontier) else { return };
        while self.mops.get(f).is_some_and(|o| self.seen_by(m, o)) {
            f += 1;
        }
        if let Some(r) = self.members.get_mut(m) {
            r.frontier = f;
        }
    }

    // ----------------------------------------------------------------------------------
    // Views
    // ----------------------------------------------------------------------------------

    /// `member-view(me)` = `SR-DGM(H)`: the current membership as the holder of this
    /// history knows it (everything in `H` counts as seen).
    pub fn view_me(&self) -> BTreeSet<M> {
        self.members.iter().filter(|(_, m)| m.removes.is_empty()).map(|(u, _)| u.clone()).collect()
    }

    /// `member-view(x)` = `SR-DGM(seen(H, x))`, for `x` other than the holder: the
    /// membership as `x` saw it at its latest operation in `H`. Empty if `x` has seen
    /// nothing (for example an initial member that has not acked the create yet).
    pub fn view_of(&self, x: &M) -> BTreeSet<M> {
        self.members.keys().filter(|u| self.in_view_of(u, x)).cloned().collect()
    }

    /// Whether `u ∈ member-view(x)`, for `x` other than the holder.
    pub fn in_view_of(&self, u: &M, x: &M) -> bool {
        let Some(m) = self.members.get(u) else {
            return false;
        };
        self.seen_by(x, &m.addop) && m.removes.iter().all(|r| !self.seen_by(x, r))
    }

    /// The post-removal rule (§7.5, V4 (e)): whether an ack by `x` of `acked` (an
    /// operation of any type, identified by `(Y, q)`) provably follows `x`'s own removal,
    /// i.e. `x ∉ SR-DGM(P)` with
    /// `P = seen(H, x) ∪ {o | saw[o][Y] < q} ∪ {(Y, q) if it is a membership operation}`.
    ///
    /// Evaluate it **before** applying the ack. True also when `x` was never added.
    pub fn follows_own_removal(&self, x: &M, acked: &OpId<M>) -> bool {
        // P is causally closed and holds x's add chain, so within P the cascade judges
        // every remove exactly as in H: x ∉ SR-DGM(P) iff one of the removes that remove or
        // cancel x in H lies in P. That is O(|removes(x)|) instead of an evaluation of P.
        let fast = match self.members.get(x) {
            None => true,
            Some(m) => m.removes.iter().any(|r| {
                r == acked || self.saw(r, x).is_some() || self.saw(r, &acked.sender).is_some_and(|s| s < acked.seq)
            }),
        };
        // The reference evaluator needs the whole history: a compacted one is checked
        // against its uncompacted twin by the differential tests instead.
        #[cfg(any(test, feature = "cross-checks"))]
        if !self.is_compacted() {
            assert_eq!(fast, self.follows_own_removal_reference(x, acked), "fast post-removal rule disagrees");
        }
        fast
    }

    /// The post-removal rule evaluated literally, with the reference evaluator over `P`.
    pub fn follows_own_removal_reference(&self, x: &M, acked: &OpId<M>) -> bool {
        let p: BTreeSet<OpId<M>> = self
            .saw
            .iter()
            .filter(|(o, row)| {
                row.contains_key(x)
                    || self.inherits(o, x)
                    || self.saw(o, &acked.sender).is_some_and(|s| s < acked.seq)
                    || *o == acked
            })
            .map(|(o, _)| o.clone())
            .collect();
        !reference_view_subset(self, &p).contains(x)
    }

    // ----------------------------------------------------------------------------------
    // Causal order and the saw table
    // ----------------------------------------------------------------------------------

    /// `saw[o][m]`: the sequence number of `m`'s first operation with `o` in its causal
    /// past (`o.seq` if `m` sent `o`, `0` if inherited from `m`'s adder). `None` if `m`
    /// has not seen `o`, or if `o` is not a create, add or remove in `H`.
    pub fn saw(&self, o: &OpId<M>, m: &M) -> Option<u64> {
        let Some(row) = self.saw.get(o) else {
            return self.folded.contains(o).then_some(0);
        };
        match row.get(m) {
            Some(&s) => Some(s),
            None => self.inherits(o, m).then_some(0),
        }
    }

    /// Whether `m` inherited `o` implicitly (within the prefix of `mops` its adder had seen).
    fn inherits(&self, o: &OpId<M>, m: &M) -> bool {
        match (self.mpos.get(o), self.members.get(m)) {
            (Some(p), Some(r)) => *p < r.inherited,
            _ => false,
        }
    }

    /// All `saw[o][·]` entries of a create, add or remove `o`.
    pub fn saw_row(&self, o: &OpId<M>) -> Option<BTreeMap<M, u64>> {
        let mut row = self.saw.get(o)?.clone();
        let p = self.mpos.get(o)?;
        for (m, r) in &self.members {
            if *p < r.inherited {
                row.entry(m.clone()).or_insert(0);
            }
        }
        Some(row)
    }

    /// Whether `o ∈ seen(H, m)`, i.e. `saw[o][m]` is defined.
    pub fn seen_by(&self, m: &M, o: &OpId<M>) -> bool {
        self.saw(o, m).is_some()
    }

    /// `seen(H, m)` restricted to creates, adds and removes (acks carry no membership).
    pub fn seen_ops(&self, m: &M) -> BTreeSet<OpId<M>> {
        self.saw.keys().filter(|o| self.seen_by(m, o)).cloned().collect()
    }

    /// `o ≺ p` (§6.1). Exact when `o` and `p` have the same sender (by sequence number),
    /// and when `o` is a create, add or remove in `H`, by `saw[o][p.sender] ≤ p.seq` with
    /// `o ≠ p`; `p` may be any message of a member, in `H` or not. (`saw[o][A] = p.seq`
    /// when `p` is `A`'s ack of `o`, so §6.1's strict `<` would miss `o ≺ ack-of-o`.) For
    /// any other `o` — an ack, or a message outside `H` — it answers `false`: such
    /// messages are never acknowledged in `H`, so `H` cannot tell.
    pub fn before(&self, o: &OpId<M>, p: &OpId<M>) -> bool {
        if o == p {
            false
        } else if o.sender == p.sender {
            o.seq < p.seq
        } else {
            // `saw[o][A] == p.seq` when `p` is the operation of `A` that first had `o` in
            // its past (its ack of `o`, say): `o ≺ p` too.
            self.saw(o, &p.sender).is_some_and(|s| s <= p.seq)
        }
    }

    /// `o ≺ p` through `saw` alone, as in §6.4 (a) line 2 (`o` a membership operation,
    /// `p` an add or remove: then `saw[o][p.sender] = p.seq` only when `o = p`).
    pub(super) fn saw_before(&self, o: &OpId<M>, p: &OpId<M>) -> bool {
        o != p && self.saw(o, &p.sender).is_some_and(|s| s < p.seq)
    }

    /// Whether `m` has **sent** an ack of `o` that is recorded in `H` (V4 (d)). An
    /// inherited `saw = 0` entry, an entry implied by a later ack, or being `o`'s sender
    /// does not count.
    pub fn has_acked(&self, o: &OpId<M>, m: &M) -> bool {
        self.acks.contains(&(o.clone(), m.clone()))
    }

    // ----------------------------------------------------------------------------------
    // Incremental state
    // ----------------------------------------------------------------------------------

    /// `everAdded(H)`: every ID added by the create or an add (members and tombstones).
    pub fn ever_added(&self) -> BTreeSet<M> {
        self.members.keys().cloned().collect()
    }

    /// `addop(m)`: the operation that added `m` (the create for initial members).
    pub fn addop(&self, m: &M) -> Option<&OpId<M>> {
        self.members.get(m).map(|r| &r.addop)
    }

    /// `adder(m)`: who added `m`. `None` for initial members and for IDs never added
    /// (tell them apart with [`History::ever_added`]).
    pub fn adder_of(&self, m: &M) -> Option<M> {
        self.members.get(m).and_then(|r| r.adder.clone())
    }

    /// `removes(m)`: the removes that remove or cancel `m`, in processing order. Empty
    /// for current members and for IDs never added.
    pub fn removed_by(&self, m: &M) -> Vec<OpId<M>> {
        self.members.get(m).map(|r| r.removes.clone()).unwrap_or_default()
    }

    /// `targets(r)`: the IDs the remove `r` removes or cancels. `None` if `r` is not a
    /// remove in `H`.
    pub fn targets(&self, r: &OpId<M>) -> Option<&BTreeSet<M>> {
        self.targets.get(r)
    }

    /// The target of an add or remove; `None` for other operations and unknown IDs.
    pub fn target(&self, o: &OpId<M>) -> Option<M> {
        match self.get(o)? {
            Op::Add { target, .. } | Op::Remove { target, .. } => Some(target.clone()),
            Op::Create { .. } | Op::Ack { .. } => None,
        }
    }

    /// The kind of operation `o`, if it is in `H`.
    pub fn kind(&self, o: &OpId<M>) -> Option<OpKind> {
        self.get(o).map(Op::kind)
    }

    /// Whether `o` is the create.
    pub fn is_create(&self, o: &OpId<M>) -> bool {
        self.kind(o) == Some(OpKind::Create)
    }

    /// Whether `o` is an add in `H`.
    pub fn is_add(&self, o: &OpId<M>) -> bool {
        self.kind(o) == Some(OpKind::Add)
    }

    /// Whether `o` is a remove in `H`.
    pub fn is_remove(&self, o: &OpId<M>) -> bool {
        self.kind(o) == Some(OpKind::Remove)
    }

    /// The ID of the create, once applied.
    pub fn create_id(&self) -> Option<&OpId<M>> {
        self.create.as_ref()
    }

    // ----------------------------------------------------------------------------------
    // The operations themselves
    // ----------------------------------------------------------------------------------

    /// Operation `o`, if it is in `H`.
    pub fn get(&self, o: &OpId<M>) -> Option<&Op<M>> {
        self.index.get(o).and_then(|&i| self.ops.get(i))
    }

    /// Whether `o` is in `H`.
    pub fn contains(&self, o: &OpId<M>) -> bool {
        self.index.contains_key(o)
    }

    /// All operations in processing order (what a Welcome ships, §7.4). Applying them in
    /// this order to a new history rebuilds an equal history.
    pub fn ops(&self) -> &[Op<M>] {
        &self.ops
    }

    /// The number of operations in `H`.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether `H` is empty (before the create).
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The highest sequence number of `m` in `H`.
    pub fn last_seq(&self, m: &M) -> Option<u64> {
        self.members.get(m).map(|r| r.last_seq).filter(|s| *s > 0)
    }

    /// Whether two histories hold the same operations and `saw` entries, whatever order
    /// they were processed in and however far each was compacted (§10, oracle 5, §6.7):
    /// the same view, the same live members with the same views and removals, the same
    /// `saw` row (over the live members) for every operation both still hold, and every
    /// operation only one of them holds is foldable there (every live member has seen it,
    /// or, for an ack, what it acknowledges is missing from the other too).
    pub fn same_history(&self, other: &Self) -> bool {
        let live: BTreeSet<&M> = self.live_members().collect();
        live == other.live_members().collect::<BTreeSet<&M>>() && self.same_history_among(other, &live)
    }

    /// [`History::same_history`], judged over the members in `live` only: for two members
    /// whose live members differ because one of them retired a member the other still
    /// keeps (the retention period of §5.7), compare over the members live at both.
    pub fn same_history_among(&self, other: &Self, live: &BTreeSet<&M>) -> bool {
        if self.view_me() != other.view_me() {
            return false;
        }
        let removals = |h: &Self, m: &M| h.removed_by(m).into_iter().collect::<BTreeSet<OpId<M>>>();
        if live.iter().any(|m| self.view_of(m) != other.view_of(m) || removals(self, m) != removals(other, m)) {
            return false;
        }
        let row = |h: &Self, o: &OpId<M>| {
            h.saw_row(o).map(|r| r.into_iter().filter(|(m, _)| live.contains(m)).collect::<BTreeMap<M, u64>>())
        };
        [(self, other), (other, self)].iter().all(|(x, y)| {
            x.ops.iter().all(|op| match y.get(&op.id()) {
                Some(same) => same == op && (op.kind() == OpKind::Ack || row(x, &op.id()) == row(y, &op.id())),
                None => match op {
                    Op::Ack { of, .. } => !y.contains(of),
                    _ => live.iter().all(|m| x.seen_by(m, &op.id())),
                },
            })
        })
    }
}

/// The per-member state as the tables of §6.4 (b), for the unit tests.
#[cfg(test)]
impl<M: Ord + Clone> History<M> {
    /// `addop` as a table.
    pub(super) fn addop_table(&self) -> BTreeMap<M, OpId<M>> {
        self.members.iter().map(|(u, m)| (u.clone(), m.addop.clone())).collect()
    }

    /// `adder` as a table.
    pub(super) fn adder_table(&self) -> BTreeMap<M, Option<M>> {
        self.members.iter().map(|(u, m)| (u.clone(), m.adder.clone())).collect()
    }

    /// `removes` as a table.
    pub(super) fn removes_table(&self) -> BTreeMap<M, Vec<OpId<M>>> {
        self.members.iter().map(|(u, m)| (u.clone(), m.removes.clone())).collect()
    }
}

// --------------------------------------------------------------------------------------
// State snapshots
// --------------------------------------------------------------------------------------

impl History<crate::ids::MemberId> {
    /// Snapshot encoding (version 4): the compact base, the remaining operations in
    /// processing order, and what the operations do not say:
    /// `create:opt<(member ‖ seq:var)> ‖ base:list<BaseMember> ‖ log:list<LogOp> ‖
    /// last_seq:map<member, var> ‖ departed:list<member>` with
    /// `BaseMember = id ‖ addop_sender ‖ addop_seq:var ‖ adder:opt<member> ‖
    /// removed_by:list<(member ‖ seq:var)>` and `LogOp = tag:u8 ‖ sender ‖ seq:var ‖ …` with
    /// `0 ‖ members:list<member>` (create), `1 ‖ target` (add), `2 ‖ target` (remove),
    /// `3 ‖ of_sender ‖ of_seq:var` (ack). Every other table is a function of these:
    /// [`decode_state`](Self::decode_state) rebuilds it with [`History::rebuilt`], which
    /// yields an equal history (a compacted history is defined as that replay). Versions 2
    /// and 3 held the log alone.
    pub(crate) fn encode_state(&self, w: &mut StateWriter) {
        let f = self.folded();
        w.flag(f.create.is_some());
        if let Some(c) = &f.create {
            w.member(&c.sender);
            w.var(c.seq);
        }
        w.items(f.members.iter(), |w, b| {
            w.member(&b.id);
            w.member(&b.addop.sender);
            w.var(b.addop.seq);
            w.flag(b.adder.is_some());
            if let Some(a) = &b.adder {
                w.member(a);
            }
            w.items(b.removed_by.iter(), |w, r| {
                w.member(&r.sender);
                w.var(r.seq);
            });
        });
        encode_log(w, &f.ops);
        w.map(&f.last_seq, |w, m, s| {
            w.member(m);
            w.var(*s);
        });
        w.items(f.departed.iter(), |w, m| w.member(m));
    }

    /// Reverses [`encode_state`](Self::encode_state) (and reads the log-only encoding of
    /// versions 2 and 3). A history the rules refuse is [`SnapshotError::History`].
    pub(crate) fn decode_state(r: &mut StateReader<'_>) -> Result<Self, SnapshotError> {
        let refused = |e: DgmError<crate::ids::MemberId>| SnapshotError::History(e.to_string());
        if r.version() < 4 {
            let ops = decode_log(r)?;
            return History::rebuilt(Folded {
                create: None,
                members: Vec::new(),
                ops,
                last_seq: BTreeMap::new(),
                departed: BTreeSet::new(),
            })
            .map_err(refused);
        }
        let create = if r.flag()? { Some(OpId::new(r.member()?, r.var()?)) } else { None };
        let members = r.items(3, |r| {
            Ok(BaseMember {
                id: r.member()?,
                addop: OpId::new(r.member()?, r.var()?),
                adder: if r.flag()? { Some(r.member()?) } else { None },
                removed_by: r.items(2, |r| Ok(OpId::new(r.member()?, r.var()?)))?,
            })
        })?;
        let ops = decode_log(r)?;
        let last_seq = r.map(2, |r| Ok((r.member()?, r.var()?)))?;
        let departed: BTreeSet<_> = r.map(1, |r| Ok((r.member()?, ())))?.into_keys().collect();
        let f = Folded { create, members, ops, last_seq, departed };
        History::check_canonical(&f).map_err(SnapshotError::Inconsistent)?;
        let (named, departed) = (f.last_seq.keys().cloned().collect::<Vec<_>>(), f.departed.clone());
        let h = History::rebuilt(f).map_err(refused)?;
        if named.iter().chain(&departed).any(|m| h.addop(m).is_none()) {
            return Err(SnapshotError::Inconsistent("a member the history does not know"));
        }
        Ok(h)
    }
}

/// The operation log of a snapshot: `list<tag:u8 ‖ sender ‖ seq:var ‖ …>`.
fn encode_log(w: &mut StateWriter, ops: &[Op<crate::ids::MemberId>]) {
    w.items(ops.iter(), |w, op| {
        let tag = match op.kind() {
            OpKind::Create => 0,
            OpKind::Add => 1,
            OpKind::Remove => 2,
            OpKind::Ack => 3,
        };
        w.u8(tag);
        w.member(op.sender());
        w.var(op.seq());
        match op {
            Op::Create { members, .. } => w.items(members.iter(), |w, m| w.member(m)),
            Op::Add { target, .. } | Op::Remove { target, .. } => w.member(target),
            Op::Ack { of, .. } => {
                w.member(&of.sender);
                w.var(of.seq);
            }
        }
    });
}

/// Reverses [`encode_log`].
fn decode_log(r: &mut StateReader<'_>) -> Result<Vec<Op<crate::ids::MemberId>>, SnapshotError> {
    // Every operation takes at least a tag, a sender, a sequence number and one more byte.
    r.items(4, |r| {
        let tag = r.u8()?;
        let sender = r.member()?;
        let seq = r.var()?;
        Ok(match tag {
            0 => Op::Create { sender, seq, members: r.items(1, |r| r.member())? },
            1 => Op::Add { sender, seq, target: r.member()? },
            2 => Op::Remove { sender, seq, target: r.member()? },
            3 => Op::Ack { sender, seq, of: OpId::new(r.member()?, r.var()?) },
            t => return Err(DecodeError::UnknownTag { what: "history operation", tag: u64::from(t) }.into()),
        })
    })
}
