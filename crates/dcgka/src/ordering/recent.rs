//! The short hashes of each sender's latest processed acks and application messages, kept
//! to report a second authentic version of one as equivocation (§7.6), and the lookup of
//! the version processed for a sequence number.

use std::collections::VecDeque;

use super::Ordering;
use crate::consts::MAX_RECENT_HASHES;
use crate::crypto::VerifyingKey;
use crate::ids::MemberId;
use crate::snapshot::{SnapshotError, StateReader, StateWriter};

/// A sender's recent hashes: `list<(seq:var, hash:[16])>`, oldest first.
pub(super) fn encode(w: &mut StateWriter, q: &VecDeque<(u64, [u8; 16])>) {
    w.items(q.iter(), |w, (seq, hash)| {
        w.var(*seq);
        w.raw(hash);
    });
}

impl Ordering {
    /// One sender's recent hashes: `list<(seq:var, hash:[16])>`, oldest first.
    pub(crate) fn encode_recent(&self, w: &mut StateWriter, id: &MemberId) {
        match self.senders.get(id) {
            Some(s) => encode(w, &s.recent),
            None => encode(w, &VecDeque::new()),
        }
    }

    /// Reverses [`encode_recent`](Self::encode_recent): at most [`MAX_RECENT_HASHES`]
    /// entries in strictly ascending order.
    pub(crate) fn decode_recent(r: &mut StateReader<'_>) -> Result<VecDeque<(u64, [u8; 16])>, SnapshotError> {
        let v = r.items(17, |r| Ok((r.var()?, r.array()?)))?;
        if v.len() > MAX_RECENT_HASHES || v.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(SnapshotError::Inconsistent("recent hashes out of order or too many"));
        }
        Ok(v.into())
    }

    /// Restores the recent hashes of a sender whose state is restored, from its own record.
    pub(crate) fn insert_recent(&mut self, id: MemberId, q: VecDeque<(u64, [u8; 16])>) {
        if let Some(s) = self.senders.get_mut(&id) {
            s.recent = q;
        }
    }

    /// Remembers the short hash of a processed envelope that is not retained (§7.6),
    /// keeping at most [`MAX_RECENT_HASHES`] per sender.
    pub(crate) fn remember(&mut self, id: MemberId, seq: u64, hash: [u8; 16]) {
        if self.retained.contains_key(&(id, seq)) {
            return;
        }
        // Only a sender with a state has recent hashes (they are stored with it).
        let Some(q) = self.senders.get_mut(&id).map(|s| &mut s.recent) else { return };
        if q.back().is_some_and(|(s, _)| *s >= seq) {
            return;
        }
        // Oldest out first, so that the queue never holds more than the bound (nor
        // allocates for more).
        let mut dropped = Vec::new();
        while q.len() >= MAX_RECENT_HASHES {
            dropped.extend(q.pop_front().map(|(s, _)| s));
        }
        q.push_back((seq, hash));
        // The key of a completed operation that only a forgotten hash needed goes too.
        for j in dropped {
            if let Some(k) = self.retained_keys.range((id, j)..=(id, u64::MAX)).next().map(|((_, k), _)| *k) {
                self.drop_key_if_unneeded(id, k);
            }
        }
    }

    /// Whether the key retained for `(s, k)` is needed: `(s, k)` is retained (in flight),
    /// or some recent hash of `s` was verified under it, i.e. lies after the previous
    /// retained key of `s` and at or before `k` ([`Self::processed_version`]).
    fn key_needed(&self, s: &MemberId, k: u64) -> bool {
        if self.retained.contains_key(&(*s, k)) {
            return true;
        }
        let lo = self.retained_keys.range((*s, 0)..(*s, k)).next_back().map_or(0, |((_, p), _)| *p);
        self.senders.get(s).is_some_and(|r| r.recent.iter().any(|(j, _)| lo < *j && *j <= k))
    }

    /// Drops the key retained for `(s, k)` unless it is needed ([`Self::key_needed`]).
    /// Dropping it never makes another key unneeded: the range the next key covers only
    /// grows.
    pub(super) fn drop_key_if_unneeded(&mut self, s: MemberId, k: u64) {
        if !self.key_needed(&s, k) {
            self.retained_keys.remove(&(s, k));
        }
    }

    /// Drops every retained key that is not needed ([`Self::key_needed`]), on loading a
    /// snapshot before version 4 (which kept the key of every operation ever processed),
    /// once the recent hashes are in place. Each key is judged against all keys, so that
    /// the keys the recent hashes are looked up under stay the same.
    pub(crate) fn prune_keys(&mut self) {
        let unneeded: Vec<(MemberId, u64)> =
            self.retained_keys.keys().filter(|(s, k)| !self.key_needed(s, *k)).copied().collect();
        for key in unneeded {
            self.retained_keys.remove(&key);
        }
    }

    /// The short hash of the version of `(s, q)` processed here, and the key that was
    /// current for it, if either is still known. For a recent (unretained) envelope the key
    /// is the one of the next retained envelope (keys rotate only on those), or the current
    /// key; a rotation this misses only hides an equivocation, it never frames anyone.
    pub(crate) fn processed_version(&self, s: &MemberId, q: u64) -> Option<([u8; 16], VerifyingKey)> {
        if let Some(v) = self.retained(s, q) {
            return Some(v);
        }
        let sender = self.senders.get(s)?;
        let hash = sender.recent.iter().find(|(seq, _)| *seq == q)?.1;
        let key = match self.retained_keys.range((*s, q)..=(*s, u64::MAX)).next() {
            Some((_, k)) => *k,
            None => sender.state.key,
        };
        Some((hash, key))
    }
}
