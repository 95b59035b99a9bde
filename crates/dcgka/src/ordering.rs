//! ACB, authenticated causal broadcast (§7): per-sender FIFO by sequence number, acks
//! only after what they acknowledge, signature checks under each sender's current
//! signing key, and the bounded buffer of envelopes that are not ready yet.
//!
//! This module keeps the tables; the group layer ([`crate::group`]) runs the drain loop,
//! because processing an envelope needs the whole group state.

use std::collections::BTreeMap;

use crate::codec::{Decode, DecodeError, Encode};
use crate::consts::{
    MAX_AHEAD, MAX_BUFFERED_BYTES, MAX_BUFFERED_PER_GROUP, MAX_BUFFERED_PER_SENDER, MAX_BUFFERED_UNKNOWN,
    MAX_CANDIDATES_PER_SLOT,
};
use crate::crypto::{IdentityKey, KEY_LEN, PreparedKey, VerifyingKey};
use crate::dcgka::{AckTarget, Dcgka};
use crate::dgm::OpId;
use crate::events::DropReason;
use crate::ids::{GroupId, MemberId, MemberTag, Origin, SeqNo};
use crate::snapshot::{SnapshotError, StateReader, StateWriter};
use crate::wire::{AckRef, ControlBody, Envelope, EnvelopeKind, SenderRef};

/// Why an envelope could not be buffered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BufferError {
    /// The sequence number is more than [`MAX_AHEAD`] beyond what was processed.
    #[error("sequence number {seq} is more than {max} ahead of {hwm}")]
    TooFarAhead {
        /// The envelope's sequence number.
        seq: u64,
        /// The sender's high-water mark.
        hwm: u64,
        /// [`MAX_AHEAD`].
        max: u64,
    },
    /// A buffer bound is reached: the envelope is dropped (sync fetches it again later).
    #[error("buffer full: {what} holds {held}, the maximum is {max}")]
    Full {
        /// Which bound.
        what: &'static str,
        /// Currently held.
        held: usize,
        /// The bound.
        max: usize,
    },
}

/// The ordering state of one sender (§7.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SenderState {
    pub(crate) hwm: u64,
    pub(crate) key: VerifyingKey,
    pub(crate) cut_off: bool,
}

/// Where a buffered envelope is filed before its sender is resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum BufKey {
    /// A known (or not yet known) member's envelopes, by its tag.
    Tag(MemberTag),
    /// A first envelope: the identity key and the operation it acknowledges, which
    /// together name the instance (two instances of one person may both be first-timers).
    First(IdentityKey, MemberTag, u64),
}

impl BufKey {
    pub(crate) fn of(env: &Envelope) -> BufKey {
        match env.sender {
            SenderRef::Tag(t) => BufKey::Tag(t),
            SenderRef::Identity(ik) => match ControlBody::from_bytes(env.kind, &env.body) {
                Ok(ControlBody::Ack { of, .. }) => BufKey::First(ik, of.of_sender, of.of_seq.0),
                _ => BufKey::First(ik, MemberTag([0; 16]), 0),
            },
        }
    }
}

/// What a buffered envelope counts against [`MAX_BUFFERED_BYTES`]: its body plus a fixed
/// allowance for the header and signature.
fn buffered_size(env: &Envelope) -> usize {
    env.body.len() + 120
}

/// A buffered envelope: the parsed value and its size on the wire.
#[derive(Clone, Debug)]
pub(crate) struct Buffered {
    pub(crate) env: Envelope,
    pub(crate) size: usize,
    /// Already verified under the key that will apply when it becomes ready.
    pub(crate) verified: bool,
    /// For an item unrolled from a batch: the batch's short hash, which acks reference.
    pub(crate) hash: Option<[u8; 16]>,
}

/// The ACB tables of one group.
#[derive(Clone, Debug, Default)]
pub(crate) struct Ordering {
    senders: BTreeMap<MemberId, SenderState>,
    /// Kind and short hash of every processed create, update, remove and add.
    retained: BTreeMap<(MemberId, u64), (EnvelopeKind, [u8; 16])>,
    /// The key each retained envelope was verified under, to authenticate a conflicting
    /// duplicate before calling it equivocation (§7.6).
    retained_keys: BTreeMap<(MemberId, u64), VerifyingKey>,
    /// A newcomer's horizon, per sender (§7.4).
    horizon: BTreeMap<MemberId, u64>,
    /// Each sender's current signing key, decompressed once (a cache of `senders[X].key`).
    prepared: BTreeMap<MemberId, PreparedKey>,
    buffer: BTreeMap<BufKey, BTreeMap<u64, Vec<Buffered>>>,
    buffered: usize,
    buffered_bytes: usize,
}

