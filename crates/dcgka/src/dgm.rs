//! Strong-remove decentralized group membership (SR-DGM): the membership history `H`
//! and the function that turns it into a member set (spec §6; ePrint Def. 4–6).
//!
//! # What this module is
//!
//! A DCGKA group has no server that decides who is a member. Every member keeps the
//! set of membership operations it has processed — the *membership history* `H` — and
//! evaluates one deterministic function over it. Members that have processed the same
//! operations therefore agree on the membership, whatever order they processed them
//! in. The function is the paper's **SR-DGM** ("strong remove"): when membership is
//! ambiguous it errs on the side of removal, so a member being removed cannot escape by
//! concurrently removing its remover, nor by concurrently adding a new device.
//!
//! This module is pure bookkeeping: no cryptography, no I/O, no wire format. It is
//! generic over the member identifier `M` (the protocol uses a 32-byte `MemberId`).
//!
//! # Example
//!
//! A creates the group with B and C; both ack; then A removes B while B concurrently
//! adds D. Whatever order a member processes them in, B is removed and D is cancelled.
//!
//! ```
//! use dcgka::dgm::{History, Op, OpId, reference_view};
//!
//! let mut h: History<char> = History::new();
//! let ack = |sender, seq, of: (char, u64)| Op::Ack { sender, seq, of: OpId::new(of.0, of.1) };
//! h.apply(Op::Create { sender: 'A', seq: 1, members: vec!['B', 'C'] })?;
//! h.apply(ack('B', 1, ('A', 1)))?;
//! h.apply(ack('C', 1, ('A', 1)))?;
//! h.apply(Op::Add { sender: 'B', seq: 2, target: 'D' })?;
//! assert!(h.view_me().contains(&'D'));
//! h.apply(Op::Remove { sender: 'A', seq: 2, target: 'B' })?; // A had not seen B's add
//! assert_eq!(h.view_me(), ['A', 'C'].into());
//! assert_eq!(h.removed_by(&'D'), vec![OpId::new('A', 2)]); // cancelled by the cascade
//! // C has not acked the remove yet: in C's view B and D are still members.
//! assert_eq!(h.view_of(&'C'), ['A', 'B', 'C'].into()); // C has not seen D's add either
//! assert_eq!(h.view_of(&'C'), reference_view(&h, Some(&'C')));
//! // B acking its own removal would provably follow it (§7.5): reject such an ack.
//! assert!(h.follows_own_removal(&'B', &OpId::new('A', 2)));
//! # Ok::<(), dcgka::dgm::DgmError<char>>(())
//! ```
//!
//! # Names, mapped to the paper and the specification
//!
//! | Here | Spec | Paper (ePrint) |
//! |---|---|---|
//! | [`Op`], [`OpId`] | §6.1, the four operation kinds | Def. 4 |
//! | [`History`] | `H` (§5.1, §6.4 (b)) | the set of operations given to a DGM (Def. 5) |
//! | [`History::saw`] | `saw[o][A]` (§6.1) | — (realises `≺` without storing the DAG) |
//! | [`History::before`] | `o ≺ p` (§6.1) | Def. 4 |
//! | [`History::seen_ops`] | `seen(H, X)` (§6.1) | — |
//! | [`History::view_me`] | `member-view(me)` = `SR-DGM(H)` (§5.3, §6.3) | Def. 6 |
//! | [`History::view_of`] | `member-view(X)` = `SR-DGM(seen(H, X))` (§6.3) | Def. 6 |
//! | [`History::addop`], [`History::adder_of`], [`History::removed_by`], [`History::targets`] | `addop`, `adder`, `removes`, `targets` (§6.4 (b)) | — |
//! | [`History::ever_added`] | `everAdded(H)` | — |
//! | [`History::follows_own_removal`] | the post-removal rule (§7.5, V4 (e)) | — |
//! | [`reference_view`], [`reference_view_subset`] | the reference evaluator (§6.4 (a)) | Def. 6, literally |
//!
//! # Two evaluators
//!
//! [`History`] maintains the **incremental realisation** of §6.4 (b): every member ever
//! added has one add operation (`addop`) and a list of the removes that remove or cancel
//! it (`removes`), so `member-view(me)` is just "everyone with an empty `removes`". Each
//! remove cascades, at the moment it is applied, to every addition its sender had not
//! seen, transitively; an add by an already removed or cancelled member is cancelled at
//! once.
//!
//! [`reference_view`] is the **reference evaluator** of §6.4 (a): it builds the add graph
//! of Def. 6, with the create replaced by virtual adds, deletes cancelled edges and
//! computes reachability from scratch. It is exact for Def. 6 and is the test oracle for
//! the incremental realisation; [`History::follows_own_removal`] uses it over an
//! arbitrary causally closed subset of `H`.
//!
//! # Causal order without a DAG
//!
//! For every create, add and remove `o`, `saw[o][A]` is the sequence number of `A`'s
//! first operation that has `o` in its causal past (`o.seq` if `A` sent `o`, `0` if `A`
//! inherited `o` from its adder through the Welcome). For an operation `p` of `A` and a
//! membership operation `o ≠ p`, `o ≺ p` exactly when `saw[o][A] < p.seq`.
//!
//! Applying an ack by `A` of `o` records `saw[·][A]` for `o` **and for every membership
//! operation in `o`'s causal past** that `A` had not yet been recorded as seeing. For an
//! honest `A`, which acknowledges every membership operation it processes in causal
//! order, the extra entries are already present and nothing changes; for an `A` that
//! skipped an ack this keeps `saw` equal to its definition (§6.1), and so keeps the
//! incremental views equal to Def. 6. (Recording only the acked operation, as §6.4 (b)
//! literally says, lets the incremental and the reference evaluator disagree; see the
//! test `skipped_ack_is_closed_over_the_causal_past`.)
//!
//! # Validity and atomicity
//!
//! [`History::apply`] checks an operation completely ([`History::check`]) before it
//! changes anything: on error the history is exactly as it was (stage, then commit). It
//! never panics. It enforces what the incremental realisation needs to be exact:
//!
//! - sequence numbers are at least 1 and increase per sender (FIFO);
//! - one create, first; every other sender was added, and has seen its own addition
//!   before it sends anything but its ack of that addition (an initial member acks the
//!   create first; a newcomer has inherited its add). The spec's table does not state
//!   this rule, but without it an initial member's add sent before its ack of the create
//!   makes the incremental and the reference evaluator disagree (test
//!   `initial_member_must_ack_the_create_before_anything_else`);
//! - every member ID is added once (V2's freshness), never by itself;
//! - V3: a remover is not its target, and the target is in `member-view(remover)`;
//! - V4 (a) and (d): an ack names a create, add or remove in `H`, not its own sender's,
//!   and a member acks an operation at most once.
//!
//! Rules that need more than `H` (signatures, identities, tags, seed blocks) belong to
//! the caller, and so does V4 (e): call [`History::follows_own_removal`] before applying
//! an ack (`apply` accepts an ack of one's own removal; the evaluators stay exact).

