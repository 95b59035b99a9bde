//! Emitting my own envelopes: signing, key rotation (§7.2), held acks and batches (§12).

use super::*;

impl Group {
    /// Signs and records one of my envelopes; rotates my signing key where §7.2 says so,
    /// certifying the new key with my identity key. Held acks go first, in one batch with it.
    pub(super) fn emit<R: CryptoRng>(
        &mut self,
        ctx: &mut Context<'_, R>,
        kind: EnvelopeKind,
        seq: SeqNo,
        body: Vec<u8>,
    ) -> (Vec<u8>, Envelope) {
        let next = requires_rotation(kind, seq).then(|| SigningSecret::generate(ctx.rng));
        let new_key = next
            .as_ref()
            .map(|k| CertifiedKey::issue(ctx.identity.signing_key(), &self.d.gid, &self.d.me, seq, k.verifying_key()));
        let mut held = std::mem::take(&mut self.held);
        let env = match held.first().map(|h| h.seq) {
            None => {
                let first = (seq.0 == 1).then_some(self.my_ik);
                let (key, cert) = (new_key.map(|k| k.key), new_key.map(|k| k.cert));
                Envelope::seal(kind, &self.d.gid, seq, &self.d.me, first, key, cert, body, &self.signing)
            }
            Some(start) => {
                held.push(HeldItem { seq, item: BatchItem { kind, body } });
                self.seal_batch(start, held, new_key)
            }
        };
        let retain =
            matches!(kind, EnvelopeKind::Create | EnvelopeKind::Update | EnvelopeKind::Remove | EnvelopeKind::Add)
                .then(|| (kind, env.short_hash()));
        self.ord.advance(&self.d, self.d.me, seq.0, env.certified_key(), retain);
        if let Some(k) = next {
            self.signing = k;
        }
        (env.to_bytes(), env)
    }

    /// Seals held items (consecutive from `start`) as one batch under my current key.
    pub(super) fn seal_batch(&self, start: SeqNo, items: Vec<HeldItem>, new_key: Option<CertifiedKey>) -> Envelope {
        debug_assert!(items.iter().enumerate().all(|(i, h)| h.seq.0 == start.0 + i as u64));
        let items: Vec<BatchItem> = items.into_iter().map(|h| h.item).collect();
        Envelope::seal(
            EnvelopeKind::Batch,
            &self.d.gid,
            start,
            &self.d.me,
            None,
            new_key.map(|k| k.key),
            new_key.map(|k| k.cert),
            encode_batch(&items),
            &self.signing,
        )
    }

    /// Emits a reply (ack or add-ack) to the envelope whose short hash is `hash`; with
    /// coalescing, holds it instead (and sends the held ones once a batch would be full).
    pub(super) fn emit_reply<R: CryptoRng>(
        &mut self,
        ctx: &mut Context<'_, R>,
        reply: (ControlBody, SeqNo),
        hash: [u8; 16],
    ) -> Option<Vec<u8>> {
        let (mut body, seq) = reply;
        match &mut body {
            ControlBody::Ack { of, .. } | ControlBody::AddAck { of, .. } => of.of_hash = hash,
            _ => {}
        }
        let kind = body.kind();
        // A first envelope carries its sender's identity key and is never held.
        if self.config.coalesce_acks && seq.0 > 1 && matches!(kind, EnvelopeKind::Ack | EnvelopeKind::AddAck) {
            self.ord.advance(&self.d, self.d.me, seq.0, None, None);
            self.held.push(HeldItem { seq, item: BatchItem { kind, body: body.to_bytes() } });
            if self.held.len() + 1 >= MAX_BATCH_ITEMS {
                return self.flush_held();
            }
            return None;
        }
        Some(self.emit(ctx, kind, seq, body.to_bytes()).0)
    }

    /// Sends the held acks: one envelope, or a batch of several. None if nothing is held.
    pub(super) fn flush_held(&mut self) -> Option<Vec<u8>> {
        let mut held = std::mem::take(&mut self.held);
        let env = match held.as_slice() {
            [] => return None,
            [_] => {
                let h = held.pop()?;
                Envelope::seal(
                    h.item.kind,
                    &self.d.gid,
                    h.seq,
                    &self.d.me,
                    None,
                    None,
                    None,
                    h.item.body,
                    &self.signing,
                )
            }
            [first, ..] => {
                let start = first.seq;
                self.seal_batch(start, held, None)
            }
        };
        Some(env.to_bytes())
    }

    /// Number of acks and add-acks held for coalescing ([`GroupConfig::coalesce_acks`]).
    pub fn held_acks(&self) -> usize {
        self.held.len()
    }

    /// Sends the held acks now (coalescing, §12): one envelope, or one batch for several.
    /// Call it when the application has had nothing to send for a while. Empty output if
    /// nothing is held.
    pub fn flush_acks(&mut self) -> Result<Output, GroupError> {
        self.require_active()?;
        Ok(Output { broadcast: self.flush_held().into_iter().collect(), ..Default::default() })
    }

    pub(super) fn apply_secrets(&mut self, secrets: Vec<UpdateSecret>) -> Result<(), GroupError> {
        for s in secrets {
            let r = SenderRatchet::new(self.d.gid, s.member, s.epoch, s.secret)
                .map_err(|_| GroupError::Internal("sender ratchet from an update secret"))?;
            self.fs.insert(s.member, r);
        }
        Ok(())
    }

    /// Applies the results of a local operation, or of processing, to the outer layers.
    pub(super) fn absorb(&mut self, p: Processed, out: &mut Output) -> Result<(), GroupError> {
        self.ord.release(&p.completed);
        self.apply_secrets(p.secrets)?;
        out.events.extend(p.events);
        Ok(())
    }

    pub(super) fn require_active(&self) -> Result<(), GroupError> {
        match &self.status {
            Status::Active => Ok(()),
            s => Err(GroupError::NotActive(s.clone())),
        }
    }
}