/// The outcome of looking for the next ready envelope.
pub(crate) enum Ready {
    /// Candidates for the next envelope of `sender`, to be verified in order.
    Envelope { sender: MemberId, candidates: Vec<Buffered> },
    /// Buffered envelopes to discard: a first envelope that no processed operation
    /// justifies (§7.5), a duplicate, or an echo of my own.
    Discard { candidates: Vec<Buffered>, reason: DropReason },
}

impl Ordering {
    /// Snapshot encoding: `senders:map<member, (hwm:var, key:[32], cut_off:u8)> ‖
    /// retained:map<(member, seq:var), (kind:u8, hash:[16])> ‖ retained_keys:map<(member,
    /// seq:var), [32]> ‖ horizon:map<member, var> ‖ buffer:map<slot key, map<seq:var,
    /// list<(envelope:opaque, verified:u8, batch_hash:opt<[16]>)>>>`, a slot key being `0 ‖
    /// tag:[16]` or `1 ‖ ik:[32] ‖ of_sender:[16] ‖ of_seq:var`. Envelopes are in their wire
    /// encoding, candidates in their order. The decompressed keys and the buffer counters
    /// are rebuilt.
    pub(crate) fn encode_state(&self, w: &mut StateWriter) {
        w.map(&self.senders, |w, id, st| {
            w.member(id);
            w.var(st.hwm);
            w.raw(&st.key.0);
            w.flag(st.cut_off);
        });
        w.map(&self.retained, |w, (id, q), (kind, hash)| {
            w.member(id);
            w.var(*q);
            w.u8(kind.tag());
            w.raw(hash);
        });
        w.map(&self.retained_keys, |w, (id, q), key| {
            w.member(id);
            w.var(*q);
            w.raw(&key.0);
        });
        w.map(&self.horizon, |w, id, h| {
            w.member(id);
            w.var(*h);
        });
        w.map(&self.buffer, |w, key, slots| {
            match key {
                BufKey::Tag(t) => {
                    w.u8(0);
                    w.raw(&t.0);
                }
                BufKey::First(ik, of_sender, of_seq) => {
                    w.u8(1);
                    w.raw(&ik.0);
                    w.raw(&of_sender.0);
                    w.var(*of_seq);
                }
            }
            w.map(slots, |w, seq, candidates| {
                w.var(*seq);
                w.items(candidates.iter(), |w, b| {
                    w.opaque(&b.env.to_bytes());
                    w.flag(b.verified);
                    w.opt(b.hash.as_ref(), |w, h| w.raw(h));
                });
            });
        });
    }

    /// Reverses [`encode_state`](Self::encode_state).
    pub(crate) fn decode_state(r: &mut StateReader<'_>) -> Result<Self, SnapshotError> {
        let senders: BTreeMap<MemberId, SenderState> = r.map(3 + KEY_LEN, |r| {
            Ok((r.member()?, SenderState { hwm: r.var()?, key: VerifyingKey(r.array()?), cut_off: r.flag()? }))
        })?;
        let retained = r.map(3 + 16, |r| {
            let k = (r.member()?, r.var()?);
            Ok((k, (EnvelopeKind::from_tag(r.u8()?)?, r.array()?)))
        })?;
        let retained_keys = r.map(2 + KEY_LEN, |r| Ok(((r.member()?, r.var()?), VerifyingKey(r.array()?))))?;
        let horizon = r.map(2, |r| Ok((r.member()?, r.var()?)))?;
        let buffer: BTreeMap<BufKey, BTreeMap<u64, Vec<Buffered>>> = r.map(2, |r| {
            let key = match r.u8()? {
                0 => BufKey::Tag(MemberTag(r.array()?)),
                1 => BufKey::First(VerifyingKey(r.array()?), MemberTag(r.array()?), r.var()?),
                t => return Err(DecodeError::UnknownTag { what: "buffer slot key", tag: u64::from(t) }.into()),
            };
            let slots = r.map(2, |r| {
                let seq = r.var()?;
                let candidates = r.items(3, |r| {
                    let env = Envelope::from_bytes(r.opaque()?)?;
                    let verified = r.flag()?;
                    let hash = r.opt(|r| r.array())?;
                    Ok(Buffered { size: buffered_size(&env), env, verified, hash })
                })?;
                Ok((seq, candidates))
            })?;
            Ok((key, slots))
        })?;
        let all = || buffer.values().flat_map(BTreeMap::values).flatten();
        let buffered = all().count();
        let buffered_bytes = all().fold(0usize, |n, b| n.saturating_add(b.size));
        let mut ord = Ordering {
            senders: BTreeMap::new(),
            retained,
            retained_keys,
            horizon,
            prepared: BTreeMap::new(),
            buffer,
            buffered,
            buffered_bytes,
        };
        for (id, st) in senders {
            ord.cache_key(id, &st.key);
            ord.senders.insert(id, st);
        }
        Ok(ord)
    }

