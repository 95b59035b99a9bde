//! The buffer of envelopes that are not ready yet (§7.3): filing, its bounds, the
//! unverified budgets and eviction, and taking entries out again.

use std::collections::BTreeSet;

use super::{BufKey, BufferError, Buffered, Ordering, Roster, buffered_size};
use crate::consts::{
    MAX_AHEAD, MAX_BUFFERED_BYTES, MAX_BUFFERED_PER_GROUP, MAX_BUFFERED_PER_SENDER, MAX_BUFFERED_UNKNOWN,
    MAX_BUFFERED_UNKNOWN_BYTES, MAX_CANDIDATES_PER_SLOT, MAX_UNVERIFIED_BYTES_PER_SENDER,
    MAX_UNVERIFIED_FAR_BYTES_PER_SENDER, MAX_UNVERIFIED_FAR_PER_SENDER, MAX_UNVERIFIED_PER_SENDER,
    UNVERIFIED_NEAR,
};
use crate::ids::MemberTag;
use crate::wire::Envelope;

impl Ordering {
    /// Number of buffered envelopes.
    pub(crate) fn buffered(&self) -> usize {
        self.buffered
    }

    /// Files an envelope until it is ready, enforcing every buffer bound (§7.3).
    ///
    /// A verified envelope of a known sender is never refused because of unverified data:
    /// unverified candidates and first envelopes are evicted, furthest from being ready
    /// first, until it fits. An unverified envelope only gets its claimed sender's
    /// unverified budget (much smaller far ahead of `hwm`) and never evicts anything. A
    /// first envelope evicts the stale first envelopes it needs room from.
    pub(crate) fn buffer(&mut self, d: &impl Roster, env: Envelope, verified: bool) -> Result<(), BufferError> {
        let key = BufKey::of(&env);
        let seq = env.seq.0;
        let size = buffered_size(&env);
        let known = match key {
            BufKey::Tag(t) => d.resolve(&t),
            BufKey::First(..) => None,
        };
        if let Some(slot) = self.buffer.get_mut(&key).and_then(|m| m.get_mut(&seq))
            && let Some(b) = slot.iter_mut().find(|b| b.env == env)
        {
            b.verified |= verified;
            return Ok(());
        }
        match known {
            Some(id) => {
                let hwm = self.hwm(&id);
                if seq > hwm.saturating_add(MAX_AHEAD) {
                    return Err(BufferError::TooFarAhead { seq, hwm, max: MAX_AHEAD });
                }
                if verified {
                    // Verified data makes room by evicting unverified data, from this slot
                    // first (a verified envelope replaces unverified candidates).
                    let slot_len = self.slot_len(&key, seq);
                    if slot_len >= MAX_CANDIDATES_PER_SLOT {
                        self.evict_unverified_in_slot(&key, seq);
                    }
                    self.make_room(d, &key, size);
                } else {
                    self.check_unverified(&key, seq, hwm, size)?;
                }
            }
            None => {
                // First envelopes: stale entries make room for new ones.
                while self.unknown_count(d) >= MAX_BUFFERED_UNKNOWN
                    || self.unknown_bytes(d) + size > MAX_BUFFERED_UNKNOWN_BYTES
                {
                    if size > MAX_BUFFERED_UNKNOWN_BYTES || !self.evict_one_unknown(d) {
                        let held = self.unknown_bytes(d);
                        return Err(BufferError::Full {
                            what: "unknown sender bytes",
                            held,
                            max: MAX_BUFFERED_UNKNOWN_BYTES,
                        });
                    }
                }
            }
        }
        if self.buffered >= MAX_BUFFERED_PER_GROUP {
            return Err(BufferError::Full { what: "group", held: self.buffered, max: MAX_BUFFERED_PER_GROUP });
        }
        if self.buffered_bytes + size > MAX_BUFFERED_BYTES {
            return Err(BufferError::Full { what: "group bytes", held: self.buffered_bytes, max: MAX_BUFFERED_BYTES });
        }
        let per_sender = self.per_key(&key);
        if per_sender >= MAX_BUFFERED_PER_SENDER {
            return Err(BufferError::Full { what: "sender", held: per_sender, max: MAX_BUFFERED_PER_SENDER });
        }
        let held = self.slot_len(&key, seq);
        if held >= MAX_CANDIDATES_PER_SLOT {
            return Err(BufferError::Full { what: "slot", held, max: MAX_CANDIDATES_PER_SLOT });
        }
        self.buffer.entry(key).or_default().entry(seq).or_default().push(Buffered { env, size, verified, hash: None });
        self.buffered += 1;
        self.buffered_bytes += size;
        Ok(())
    }