use core::fmt::Debug;
use std::collections::{BTreeMap, BTreeSet};

use crate::codec::DecodeError;
use crate::snapshot::{SnapshotError, StateReader, StateWriter};

/// Names an operation: its sender and the sender's sequence number for it.
///
/// Sequence numbers start at 1 and count **all** of a sender's messages, so the
/// operations of one sender in a history have increasing, not necessarily consecutive,
/// sequence numbers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId<M> {
    /// The member that sent the operation.
    pub sender: M,
    /// The sender's sequence number of the operation (≥ 1).
    pub seq: u64,
}

impl<M> OpId<M> {
    /// Builds an operation ID.
    pub fn new(sender: M, seq: u64) -> Self {
        Self { sender, seq }
    }
}

/// The kind of an [`Op`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpKind {
    /// Group creation.
    Create,
    /// Addition of a member.
    Add,
    /// Removal of a member.
    Remove,
    /// Acknowledgment (ack or add-ack) of a create, add or remove.
    Ack,
}

/// A group membership operation (ePrint Def. 4; spec §6.1).
///
/// Acks and add-acks of creates, adds and removes are both recorded as [`Op::Ack`]; acks
/// of updates and of application messages never enter the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op<M> {
    /// `("create", sender, seq, members)`: the sender creates the group with itself and
    /// `members` as initial members.
    Create {
        /// The creator.
        sender: M,
        /// The creator's sequence number of the create.
        seq: u64,
        /// The other initial members (without the creator, no duplicates).
        members: Vec<M>,
    },
    /// `("add", sender, seq, target)`.
    Add {
        /// The adder.
        sender: M,
        /// The adder's sequence number of the add.
        seq: u64,
        /// The added member (a fresh ID: every ID is added at most once).
        target: M,
    },
    /// `("remove", sender, seq, target)`.
    Remove {
        /// The remover.
        sender: M,
        /// The remover's sequence number of the remove.
        seq: u64,
        /// The removed member.
        target: M,
    },
    /// `("ack", sender, seq, of)`: `sender` acknowledges the create, add or remove `of`.
    Ack {
        /// The acknowledging member.
        sender: M,
        /// The acknowledging member's sequence number of the ack.
        seq: u64,
        /// The acknowledged operation.
        of: OpId<M>,
    },
}

impl<M: Clone> Op<M> {
    /// The operation's ID `(sender, seq)`.
    pub fn id(&self) -> OpId<M> {
        OpId::new(self.sender().clone(), self.seq())
    }
}

impl<M> Op<M> {
    /// The operation's sender.
    pub fn sender(&self) -> &M {
        match self {
            Op::Create { sender, .. } | Op::Add { sender, .. } | Op::Remove { sender, .. } | Op::Ack { sender, .. } => {
                sender
            }
        }
    }

    /// The sender's sequence number of the operation.
    pub fn seq(&self) -> u64 {
        match self {
            Op::Create { seq, .. } | Op::Add { seq, .. } | Op::Remove { seq, .. } | Op::Ack { seq, .. } => *seq,
        }
    }

    /// The operation's kind.
    pub fn kind(&self) -> OpKind {
        match self {
            Op::Create { .. } => OpKind::Create,
            Op::Add { .. } => OpKind::Add,
            Op::Remove { .. } => OpKind::Remove,
            Op::Ack { .. } => OpKind::Ack,
        }
    }
}