    /// The state of `id`, created on first use with the identity key as signing key.
    pub(crate) fn sender(&self, id: &MemberId, d: &Dcgka) -> Option<SenderState> {
        self.senders
            .get(id)
            .cloned()
            .or_else(|| d.ik.get(id).map(|ik| SenderState { hwm: 0, key: *ik, cut_off: false }))
    }

    pub(crate) fn hwm(&self, id: &MemberId) -> u64 {
        self.senders.get(id).map_or(0, |s| s.hwm)
    }

    pub(crate) fn senders(&self) -> &BTreeMap<MemberId, SenderState> {
        &self.senders
    }

    /// Loads a Welcome's sender table and horizon.
    pub(crate) fn load(&mut self, id: MemberId, state: SenderState) {
        self.horizon.insert(id, state.hwm);
        self.cache_key(id, &state.key);
        self.senders.insert(id, state);
    }

    /// Records a processed (or rejected) envelope: advances `hwm`, rotates the key, retains
    /// the hash of acknowledgeable kinds.
    pub(crate) fn advance(
        &mut self,
        d: &Dcgka,
        id: MemberId,
        seq: u64,
        new_key: Option<VerifyingKey>,
        retain: Option<(EnvelopeKind, [u8; 16])>,
    ) {
        let Some(mut st) = self.sender(&id, d) else { return };
        if retain.is_some() {
            self.retained_keys.insert((id, seq), st.key);
        }
        st.hwm = seq;
        if let Some(k) = new_key {
            st.key = k;
            self.cache_key(id, &k);
        }
        self.senders.insert(id, st);
        if let Some(r) = retain {
            self.retained.insert((id, seq), r);
        }
    }

    fn cache_key(&mut self, id: MemberId, key: &VerifyingKey) {
        match key.prepare() {
            Ok(p) => {
                self.prepared.insert(id, p);
            }
            // An invalid key verifies nothing; verification reports it.
            Err(_) => {
                self.prepared.remove(&id);
            }
        }
    }

    /// Verifies `env` as the next envelope of `id`, whose current signing key is `key`.
    pub(crate) fn verify(&self, gid: &GroupId, id: &MemberId, key: &VerifyingKey, env: &Envelope) -> bool {
        match self.prepared.get(id).filter(|p| p.public() == *key) {
            Some(p) => env.verify_prepared(gid, id, p).is_ok(),
            None => env.verify(gid, id, key).is_ok(),
        }
    }

    /// Marks a sender cut off (§7.5).
    pub(crate) fn cut_off(&mut self, d: &Dcgka, id: MemberId) {
        if let Some(mut st) = self.sender(&id, d) {
            st.cut_off = true;
            self.senders.insert(id, st);
        }
    }

    /// What an ack of `(s, q)` refers to (§7.3 rule 2 and V4).
    pub(crate) fn lookup(&self, s: &MemberId, q: u64) -> Option<AckTarget> {
        if self.horizon.get(s).is_some_and(|h| q <= *h) {
            return Some(AckTarget::BelowHorizon);
        }
        if let Some((kind, hash)) = self.retained.get(&(*s, q)) {
            return Some(AckTarget::Known { kind: *kind, hash: *hash });
        }
        (q <= self.hwm(s)).then_some(AckTarget::NotAcknowledgeable)
    }