    /// The unverified budgets of one claimed sender (§7.3): near `hwm` and far ahead of it.
    fn check_unverified(&self, key: &BufKey, seq: u64, hwm: u64, size: usize) -> Result<(), BufferError> {
        let near_limit = hwm.saturating_add(UNVERIFIED_NEAR);
        let (mut n, mut bytes, mut far_n, mut far_bytes) = (0usize, 0usize, 0usize, 0usize);
        for (q, b) in self.buffer.get(key).into_iter().flat_map(|m| m.iter()).flat_map(|(q, v)| v.iter().map(move |b| (*q, b)))
        {
            if b.verified {
                continue;
            }
            n += 1;
            bytes += b.size;
            if q > near_limit {
                far_n += 1;
                far_bytes += b.size;
            }
        }
        let err = |what, held, max| Err(BufferError::Unverified { what, held, max });
        if seq > near_limit {
            if far_n >= MAX_UNVERIFIED_FAR_PER_SENDER {
                return err("far ahead, per sender", far_n, MAX_UNVERIFIED_FAR_PER_SENDER);
            }
            if far_bytes + size > MAX_UNVERIFIED_FAR_BYTES_PER_SENDER {
                return err("far ahead bytes, per sender", far_bytes, MAX_UNVERIFIED_FAR_BYTES_PER_SENDER);
            }
        }
        if n >= MAX_UNVERIFIED_PER_SENDER {
            return err("per sender", n, MAX_UNVERIFIED_PER_SENDER);
        }
        if bytes + size > MAX_UNVERIFIED_BYTES_PER_SENDER {
            return err("bytes per sender", bytes, MAX_UNVERIFIED_BYTES_PER_SENDER);
        }
        Ok(())
    }

    fn slot_len(&self, key: &BufKey, seq: u64) -> usize {
        self.buffer.get(key).and_then(|m| m.get(&seq)).map_or(0, Vec::len)
    }

    fn per_key(&self, key: &BufKey) -> usize {
        self.buffer.get(key).map_or(0, |m| m.values().map(Vec::len).sum())
    }

    /// Whether a key files first envelopes (or envelopes of a tag nobody has).
    fn is_unknown(d: &impl Roster, key: &BufKey) -> bool {
        match key {
            BufKey::Tag(t) => d.resolve(t).is_none(),
            BufKey::First(..) => true,
        }
    }

    fn unknown_count(&self, d: &impl Roster) -> usize {
        self.buffer.iter().filter(|(k, _)| Self::is_unknown(d, k)).map(|(_, v)| v.values().map(Vec::len).sum::<usize>()).sum()
    }

    fn unknown_bytes(&self, d: &impl Roster) -> usize {
        self.buffer
            .iter()
            .filter(|(k, _)| Self::is_unknown(d, k))
            .flat_map(|(_, v)| v.values().flatten())
            .map(|b| b.size)
            .sum()
    }

