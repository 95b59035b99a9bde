//! ACB, authenticated causal broadcast (§7): per-sender FIFO by sequence number, acks
//! only after what they acknowledge, signature checks under each sender's current
//! signing key, and the bounded buffer of envelopes that are not ready yet.
//!
//! This module owns the ordering layer whole: the tables, the arrival checks of a received
//! envelope ([`Ordering::arrive`]), and the choice of the next envelope to process
//! ([`Ordering::next`]), which verifies candidates, unrolls batches and hands the group
//! layer a [`Verified`] envelope whose body was parsed once. It knows the group only
//! through a [`Roster`]; the group layer ([`crate::group`]) runs the drain loop, because
//! processing an envelope needs the whole group state.

use std::collections::{BTreeMap, VecDeque};

use crate::codec::{Decode, DecodeError, Encode};
use crate::consts::MAX_AHEAD;
use crate::crypto::{IdentityKey, KEY_LEN, Signature, VerifyingKey};
use crate::dcgka::AckTarget;
use crate::dgm::OpId;
use crate::events::DropReason;
use crate::ids::{GroupId, MemberId, MemberTag, Origin, SeqNo};
use crate::snapshot::{SnapshotError, StateReader, StateWriter};
use crate::wire::{AckRef, ApplicationBody, CertifiedKey, ControlBody, Envelope, EnvelopeKind, SenderRef};

mod buffer;
mod late;
mod prepared;
mod recent;
#[cfg(test)]
mod tests;

/// What the ordering layer needs to know about the group: who its members are, by tag and
/// by the operation that introduced them, and their identity keys.
pub(crate) trait Roster {
    /// The group.
    fn gid(&self) -> GroupId;
    /// This member.
    fn me(&self) -> MemberId;
    /// The member ever added here whose tag is `tag`.
    fn resolve(&self, tag: &MemberTag) -> Option<MemberId>;
    /// The identity key behind a member ever added here.
    fn identity(&self, id: &MemberId) -> Option<IdentityKey>;
    /// The operation that introduced `id` (the create for initial members).
    fn introduced_by(&self, id: &MemberId) -> Option<OpId<MemberId>>;
    /// Whether a removal of `id` is settled here: every current member has seen it (§7.5,
    /// `Dcgka::settled_removal_of`), so an operation of `id` processed now comes late.
    fn removal_settled(&self, id: &MemberId) -> bool;
}

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
    /// An envelope that cannot be verified yet exceeds its claimed sender's unverified
    /// budget ([`crate::consts::MAX_UNVERIFIED_PER_SENDER`] and the others): it is dropped
    /// (sync brings it again once it is its sender's next one, verified on arrival).
    #[error("unverified budget exhausted: {what} holds {held}, the maximum is {max}")]
    Unverified {
        /// Which budget.
        what: &'static str,
        /// Currently held.
        held: usize,
        /// The budget.
        max: usize,
    },
}

/// The ordering state of one sender (§7.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SenderState {
    pub(crate) hwm: u64,
    pub(crate) key: VerifyingKey,
    /// The certificate of `key` (§7.2): the sequence number that announced it and the
    /// identity key's signature. `None` while the key is the identity key.
    pub(crate) cert: Option<(SeqNo, Signature)>,
    pub(crate) cut_off: bool,
}

impl SenderState {
    /// The current key with its certificate, unless it is the identity key.
    pub(crate) fn certified(&self) -> Option<CertifiedKey> {
        self.cert.map(|(seq, cert)| CertifiedKey { key: self.key, seq, cert })
    }

    /// Snapshot encoding: `hwm:var ‖ key:[32] ‖ cert:opt<(seq:var ‖ [64])> ‖ cut_off:u8`.
    pub(crate) fn encode_state(&self, w: &mut StateWriter) {
        w.var(self.hwm);
        w.raw(&self.key.0);
        w.opt(self.cert.as_ref(), |w, (seq, cert)| {
            w.var(seq.0);
            w.raw(&cert.0);
        });
        w.flag(self.cut_off);
    }

