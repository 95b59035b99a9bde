//! The short hashes of each sender's latest processed acks and application messages, kept
//! to report a second authentic version of one as equivocation (§7.6), and the lookup of
//! the version processed for a sequence number.

use std::collections::VecDeque;

use super::Ordering;
use crate::consts::MAX_RECENT_HASHES;
use crate::crypto::VerifyingKey;
use crate::ids::MemberId;
use crate::snapshot::{SnapshotError, StateReader, StateWriter};

impl Ordering {
    /// One sender's recent hashes: `list<(seq:var, hash:[16])>`, oldest first.
    pub(crate) fn encode_recent(&self, w: &mut StateWriter, id: &MemberId) {
        let none = VecDeque::new();
        let q = self.recent.get(id).unwrap_or(&none);
        w.items(q.iter(), |w, (seq, hash)| {
            w.var(*seq);
            w.raw(hash);
        });
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

    /// Restores one sender's recent hashes from its own record.
    pub(crate) fn insert_recent(&mut self, id: MemberId, q: VecDeque<(u64, [u8; 16])>) {
        if !q.is_empty() {
            self.recent.insert(id, q);
        }
    }

    /// Remembers the short hash of a processed envelope that is not retained (§7.6),
    /// keeping at most [`MAX_RECENT_HASHES`] per sender.
    pub(crate) fn remember(&mut self, id: MemberId, seq: u64, hash: [u8; 16]) {
        if self.retained.contains_key(&(id, seq)) {
            return;
        }
        let q = self.recent.entry(id).or_default();
        if q.back().is_some_and(|(s, _)| *s >= seq) {
            return;
        }
        q.push_back((seq, hash));
        while q.len() > MAX_RECENT_HASHES {
            q.pop_front();
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
        let hash = self.recent.get(s)?.iter().find(|(seq, _)| *seq == q)?.1;
        let key = match self.retained_keys.range((*s, q)..=(*s, u64::MAX)).next() {
            Some((_, k)) => *k,
            None => self.senders.get(s)?.key,
        };
        Some((hash, key))
    }
}