/// Why [`History::apply`] refused an operation. The history is unchanged in every case.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DgmError<M> {
    /// Sequence numbers start at 1; `0` is reserved for inherited `saw` entries.
    #[error("operation {op:?} has sequence number 0")]
    ZeroSeq {
        /// The refused operation.
        op: OpId<M>,
    },
    /// An operation with this ID is already in the history.
    #[error("operation {op:?} is already in the history")]
    DuplicateOp {
        /// The refused operation.
        op: OpId<M>,
    },
    /// The sender already has an operation with a sequence number at least as high
    /// (per-sender FIFO order was not respected).
    #[error("operation {op:?} is not above its sender's last sequence number {last}")]
    SeqNotIncreasing {
        /// The refused operation.
        op: OpId<M>,
        /// The sender's highest sequence number already in the history.
        last: u64,
    },
    /// The first operation of a history must be the create.
    #[error("operation {op:?} precedes the group's create")]
    NoCreate {
        /// The refused operation.
        op: OpId<M>,
    },
    /// The history already has a create.
    #[error("second create {op:?}")]
    SecondCreate {
        /// The refused operation.
        op: OpId<M>,
    },
    /// A create lists its own sender among the other initial members.
    #[error("create {op:?} lists its creator as another member")]
    CreatorListed {
        /// The refused operation.
        op: OpId<M>,
    },
    /// A create lists a member twice.
    #[error("create {op:?} lists {member:?} twice")]
    DuplicateInitialMember {
        /// The refused operation.
        op: OpId<M>,
        /// The repeated member.
        member: M,
    },
    /// The sender was never added to the group.
    #[error("operation {op:?} comes from a sender that was never added")]
    UnknownSender {
        /// The refused operation.
        op: OpId<M>,
    },
    /// The sender has not yet seen its own addition (an initial member must first ack
    /// the create).
    #[error("operation {op:?} comes from a sender that has not processed its own addition")]
    SenderNotJoined {
        /// The refused operation.
        op: OpId<M>,
    },
    /// A member tried to add itself.
    #[error("add {op:?} adds its own sender")]
    SelfAdd {
        /// The refused operation.
        op: OpId<M>,
    },
    /// The add's target was already added (or is an initial member): every member ID is
    /// added exactly once (§2.2, §6.6).
    #[error("add {op:?}: {target:?} was already added")]
    AlreadyAdded {
        /// The refused operation.
        op: OpId<M>,
        /// The target of the add.
        target: M,
    },
    /// A member tried to remove itself (V3).
    #[error("remove {op:?} removes its own sender")]
    SelfRemove {
        /// The refused operation.
        op: OpId<M>,
    },
    /// The remove's target was never added.
    #[error("remove {op:?}: {target:?} was never added")]
    UnknownTarget {
        /// The refused operation.
        op: OpId<M>,
        /// The target of the remove.
        target: M,
    },
    /// The remove's target is not in `member-view(sender)` (V3).
    #[error("remove {op:?}: {target:?} is not in its sender's view")]
    TargetNotInView {
        /// The refused operation.
        op: OpId<M>,
        /// The target of the remove.
        target: M,
    },
    /// An ack of the sender's own operation (V4 (a)).
    #[error("ack {op:?} acknowledges its own sender's operation")]
    AckOfOwnOp {
        /// The refused operation.
        op: OpId<M>,
    },
    /// An ack of an operation that is not in the history.
    #[error("ack {op:?} acknowledges {of:?}, which is not in the history")]
    UnknownOp {
        /// The refused operation.
        op: OpId<M>,
        /// The acknowledged operation.
        of: OpId<M>,
    },
    /// An ack of an ack: only creates, adds and removes are acknowledged in `H`.
    #[error("ack {op:?} acknowledges {of:?}, which is not a create, add or remove")]
    NotMembershipOp {
        /// The refused operation.
        op: OpId<M>,
        /// The acknowledged operation.
        of: OpId<M>,
    },
    /// The sender has already acknowledged this operation (V4 (d)).
    #[error("ack {op:?}: {of:?} was already acknowledged by the same sender")]
    DuplicateAck {
        /// The refused operation.
        op: OpId<M>,
        /// The acknowledged operation.
        of: OpId<M>,
    },
}

