//! The acknowledgments of operations in flight (V4 (d), and what the ordering layer keeps
//! of an acknowledgeable envelope, §7.3).
//!
//! A create, update, remove or add `(S, q)` is **in flight** from the moment it is
//! processed here until every current member has acknowledged it (the paper keeps state
//! "for each PCS update message until every group member acknowledges the message", §1).
//! Its entry holds `pending`, the current members whose ack has not been processed yet, and
//! `acked`, the members whose ack has (V4 (d): "a member acknowledges an operation at most
//! once"). When `pending` becomes empty the entry **completes**: it is dropped, and the
//! ordering layer drops the retained kind, short hash and verifying key of `(S, q)`. Only
//! entries in flight take memory.
//!
//! - **Open** (`open`): `pending` = my view after processing `(S, q)`, minus S and me (I
//!   acknowledge at once; the target of a remove is not in the view any more, the target of
//!   an add is, and acknowledges its add with an ack).
//! - **Ack** (`acknowledge`): the acker moves from `pending` to `acked`. An acker not in
//!   `pending` (a removed member's late ack) is recorded in `acked` as well.
//! - **Add** (`inherit`): a newcomer Z added by Y takes Y's position in every live entry:
//!   pending if Y is, acknowledged otherwise. Per-sender FIFO makes this exact: every ack
//!   Y sent before its add precedes the add in Y's stream (coalesced acks go first in the
//!   add's batch), so Y is still pending exactly when Y had not processed `(S, q)` before
//!   the add; then `(S, q)` lies above Z's horizon and Z acknowledges it itself. Otherwise
//!   (Y acknowledged it, Y is S, or Y is me) Z's Welcome covers it and Z never acks it.
//! - **Leave** (`leave`): a member that leaves my view (removed, or its add cancelled by a
//!   remove) leaves every `pending`.
//!
//! Invariant: every current member other than me is, for every live entry, S, in
//! `pending` or in `acked`. So once an entry completed, an ack of it by a current member can
//! only be a second one.

use std::collections::{BTreeMap, BTreeSet};

use crate::ids::MemberId;
use crate::snapshot::{SnapshotError, StateReader, StateWriter};

/// An operation, as `(sender, sequence number)`.
pub(crate) type OpKey = (MemberId, u64);

/// One operation in flight.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct InFlight {
    /// Current members whose ack has not been processed here.
    pending: BTreeSet<MemberId>,
    /// Members whose ack (or add-ack) has been processed here, or who inherited the
    /// operation from their adder.
    acked: BTreeSet<MemberId>,
}

/// The operations processed here that some current member has not acknowledged yet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct AckTracker {
    entries: BTreeMap<OpKey, InFlight>,
}

impl AckTracker {
    /// Opens the entry of `op`, just processed, with the members whose ack is awaited and
    /// those already counted as having acknowledged it. Returns `op` if nobody is awaited:
    /// it completed at once.
    pub(crate) fn open(
        &mut self,
        op: OpKey,
        pending: BTreeSet<MemberId>,
        acked: BTreeSet<MemberId>,
    ) -> Option<OpKey> {
        if pending.is_empty() {
            self.entries.remove(&op);
            return Some(op);
        }
        self.entries.insert(op, InFlight { pending, acked });
        None
    }

    /// Whether an ack of `op` by `a` was processed here while `op` is in flight (V4 (d)).
    pub(crate) fn has_acked(&self, op: &OpKey, a: &MemberId) -> bool {
        self.entries.get(op).is_some_and(|e| e.acked.contains(a))
    }

    /// Records `a`'s ack of `op`: O(log n). Returns `op` if it completed. Nothing happens
    /// for an operation not in flight.
    pub(crate) fn acknowledge(&mut self, op: &OpKey, a: MemberId) -> Option<OpKey> {
        let e = self.entries.get_mut(op)?;
        e.pending.remove(&a);
        e.acked.insert(a);
        if e.pending.is_empty() {
            self.entries.remove(op);
            return Some(*op);
        }
        None
    }

    /// The newcomer `z`, added by `y`, takes `y`'s position in every entry in flight.
    pub(crate) fn inherit(&mut self, y: &MemberId, z: MemberId) {
        for e in self.entries.values_mut() {
            if e.pending.contains(y) {
                e.pending.insert(z);
            } else {
                e.acked.insert(z);
            }
        }
    }

    /// Members that left my view leave every `pending`. Returns the operations that
    /// completed, in order.
    pub(crate) fn leave(&mut self, gone: &BTreeSet<MemberId>) -> Vec<OpKey> {
        if gone.is_empty() {
            return Vec::new();
        }
        let mut completed = Vec::new();
        for (op, e) in &mut self.entries {
            let mut left = false;
            for m in gone {
                left |= e.pending.remove(m);
            }
            if left && e.pending.is_empty() {
                completed.push(*op);
            }
        }
        for op in &completed {
            self.entries.remove(op);
        }
        completed
    }

    /// Number of operations in flight.
    #[cfg(any(test, feature = "test-hooks"))]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The members awaited for `op`, if it is in flight.
    #[cfg(any(test, feature = "test-hooks"))]
    pub(crate) fn pending_of(&self, op: &OpKey) -> Option<&BTreeSet<MemberId>> {
        self.entries.get(op).map(|e| &e.pending)
    }