    /// How far an entry is from becoming ready: its distance ahead of its sender's `hwm`
    /// (for a first envelope, of the operation it acknowledges); `u64::MAX` if unknown.
    fn distance(&self, d: &impl Roster, key: &BufKey, seq: u64) -> u64 {
        let ahead = |tag: &MemberTag, q: u64| d.resolve(tag).map_or(u64::MAX, |id| q.saturating_sub(self.hwm(&id)));
        match key {
            BufKey::Tag(t) => ahead(t, seq),
            BufKey::First(_, of_sender, of_seq) => ahead(of_sender, *of_seq),
        }
    }

    /// Removes the entry at `(key, seq, index)`.
    fn remove_at(&mut self, key: &BufKey, seq: u64, index: usize) {
        let Some(m) = self.buffer.get_mut(key) else { return };
        let Some(v) = m.get_mut(&seq) else { return };
        if index >= v.len() {
            return;
        }
        let b = v.remove(index);
        self.buffered -= 1;
        self.buffered_bytes -= b.size;
        if v.is_empty() {
            m.remove(&seq);
        }
        if m.is_empty() {
            self.buffer.remove(key);
        }
    }

    /// Evicts the unverified candidates of one slot (a verified envelope replaces them).
    fn evict_unverified_in_slot(&mut self, key: &BufKey, seq: u64) {
        while let Some(i) =
            self.buffer.get(key).and_then(|m| m.get(&seq)).and_then(|v| v.iter().position(|b| !b.verified))
        {
            self.remove_at(key, seq, i);
        }
    }

    /// Evicts evictable entries (unverified candidates and first envelopes), furthest from
    /// being ready first and the larger first among equals, until a verified envelope of
    /// `size` bytes under `key` fits the group bounds and its sender's bound (from `key`'s
    /// own entries when that bound is the one reached), or nothing evictable is left. The
    /// victims are chosen in one sorted pass, so a large envelope costs O(n log n).
    fn make_room(&mut self, d: &impl Roster, key: &BufKey, size: usize) {
        let (mut count, mut bytes, mut own) = (self.buffered, self.buffered_bytes, self.per_key(key));
        let fits = |count: usize, bytes: usize, own: usize| {
            count < MAX_BUFFERED_PER_GROUP && bytes + size <= MAX_BUFFERED_BYTES && own < MAX_BUFFERED_PER_SENDER
        };
        if fits(count, bytes, own) {
            return;
        }
        let mut evictable: Vec<((u64, usize), BufKey, u64, usize)> = Vec::new();
        for (k, slots) in &self.buffer {
            let first = matches!(k, BufKey::First(..));
            for (seq, v) in slots {
                for (i, b) in v.iter().enumerate() {
                    if first || !b.verified {
                        evictable.push(((self.distance(d, k, *seq), b.size), *k, *seq, i));
                    }
                }
            }
        }
        evictable.sort_by_key(|v| std::cmp::Reverse(v.0));
        let mut victims = BTreeSet::new();
        let mut take = |v: &((u64, usize), BufKey, u64, usize), count: &mut usize, bytes: &mut usize, own: &mut usize| {
            if victims.insert((v.1, v.2, v.3)) {
                *count -= 1;
                *bytes -= v.0.1;
                if v.1 == *key {
                    *own -= 1;
                }
            }
        };
        for v in evictable.iter().filter(|v| v.1 == *key) {
            if own < MAX_BUFFERED_PER_SENDER {
                break;
            }
            take(v, &mut count, &mut bytes, &mut own);
        }
        for v in &evictable {
            if fits(count, bytes, own) {
                break;
            }
            take(v, &mut count, &mut bytes, &mut own);
        }
        // Within a slot, higher indices first, so the lower ones stay valid.
        for (k, seq, i) in victims.into_iter().rev() {
            self.remove_at(&k, seq, i);
        }
    }

