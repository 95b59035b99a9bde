//! Receiving: arrival, the drain loop, and processing one verified envelope (§5.5, §7.3, §8).

use super::*;

impl Group {
    /// Feeds one envelope of this group. Returns the acks to broadcast and the events of
    /// every envelope this made ready (one call may release many buffered ones).
    ///
    /// [`Output::received`] says what became of it: processed, buffered for later, a
    /// duplicate, an echo of my own, or dropped (a forgery or a non-member's envelope).
    /// Those are not errors; an error means the envelope could not be taken at all
    /// (malformed, the group is not active, or a buffer bound is reached).
    pub fn receive<R: CryptoRng>(&mut self, ctx: &mut Context<'_, R>, bytes: &[u8]) -> Result<Output, GroupError> {
        let harmless = |r| Ok(Output { received: Some(r), ..Output::default() });
        match self.receive_inner(ctx, bytes) {
            Ok(out) => Ok(out),
            Err(GroupError::Dropped(DropReason::Duplicate)) => harmless(Received::Duplicate),
            Err(GroupError::Dropped(r)) => harmless(Received::Dropped(r)),
            Err(GroupError::OwnEnvelope) => harmless(Received::OwnEnvelope),
            Err(e) => Err(e),
        }
    }

    pub(super) fn receive_inner<R: CryptoRng>(
        &mut self,
        ctx: &mut Context<'_, R>,
        bytes: &[u8],
    ) -> Result<Output, GroupError> {
        if !self.processing() {
            self.require_active()?;
        }
        let env = Envelope::from_bytes(bytes)?;
        if let Some(out) = self.fork_check(&env) {
            return Ok(out);
        }
        let incoming = (env.sender, env.seq);
        let (sender, last, unrolled) = match self.ord.arrive(&self.d, env, self.trusting())? {
            Arrival::Dropped(reason) => return Err(GroupError::Dropped(reason)),
            Arrival::Own => return Err(GroupError::OwnEnvelope),
            Arrival::Equivocation { sender, seq, processed, other } => {
                let evidence = EquivocationEvidence::Processed { processed, other: other.to_bytes() };
                return Ok(Output {
                    received: Some(Received::Duplicate),
                    events: vec![Event::Equivocation { sender, seq, evidence }],
                    ..Default::default()
                });
            }
            Arrival::Taken { sender, last, unrolled } => (sender, last, unrolled),
        };
        let (mut out, dropped) = self.drain(ctx, Some(incoming));
        if let Some(batch) = unrolled {
            out.accepted.insert(0, Accepted::of(sender, &batch));
        }
        if let Some(reason) = &dropped
            && out.broadcast.is_empty()
            && out.events.iter().all(|e| matches!(e, Event::Dropped { .. }))
        {
            return Err(GroupError::Dropped(reason.clone()));
        }
        out.received = Some(match dropped {
            Some(reason) => Received::Dropped(reason),
            None if self.ord.hwm(&sender) >= last => Received::Processed,
            None => Received::Buffered,
        });
        Ok(out)
    }

    /// §7.3 line 4: my own envelope beyond my own sequence number, authentic under my
    /// current signing key, proves that another copy of this state signed it: this state
    /// was cloned, or restored from an older snapshot. Sending on from here would sign
    /// other envelopes under sequence numbers already used, so the group stops, as on
    /// FATAL: it reports `StateForkSuspected` with both numbers and becomes `Corrupted`
    /// (recovery: be removed and added again as a new instance). An own envelope that does
    /// not verify under my current key (a forgery, or one signed after a rotation this
    /// state never made) is dropped as an echo; the copy's envelope at my next sequence
    /// number is always signed under my current key. An adversarial test copy, which
    /// models an attacker holding a copy of this state, never stops.
    fn fork_check(&mut self, env: &Envelope) -> Option<Output> {
        let SenderRef::Tag(t) = env.sender else { return None };
        let mine = self.d.seq;
        let seen = env.last_seq().0;
        if t != self.d.me.tag() || seen <= mine || self.adversarial() {
            return None;
        }
        if env.verify(&self.d.gid, &self.d.me, &self.signing.verifying_key()).is_err() {
            return None;
        }
        let mut out = Output { received: Some(Received::OwnEnvelope), ..Output::default() };
        out.events.push(Event::StateForkSuspected { mine: SeqNo(mine), seen: SeqNo(seen) });
        self.corrupt(
            format!("state fork suspected: my own envelope {seen} is beyond my sequence number {mine}"),
            &mut out,
        );
        Some(out)
    }