    /// Reverses [`encode_state`](Self::encode_state).
    pub(crate) fn decode_state(r: &mut StateReader<'_>) -> Result<Self, SnapshotError> {
        Ok(SenderState {
            hwm: r.var()?,
            key: VerifyingKey(r.array()?),
            cert: r.opt(|r| Ok((SeqNo(r.var()?), Signature(r.array()?))))?,
            cut_off: r.flag()?,
        })
    }
}

/// What the ordering layer holds of one sender: its state and its latest hashes, in one
/// record (one entry per sender, not one in each of several tables keyed by the sender).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Sender {
    state: SenderState,
    /// The short hashes of its latest processed envelopes that are not retained (acks,
    /// application messages), at most [`crate::consts::MAX_RECENT_HASHES`], oldest first: a
    /// second authentic version of one is equivocation (§7.6).
    recent: VecDeque<(u64, [u8; 16])>,
}

impl Sender {
    fn new(state: SenderState) -> Self {
        Sender { state, recent: VecDeque::new() }
    }
}

/// The sender table as the group layer reads it: each sender's [`SenderState`].
#[derive(Clone, Copy)]
pub(crate) struct Senders<'a>(&'a BTreeMap<MemberId, Sender>);

impl<'a> Senders<'a> {
    /// The state of `id`, if it has one.
    pub(crate) fn get(&self, id: &MemberId) -> Option<&'a SenderState> {
        self.0.get(id).map(|s| &s.state)
    }

    /// The senders, in order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &'a MemberId> + use<'a> {
        self.0.keys()
    }

    /// The senders and their states, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&'a MemberId, &'a SenderState)> + use<'a> {
        self.0.iter().map(|(id, s)| (id, &s.state))
    }

    /// Whether there is no sender.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
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
    /// Every sender's state and recent hashes.
    senders: BTreeMap<MemberId, Sender>,
    /// Kind and short hash of every processed create, update, remove and add that is in
    /// flight: not yet acknowledged by every member (the group layer says when one
    /// completes, [`Ordering::release`]).
    retained: BTreeMap<(MemberId, u64), (EnvelopeKind, [u8; 16])>,
    /// The key each retained envelope was verified under, to authenticate a conflicting
    /// duplicate before calling it equivocation (§7.6). Kept after its envelope completed
    /// while a recent hash needs it (`ordering/recent.rs`): the key of envelope `k` of S is
    /// the one every envelope of S after the previous key change and up to `k` was
    /// verified under.
    retained_keys: BTreeMap<(MemberId, u64), VerifyingKey>,
    /// A newcomer's horizon, per sender (§7.4).
    horizon: BTreeMap<MemberId, u64>,
    /// The current signing keys of the senders verified last, decompressed (a bounded
    /// cache; not persisted).
    prepared: prepared::PreparedKeys,
    buffer: BTreeMap<BufKey, BTreeMap<u64, Vec<Buffered>>>,
    buffered: usize,
    buffered_bytes: usize,
    /// Late operations withheld (§7.5, [`crate::group::GroupConfig::withhold_late_operations`]):
    /// per removed sender, the sequence number of its operation that waits for evidence
    /// that some member processed it. One entry per sender (FIFO: nothing of it passes).
    withheld: BTreeMap<MemberId, u64>,
    /// Entries of `withheld` made since the group layer last took them, to report.
    newly_withheld: Vec<(MemberId, SeqNo)>,
    /// Withheld operations for which the buffer held no evidence at the last look; cleared
    /// whenever envelopes arrive or parked ones return (only they can bring evidence). Not
    /// persisted.
    no_evidence: std::collections::BTreeSet<(MemberId, u64)>,
}

/// What became of a received envelope on arrival (§7.3, §7.6).
pub(crate) enum Arrival {
    /// Discarded without consuming anything.
    Dropped(DropReason),
    /// This member's own envelope came back.
    Own,
    /// An authentic envelope that conflicts with the processed one of that sequence number.
    Equivocation {
        /// The equivocating sender.
        sender: MemberId,
        /// The sequence number used twice.
        seq: SeqNo,
        /// The short hash of the version processed here.
        processed: [u8; 16],
        /// The other version, as received.
        other: Box<Envelope>,
    },
    /// Taken: buffered until ready, or (an authentic batch that is next) unrolled.
    Taken {
        /// Its sender.
        sender: MemberId,
        /// Its last sequence number: once the sender's high-water mark reaches it, it was
        /// processed.
        last: u64,
        /// The batch, if it was authenticated and unrolled on arrival.
        unrolled: Option<Box<Envelope>>,
    },
}