    /// Evicts the first envelope furthest from being ready. Returns whether one was.
    fn evict_one_unknown(&mut self, d: &impl Roster) -> bool {
        let mut victim: Option<((u64, usize), BufKey, u64, usize)> = None;
        for (key, slots) in self.buffer.iter().filter(|(k, _)| Self::is_unknown(d, k)) {
            for (seq, v) in slots {
                for (i, b) in v.iter().enumerate() {
                    let rank = (self.distance(d, key, *seq), b.size);
                    if victim.as_ref().is_none_or(|(r, ..)| rank > *r) {
                        victim = Some((rank, *key, *seq, i));
                    }
                }
            }
        }
        let Some((_, key, seq, i)) = victim else { return false };
        self.remove_at(&key, seq, i);
        true
    }

    /// Buffered bytes (what counts against [`MAX_BUFFERED_BYTES`]).
    pub(crate) fn buffered_bytes(&self) -> usize {
        self.buffered_bytes
    }

    /// Files the items of an authentic batch (§12) that lie above its sender's high-water
    /// mark, each as an envelope of its own that needs no further signature check, carrying
    /// the batch's hash. The batch's own size bounds them, so the buffer bounds are not
    /// checked again.
    pub(crate) fn unroll(&mut self, d: &impl Roster, batch: &Envelope, verified: bool) {
        let Ok(items) = batch.items() else { return };
        let hash = batch.short_hash();
        let key = BufKey::of(batch);
        let hwm = match key {
            BufKey::Tag(t) => d.resolve(&t).map_or(0, |id| self.hwm(&id)),
            BufKey::First(..) => 0,
        };
        for env in items.into_iter().filter(|e| e.seq.0 > hwm) {
            let size = buffered_size(&env);
            let slot = self.buffer.entry(key).or_default().entry(env.seq.0).or_default();
            if slot.iter().any(|b| b.env == env) {
                continue;
            }
            slot.push(Buffered { env, size, verified, hash: Some(hash) });
            self.buffered += 1;
            self.buffered_bytes += size;
        }
    }

    /// Puts candidates back (processing must be retried later).
    pub(crate) fn unbuffer_back(&mut self, candidates: Vec<Buffered>) {
        for b in candidates {
            let key = BufKey::of(&b.env);
            self.buffered += 1;
            self.buffered_bytes += b.size;
            self.buffer.entry(key).or_default().entry(b.env.seq.0).or_default().push(b);
        }
    }

    pub(super) fn take(&mut self, key: &BufKey, seq: u64) -> Vec<Buffered> {
        let Some(m) = self.buffer.get_mut(key) else { return Vec::new() };
        let v = m.remove(&seq).unwrap_or_default();
        if m.is_empty() {
            self.buffer.remove(key);
        }
        for b in &v {
            self.buffered -= 1;
            self.buffered_bytes -= b.size;
        }
        v
    }

    /// Whether a processed create, update, remove or add of `id` is still retained (some
    /// member may still acknowledge it).
    pub(crate) fn retains_any_of(&self, id: &crate::ids::MemberId) -> bool {
        self.retained.range((*id, 0)..=(*id, u64::MAX)).next().is_some()
    }

    /// Forgets a member the history forgot (§6.7): its ordering state, its retained hashes
    /// and keys, and anything of it still buffered. An envelope of it that arrives later
    /// comes from an unknown sender.
    pub(crate) fn forget(&mut self, id: &crate::ids::MemberId) {
        self.senders.remove(id);
        self.prepared.forget(id);
        self.horizon.remove(id);
        self.withheld.remove(id);
        self.retained.retain(|(s, _), _| s != id);
        self.retained_keys.retain(|(s, _), _| s != id);
        if let Some(slots) = self.buffer.remove(&BufKey::Tag(id.tag())) {
            for b in slots.values().flatten() {
                self.buffered -= 1;
                self.buffered_bytes -= b.size;
            }
        }
    }

    /// Drops every buffered envelope (after TERMINATE or FATAL).
    pub(crate) fn clear_buffer(&mut self) {
        self.buffer.clear();
        self.buffered = 0;
        self.buffered_bytes = 0;
    }
}