    /// The retained short hash of `(s, q)` and the key it was verified under, if any.
    pub(crate) fn retained(&self, s: &MemberId, q: u64) -> Option<([u8; 16], VerifyingKey)> {
        let hash = self.retained.get(&(*s, q))?.1;
        Some((hash, *self.retained_keys.get(&(*s, q))?))
    }

    /// Every buffered candidate of a known sender as `(sender, seq, short hash)`; a
    /// batch's items carry the batch's hash.
    pub(crate) fn buffered_candidates(&self, d: &Dcgka) -> Vec<(MemberId, SeqNo, [u8; 16])> {
        let mut v = Vec::new();
        for (key, slots) in &self.buffer {
            let BufKey::Tag(t) = key else { continue };
            let Some(id) = d.resolve(t) else { continue };
            for (seq, candidates) in slots {
                for b in candidates {
                    v.push((id, SeqNo(*seq), b.hash.unwrap_or_else(|| b.env.short_hash())));
                }
            }
        }
        v
    }

    /// Number of buffered envelopes.
    pub(crate) fn buffered(&self) -> usize {
        self.buffered
    }

    /// Files an envelope until it is ready, enforcing every buffer bound.
    pub(crate) fn buffer(&mut self, d: &Dcgka, env: Envelope, verified: bool) -> Result<(), BufferError> {
        let key = BufKey::of(&env);
        let seq = env.seq.0;
        let known = match key {
            BufKey::Tag(t) => d.resolve(&t),
            BufKey::First(..) => None,
        };
        if let Some(id) = known {
            let hwm = self.hwm(&id);
            if seq > hwm.saturating_add(MAX_AHEAD) {
                return Err(BufferError::TooFarAhead { seq, hwm, max: MAX_AHEAD });
            }
        } else {
            let unknown: usize = self
                .buffer
                .iter()
                .filter(|(k, _)| match k {
                    BufKey::Tag(t) => d.resolve(t).is_none(),
                    BufKey::First(..) => true,
                })
                .map(|(_, v)| v.values().map(Vec::len).sum::<usize>())
                .sum();
            if unknown >= MAX_BUFFERED_UNKNOWN {
                return Err(BufferError::Full { what: "unknown senders", held: unknown, max: MAX_BUFFERED_UNKNOWN });
            }
        }
        let size = buffered_size(&env);
        if self.buffered >= MAX_BUFFERED_PER_GROUP {
            return Err(BufferError::Full { what: "group", held: self.buffered, max: MAX_BUFFERED_PER_GROUP });
        }
        if self.buffered_bytes + size > MAX_BUFFERED_BYTES {
            return Err(BufferError::Full { what: "group bytes", held: self.buffered_bytes, max: MAX_BUFFERED_BYTES });
        }
        let per_sender: usize = self.buffer.get(&key).map_or(0, |m| m.values().map(Vec::len).sum());
        if per_sender >= MAX_BUFFERED_PER_SENDER {
            return Err(BufferError::Full { what: "sender", held: per_sender, max: MAX_BUFFERED_PER_SENDER });
        }
        let slot = self.buffer.entry(key).or_default().entry(seq).or_default();
        if slot.iter().any(|b| b.env == env) {
            return Ok(());
        }
        if slot.len() >= MAX_CANDIDATES_PER_SLOT {
            return Err(BufferError::Full { what: "slot", held: slot.len(), max: MAX_CANDIDATES_PER_SLOT });
        }
        slot.push(Buffered { env, size, verified, hash: None });
        self.buffered += 1;
        self.buffered_bytes += size;
        Ok(())
    }