    /// Retries processing of buffered envelopes (after a missing prekey bundle was supplied).
    pub fn process_pending<R: CryptoRng>(&mut self, ctx: &mut Context<'_, R>) -> Result<Output, GroupError> {
        self.require_active()?;
        Ok(self.drain(ctx, None).0)
    }

    /// Processes every ready envelope. Returns the output and, if the envelope identified
    /// by `incoming` was discarded, why.
    pub(super) fn drain<R: CryptoRng>(
        &mut self,
        ctx: &mut Context<'_, R>,
        incoming: Option<(SenderRef, SeqNo)>,
    ) -> (Output, Option<DropReason>) {
        let mut out = Output::default();
        let mut incoming_dropped = None;
        self.apply_retention(ctx.now, &mut out);
        if let Some(t) = self.pending_removal.take() {
            self.remove_duplicate(ctx, t, &mut out);
        }
        let was_active = self.status == Status::Active;
        // Envelopes waiting for a prekey bundle, kept out of the buffer until the loop ends
        // so that only what depends on them waits (their sender's later envelopes, acks of
        // them); every other sender keeps flowing (§5.5).
        let mut parked = Vec::new();
        // A removal ends the call, as for a real member; an adversarial copy goes on only in
        // later calls (and its output is never sent).
        while self.processing() && (!was_active || self.status == Status::Active) {
            let Some(step) = self.ord.next(&self.d, self.trusting(), self.config.withhold_late_operations) else {
                break;
            };
            let (sender, chosen, forged, equivocal) = match step {
                Step::Discarded { candidates, reason } => {
                    for b in candidates {
                        if incoming == Some((b.env.sender, b.env.seq)) {
                            incoming_dropped = Some(reason.clone());
                        }
                    }
                    continue;
                }
                Step::Unrolled { sender, batch } => {
                    out.accepted.push(Accepted::of(sender, &batch));
                    continue;
                }
                Step::Equivocal { sender, processed, candidates } => {
                    for b in candidates {
                        let evidence = EquivocationEvidence::Processed { processed, other: b.env.to_bytes() };
                        out.events.push(Event::Equivocation { sender, seq: b.env.seq, evidence });
                    }
                    continue;
                }
                Step::Next { sender, chosen, forged, equivocal } => (sender, chosen, forged, equivocal),
            };
            for b in &forged {
                if incoming == Some((b.env.sender, b.env.seq)) && chosen.is_none() {
                    incoming_dropped = Some(DropReason::BadSignature);
                } else {
                    out.events.push(Event::Dropped { sender, seq: b.env.seq, reason: DropReason::BadSignature });
                }
            }
            let Some(v) = chosen else { continue };
            let result = self.process_one(ctx, &v, &mut out);
            if result.is_ok() {
                let first = v.env().to_bytes();
                for b in equivocal {
                    let evidence = EquivocationEvidence::Envelopes { first: first.clone(), second: b.env.to_bytes() };
                    out.events.push(Event::Equivocation { sender, seq: b.env.seq, evidence });
                }
                if v.buffered.hash.is_none() {
                    self.ord.remember(sender, v.env().seq.0, v.env().short_hash());
                }
            }
            match result {
                // An item of a batch was logged with its batch.
                Ok(()) if v.buffered.hash.is_none() => out.accepted.push(Accepted::of(sender, v.env())),
                Ok(()) => {}
                Err(ik) => {
                    parked.push(v.buffered.clone());
                    out.events.push(Event::PrekeyBundleNeeded { identity: ik });
                }
            }
        }
        // TERMINATE and FATAL empty the buffer; otherwise the parked envelopes go back.
        if self.processing() {
            self.ord.parked_back(parked);
        }
        for (sender, seq) in self.ord.take_newly_withheld() {
            out.events.push(Event::LateOperationWithheld { sender, seq });
        }
        // Members that left in this call start their retention period now (§5.7).
        if self.status == Status::Active {
            self.track_absent(ctx.now);
        }
        (out, incoming_dropped)
    }

