//! Local operations: update, remove, add and send, each one transaction (§5.4, §5.8).

use super::*;

impl Group {
    pub(super) fn heal_if_pending<R: CryptoRng>(
        &mut self,
        ctx: &mut Context<'_, R>,
        out: &mut Output,
    ) -> Result<(), GroupError> {
        if self.config.auto_heal && (self.d.heal_pending || self.d.resync_pending) {
            out.extend(self.update(ctx)?);
        }
        Ok(())
    }

    /// A PCS update: fresh seeds to every other member.
    pub fn update<R: CryptoRng>(&mut self, ctx: &mut Context<'_, R>) -> Result<Output, GroupError> {
        self.require_active()?;
        // Dcgka::update validates and prefetches before it changes anything.
        let (body, q, p) = self.d.update(&mut env!(ctx)).map_err(map_process_error)?;
        let mut out = Output::default();
        let (bytes, _) = self.emit(ctx, EnvelopeKind::Update, q, body.to_bytes());
        out.broadcast.push(bytes);
        self.absorb(p, &mut out)?;
        out.events.insert(0, Event::Updated { by: self.d.me });
        Ok(out)
    }

    /// Removes a member (it can then decrypt nothing sent after its removal).
    pub fn remove<R: CryptoRng>(&mut self, ctx: &mut Context<'_, R>, id: MemberId) -> Result<Output, GroupError> {
        self.require_active()?;
        let (body, q, p) = self.d.remove(&mut env!(ctx), id).map_err(map_process_error)?;
        let mut out = Output::default();
        let (bytes, _) = self.emit(ctx, EnvelopeKind::Remove, q, body.to_bytes());
        out.broadcast.push(bytes);
        self.absorb(p, &mut out)?;
        // The removed member's retention period starts now (§5.7).
        self.track_absent(ctx.now);
        Ok(out)
    }

    /// Adds the person with identity key `ik` as a new member instance. `direct` holds the
    /// Welcome for it. With a heal pending, an update goes first (§5.8).
    ///
    /// One transaction: the add is staged first (validated, the newcomer's prekey bundle
    /// fetched), so that every refusal happens before anything changes, then the heal
    /// update (atomic on its own) and the add are committed. Only a FATAL failure (§5.6)
    /// can occur after that; it corrupts the group, as FATAL does.
    pub fn add<R: CryptoRng>(&mut self, ctx: &mut Context<'_, R>, ik: IdentityKey) -> Result<Output, GroupError> {
        self.require_active()?;
        // The newcomer would refuse the Welcome (§7.4): refuse the add before anything changes.
        // The Welcome carries the history as compact as it can be (§6.7): the bounds apply to
        // that.
        let h = self.compacted_history();
        if h.len() > crate::consts::MAX_HISTORY_LEN {
            return Err(GroupError::InvalidOperation(RejectReason::InvalidAdd(
                "the history is longer than a Welcome may carry (MAX_HISTORY_LEN)",
            )));
        }
        if h.ever_added().len() > crate::consts::MAX_GROUP {
            return Err(GroupError::InvalidOperation(RejectReason::InvalidAdd(
                "the history introduced more members than a Welcome may carry (MAX_GROUP)",
            )));
        }
        let staged = self.d.stage_add(&mut env!(ctx), ik).map_err(map_process_error)?;
        let mut out = Output::default();
        self.heal_if_pending(ctx, &mut out)?;
        let healed = !out.broadcast.is_empty();
        match self.add_staged(ctx, staged, &mut out) {
            Ok(()) => Ok(out),
            // Nothing changed: the add was refused before its commit and no heal ran.
            Err((e, false)) if !healed => Err(e),
            Err((e, _)) => {
                let mut lost = Output::default();
                self.corrupt("a committed add failed".to_string(), &mut lost);
                Err(e)
            }
        }
    }

    /// The add after staging (and any heal update). The flag in an error says whether the
    /// group changed before it.
    pub(super) fn add_staged<R: CryptoRng>(
        &mut self,
        ctx: &mut Context<'_, R>,
        staged: StagedAdd,
        out: &mut Output,
    ) -> Result<(), (GroupError, bool)> {
        let unchanged = |e| (e, false);
        let ik = staged.identity();
        let t = self.d.add_target(&staged).map_err(|e| unchanged(map_process_error(e)))?;
        // The Welcome carries the history and sender table from before the add, compacted
        // (§6.7).
        self.compact_now();
        let (history, num) =
            encode_history(&self.d.h, &self.d.ik).ok_or(unchanged(GroupError::Internal("history encoding")))?;
        let mut senders = Vec::new();
        for id in self.d.h.ever_added() {
            let Some(n) = num.get(&id) else { continue };
            let mut st = self.ord.sender(&id, &self.d).ok_or(unchanged(GroupError::Internal("sender state")))?;
            if id == self.d.me {
                // My horizon is my last sequence number before the add (`q − 1`).
                st.hwm = self.d.seq;
            }
            senders.push(SenderEntry { id: *n, hwm: st.hwm, signing_key: st.certified(), cut_off: st.cut_off });
        }
        let adder = *num.get(&self.d.me).ok_or(unchanged(GroupError::Internal("adder number")))?;
        let (ratchet_ct, body, q, p) =
            self.d.commit_add(&mut env!(ctx), staged, t).map_err(|e| (map_process_error(e), true))?;
        let (add_bytes, _) = self.emit(ctx, EnvelopeKind::Add, q, body.to_bytes());
        let mut w = Welcome {
            gid: self.d.gid,
            adder,
            add_envelope: add_bytes.clone(),
            history,
            senders,
            ratchet_ct,
            signature: crate::crypto::Signature([0; 64]),
        };
        w.sign(ctx.identity.signing_key());
        out.broadcast.push(add_bytes);
        out.direct.push(WelcomeMessage { member: t, identity: ik, bytes: w.to_bytes() });
        self.absorb(p, out).map_err(|e| (e, true))
    }

    /// Encrypts and sends an application message. With a heal pending, an update goes
    /// first (§5.8).
    pub fn send<R: CryptoRng>(&mut self, ctx: &mut Context<'_, R>, plaintext: &[u8]) -> Result<Output, GroupError> {
        self.require_active()?;
        if plaintext.len() > crate::consts::MAX_PLAINTEXT_SIZE {
            return Err(GroupError::PlaintextTooLarge {
                size: plaintext.len(),
                max: crate::consts::MAX_PLAINTEXT_SIZE,
            });
        }
        if !self.fs.contains_key(&self.d.me) {
            return Err(GroupError::Internal("no sending ratchet"));
        }
        // The heal update is atomic on its own; after it, encryption cannot fail.
        let mut out = Output::default();
        self.heal_if_pending(ctx, &mut out)?;
        let seq = SeqNo(self.d.seq + 1);
        let fs = self.fs.get_mut(&self.d.me).ok_or(GroupError::Internal("no sending ratchet"))?;
        let epoch = fs.epoch();
        let (_, ct) = fs.encrypt(seq, plaintext).map_err(|_| GroupError::Internal("sending ratchet"))?;
        self.d.seq = seq.0;
        let body = ApplicationBody { epoch_delta: seq.0 - epoch.0, ct }.to_bytes();
        let (bytes, _) = self.emit(ctx, EnvelopeKind::Application, seq, body);
        out.broadcast.push(bytes);
        Ok(out)
    }
}
