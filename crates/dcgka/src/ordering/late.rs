//! Withholding a removed member's late operations (§7.5,
//! [`GroupConfig::withhold_late_operations`](crate::group::GroupConfig)): an update, remove
//! or add of a member whose removal has settled here waits until another member is known
//! to have processed it.
//!
//! The evidence is that member's acknowledgment (or farewell), authentic, anywhere in its
//! buffered stream: an honest member acknowledges every update, remove and add it
//! processes, and processes one of a removed member only while the removal has not settled
//! at it or after such evidence; so evidence, once it exists, reaches every member. It may
//! sit behind envelopes that are themselves withheld here (a member removed in turn), so
//! the stream is followed past them, its signing key through each certified rotation
//! (§7.2).

use super::*;

impl Ordering {
    /// Whether the next slot `seq` of `id` is a late operation to withhold: a candidate is
    /// an update, remove or add, a removal of `id` is settled here (every current member
    /// but its remover has seen it), and no other member is known to have processed it.
    /// Records (and queues for reporting) a new withholding.
    pub(super) fn withholds(&mut self, d: &impl Roster, key: &BufKey, id: MemberId, seq: u64, trusting: bool) -> bool {
        let operation = self.buffer.get(key).and_then(|m| m.get(&seq)).is_some_and(|c| {
            c.iter().any(|b| matches!(b.env.kind, EnvelopeKind::Update | EnvelopeKind::Remove | EnvelopeKind::Add))
        });
        if !operation || !d.removal_settled(&id) {
            return false;
        }
        if !self.no_evidence.contains(&(id, seq)) {
            if self.late_evidence(d, id, seq, trusting) {
                return false;
            }
            self.no_evidence.insert((id, seq));
        }
        if self.withheld.insert(id, seq) != Some(seq) {
            self.newly_withheld.push((id, SeqNo(seq)));
        }
        true
    }

    /// Envelopes set aside during a drain (waiting for a prekey bundle) are back in the
    /// buffer: they may be evidence that was out of sight at the last look.
    pub(crate) fn parked_back(&mut self, parked: Vec<Buffered>) {
        if !parked.is_empty() {
            self.no_evidence.clear();
        }
        self.unbuffer_back(parked);
    }

    /// The late operations withheld since the last call, to report once each.
    pub(crate) fn take_newly_withheld(&mut self) -> Vec<(MemberId, SeqNo)> {
        std::mem::take(&mut self.newly_withheld)
    }

    /// Evidence that a member other than `m` processed `m`'s operation `seq`: an authentic
    /// ack or add-ack of it in the buffered stream of a known member. First envelopes do not
    /// count: a newcomer's ack of its own add, made by `m`, would let `m` release its own
    /// late add.
    fn late_evidence(&self, d: &impl Roster, m: MemberId, seq: u64, trusting: bool) -> bool {
        let tag = m.tag();
        let acks = |env: &Envelope| {
            matches!(env.kind, EnvelopeKind::Ack | EnvelopeKind::AddAck)
                && matches!(
                    ControlBody::from_bytes(env.kind, &env.body),
                    Ok(ControlBody::Ack { of, .. } | ControlBody::AddAck { of, .. })
                        if of.of_sender == tag && of.of_seq.0 == seq
                )
        };
        self.buffer.iter().any(|(key, slots)| {
            let BufKey::Tag(t) = key else { return false };
            let Some(q) = d.resolve(t).filter(|q| *q != m && *q != d.me()) else { return false };
            let Some(st) = self.sender(&q, d) else { return false };
            let Some(ik) = d.identity(&q) else { return false };
            self.authentic_stream(d, q, &ik, st, slots, trusting).iter().any(|env| match env.kind {
                EnvelopeKind::Batch => env.items().is_ok_and(|items| items.iter().any(acks)),
                _ => acks(env),
            })
        })
    }

    /// `q`'s buffered envelopes from its next one on, as long as they follow each other and
    /// one candidate of each slot is authentic: under `q`'s current key, then under each
    /// key a followed envelope certifies with `q`'s identity key `ik`.
    fn authentic_stream<'a>(
        &self,
        d: &impl Roster,
        q: MemberId,
        ik: &IdentityKey,
        st: SenderState,
        slots: &'a BTreeMap<u64, Vec<Buffered>>,
        trusting: bool,
    ) -> Vec<&'a Envelope> {
        let gid = d.gid();
        let (mut key, mut next) = (st.key, st.hwm + 1);
        let mut out = Vec::new();
        while let Some(candidates) = slots.get(&next) {
            let authentic = candidates.iter().find(|b| {
                trusting
                    // Verified as the next envelope, or an item of a batch verified whole.
                    || (b.verified && (next == st.hwm + 1 || b.hash.is_some()))
                    || (b.hash.is_none() && self.verify(&gid, &q, &key, &b.env))
            });
            let Some(b) = authentic else { break };
            if let Some(k) = b.env.certified_key().filter(|k| k.verify(ik, &gid, &q).is_ok()) {
                key = k.key;
            }
            next = b.env.last_seq().0.saturating_add(1);
            out.push(&b.env);
        }
        out
    }
}
