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
//! | [`History::compact`], [`History::depart`], [`Folded`] | compaction, live members, the compact base (§6.7) | — |
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
//!   a member acks an operation at most once, and never one it had already seen (inherited
//!   or in the causal past of an earlier ack of its own), but for a newcomer's ack of its
//!   own add ([`DgmError::AckOfSeenOp`]; what makes compaction invisible, §6.7).
//!
//! Rules that need more than `H` (signatures, identities, tags, seed blocks) belong to
//! the caller, and so does V4 (e): call [`History::follows_own_removal`] before applying
//! an ack (`apply` accepts an ack of one's own removal; the evaluators stay exact).

// The operation types and `DgmError` are defined here; `History` (the incremental
// evaluator, §6.4 (b), with its snapshot encoding) in `history`; the reference evaluator
// (§6.4 (a)) in `reference`; the unit tests under `tests`.
mod history;
mod reference;
#[cfg(test)]
mod tests;

pub use history::{BaseMember, Compaction, Folded, History};
pub use reference::{reference_view, reference_view_subset};

use core::fmt::Debug;

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
    /// A compact base that names a member twice, or has members but no create.
    #[error("compact base: member {member:?} listed twice or without a create")]
    InvalidBase {
        /// The member.
        member: M,
    },
    /// The sender has already seen the operation it acknowledges (in an earlier ack's
    /// causal past, or inherited from its adder): an honest member acks each operation when
    /// it processes it, so this ack is either a replay or crafted (V4 (d), §6.4 (c)).
    #[error("ack {op:?}: its sender had already seen {of:?}")]
    AckOfSeenOp {
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

impl<M> DgmError<M> {
    /// A short reason, without the operation it names (for errors that carry enums and
    /// static reasons, not formatted strings).
    pub fn reason(&self) -> &'static str {
        match self {
            DgmError::ZeroSeq { .. } => "sequence number 0",
            DgmError::DuplicateOp { .. } => "the operation is already in the history",
            DgmError::SeqNotIncreasing { .. } => "the sequence number is not above the sender's last one",
            DgmError::NoCreate { .. } => "an operation precedes the create",
            DgmError::SecondCreate { .. } => "a second create",
            DgmError::CreatorListed { .. } => "the create lists its creator as another member",
            DgmError::DuplicateInitialMember { .. } => "the create lists a member twice",
            DgmError::UnknownSender { .. } => "the sender is not a member of the history",
            DgmError::SenderNotJoined { .. } => "the sender has not acknowledged its own addition",
            DgmError::SelfAdd { .. } => "an add of oneself",
            DgmError::AlreadyAdded { .. } => "the member was added already",
            DgmError::SelfRemove { .. } => "a remove of oneself",
            DgmError::UnknownTarget { .. } => "the target is unknown",
            DgmError::TargetNotInView { .. } => "the target is not in the sender's view",
            DgmError::AckOfOwnOp { .. } => "an ack of one's own operation",
            DgmError::UnknownOp { .. } => "an ack of an unknown operation",
            DgmError::NotMembershipOp { .. } => "an ack of an operation that is not a membership operation",
            DgmError::DuplicateAck { .. } => "a second ack of one operation",
            DgmError::InvalidBase { .. } => "an invalid compact base",
            DgmError::AckOfSeenOp { .. } => "an ack of an operation its sender had already seen",
        }
    }
}