/// An envelope's body, parsed once when it becomes the next to process.
pub(crate) enum Body {
    /// An application message.
    Application(ApplicationBody),
    /// A control message.
    Control(ControlBody),
    /// Not a well-formed body of its kind (§5.6 REJECT).
    Malformed(DecodeError),
}

/// The next envelope of a sender, authenticated, with its body parsed: what the ordering
/// layer hands to the DCGKA and ratchet layers.
pub(crate) struct Verified {
    /// Its sender.
    pub(crate) sender: MemberId,
    /// The sender's ordering state before it.
    pub(crate) state: SenderState,
    /// The envelope as it was buffered (its batch's hash, for an item of a batch).
    pub(crate) buffered: Buffered,
    /// Its body.
    pub(crate) body: Body,
}

impl Verified {
    fn new(sender: MemberId, state: SenderState, buffered: Buffered) -> Self {
        let env = &buffered.env;
        let body = match env.kind {
            EnvelopeKind::Application => ApplicationBody::from_bytes(&env.body).map(Body::Application),
            kind => ControlBody::from_bytes(kind, &env.body).map(Body::Control),
        }
        .unwrap_or_else(Body::Malformed);
        Verified { sender, state, buffered, body }
    }

    /// The envelope.
    pub(crate) fn env(&self) -> &Envelope {
        &self.buffered.env
    }
}

/// One step of the drain loop ([`Ordering::next`]).
pub(crate) enum Step {
    /// Buffered envelopes discarded when they became ready.
    Discarded {
        /// What was discarded.
        candidates: Vec<Buffered>,
        /// Why.
        reason: DropReason,
    },
    /// An authentic batch became its sender's next envelope: its items are filed.
    Unrolled {
        /// Its sender.
        sender: MemberId,
        /// The batch.
        batch: Box<Envelope>,
    },
    /// The next envelope of `sender`: the authentic candidate, if any, and the candidates
    /// whose signature does not verify.
    Next {
        /// The sender.
        sender: MemberId,
        /// The authentic candidate.
        chosen: Option<Box<Verified>>,
        /// Forgeries.
        forged: Vec<Buffered>,
        /// Other authentic versions of the chosen one: equivocation (§7.6).
        equivocal: Vec<Buffered>,
    },
    /// Authentic envelopes for an already processed sequence number that differ from the
    /// version processed: equivocation (§7.6).
    Equivocal {
        /// The sender.
        sender: MemberId,
        /// The short hash of the version processed.
        processed: [u8; 16],
        /// The other versions.
        candidates: Vec<Buffered>,
    },
}

/// The outcome of looking for the next ready envelope.
pub(crate) enum Ready {
    /// Candidates for the next envelope of `sender`, to be verified in order.
    Envelope { sender: MemberId, candidates: Vec<Buffered> },
    /// Buffered envelopes to discard: a first envelope that no processed operation
    /// justifies (§7.5), a duplicate, or an echo of my own.
    Discard { candidates: Vec<Buffered>, reason: DropReason },
    /// Candidates of a sender's next slot whose signature does not verify.
    Forged { sender: MemberId, candidates: Vec<Buffered> },
    /// Authentic versions of a processed sequence number that differ from it.
    Equivocal { sender: MemberId, processed: [u8; 16], candidates: Vec<Buffered> },
}