    pub(super) fn remove_duplicate<R: CryptoRng>(&mut self, ctx: &mut Context<'_, R>, t: MemberId, out: &mut Output) {
        if !self.d.is_member(&t) {
            return;
        }
        match self.remove(ctx, t) {
            Ok(o) => out.extend(o),
            Err(GroupError::MissingPrekeyBundle(ik)) => {
                self.pending_removal = Some(t);
                out.events.push(Event::PrekeyBundleNeeded { identity: ik });
            }
            Err(_) => {}
        }
    }

    /// Processes one verified envelope as one transaction. `Err(ik)` means a first contact
    /// needs `ik`'s bundle and nothing changed.
    pub(super) fn process_one<R: CryptoRng>(
        &mut self,
        ctx: &mut Context<'_, R>,
        v: &Verified,
        out: &mut Output,
    ) -> Result<(), IdentityKey> {
        let (sender, env) = (v.sender, v.env());
        let seq = env.seq.0;
        // An item of a batch is acknowledged under the batch's hash.
        let hash = v.buffered.hash.unwrap_or_else(|| env.short_hash());
        // A new signing key must carry a valid certificate by the sender's identity key
        // (§7.2): the envelope is authentic, so the sender is at fault. Rejected, without
        // adopting the key, and the sender is cut off.
        if let Some(k) = env.certified_key()
            && self.d.ik.get(&sender).is_none_or(|ik| k.verify(ik, &self.d.gid, &sender).is_err())
        {
            self.ord.advance(&self.d, sender, seq, None, None);
            self.ord.cut_off(&self.d, sender);
            out.events.push(Event::Rejected { sender, seq: env.seq, reason: RejectReason::InvalidKeyCertificate });
            return Ok(());
        }
        if v.state.cut_off {
            self.reject(sender, env, RejectReason::CutOff, out, false);
            return Ok(());
        }
        let body = match &v.body {
            Body::Application(body) => {
                self.process_application(sender, env, body, out);
                return Ok(());
            }
            Body::Malformed(e) => {
                let control = env.kind != EnvelopeKind::Application;
                self.reject(sender, env, RejectReason::Malformed(MalformedBody::Decode(e.clone())), out, control);
                return Ok(());
            }
            Body::Control(body) => body,
        };
        let late = matches!(body, ControlBody::Update { .. } | ControlBody::Remove { .. } | ControlBody::Add { .. })
            .then(|| self.d.settled_removal_of(&sender))
            .flatten();
        let ord = &self.ord;
        let lookup = |s: &MemberId, q: u64| ord.lookup(s, q);
        // §7.6: an ack that names another version of what it acknowledges than the one
        // processed here blames the acknowledged sender, not the acker.
        let disputed = match body {
            ControlBody::Ack { of, .. } | ControlBody::AddAck { of, .. } => {
                self.d.resolve(&of.of_sender).and_then(|s| match ord.lookup(&s, of.of_seq.0) {
                    Some(AckTarget::Known { hash, kind }) if hash != of.of_hash => {
                        Some((s, of.of_seq, hash, of.of_hash, kind))
                    }
                    _ => None,
                })
            }
            _ => None,
        };
        let history_len = self.history_size();
        let result = self.d.process(&mut env!(ctx), sender, seq, body, &lookup);
        if result.is_ok()
            && let Some((s, q, processed, acked, kind)) = disputed
        {
            let evidence = EquivocationEvidence::Ack { acker: sender, ack: env.to_bytes(), processed, acked };
            out.events.push(Event::Equivocation { sender: s, seq: q, evidence });
            // The acker derived its ratchet, and its view of mine, from the other version:
            // my next update re-initialises mine from a fresh seed both camps can open (§7.6).
            if matches!(kind, EnvelopeKind::Update | EnvelopeKind::Remove) && !self.d.resync_pending {
                self.d.resync_pending = true;
                out.events.push(Event::HealPending);
            }
        }
        match result {
            Ok(p) => {
                if let Some((remover, removal)) = late {
                    out.events.push(Event::LateOperation { sender, seq: env.seq, remover, removal });
                }
                let retain = matches!(env.kind, EnvelopeKind::Update | EnvelopeKind::Remove | EnvelopeKind::Add)
                    .then_some((env.kind, hash));
                self.ord.advance(&self.d, sender, seq, env.certified_key(), retain);
                if self.d.h.departed(&sender) {
                    // After its farewell a member sends nothing more (§7.5).
                    self.ord.cut_off(&self.d, sender);
                }
                if let Err(e) = self.finish_processed(ctx, p, hash, out) {
                    self.corrupt(e.to_string(), out);
                }
                self.compact_history(history_len);
                Ok(())
            }
            Err(ProcessError::Reject(r)) => {
                self.reject(sender, env, r, out, true);
                Ok(())
            }
            Err(ProcessError::NeedBundle(ik)) => Err(ik),
            Err(ProcessError::Fatal(reason)) => {
                self.ord.advance(&self.d, sender, seq, env.certified_key(), None);
                self.corrupt(reason.to_string(), out);
                Ok(())
            }
            Err(ProcessError::BadCiphertext(kind)) => {
                // The sender signed it: report it with the evidence before giving up (§5.6).
                self.ord.advance(&self.d, sender, seq, env.certified_key(), None);
                out.events.push(Event::Misbehaviour {
                    sender,
                    seq: env.seq,
                    kind,
                    envelope: env.to_bytes(),
                    batch: v.buffered.hash,
                });
                self.corrupt(format!("{} sent a ciphertext that does not decrypt ({kind:?})", sender), out);
                Ok(())
            }
        }
    }