    /// Files the items of an authentic batch (§12) that lie above its sender's high-water
    /// mark, each as an envelope of its own that needs no further signature check, carrying
    /// the batch's hash. The batch's own size bounds them, so the buffer bounds are not
    /// checked again.
    pub(crate) fn unroll(&mut self, d: &Dcgka, batch: &Envelope, verified: bool) {
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

    fn take(&mut self, key: &BufKey, seq: u64) -> Vec<Buffered> {
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

    /// Drops every buffered envelope (after TERMINATE or FATAL).
    pub(crate) fn clear_buffer(&mut self) {
        self.buffer.clear();
        self.buffered = 0;
        self.buffered_bytes = 0;
    }

    /// Whether an ack's dependency holds (§7.3 rule 2).
    fn ack_ready(&self, d: &Dcgka, of: &AckRef) -> bool {
        d.resolve(&of.of_sender)
            .is_some_and(|s| of.of_seq.0 <= self.hwm(&s) || self.horizon.get(&s).is_some_and(|h| of.of_seq.0 <= *h))
    }

    fn dependency_ready(&self, d: &Dcgka, env: &Envelope) -> bool {
        if !matches!(env.kind, EnvelopeKind::Ack | EnvelopeKind::AddAck) {
            return true;
        }
        match ControlBody::from_bytes(env.kind, &env.body) {
            Ok(ControlBody::Ack { of, .. } | ControlBody::AddAck { of, .. }) => self.ack_ready(d, &of),
            // Malformed: ready, so that processing rejects it and the sender is not stuck.
            _ => true,
        }
    }

    /// The MID behind a first envelope (`seq = 1`, full identity key), once the operation
    /// it acknowledges has been processed: `Some(Ok(id))` if that operation introduced
    /// `ik`'s instance, `Some(Err(()))` if it did not, `None` while not ready.
    fn first_sender(&self, d: &Dcgka, ik: &IdentityKey, env: &Envelope) -> Option<Result<MemberId, ()>> {
        let Ok(ControlBody::Ack { of, .. }) = ControlBody::from_bytes(env.kind, &env.body) else {
            return Some(Err(()));
        };
        if !self.ack_ready(d, &of) {
            return None;
        }
        let s = d.resolve(&of.of_sender)?;
        let id = MemberId::derive(&d.gid, ik, Origin::Operation(s, SeqNo(of.of_seq.0)));
        let op = OpId::new(s, of.of_seq.0);
        let introduced = d.h.target(&op) == Some(id) || (d.h.is_create(&op) && d.h.addop(&id) == Some(&op));
        Some(if introduced { Ok(id) } else { Err(()) })
    }

    /// Finds the next envelope that is ready to be verified and processed.
    pub(crate) fn next_ready(&mut self, d: &Dcgka) -> Option<Ready> {
        let keys: Vec<BufKey> = self.buffer.keys().copied().collect();
        for key in keys {
            match key {
                BufKey::Tag(t) => {
                    let Some(id) = d.resolve(&t) else { continue };
                    let hwm = self.hwm(&id);
                    // Discard stale duplicates.
                    let stale: Vec<u64> =
                        self.buffer.get(&key).map(|m| m.range(..=hwm).map(|(s, _)| *s).collect()).unwrap_or_default();
                    for s in stale {
                        self.take(&key, s);
                    }
                    // Each candidate is judged on its own: an unauthenticated one whose
                    // dependency never holds must not block the genuine envelope.
                    let ready = self
                        .buffer
                        .get(&key)
                        .and_then(|m| m.get(&(hwm + 1)))
                        .is_some_and(|c| c.iter().any(|b| self.dependency_ready(d, &b.env)));
                    if ready && id != d.me {
                        let (ready, waiting): (Vec<Buffered>, Vec<Buffered>) =
                            self.take(&key, hwm + 1).into_iter().partition(|b| self.dependency_ready(d, &b.env));
                        self.unbuffer_back(waiting);
                        return Some(Ready::Envelope { sender: id, candidates: ready });
                    }
                    if id == d.me {
                        // Echoes of my own envelopes.
                        let all: Vec<u64> =
                            self.buffer.get(&key).map(|m| m.keys().copied().collect()).unwrap_or_default();
                        for s in all {
                            self.take(&key, s);
                        }
                    }
                }
                BufKey::First(ik, _, _) => {
                    let Some(first) = self.buffer.get(&key).and_then(|m| m.get(&1)).and_then(|c| c.first()) else {
                        continue;
                    };
                    match self.first_sender(d, &ik, &first.env.clone()) {
                        None => continue,
                        Some(Err(())) => {
                            return Some(Ready::Discard {
                                candidates: self.take(&key, 1),
                                reason: DropReason::NotAMember,
                            });
                        }
                        Some(Ok(id)) => {
                            let candidates = self.take(&key, 1);
                            if id == d.me || self.hwm(&id) >= 1 {
                                return Some(Ready::Discard { candidates, reason: DropReason::Duplicate });
                            }
                            return Some(Ready::Envelope { sender: id, candidates });
                        }
                    }
                }
            }
        }
        None
    }
}