impl Ordering {
    /// Snapshot encoding: `senders:map<member, sender state>` (`SenderState::encode_state`) ‖
    /// retained:map<(member, seq:var), (kind:u8, hash:[16])> ‖ retained_keys:map<(member,
    /// seq:var), [32]>` (since version 4, only the operations in flight and the keys the
    /// recent hashes need; before, every operation ever processed, which
    /// [`Ordering::prune_keys`] and [`Ordering::release`] prune on loading) `‖
    /// horizon:map<member, var> ‖ buffer:map<slot key, map<seq:var,
    /// list<(envelope:opaque, verified:u8, batch_hash:opt<[16]>)>>> ‖ withheld:map<member,
    /// seq:var>` (since version 3), a slot key being `0 ‖ tag:[16]` or `1 ‖ ik:[32] ‖
    /// of_sender:[16] ‖ of_seq:var`. Envelopes are in their wire encoding, candidates in
    /// their order. The buffer counters are rebuilt; the decompressed keys are a cache, filled
    /// again as envelopes are verified.
    ///
    /// With `senders` false the sender table is left empty (the group's core record; each
    /// sender's entry goes to its own record).
    pub(crate) fn encode_parts(&self, w: &mut StateWriter, senders: bool) {
        let none = BTreeMap::new();
        w.map(if senders { &self.senders } else { &none }, |w, id, s| {
            w.member(id);
            s.state.encode_state(w);
            recent::encode(w, &s.recent);
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
        w.map(&self.withheld, |w, id, q| {
            w.member(id);
            w.var(*q);
        });
    }

    /// Reverses [`encode_state`](Self::encode_state).
    pub(crate) fn decode_state(r: &mut StateReader<'_>) -> Result<Self, SnapshotError> {
        let senders = r.map(4 + KEY_LEN, |r| {
            let id = r.member()?;
            let state = SenderState::decode_state(r)?;
            Ok((id, Sender { state, recent: Self::decode_recent(r)? }))
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
        // Version 3 added the withheld late operations.
        let withheld = if r.version() >= 3 { r.map(2, |r| Ok((r.member()?, r.var()?)))? } else { BTreeMap::new() };
        let all = || buffer.values().flat_map(BTreeMap::values).flatten();
        let buffered = all().count();
        let buffered_bytes = all().fold(0usize, |n, b| n.saturating_add(b.size));
        Ok(Ordering {
            senders,
            retained,
            retained_keys,
            horizon,
            prepared: Default::default(),
            buffer,
            buffered,
            buffered_bytes,
            withheld,
            newly_withheld: Vec::new(),
            no_evidence: Default::default(),
        })
    }

    /// The state of `id`, created on first use with the identity key as signing key.
    pub(crate) fn sender(&self, id: &MemberId, d: &impl Roster) -> Option<SenderState> {
        self.senders
            .get(id)
            .map(|s| s.state.clone())
            .or_else(|| d.identity(id).map(|ik| SenderState { hwm: 0, key: ik, cert: None, cut_off: false }))
    }

    pub(crate) fn hwm(&self, id: &MemberId) -> u64 {
        self.senders.get(id).map_or(0, |s| s.state.hwm)
    }

    pub(crate) fn senders(&self) -> Senders<'_> {
        Senders(&self.senders)
    }

    /// Sets the state of `id`, keeping its recent hashes.
    fn set_state(&mut self, id: MemberId, state: SenderState) {
        match self.senders.get_mut(&id) {
            Some(s) => s.state = state,
            None => {
                self.senders.insert(id, Sender::new(state));
            }
        }
    }

    /// Restores one sender's entry from its own record.
    pub(crate) fn insert_sender(&mut self, id: MemberId, state: SenderState) {
        self.set_state(id, state);
    }

    /// Loads a Welcome's sender table and horizon.
    pub(crate) fn load(&mut self, id: MemberId, state: SenderState) {
        self.horizon.insert(id, state.hwm);
        self.set_state(id, state);
    }

    /// Records a processed (or rejected) envelope: advances `hwm`, rotates the key, retains
    /// the hash of acknowledgeable kinds.
    pub(crate) fn advance(
        &mut self,
        d: &impl Roster,
        id: MemberId,
        seq: u64,
        new_key: Option<CertifiedKey>,
        retain: Option<(EnvelopeKind, [u8; 16])>,
    ) {
        let Some(mut st) = self.sender(&id, d) else { return };
        if retain.is_some() {
            self.retained_keys.insert((id, seq), st.key);
        }
        st.hwm = seq;
        if self.withheld.get(&id).is_some_and(|q| *q <= seq) {
            self.withheld.remove(&id);
        }
        if let Some(k) = new_key {
            st.key = k.key;
            st.cert = Some((k.seq, k.cert));
            if id != d.me() {
                self.prepared.offer(&id, &k.key);
            }
        }
        self.set_state(id, st);
        if let Some(r) = retain {
            self.retained.insert((id, seq), r);
        }
    }

    /// Verifies `env` as the next envelope of `id`, whose current signing key is `key`
    /// (with the decompressed key if it is cached, and without caching it).
    pub(crate) fn verify(&self, gid: &GroupId, id: &MemberId, key: &VerifyingKey, env: &Envelope) -> bool {
        self.prepared.verify(gid, id, key, env)
    }

    /// Marks a sender cut off (§7.5).
    pub(crate) fn cut_off(&mut self, d: &impl Roster, id: MemberId) {
        if let Some(mut st) = self.sender(&id, d) {
            st.cut_off = true;
            self.set_state(id, st);
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
        (q <= self.hwm(s)).then_some(AckTarget::Unretained)
    }

    /// Forgets what was retained of operations every member has now acknowledged (their
    /// entries in the DCGKA's ack tracker completed): their kind and hash, and their key
    /// unless a recent hash needs it. A second authentic version of one of them is then
    /// taken for a replay (`Duplicate`), no longer reported as equivocation (§7.6).
    pub(crate) fn release(&mut self, completed: &[(MemberId, u64)]) {
        for (s, q) in completed {
            if self.retained.remove(&(*s, *q)).is_some() {
                self.drop_key_if_unneeded(*s, *q);
            }
        }
    }

    /// [`Ordering::release`] without touching the keys: loading a snapshot before version
    /// 4 prunes them all at once ([`Ordering::prune_keys`]) once the recent hashes are in.
    pub(crate) fn forget_retained(&mut self, completed: &[(MemberId, u64)]) {
        for op in completed {
            self.retained.remove(op);
        }
    }

    /// The retained operations with their kinds (to build the ack tracker of a snapshot
    /// before version 4).
    pub(crate) fn retained_ops(&self) -> Vec<((MemberId, u64), EnvelopeKind)> {
        self.retained.iter().map(|(k, (kind, _))| (*k, *kind)).collect()
    }

    /// Number of retained operations and of retained keys.
    #[cfg(any(test, feature = "test-hooks"))]
    pub(crate) fn retained_counts(&self) -> (usize, usize) {
        (self.retained.len(), self.retained_keys.len())
    }

    /// Whether the kind and hash of `(s, q)` are retained.
    #[cfg(any(test, feature = "test-hooks"))]
    pub(crate) fn retains(&self, s: &MemberId, q: u64) -> bool {
        self.retained.contains_key(&(*s, q))
    }

    /// The retained short hash of `(s, q)` and the key it was verified under, if any.
    pub(crate) fn retained(&self, s: &MemberId, q: u64) -> Option<([u8; 16], VerifyingKey)> {
        let hash = self.retained.get(&(*s, q))?.1;
        Some((hash, *self.retained_keys.get(&(*s, q))?))
    }

    /// Every buffered candidate of a known sender as `(sender, seq, short hash)`; a
    /// batch's items carry the batch's hash.
    pub(crate) fn buffered_candidates(&self, d: &impl Roster) -> Vec<(MemberId, SeqNo, [u8; 16])> {
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

    /// Whether an ack's dependency holds (§7.3 rule 2).
    fn ack_ready(&self, d: &impl Roster, of: &AckRef) -> bool {
        d.resolve(&of.of_sender)
            .is_some_and(|s| of.of_seq.0 <= self.hwm(&s) || self.horizon.get(&s).is_some_and(|h| of.of_seq.0 <= *h))
    }

    fn dependency_ready(&self, d: &impl Roster, env: &Envelope) -> bool {
        if !matches!(env.kind, EnvelopeKind::Ack | EnvelopeKind::AddAck) {
            return true;
        }
        match ControlBody::from_bytes(env.kind, &env.body) {
            // An ack that is its sender's next envelope and names a member this group does
            // not know names one it forgot (§6.7): the member who acknowledges had processed
            // the introduction of everyone it names before this ack, and so have I. Ready;
            // processing accepts it without effect on the history.
            Ok(ControlBody::Ack { of, .. } | ControlBody::AddAck { of, .. }) if d.resolve(&of.of_sender).is_none() => true,
            Ok(ControlBody::Ack { of, .. } | ControlBody::AddAck { of, .. }) => self.ack_ready(d, &of),
            // Malformed: ready, so that processing rejects it and the sender is not stuck.
            _ => true,
        }
    }

    /// The MID behind a first envelope (`seq = 1`, full identity key), once the operation
    /// it acknowledges has been processed: `Some(Ok(id))` if that operation introduced
    /// `ik`'s instance, `Some(Err(()))` if it did not, `None` while not ready.
    fn first_sender(&self, d: &impl Roster, ik: &IdentityKey, env: &Envelope) -> Option<Result<MemberId, ()>> {
        let Ok(ControlBody::Ack { of, .. }) = ControlBody::from_bytes(env.kind, &env.body) else {
            return Some(Err(()));
        };
        if !self.ack_ready(d, &of) {
            return None;
        }
        let s = d.resolve(&of.of_sender)?;
        let id = MemberId::derive(&d.gid(), ik, Origin::Operation(s, SeqNo(of.of_seq.0)));
        let introduced = d.introduced_by(&id) == Some(OpId::new(s, of.of_seq.0));
        Some(if introduced { Ok(id) } else { Err(()) })
    }

    /// Takes a received envelope (§7.3): drops what a non-member, a replay or a forgery
    /// sends, reports an authentic conflict as equivocation, verifies a sender's next
    /// envelope at once (so a forgery never takes its place) and a first envelope under
    /// the identity key it carries, then buffers it, or unrolls an authentic batch.
    /// `trusting` skips every signature check (an adversarial test copy reading a recorded
    /// transcript). Nothing changes unless the envelope is taken.
    pub(crate) fn arrive(&mut self, r: &impl Roster, env: Envelope, trusting: bool) -> Result<Arrival, BufferError> {
        self.no_evidence.clear();
        let gid = r.gid();
        let mut verified = false;
        let (sender, last) = match env.sender {
            SenderRef::Tag(t) => {
                // §7.3 lines 6-7, §7.5: only members ever added here may send tagged envelopes.
                let Some(id) = r.resolve(&t) else { return Ok(Arrival::Dropped(DropReason::NotAMember)) };
                if id == r.me() {
                    return Ok(Arrival::Own);
                }
                // The next envelope of a sender can be verified at once (its key is
                // current). A batch is next when its items span the next sequence number (a
                // newcomer's horizon may fall inside it).
                let next = self.hwm(&id) + 1;
                let last = env.last_seq().0;
                if env.seq.0 <= next
                    && next <= last
                    && !trusting
                    && let Some(st) = self.sender(&id, r)
                {
                    if !self.prepared.verify_caching(&gid, &id, &st.key, &env) {
                        return Ok(Arrival::Dropped(DropReason::BadSignature));
                    }
                    verified = true;
                }
                if last <= self.hwm(&id) {
                    // A different envelope under an already used sequence number, authentic
                    // under the key that was current then, is equivocation (§7.6); one that
                    // does not verify is a forgery (it frames nobody, and the peer that
                    // passed it on can be told from one that replays a genuine copy).
                    if let Some((hash, key)) = self.processed_version(&id, last)
                        && hash != env.short_hash()
                    {
                        if env.verify(&gid, &id, &key).is_ok() {
                            return Ok(Arrival::Equivocation {
                                sender: id,
                                seq: SeqNo(last),
                                processed: hash,
                                other: Box::new(env),
                            });
                        }
                        return Ok(Arrival::Dropped(DropReason::BadSignature));
                    }
                    return Ok(Arrival::Dropped(DropReason::Duplicate));
                }
                (id, last)
            }
            SenderRef::Identity(ik) => {
                if env.kind == EnvelopeKind::Create {
                    // Only the first envelope of a group is a create; this group has it.
                    let creator = env.gid.map(|g| MemberId::derive(&g, &ik, Origin::Creator));
                    if env.gid == Some(gid) && creator == Some(r.me()) {
                        return Ok(Arrival::Own);
                    }
                    let reason = match creator {
                        Some(c) if env.gid == Some(gid) && self.hwm(&c) >= 1 => DropReason::Duplicate,
                        _ => DropReason::NotAMember,
                    };
                    return Ok(Arrival::Dropped(reason));
                }
                // A first envelope is an ack of the create or of its sender's own add (§7.3
                // line 7). The acknowledged operation's sender names the instance (another
                // instance of my own identity is another member, §6.6), so the envelope is
                // verified under the identity key it carries before it is buffered.
                let Ok(ControlBody::Ack { of, .. }) = ControlBody::from_bytes(env.kind, &env.body) else {
                    return Ok(Arrival::Dropped(DropReason::NotAMember));
                };
                let Some(by) = r.resolve(&of.of_sender) else {
                    // Added by someone this member does not know yet: sync brings it later.
                    return Ok(Arrival::Dropped(DropReason::NotAMember));
                };
                let id = MemberId::derive(&gid, &ik, Origin::Operation(by, of.of_seq));
                if id == r.me() {
                    return Ok(Arrival::Own);
                }
                if self.hwm(&id) >= 1 {
                    return Ok(Arrival::Dropped(DropReason::Duplicate));
                }
                if self.ack_ready(r, &of) {
                    // The acknowledged operation was processed: it introduced this instance
                    // or the envelope is junk, decided now rather than after buffering.
                    if r.introduced_by(&id) != Some(OpId::new(by, of.of_seq.0)) {
                        return Ok(Arrival::Dropped(DropReason::NotAMember));
                    }
                } else {
                    let hwm = self.hwm(&by);
                    if of.of_seq.0 > hwm.saturating_add(MAX_AHEAD) {
                        return Err(BufferError::TooFarAhead { seq: of.of_seq.0, hwm, max: MAX_AHEAD });
                    }
                }
                if env.verify(&gid, &id, &ik).is_err() {
                    return Ok(Arrival::Dropped(DropReason::BadSignature));
                }
                verified = true;
                (id, 1)
            }
        };
        if env.kind == EnvelopeKind::Batch && (verified || trusting) {
            self.unroll(r, &env, verified);
            return Ok(Arrival::Taken { sender, last, unrolled: Some(Box::new(env)) });
        }
        self.buffer(r, env, verified)?;
        Ok(Arrival::Taken { sender, last, unrolled: None })
    }

    /// The next step of the drain loop: discards what became stale, drops the forgeries of
    /// a sender's next slot, reports authentic conflicts, or takes the candidates for a
    /// sender's next envelope (all verified); an authentic batch is unrolled, anything else
    /// is returned with its body parsed. `trusting` skips signature checks (an adversarial
    /// test copy).
    ///
    /// With `withhold_late`, an update, remove or add of a removed member waits until some
    /// other member is known to have processed it (§7.5, [`Ordering::late_evidence`]).
    pub(crate) fn next(&mut self, r: &impl Roster, trusting: bool, withhold_late: bool) -> Option<Step> {
        let (sender, candidates) = match self.next_ready(r, trusting, withhold_late)? {
            Ready::Envelope { sender, candidates } => (sender, candidates),
            Ready::Discard { candidates, reason } => return Some(Step::Discarded { candidates, reason }),
            Ready::Forged { sender, candidates } => {
                return Some(Step::Next { sender, chosen: None, forged: candidates, equivocal: Vec::new() });
            }
            Ready::Equivocal { sender, processed, candidates } => {
                return Some(Step::Equivocal { sender, processed, candidates });
            }
        };
        let Some(state) = self.sender(&sender, r) else {
            return Some(Step::Next { sender, chosen: None, forged: Vec::new(), equivocal: Vec::new() });
        };
        let mut chosen = None;
        let mut forged = Vec::new();
        let mut equivocal = Vec::new();
        for b in candidates {
            let authentic =
                b.verified || trusting || self.prepared.verify_caching(&r.gid(), &sender, &state.key, &b.env);
            if chosen.is_none() && authentic {
                chosen = Some(b);
            } else if authentic && b.hash.is_none() {
                equivocal.push(b);
            } else {
                forged.push(b);
            }
        }
        if let Some(batch) = chosen.as_ref().filter(|b| b.env.kind == EnvelopeKind::Batch) {
            // Authentic now that it is next: file its items; the other candidates wait
            // beside the item of their own sequence number.
            let batch = Box::new(batch.env.clone());
            self.unbuffer_back(forged);
            self.unbuffer_back(equivocal);
            self.unroll(r, &batch, true);
            return Some(Step::Unrolled { sender, batch });
        }
        Some(Step::Next {
            sender,
            chosen: chosen.map(|b| Box::new(Verified::new(sender, state, b))),
            forged,
            equivocal,
        })
    }

    /// Finds the next envelope that is ready to be verified and processed.
    fn next_ready(&mut self, d: &impl Roster, trusting: bool, withhold_late: bool) -> Option<Ready> {
        let keys: Vec<BufKey> = self.buffer.keys().copied().collect();
        for key in keys {
            match key {
                BufKey::Tag(t) => {
                    let Some(id) = d.resolve(&t) else { continue };
                    if id == d.me() {
                        // Echoes of my own envelopes.
                        let all: Vec<u64> =
                            self.buffer.get(&key).map(|m| m.keys().copied().collect()).unwrap_or_default();
                        for s in all {
                            self.take(&key, s);
                        }
                        continue;
                    }
                    let hwm = self.hwm(&id);
                    // Stale entries: authentic versions that differ from the one processed
                    // are equivocation; the rest are discarded silently.
                    let stale: Vec<u64> =
                        self.buffer.get(&key).map(|m| m.range(..=hwm).map(|(s, _)| *s).collect()).unwrap_or_default();
                    for s in stale {
                        let taken = self.take(&key, s);
                        if let Some((processed, _)) = self.processed_version(&id, s) {
                            let candidates: Vec<Buffered> = taken
                                .into_iter()
                                .filter(|b| b.verified && b.hash.is_none() && b.env.short_hash() != processed)
                                .collect();
                            if !candidates.is_empty() {
                                return Some(Ready::Equivocal { sender: id, processed, candidates });
                            }
                        }
                    }
                    // The next slot is verified whole as soon as it is next, whether or not
                    // the candidates' dependencies hold: forgeries leave at once and never
                    // hold the slot against the genuine envelope.
                    let forged = self.verify_slot(d, &key, id, hwm + 1, trusting);
                    if !forged.is_empty() {
                        return Some(Ready::Forged { sender: id, candidates: forged });
                    }
                    let ready = self
                        .buffer
                        .get(&key)
                        .and_then(|m| m.get(&(hwm + 1)))
                        .is_some_and(|c| c.iter().any(|b| self.dependency_ready(d, &b.env)));
                    if ready && withhold_late && self.withholds(d, &key, id, hwm + 1, trusting) {
                        continue;
                    }
                    if ready {
                        let (ready, waiting): (Vec<Buffered>, Vec<Buffered>) =
                            self.take(&key, hwm + 1).into_iter().partition(|b| self.dependency_ready(d, &b.env));
                        self.unbuffer_back(waiting);
                        return Some(Ready::Envelope { sender: id, candidates: ready });
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
                            if id == d.me() || self.hwm(&id) >= 1 {
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

    /// Verifies every unverified candidate of `id`'s slot `seq` (its next one) under its
    /// current key: marks the authentic ones verified, removes and returns the forgeries.
    fn verify_slot(&mut self, d: &impl Roster, key: &BufKey, id: MemberId, seq: u64, trusting: bool) -> Vec<Buffered> {
        let Some(st) = self.sender(&id, d) else { return Vec::new() };
        let gid = d.gid();
        let Some(slot) = self.buffer.get(key).and_then(|m| m.get(&seq)) else { return Vec::new() };
        if slot.iter().all(|b| b.verified) {
            return Vec::new();
        }
        let prepared = &mut self.prepared;
        let verdicts: Vec<bool> =
            slot.iter().map(|b| b.verified || trusting || prepared.verify_caching(&gid, &id, &st.key, &b.env)).collect();
        let taken = self.take(key, seq);
        let mut forged = Vec::new();
        let mut kept = Vec::new();
        for (mut b, ok) in taken.into_iter().zip(verdicts) {
            if ok {
                b.verified = true;
                kept.push(b);
            } else {
                forged.push(b);
            }
        }
        self.unbuffer_back(kept);
        forged
    }
}