    /// After processing: the reply, re-keying, TERMINATE, the duplicate-instance removal.
    pub(super) fn finish_processed<R: CryptoRng>(
        &mut self,
        ctx: &mut Context<'_, R>,
        p: Processed,
        hash: [u8; 16],
        out: &mut Output,
    ) -> Result<(), GroupError> {
        let reply = p.reply;
        let terminated = p.terminated_by;
        let duplicate = p.duplicate_instance;
        // What every member has acknowledged now is forgotten (its hash was retained by
        // `advance` just before, for an operation that nobody else awaits).
        self.ord.release(&p.completed);
        self.apply_secrets(p.secrets)?;
        out.events.extend(p.events);
        if let Some(by) = terminated {
            out.events.push(Event::RemovedFromGroup { by });
            self.status = Status::Removed { by };
            // The farewell ack of the remove that took me out (§7.5), with any held acks
            // before it.
            if let Some((mut body, seq)) = reply {
                if let ControlBody::Ack { of, .. } = &mut body {
                    of.of_hash = hash;
                }
                out.broadcast.push(self.emit(ctx, EnvelopeKind::Ack, seq, body.to_bytes()).0);
            }
            if self.adversarial() {
                // A test copy of an attacker holding this state: keep everything.
                return Ok(());
            }
            self.erase_ended();
            self.signing = SigningSecret::from_bytes(&ERASED_SIGNING_SEED);
            return Ok(());
        }
        if let Some(r) = reply
            && let Some(bytes) = self.emit_reply(ctx, r, hash)
        {
            out.broadcast.push(bytes);
        }
        if let Some(t) = duplicate {
            self.remove_duplicate(ctx, t, out);
        }
        Ok(())
    }

    /// Compacts the membership history (§6.7) when processing changed it (`before` is its
    /// size and number of departed members before): a function of the state alone, so that
    /// a restored copy compacts exactly when the original does. Finding the fold point costs
    /// O(members) and nothing is rebuilt unless something folds, so acks of updates and
    /// application messages, which leave `H` alone, cost nothing here.
    pub(super) fn compact_history(&mut self, before: (usize, usize)) {
        if self.history_size() != before {
            self.compact_now();
        }
    }

    /// The size of the membership history and how many members departed: what
    /// [`Group::compact_history`] watches.
    pub(super) fn history_size(&self) -> (usize, usize) {
        (self.d.h.len(), self.d.h.departed_count())
    }

    /// The membership history as [`Group::compact_now`] would leave it, without changing
    /// anything.
    pub(super) fn compacted_history(&self) -> crate::dgm::History<MemberId> {
        let mut h = self.d.h.clone();
        if self.compaction {
            let (ord, holding) = (&self.ord, self.d.holding_secrets_of());
            h.compact_keeping(&|m| ord.retains_any_of(m) || holding.contains(m));
        }
        h
    }