    /// Snapshot encoding: `map<(member, q:var), (pending:list<member>, acked:list<member>)>`,
    /// each list ascending; `pending` is never empty.
    pub(crate) fn encode_state(&self, w: &mut StateWriter) {
        w.map(&self.entries, |w, (s, q), e| {
            w.member(s);
            w.var(*q);
            w.items(e.pending.iter(), |w, m| w.member(m));
            w.items(e.acked.iter(), |w, m| w.member(m));
        });
    }

    /// Reverses [`encode_state`](Self::encode_state). A member both pending and
    /// acknowledged, an empty `pending` (a completed entry), or an unsorted list is refused.
    pub(crate) fn decode_state(r: &mut StateReader<'_>) -> Result<Self, SnapshotError> {
        let members = |r: &mut StateReader<'_>| -> Result<BTreeSet<MemberId>, SnapshotError> {
            let v = r.items(1, |r| r.member())?;
            if !v.windows(2).all(|w| w[0] < w[1]) {
                return Err(crate::codec::DecodeError::NotCanonicalSet.into());
            }
            Ok(v.into_iter().collect())
        };
        let entries = r.map(4, |r| {
            let op = (r.member()?, r.var()?);
            let pending = members(r)?;
            let acked = members(r)?;
            if pending.is_empty() {
                return Err(SnapshotError::Inconsistent("an acknowledgment entry with nobody pending"));
            }
            if !pending.is_disjoint(&acked) {
                return Err(SnapshotError::Inconsistent("a member both pending and acknowledged"));
            }
            Ok((op, InFlight { pending, acked }))
        })?;
        Ok(AckTracker { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: MemberId = MemberId([1; 32]);
    const A: MemberId = MemberId([2; 32]);
    const B: MemberId = MemberId([3; 32]);
    const Z: MemberId = MemberId([4; 32]);

    fn set(ms: &[MemberId]) -> BTreeSet<MemberId> {
        ms.iter().copied().collect()
    }

    #[test]
    fn an_entry_completes_when_its_last_pending_member_acknowledges() {
        let mut t = AckTracker::default();
        assert_eq!(t.open((S, 3), set(&[A, B]), BTreeSet::new()), None);
        assert_eq!(t.acknowledge(&(S, 3), A), None);
        assert!(t.has_acked(&(S, 3), &A) && !t.has_acked(&(S, 3), &B));
        assert_eq!(t.acknowledge(&(S, 3), B), Some((S, 3)));
        assert_eq!((t.pending_of(&(S, 3)), t.len()), (None, 0));
        // Not in flight any more: nothing happens, and nothing is remembered.
        assert_eq!(t.acknowledge(&(S, 3), A), None);
        assert!(!t.has_acked(&(S, 3), &A));
    }

    #[test]
    fn an_entry_with_nobody_pending_completes_at_once() {
        let mut t = AckTracker::default();
        assert_eq!(t.open((S, 1), BTreeSet::new(), BTreeSet::new()), Some((S, 1)));
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn a_newcomer_takes_its_adders_position() {
        let mut t = AckTracker::default();
        t.open((S, 2), set(&[A, B]), BTreeSet::new());
        t.acknowledge(&(S, 2), A);
        // Added by A, which acknowledged: Z is counted as having acknowledged.
        t.inherit(&A, Z);
        assert!(t.has_acked(&(S, 2), &Z));
        // Added by B, still pending: Z2 is pending.
        let z2 = MemberId([5; 32]);
        t.inherit(&B, z2);
        assert_eq!(t.pending_of(&(S, 2)), Some(&set(&[B, z2])));
        // Added by S itself: acknowledged.
        let z3 = MemberId([6; 32]);
        t.inherit(&S, z3);
        assert!(t.has_acked(&(S, 2), &z3));
    }

    #[test]
    fn members_that_leave_complete_the_entries_they_held_up() {
        let mut t = AckTracker::default();
        t.open((S, 2), set(&[A, B]), BTreeSet::new());
        t.open((S, 4), set(&[A]), BTreeSet::new());
        t.acknowledge(&(S, 2), A);
        assert_eq!(t.leave(&set(&[B])), vec![(S, 2)]);
        assert_eq!(t.leave(&set(&[A])), vec![(S, 4)]);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn the_encoding_round_trips_and_refuses_a_completed_entry() {
        let mut t = AckTracker::default();
        t.open((S, 2), set(&[A, B]), set(&[Z]));
        let mut w = StateWriter::new();
        t.encode_state(&mut w);
        let bytes = w.finish();
        let mut r = StateReader::open(&bytes).unwrap();
        assert_eq!(AckTracker::decode_state(&mut r).unwrap(), t);
        r.finish().unwrap();

        let mut empty = AckTracker::default();
        empty.entries.insert((S, 2), InFlight::default());
        let mut w = StateWriter::new();
        empty.encode_state(&mut w);
        let bytes = w.finish();
        let mut r = StateReader::open(&bytes).unwrap();
        assert!(matches!(AckTracker::decode_state(&mut r), Err(SnapshotError::Inconsistent(_))));
    }
}