/// The membership history `H` of one group at one member, with the incremental SR-DGM
/// state of spec §6.4 (b).
///
/// The history does not know which member holds it: [`History::view_me`] is the view of
/// whoever has processed all of it. `PartialEq` compares the complete state, processing
/// order included; [`History::same_history`] compares only the operation set and the
/// `saw` entries (§10, oracle 5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History<M> {
    /// All operations, in processing order.
    ops: Vec<Op<M>>,
    /// Operation ID → position in `ops`.
    index: BTreeMap<OpId<M>, usize>,
    /// Highest sequence number of each sender in `ops`.
    last_seq: BTreeMap<M, u64>,
    /// The create, once applied.
    create: Option<OpId<M>>,
    /// `addop(ID)`: the operation that added each ever-added ID (the create for initial
    /// members).
    addop: BTreeMap<M, OpId<M>>,
    /// `adder(ID)`: `None` for initial members.
    adder: BTreeMap<M, Option<M>>,
    /// The IDs each member added (the inverse of `adder`), in processing order.
    children: BTreeMap<M, Vec<M>>,
    /// `removes(ID)`: the removes that remove or cancel each ever-added ID, in processing
    /// order. Empty for current members.
    removes: BTreeMap<M, Vec<OpId<M>>>,
    /// `targets(r)`: the IDs each remove removes or cancels.
    targets: BTreeMap<OpId<M>, BTreeSet<M>>,
    /// `saw[o][A]` for every create, add and remove `o`.
    saw: BTreeMap<OpId<M>, BTreeMap<M, u64>>,
    /// `(o, A)` for every ack recorded in `ops` (as opposed to inherited or implied
    /// knowledge).
    acks: BTreeSet<(OpId<M>, M)>,
    /// For each ever-added ID, the creates, adds and removes it has not seen yet (no `saw`
    /// entry): derived from `saw`, kept so that recording an ack costs O(what the acker
    /// had not seen) rather than O(|H|).
    unseen: BTreeMap<M, BTreeSet<OpId<M>>>,
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
            last_seq: BTreeMap::new(),
            create: None,
            addop: BTreeMap::new(),
            adder: BTreeMap::new(),
            children: BTreeMap::new(),
            removes: BTreeMap::new(),
            targets: BTreeMap::new(),
            saw: BTreeMap::new(),
            acks: BTreeSet::new(),
            unseen: BTreeMap::new(),
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
        if let Some(&last) = self.last_seq.get(&id.sender)
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
        let Some(own_add) = self.addop.get(sender) else {
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
                } else if self.addop.contains_key(target) {
                    Err(DgmError::AlreadyAdded { op: id, target: target.clone() })
                } else {
                    Ok(())
                }
            }
            Op::Remove { target, .. } => {
                if target == sender {
                    Err(DgmError::SelfRemove { op: id })
                } else if !self.addop.contains_key(target) {
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
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Applies an operation that [`History::check`] accepted. Infallible.
    fn commit(&mut self, op: Op<M>) {
        let id = op.id();
        match &op {
            Op::Create { sender, members, .. } => {
                for u in core::iter::once(sender).chain(members) {
                    self.addop.insert(u.clone(), id.clone());
                    self.adder.insert(u.clone(), None);
                    self.removes.insert(u.clone(), Vec::new());
                }
                self.saw.insert(id.clone(), BTreeMap::from([(sender.clone(), id.seq)]));
                self.create = Some(id.clone());
                self.unseen.insert(sender.clone(), BTreeSet::new());
                for u in members {
                    self.unseen.insert(u.clone(), BTreeSet::from([id.clone()]));
                }
            }
            Op::Add { sender, target, .. } => {
                self.addop.insert(target.clone(), id.clone());
                self.adder.insert(target.clone(), Some(sender.clone()));
                self.children.entry(sender.clone()).or_default().push(target.clone());
                self.saw.insert(id.clone(), BTreeMap::from([(sender.clone(), id.seq)]));
                for (m, unseen) in &mut self.unseen {
                    if m != sender {
                        unseen.insert(id.clone());
                    }
                }
                // The target inherits everything its adder had seen up to and including
                // this add: {o | saw[o][S] <= q}, with value 0.
                let mut unseen = BTreeSet::new();
                for (o, row) in &mut self.saw {
                    if row.get(sender).is_some_and(|&s| s <= id.seq) {
                        row.entry(target.clone()).or_insert(0);
                    } else if !row.contains_key(target) {
                        unseen.insert(o.clone());
                    }
                }
                self.unseen.insert(target.clone(), unseen);
                // An add by an already removed or cancelled member is cancelled at once.
                let inherited = self.removes.get(sender).cloned().unwrap_or_default();
                for r in &inherited {
                    if let Some(t) = self.targets.get_mut(r) {
                        t.insert(target.clone());
                    }
                }
                self.removes.insert(target.clone(), inherited);
            }
            Op::Remove { sender, target, .. } => {
                self.saw.insert(id.clone(), BTreeMap::from([(sender.clone(), id.seq)]));
                for (m, unseen) in &mut self.unseen {
                    if m != sender {
                        unseen.insert(id.clone());
                    }
                }
                let mut targets = BTreeSet::from([target.clone()]);
                let mut cancelled = Vec::new();
                // Cascade to a fixpoint: every addition by a removed or cancelled member
                // that the remover had not seen is cancelled.
                let mut work = vec![target.clone()];
                while let Some(v) = work.pop() {
                    for u in self.children.get(&v).into_iter().flatten() {
                        if targets.contains(u) {
                            continue;
                        }
                        let seen = self.addop.get(u).is_some_and(|a| self.seen_by(sender, a));
                        if !seen {
                            targets.insert(u.clone());
                            cancelled.push(u.clone());
                            work.push(u.clone());
                        }
                    }
                }
                for u in core::iter::once(target).chain(&cancelled) {
                    if let Some(list) = self.removes.get_mut(u) {
                        list.push(id.clone());
                    }
                }
                self.targets.insert(id.clone(), targets);
            }
            Op::Ack { sender, of, .. } => {
                // saw[o][A] is A's first operation with o in its causal past: record it
                // for the acked operation and for everything before it (a no-op for an
                // acker that acknowledged each of those in turn).
                let unseen = self.unseen.get(sender).cloned().unwrap_or_default();
                let mut now_seen = Vec::new();
                for o in unseen {
                    let Some(row) = self.saw.get_mut(&o) else { continue };
                    let in_past = o == *of || row.get(&of.sender).is_some_and(|&s| s < of.seq);
                    if in_past {
                        row.entry(sender.clone()).or_insert(id.seq);
                        now_seen.push(o);
                    }
                }
                if let Some(set) = self.unseen.get_mut(sender) {
                    for o in &now_seen {
                        set.remove(o);
                    }
                }
                self.acks.insert((of.clone(), sender.clone()));
            }
        }
        self.last_seq.insert(id.sender.clone(), id.seq);
        self.index.insert(id, self.ops.len());
        self.ops.push(op);
    }

    // ----------------------------------------------------------------------------------
    // Views
    // ----------------------------------------------------------------------------------

    /// `member-view(me)` = `SR-DGM(H)`: the current membership as the holder of this
    /// history knows it (everything in `H` counts as seen).
    pub fn view_me(&self) -> BTreeSet<M> {
        self.removes.iter().filter(|(_, rs)| rs.is_empty()).map(|(u, _)| u.clone()).collect()
    }

    /// `member-view(x)` = `SR-DGM(seen(H, x))`, for `x` other than the holder: the
    /// membership as `x` saw it at its latest operation in `H`. Empty if `x` has seen
    /// nothing (for example an initial member that has not acked the create yet).
    pub fn view_of(&self, x: &M) -> BTreeSet<M> {
        self.addop.keys().filter(|u| self.in_view_of(u, x)).cloned().collect()
    }

    /// Whether `u ∈ member-view(x)`, for `x` other than the holder.
    pub fn in_view_of(&self, u: &M, x: &M) -> bool {
        let Some(a) = self.addop.get(u) else {
            return false;
        };
        self.seen_by(x, a) && self.removes.get(u).is_none_or(|rs| rs.iter().all(|r| !self.seen_by(x, r)))
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
        let fast = match self.removes.get(x) {
            None => true,
            Some(rs) => rs.iter().any(|r| {
                r == acked || self.saw(r, x).is_some() || self.saw(r, &acked.sender).is_some_and(|s| s < acked.seq)
            }),
        };
        #[cfg(test)]
        assert_eq!(fast, self.follows_own_removal_reference(x, acked), "fast post-removal rule disagrees");
        fast
    }

    /// The post-removal rule evaluated literally, with the reference evaluator over `P`.
    pub fn follows_own_removal_reference(&self, x: &M, acked: &OpId<M>) -> bool {
        let p: BTreeSet<OpId<M>> = self
            .saw
            .iter()
            .filter(|(o, row)| {
                row.contains_key(x) || row.get(&acked.sender).is_some_and(|&s| s < acked.seq) || *o == acked
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
        self.saw.get(o).and_then(|row| row.get(m)).copied()
    }

    /// All `saw[o][·]` entries of a create, add or remove `o`.
    pub fn saw_row(&self, o: &OpId<M>) -> Option<&BTreeMap<M, u64>> {
        self.saw.get(o)
    }

    /// Whether `o ∈ seen(H, m)`, i.e. `saw[o][m]` is defined.
    pub fn seen_by(&self, m: &M, o: &OpId<M>) -> bool {
        self.saw(o, m).is_some()
    }

    /// `seen(H, m)` restricted to creates, adds and removes (acks carry no membership).
    pub fn seen_ops(&self, m: &M) -> BTreeSet<OpId<M>> {
        self.saw.iter().filter(|(_, row)| row.contains_key(m)).map(|(o, _)| o.clone()).collect()
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
    fn saw_before(&self, o: &OpId<M>, p: &OpId<M>) -> bool {
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
        self.addop.keys().cloned().collect()
    }

    /// `addop(m)`: the operation that added `m` (the create for initial members).
    pub fn addop(&self, m: &M) -> Option<&OpId<M>> {
        self.addop.get(m)
    }

    /// `adder(m)`: who added `m`. `None` for initial members and for IDs never added
    /// (tell them apart with [`History::ever_added`]).
    pub fn adder_of(&self, m: &M) -> Option<M> {
        self.adder.get(m).cloned().flatten()
    }

    /// `removes(m)`: the removes that remove or cancel `m`, in processing order. Empty
    /// for current members and for IDs never added.
    pub fn removed_by(&self, m: &M) -> Vec<OpId<M>> {
        self.removes.get(m).cloned().unwrap_or_default()
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
        self.last_seq.get(m).copied()
    }

    /// Whether two histories hold the same operation set and the same `saw` entries,
    /// whatever order they were processed in (§10, oracle 5).
    pub fn same_history(&self, other: &Self) -> bool {
        self.ops.len() == other.ops.len()
            && self.saw == other.saw
            && self.ops.iter().all(|op| other.get(&op.id()) == Some(op))
    }
}

// --------------------------------------------------------------------------------------
// State snapshots
// --------------------------------------------------------------------------------------

impl History<crate::ids::MemberId> {
    /// Snapshot encoding: the operation log only, in processing order, as
    /// `list<tag:u8 ‖ sender ‖ seq:var ‖ …>` with `0 ‖ members:list<member>` (create),
    /// `1 ‖ target` (add), `2 ‖ target` (remove), `3 ‖ of_sender ‖ of_seq:var` (ack). Every
    /// other table is a function of the log: [`decode_state`](Self::decode_state) rebuilds
    /// it by applying the operations in order, which yields an equal history (every
    /// history is built by [`History::apply`] from [`History::new`], a Welcome's too).
    pub(crate) fn encode_state(&self, w: &mut StateWriter) {
        w.items(self.ops.iter(), |w, op| {
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

    /// Reverses [`encode_state`](Self::encode_state): applies the log to an empty history.
    /// An operation the history refuses is [`SnapshotError::History`].
    pub(crate) fn decode_state(r: &mut StateReader<'_>) -> Result<Self, SnapshotError> {
        let mut h = History::new();
        // Every operation takes at least a tag, a sender, a sequence number and one more byte.
        r.items(4, |r| {
            let tag = r.u8()?;
            let sender = r.member()?;
            let seq = r.var()?;
            let op = match tag {
                0 => Op::Create { sender, seq, members: r.items(1, |r| r.member())? },
                1 => Op::Add { sender, seq, target: r.member()? },
                2 => Op::Remove { sender, seq, target: r.member()? },
                3 => Op::Ack { sender, seq, of: OpId::new(r.member()?, r.var()?) },
                t => return Err(DecodeError::UnknownTag { what: "history operation", tag: u64::from(t) }.into()),
            };
            h.apply(op).map_err(|e| SnapshotError::History(e.to_string()))
        })?;
        Ok(h)
    }
}

// --------------------------------------------------------------------------------------
// Reference evaluator (§6.4 (a))
// --------------------------------------------------------------------------------------

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
    let Some(create_id) = h.create.as_ref().filter(|c| include(c)) else {
        return BTreeSet::new();
    };
    // The chosen adds, by sender, and the chosen removes, by target.
    let mut adds_by_sender: BTreeMap<&M, Vec<(OpId<M>, &M)>> = BTreeMap::new();
    let mut removes_of: BTreeMap<&M, Vec<OpId<M>>> = BTreeMap::new();
    let mut virtual_adds: Vec<(OpId<M>, &M)> = Vec::new();
    for op in &h.ops {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
            h.addop.clone(),
            h.adder.clone(),
            h.removes.iter().map(|(u, rs)| (*u, rs.iter().cloned().collect())).collect(),
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
                assert!(h.removes[t].contains(r), "{t} in targets({r:?})");
            }
        }
        for (u, rs) in &h.removes {
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
        fn rec(
            deps: &[Vec<usize>],
            done: &mut Vec<bool>,
            cur: &mut Vec<usize>,
            out: &mut Vec<Vec<usize>>,
            limit: usize,
        ) {
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

    // ---------------------------------------------------------------------------------
    // A DGM-level network of members (used by the scenarios and the simulation)
    // ---------------------------------------------------------------------------------

    /// What travels: membership operations, and updates and their acks, which consume
    /// sequence numbers but never enter `H`.
    #[derive(Clone, Debug)]
    enum Wire {
        Op(Op<Id>),
        Update { sender: Id, seq: u64 },
        UpdateAck { sender: Id, seq: u64, of: OpId<Id> },
    }
    impl Wire {
        fn sender(&self) -> Id {
            match self {
                Wire::Op(op) => *op.sender(),
                Wire::Update { sender, .. } | Wire::UpdateAck { sender, .. } => *sender,
            }
        }
        fn seq(&self) -> u64 {
            match self {
                Wire::Op(op) => op.seq(),
                Wire::Update { seq, .. } | Wire::UpdateAck { seq, .. } => *seq,
            }
        }
        fn id(&self) -> OpId<Id> {
            id(self.sender(), self.seq())
        }
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Status {
        /// An initial member before the create, or a newcomer before its Welcome.
        Waiting,
        Live,
        /// Removed (or cancelled) in its own view: never sends or processes again.
        Stopped,
    }

    #[derive(Clone, Debug)]
    struct Node {
        hist: History<Id>,
        /// Last sequence number used.
        seq: u64,
        status: Status,
        /// Per sender, the highest sequence number processed (or below the horizon).
        processed: BTreeMap<Id, u64>,
    }
    impl Node {
        fn new() -> Self {
            Node { hist: History::new(), seq: 0, status: Status::Waiting, processed: BTreeMap::new() }
        }
    }

    struct Welcome {
        adder: Id,
        snapshot: History<Id>,
        add: Op<Id>,
        hwm: BTreeMap<Id, u64>,
    }

    #[derive(Clone, Copy, Debug, Default)]
    struct Stats {
        cascades: usize,
        cancelled_at_once: usize,
        stopped: usize,
        joins: usize,
        partitions: usize,
        skipped_acks: usize,
        final_members: usize,
    }

    struct Net {
        nodes: BTreeMap<Id, Node>,
        log: BTreeMap<Id, Vec<Wire>>,
        welcomes: BTreeMap<Id, Welcome>,
        /// Partition: members on different sides cannot exchange.
        side: Option<BTreeMap<Id, bool>>,
        deep: bool,
        /// Members whose ID is a multiple of 3 skip about half of their acks of adds and
        /// removes (allowed by the validity rules; see
        /// `skipped_ack_is_closed_over_the_causal_past`).
        lazy: bool,
        stats: Stats,
    }

    impl Net {
        fn new(creator: Id, others: &[Id]) -> Net {
            let mut net = Net {
                nodes: BTreeMap::new(),
                log: BTreeMap::new(),
                welcomes: BTreeMap::new(),
                side: None,
                deep: true,
                lazy: false,
                stats: Stats::default(),
            };
            for &o in others {
                net.nodes.insert(o, Node::new());
            }
            let mut n = Node::new();
            n.status = Status::Live;
            net.nodes.insert(creator, n);
            net.send(creator, |q| Wire::Op(create(creator, q, others)));
            net
        }

        /// Created, and every initial member's ack processed everywhere (§10 setup).
        fn setup(creator: Id, others: &[Id]) -> Net {
            let mut net = Net::new(creator, others);
            net.deliver_all();
            net
        }

        fn hist(&self, n: Id) -> &History<Id> {
            &self.nodes[&n].hist
        }

        fn status(&self, n: Id) -> Status {
            self.nodes[&n].status
        }

        fn live(&self) -> BTreeSet<Id> {
            self.nodes.iter().filter(|(_, n)| n.status == Status::Live).map(|(i, _)| *i).collect()
        }

        fn check(&self, n: Id) {
            assert_consistent(self.hist(n), self.deep);
        }

        /// `n` sends a message; membership operations are applied locally at once.
        fn send(&mut self, n: Id, make: impl FnOnce(u64) -> Wire) -> OpId<Id> {
            let node = self.nodes.get_mut(&n).unwrap();
            assert_eq!(node.status, Status::Live, "{n} may not send");
            node.seq += 1;
            let w = make(node.seq);
            match &w {
                Wire::Op(op) => {
                    if let Op::Ack { of, .. } = op {
                        assert!(!node.hist.follows_own_removal(&n, of), "honest {n} flagged");
                    }
                    if let Op::Add { .. } | Op::Remove { .. } = op {
                        assert!(node.hist.view_me().contains(&n), "{n} sends while removed");
                    }
                    node.hist.apply(op.clone()).unwrap();
                }
                Wire::UpdateAck { of, .. } => {
                    assert!(!node.hist.follows_own_removal(&n, of), "honest {n} flagged");
                }
                Wire::Update { .. } => {}
            }
            node.processed.insert(n, node.seq);
            let wid = w.id();
            self.log.entry(n).or_default().push(w);
            self.check(n);
            wid
        }

        fn add(&mut self, s: Id, t: Id) -> OpId<Id> {
            assert!(!self.nodes.contains_key(&t), "{t} is not fresh");
            let node = &self.nodes[&s];
            let snapshot = node.hist.clone();
            let mut hwm = node.processed.clone();
            hwm.insert(s, node.seq);
            let aid = self.send(s, |q| Wire::Op(add(s, q, t)));
            let add_op = self.hist(s).get(&aid).unwrap().clone();
            self.welcomes.insert(t, Welcome { adder: s, snapshot, add: add_op, hwm });
            self.nodes.insert(t, Node::new());
            if let Some(side) = &mut self.side {
                let s_side = side.get(&s).copied().unwrap_or(false);
                side.insert(t, s_side);
            }
            aid
        }

        fn remove(&mut self, s: Id, t: Id) -> OpId<Id> {
            self.send(s, |q| Wire::Op(rm(s, q, t)))
        }

        fn update(&mut self, s: Id) -> OpId<Id> {
            self.send(s, |q| Wire::Update { sender: s, seq: q })
        }

        fn connected(&self, a: Id, b: Id) -> bool {
            self.side
                .as_ref()
                .is_none_or(|side| side.get(&a).copied().unwrap_or(false) == side.get(&b).copied().unwrap_or(false))
        }

        /// The newcomer `t` processes its Welcome: the adder's history from just before
        /// the add, then the add, then its ack of the add.
        fn join(&mut self, t: Id) -> bool {
            let Some(w) = self.welcomes.get(&t) else {
                return false;
            };
            if self.status(t) != Status::Waiting || !self.connected(t, w.adder) {
                return false;
            }
            let w = self.welcomes.remove(&t).unwrap();
            let aid = w.add.id();
            let node = self.nodes.get_mut(&t).unwrap();
            node.hist = w.snapshot;
            node.processed = w.hwm;
            node.hist.apply(w.add).unwrap();
            node.processed.insert(aid.sender, aid.seq);
            node.status = Status::Live;
            assert!(node.hist.view_me().contains(&t));
            self.stats.joins += 1;
            self.check(t);
            self.send(t, |q| Wire::Op(Op::Ack { sender: t, seq: q, of: aid }));
            true
        }

        /// The next message of `y` that `n` may process now, if any.
        fn deliverable(&self, n: Id, y: Id) -> Option<Wire> {
            if n == y || !self.connected(n, y) {
                return None;
            }
            let node = self.nodes.get(&n)?;
            let done = node.processed.get(&y).copied().unwrap_or(0);
            let w = self.log.get(&y)?.iter().find(|w| w.seq() > done)?;
            match node.status {
                Status::Stopped => return None,
                // Only an initial member processes anything before joining: the create.
                Status::Waiting if self.welcomes.contains_key(&n) || !matches!(w, Wire::Op(Op::Create { .. })) => {
                    return None;
                }
                _ => {}
            }
            let ready = match w {
                Wire::Op(Op::Ack { of, .. }) | Wire::UpdateAck { of, .. } => {
                    node.processed.get(&of.sender).is_some_and(|&s| s >= of.seq)
                }
                _ => true,
            };
            ready.then(|| w.clone())
        }

        /// `n` processes the next message of `y`, then acks it (unless it removed `n`).
        fn deliver(&mut self, n: Id, y: Id) -> bool {
            let Some(w) = self.deliverable(n, y) else {
                return false;
            };
            let node = self.nodes.get_mut(&n).unwrap();
            node.processed.insert(y, w.seq());
            match w {
                Wire::Update { sender, seq } => {
                    self.send(n, |q| Wire::UpdateAck { sender: n, seq: q, of: id(sender, seq) });
                }
                Wire::UpdateAck { sender, of, .. } => {
                    assert!(!node.hist.follows_own_removal(&sender, &of), "{sender} flagged");
                }
                Wire::Op(op) => {
                    if let Op::Ack { sender, of, .. } = &op {
                        assert!(node.hist.contains(of), "{n} lacks {of:?}");
                        assert!(!node.hist.follows_own_removal(sender, of), "{sender} flagged");
                    }
                    if let Op::Add { sender, .. } = &op
                        && !node.hist.removed_by(sender).is_empty()
                    {
                        self.stats.cancelled_at_once += 1;
                    }
                    let oid = op.id();
                    let kind = op.kind();
                    if let Err(e) = node.hist.apply(op) {
                        panic!("{n} cannot apply {oid:?}: {e}");
                    }
                    if kind == OpKind::Create {
                        node.status = Status::Live;
                    }
                    if kind == OpKind::Remove && node.hist.targets(&oid).is_some_and(|t| t.len() > 1) {
                        self.stats.cascades += 1;
                    }
                    self.check(n);
                    if kind != OpKind::Ack {
                        let node = &mut self.nodes.get_mut(&n).unwrap();
                        let skip = self.lazy
                            && kind != OpKind::Create
                            && n.is_multiple_of(3)
                            && (oid.seq + u64::from(oid.sender) + u64::from(n)).is_multiple_of(2);
                        if !node.hist.view_me().contains(&n) {
                            // TERMINATE: never ack one's own removal.
                            assert_eq!(kind, OpKind::Remove);
                            node.status = Status::Stopped;
                            self.stats.stopped += 1;
                        } else if skip {
                            self.stats.skipped_acks += 1;
                        } else {
                            self.send(n, |q| Wire::Op(Op::Ack { sender: n, seq: q, of: oid }));
                        }
                    }
                }
            }
            true
        }

        fn step(&mut self, n: Id, y: Id) {
            assert!(self.deliver(n, y), "{n} cannot process the next message of {y}");
        }

        fn deliver_all(&mut self) -> bool {
            let mut any = false;
            loop {
                let mut progress = false;
                let ids: Vec<Id> = self.nodes.keys().copied().collect();
                let senders: Vec<Id> = self.log.keys().copied().collect();
                for &n in &ids {
                    for &y in &senders {
                        while self.deliver(n, y) {
                            progress = true;
                        }
                    }
                }
                if !progress {
                    return any;
                }
                any = true;
            }
        }

        /// Heals any partition, delivers every Welcome and every message.
        fn settle(&mut self) {
            self.side = None;
            loop {
                let waiting: Vec<Id> = self.welcomes.keys().copied().collect();
                let mut progress = false;
                for t in waiting {
                    progress |= self.join(t);
                }
                progress |= self.deliver_all();
                if !progress {
                    break;
                }
            }
        }

        /// After `settle`: the global oracles at the DGM level.
        fn assert_converged(&mut self) {
            let live = self.live();
            assert!(self.nodes.values().all(|n| n.status != Status::Waiting));
            let total = self.log.values().flatten().filter(|w| matches!(w, Wire::Op(_))).count();
            let mut first: Option<&History<Id>> = None;
            for n in &live {
                let h = self.hist(*n);
                assert_eq!(h.len(), total, "{n} misses operations");
                assert_consistent(h, true);
                // A Welcome ships `ops()`; replaying them rebuilds the same state.
                let mut rebuilt = History::new();
                for op in h.ops() {
                    rebuilt.apply(op.clone()).unwrap();
                }
                assert_eq!(&rebuilt, h);
                match first {
                    Some(f) => {
                        assert!(f.same_history(h), "{n} diverged");
                        assert_eq!(derived(f), derived(h), "{n} diverged");
                        assert_eq!(f.view_me(), h.view_me());
                    }
                    None => first = Some(h),
                }
                // Every live member is a member, and every member is live.
                assert_eq!(h.view_me(), live, "at {n}");
            }
            self.stats.final_members = live.len();
        }
    }

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
    // §10 scenarios, membership outcomes
    // ---------------------------------------------------------------------------------

    /// The final history of `n`, replayed in its own order and 200 random causal orders.
    fn replay_sampled_orders(net: &Net, n: Id) {
        let h = net.hist(n).clone();
        let expected = h.view_me();
        let mut orders = sampled_orders(h.ops(), 200, u64::from(n));
        orders.push((0..h.len()).collect());
        check_orders(h.ops(), &orders, |r| assert_eq!(r.view_me(), expected));
    }

    #[test]
    fn s1_fig2_create_ack_add_update_remove() {
        let mut net = Net::new(A, &[B]); // A1
        net.step(B, A); // B ⟵ A1 → B1
        net.step(A, B); // A ⟵ B1
        let b2 = net.add(B, C); // B2
        assert!(net.join(C)); // C ⟵ B2 → C1
        net.step(A, B); // A ⟵ B2 → A2 (add-ack)
        net.deliver_all(); // everyone processes C1 and A2
        assert_eq!(net.hist(A).view_me(), set(&[A, B, C]));
        net.update(C); // C2
        net.step(B, C); // B ⟵ C2 → B3
        net.step(C, B); // C ⟵ B3
        net.update(A); // A3
        let c3 = net.remove(C, A); // C3
        assert_eq!(c3, id(C, 3));
        net.step(B, C); // B ⟵ C3 → B4
        net.step(C, B); // C ⟵ B4
        net.step(B, A); // B ⟵ A3 → B5 (A already removed in B's view)
        net.step(C, A); // C ⟵ A3 → C4
        assert_eq!(net.nodes[&C].seq, 4);
        net.step(A, C); // A ⟵ C2 → A4
        net.step(A, B); // A ⟵ B3
        net.step(A, C); // A ⟵ C3 → removed
        assert_eq!(net.status(A), Status::Stopped);
        net.settle(); // B and C process A4, a concurrent message from a removed member
        net.assert_converged();
        for x in [B, C] {
            let h = net.hist(x);
            assert_eq!(h.view_me(), set(&[B, C]));
            assert!(h.is_add(&b2) && h.is_remove(&c3));
            assert!(!h.has_acked(&c3, &A), "A never acks its own removal");
            assert!(h.has_acked(&c3, &B));
            // A4 acked C's update C2 and is concurrent with C3: not a post-removal ack.
            assert!(!h.follows_own_removal(&A, &id(C, 2)));
        }
        replay_sampled_orders(&net, B);
    }

    #[test]
    fn s5_remove_concurrent_with_update() {
        for a2_first in [true, false] {
            let mut net = Net::setup(A, &[B, C]);
            net.remove(A, C); // A2
            net.update(C); // C2
            if a2_first {
                net.step(B, A);
                net.step(B, C);
            } else {
                net.step(B, C);
                net.step(B, A);
            }
            net.settle();
            net.assert_converged();
            assert_eq!(net.status(C), Status::Stopped);
            assert_eq!(net.live(), set(&[A, B]));
            assert_eq!(net.hist(B).view_me(), set(&[A, B]));
            replay_sampled_orders(&net, B);
        }
    }

    #[test]
    fn s6_mutual_removes() {
        for c_first in [A, B] {
            for d_first in [A, B] {
                let mut net = Net::setup(A, &[B, C, D]);
                net.remove(A, B); // A2
                net.remove(B, A); // B2
                let other = |x| if x == A { B } else { A };
                net.step(C, c_first);
                net.step(C, other(c_first));
                net.step(D, d_first);
                net.step(D, other(d_first));
                net.settle();
                net.assert_converged();
                assert_eq!(net.status(A), Status::Stopped);
                assert_eq!(net.status(B), Status::Stopped);
                assert_eq!(net.hist(C).view_me(), set(&[C, D]));
                replay_sampled_orders(&net, C);
            }
        }
    }

    #[test]
    fn s7_two_concurrent_removes_of_different_members() {
        for swap in [false, true] {
            let mut net = Net::setup(A, &[B, C, D]);
            net.remove(A, C); // A2
            net.remove(B, D); // B2
            let (c_first, d_first) = if swap { (A, B) } else { (B, A) };
            let other = |x| if x == A { B } else { A };
            net.step(C, c_first);
            if net.status(C) == Status::Live {
                net.step(C, other(c_first));
            }
            net.step(D, d_first);
            if net.status(D) == Status::Live {
                net.step(D, other(d_first));
            }
            assert_eq!(net.status(C), Status::Stopped);
            assert_eq!(net.status(D), Status::Stopped);
            net.settle();
            net.assert_converged();
            assert_eq!(net.live(), set(&[A, B]));
            if !swap {
                // C acked B2 before it processed its own removal: an honest ack.
                assert!(net.hist(A).has_acked(&id(B, 2), &C));
                assert!(!net.hist(A).has_acked(&id(A, 2), &C));
            }
            replay_sampled_orders(&net, A);
        }
    }

    #[test]
    fn s8_remove_concurrent_with_add_by_removed_member() {
        for remove_first in [true, false] {
            let mut net = Net::setup(A, &[B, C]);
            let a2 = net.remove(A, B); // A2
            net.add(B, E); // B2
            if remove_first {
                net.step(C, A);
                net.step(C, B);
                // E is cancelled at once: never a member at C.
                assert!(!net.hist(C).view_me().contains(&E));
                assert_eq!(net.hist(C).removed_by(&E), vec![a2.clone()]);
            } else {
                net.step(C, B);
                assert!(net.hist(C).view_me().contains(&E));
                net.step(C, A);
                assert!(!net.hist(C).view_me().contains(&E));
            }
            net.step(A, B); // A ⟵ B2: cancelled at once
            assert!(!net.hist(A).view_me().contains(&E));
            assert_eq!(net.hist(A).removed_by(&E), vec![a2.clone()]);
            assert!(net.join(E));
            net.step(E, A); // E processes A2 above its horizon and terminates
            assert_eq!(net.status(E), Status::Stopped);
            net.settle();
            net.assert_converged();
            assert_eq!(net.live(), set(&[A, C]));
            assert_eq!(net.hist(C).targets(&a2), Some(&set(&[B, E])));
            replay_sampled_orders(&net, C);
        }
    }

    #[test]
    fn s9_partition_then_heal() {
        let mut net = Net::setup(A, &[B, C, D]);
        net.side = Some(BTreeMap::from([(A, false), (B, false), (C, true), (D, true)]));
        net.add(A, E);
        assert!(net.join(E));
        net.update(B);
        net.step(A, B); // A acks B's update
        net.deliver_all(); // within each side
        assert_eq!(net.hist(E).view_me(), set(&[A, B, C, D, E]));
        net.remove(C, D);
        net.step(D, C);
        assert_eq!(net.status(D), Status::Stopped);
        net.deliver_all();
        assert_eq!(net.hist(C).view_me(), set(&[A, B, C]));
        assert_eq!(net.hist(A).view_me(), set(&[A, B, C, D, E]));
        net.settle();
        net.assert_converged();
        assert_eq!(net.live(), set(&[A, B, C, E]));
        for x in [A, B, C, E] {
            assert_eq!(net.hist(x).view_me(), set(&[A, B, C, E]));
            assert!(net.hist(x).removed_by(&E).is_empty(), "no cascade to E");
        }
        replay_sampled_orders(&net, C);
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
        // A late ack of B2 is still accepted and changes no saw entry.
        let saw_before = h.saw.clone();
        h.apply(ack(C, 4, (B, 2))).unwrap();
        assert_eq!(h.saw, saw_before);
        assert!(h.has_acked(&id(B, 2), &C));
        // Every order of this history agrees.
        let mut all = ops.clone();
        all.extend([rm(C, 3, B), ack(C, 4, (B, 2))]);
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
    // Random DGM-level protocol runs: incremental == reference at every step, and
    // convergence after full delivery
    // ---------------------------------------------------------------------------------

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

    /// A small deterministic generator for the seeded runs.
    fn xorshift(state: &mut u64) -> u32 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        (*state >> 16) as u32
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
        }
        // The runs exercise what they are meant to.
        assert!(total.cascades > 0, "{total:?}");
        assert!(total.cancelled_at_once > 0, "{total:?}");
        assert!(total.stopped > 0 && total.joins > 0 && total.partitions > 0, "{total:?}");
        assert!(total.final_members > 0 && total.skipped_acks > 0, "{total:?}");
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
}