    /// Compacts the membership history (§6.7) and forgets the members it forgot in every
    /// layer.
    pub(super) fn compact_now(&mut self) {
        if !self.compaction || !matches!(self.status, Status::Active) {
            return;
        }
        // A member whose updates some member may still acknowledge stays known (their acks
        // name it, and `H` does not hold updates).
        let ord = &self.ord;
        for id in self.d.compact(&|m| ord.retains_any_of(m)) {
            self.ord.forget(&id);
            self.fs.remove(&id);
            self.app_index.remove(&id);
        }
    }

    pub(super) fn corrupt(&mut self, reason: String, out: &mut Output) {
        out.events.push(Event::GroupStateCorrupted { reason: reason.clone() });
        self.status = Status::Corrupted { reason };
        if self.adversarial() {
            // A test copy of an attacker holding this state: keep the key material.
            self.held.clear();
            self.ord.clear_buffer();
            return;
        }
        self.erase_ended();
    }

    /// Erases what an ended instance (removed or corrupted) no longer needs (§5.7): the
    /// DCGKA secrets (seed, 2SM sessions, member secrets, outer ratchets), the sender
    /// ratchets, held acks and the buffer. The membership history, the ordering tables
    /// and the status stay (public). The signing secret is the caller's to erase: TERMINATE
    /// erases it, a corrupted instance keeps it (§5.6).
    fn erase_ended(&mut self) {
        self.d.erase_secrets();
        self.fs.clear();
        self.held.clear();
        self.ord.clear_buffer();
    }

    /// §5.6 REJECT: consume the sequence number, rotate the key, and for a control
    /// envelope cut the sender off.
    pub(super) fn reject(
        &mut self,
        sender: MemberId,
        env: &Envelope,
        reason: RejectReason,
        out: &mut Output,
        control: bool,
    ) {
        self.ord.advance(&self.d, sender, env.seq.0, env.certified_key(), None);
        if control {
            self.ord.cut_off(&self.d, sender);
        }
        out.events.push(Event::Rejected { sender, seq: env.seq, reason });
    }

    pub(super) fn process_application(
        &mut self,
        sender: MemberId,
        env: &Envelope,
        body: &ApplicationBody,
        out: &mut Output,
    ) {
        let seq = env.seq;
        let Some(epoch) = seq.0.checked_sub(body.epoch_delta).map(Epoch) else {
            return self.reject(
                sender,
                env,
                RejectReason::Malformed(MalformedBody::Invalid("epoch after sequence number")),
                out,
                false,
            );
        };
        let index = match self.app_index.get(&sender) {
            Some((e, n)) if *e == epoch => *n,
            _ => 0,
        };
        self.app_index.insert(sender, (epoch, index.saturating_add(1)));
        self.ord.advance(&self.d, sender, seq.0, None, None);
        let result = match self.fs.get_mut(&sender) {
            None => Err(RatchetError::NotForUs { epoch, held: None }),
            Some(r) => r.decrypt(epoch, MessageIndex(index), seq, &body.ct),
        };
        match result {
            Ok(pt) => out.events.push(Event::Message {
                sender,
                seq,
                epoch,
                index: MessageIndex(index),
                plaintext: pt.to_vec(),
                sender_removed: !self.d.is_member(&sender),
            }),
            Err(reason @ RatchetError::NotForUs { .. }) => {
                out.events.push(Event::Undecryptable { sender, seq, reason })
            }
            Err(e) => out.events.push(Event::Rejected { sender, seq, reason: RejectReason::Application(e) }),
        }
    }

    /// Test hook: whether this state could decrypt the application envelope `bytes`
    /// (from a member it knows), without changing anything. Only the ratchet is consulted:
    /// the caller feeds the transcript before it first.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn can_decrypt(&self, bytes: &[u8], index: MessageIndex) -> Option<Vec<u8>> {
        let env = Envelope::from_bytes(bytes).ok()?;
        let SenderRef::Tag(t) = env.sender else { return None };
        let sender = self.d.resolve(&t)?;
        let body = ApplicationBody::from_bytes(&env.body).ok()?;
        let epoch = Epoch(env.seq.0.checked_sub(body.epoch_delta)?);
        let mut r = self.fs.get(&sender)?.clone();
        r.decrypt(epoch, index, env.seq, &body.ct).ok().map(|p| p.to_vec())
    }
}
