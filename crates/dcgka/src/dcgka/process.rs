//! Processing a received control message (§5.5) with the validity rules of §5.6: the
//! `process-*` functions of ePrint Fig. 4, in two phases (validate and plan, then execute).

use super::*;

impl Dcgka {
    // ------------------------------------------------------------------------------------
    // Processing (§5.5) with the validity rules of §5.6
    // ------------------------------------------------------------------------------------

    /// `process(γ, S, q, ctrl)`: `hash` is the 16-byte hash of the envelope being processed
    /// (acks of it will reference it); `lookup` tells what an acknowledged envelope was.
    pub(crate) fn process<R: CryptoRng>(
        &mut self,
        env: &mut Env<'_, R>,
        s: MemberId,
        q: u64,
        body: &ControlBody,
        lookup: &dyn Fn(&MemberId, u64) -> Option<AckTarget>,
    ) -> Result<Processed, ProcessError> {
        match body {
            ControlBody::Create { .. } => Err(RejectReason::InvalidCreate("the group already exists").into()),
            ControlBody::Update { seeds } => {
                let mut r = self.member_view(&s);
                r.remove(&s);
                check_seeds(seeds, &r)?;
                let bundles = self.prefetch(env, self.forward_targets(&s, &r, &self.view_me()))?;
                let mut out = self.process_seed(env, EnvelopeKind::Update, s, q, Some(seeds), &bundles)?;
                out.events.insert(0, Event::Updated { by: s });
                Ok(out)
            }
            ControlBody::Remove { target, seeds } => {
                let t = self.resolve(target).ok_or_else(|| malformed("remove of an unknown member"))?;
                let mut r = self.member_view(&s);
                if t == s || !r.contains(&t) {
                    return Err(RejectReason::InvalidRemove("target is the sender or not in its view").into());
                }
                r.remove(&s);
                r.remove(&t);
                check_seeds(seeds, &r)?;
                // Plan on a scratch copy of H: the forwards go to my view after the remove.
                let mut h = self.h.clone();
                h.apply(Op::Remove { sender: s, seq: q, target: t }).map_err(refused)?;
                let bundles = if h.removed_by(&self.me).is_empty() {
                    self.prefetch(env, self.forward_targets(&s, &r, &h.view_me()))?
                } else {
                    Bundles::new()
                };
                self.process_remove(env, s, q, t, Some(seeds), &bundles)
            }
            ControlBody::Add { target, prekey } => {
                let ik = *target;
                let t = MemberId::derive(&self.gid, &ik, Origin::Operation(s, SeqNo(q)));
                let sender_ik = self.ik.get(&s).copied();
                if sender_ik == Some(ik) {
                    return Err(RejectReason::InvalidAdd("adding one's own identity").into());
                }
                // The carried signed prekey is checked by signature alone (no clock), so
                // every member accepts or refuses the add alike (§5.5); no bundle is fetched.
                let carried = prekey
                    .verify(&ik)
                    .map_err(|_| RejectReason::InvalidAdd("the carried signed prekey does not verify"))?;
                if self.member_view(&s).iter().any(|m| self.ik.get(m) == Some(&ik)) {
                    return Err(RejectReason::InvalidAdd("identity already in the sender's view").into());
                }
                if let Some(other) = self.resolve(&t.tag()) {
                    // V2: a tag already used by an ID the sender knew is refused; two concurrent
                    // adds that collide on a tag can only be a deliberate attack (§0).
                    if self.h.addop(&other).is_some_and(|op| self.h.seen_by(&s, op)) {
                        return Err(RejectReason::InvalidAdd("member tag already in use").into());
                    }
                    return Err(fatal("member tag collision between concurrent adds"));
                }
                self.h.check(&Op::Add { sender: s, seq: q, target: t }).map_err(refused)?;
                // t is a member after the add exactly when S is (a fresh MID has one add).
                let live = self.is_member(&s);
                let my_ik = self.ik.get(&self.me).copied();
                let bundles = if live && my_ik != Some(ik) {
                    Bundles::from([(ik, carried)])
                } else {
                    Bundles::new()
                };
                self.learn(t, ik);
                self.process_add(env, s, q, t, &bundles)
            }
            ControlBody::Ack { of, forwards } if self.resolve(&of.of_sender).is_none() => {
                // An ack of an operation of a member this group forgot (§6.7): an operation
                // that every member has processed, which a member that joined later acks
                // below its horizon or one acks whose acks never reached here. It changes no
                // history; a forward to me still carries the acker's member secret, as for
                // any ack of an operation below my horizon.
                let mine: Vec<&Forward> = forwards.iter().filter(|f| f.recipient == self.me.tag()).collect();
                let [fwd] = mine.as_slice() else {
                    return if mine.is_empty() { Ok(Processed::default()) } else { Err(malformed("two forwards to one recipient")) };
                };
                let x = self.decrypt_from(env, &s, &fwd.ct, Misbehaviour::BadForward)?;
                if self.is_stale(&s) {
                    return Ok(Processed::default());
                }
                let i = self.update_ratchet(&s, RatchetInput::Member(&x))?;
                Ok(Processed { secrets: vec![self.secret(s, q, i)], ..Default::default() })
            }
            // An add-ack of a forgotten member's add: its ratchet ciphertext is only ever for
            // the add's target, which is known; nothing to do.
            ControlBody::AddAck { of, .. } if self.resolve(&of.of_sender).is_none() => Ok(Processed::default()),
            // An ack of an operation of a member that departed without my processing it: a
            // late operation of a member retired here (§5.7), refused when it came, which
            // others processed. The acker's ratchet moved on from it where I cannot follow.
            ControlBody::Ack { of, .. } | ControlBody::AddAck { of, .. } if self.is_orphan(of) => {
                if let ControlBody::Ack { forwards, .. } = body {
                    // Keep the 2SM session in step; the secret is of no use here.
                    let mine: Vec<&Forward> = forwards.iter().filter(|f| f.recipient == self.me.tag()).collect();
                    match mine.as_slice() {
                        [] => {}
                        [f] => drop(self.decrypt_from(env, &s, &f.ct, Misbehaviour::BadForward)?),
                        _ => return Err(malformed("two forwards to one recipient")),
                    }
                }
                self.lose_ratchet(s);
                Ok(Processed::default())
            }
            ControlBody::Ack { of, forwards } => {
                if forwards.is_empty() && self.is_farewell(s, of, lookup) {
                    // §7.5: nothing more of `s` is processed; it no longer holds the
                    // history's compaction back (§6.7).
                    self.h.depart(&s);
                    return Ok(Processed::default());
                }
                let (os, oq, disputed) = self.check_ack(s, q, of, false, lookup)?;
                let mine: Vec<&Forward> = forwards.iter().filter(|f| f.recipient == self.me.tag()).collect();
                if mine.len() > 1 {
                    return Err(malformed("two forwards to one recipient"));
                }
                let mut sorted: Vec<MemberTag> = forwards.iter().map(|f| f.recipient).collect();
                sorted.sort();
                if sorted.windows(2).any(|w| w[0] == w[1]) {
                    return Err(malformed("duplicate forward recipients"));
                }
                let fwd = mine.first().map(|f| &f.ct);
                let mut out = if disputed {
                    self.process_disputed_ack(env, s, q, (os, oq), fwd)?
                } else {
                    self.process_ack(env, s, q, (os, oq), fwd)?
                };
                out.completed.extend(self.acks.acknowledge(&(os, oq), s));
                Ok(out)
            }
            ControlBody::AddAck { of, ratchet_ct } => {
                // A disputed add-ack is processed as any other: its ratchet input is public.
                let (os, oq, _) = self.check_ack(s, q, of, true, lookup)?;
                let mut out = self.process_add_ack(env, s, q, (os, oq), ratchet_ct.as_ref())?;
                out.completed.extend(self.acks.acknowledge(&(os, oq), s));
                Ok(out)
            }
        }
    }

    /// A removal of `s` that every current member has seen (§7.5), if any: an operation of
    /// `s` processed now comes late. The remover and I count as having seen it; at least one
    /// other member must have (acknowledged it, or joined after it), so that an operation
    /// that merely crossed the removal in a group of three is not reported. Only removed
    /// members are looked at.
    pub(crate) fn settled_removal_of(&self, s: &MemberId) -> Option<(MemberId, SeqNo)> {
        self.settled(s, false).map(|r| (r.sender, SeqNo(r.seq)))
    }

    /// Whether a removal of `s` is settled for withholding its late operations (§7.5): every
    /// current member other than the remover (me included) has seen it, and there is at
    /// least one. Unlike [`Self::settled_removal_of`] (which excludes me, so that a removal
    /// merely crossing an operation is not reported as late), this test gives the same
    /// answer at the removed member's target as at the others: in a group of two, a mutual
    /// removal never settles, and both removals apply, as in the paper.
    pub(crate) fn removal_settled(&self, s: &MemberId) -> bool {
        self.settled(s, true).is_some()
    }

    /// The first removal of `s` that every current member but its remover has seen, and
    /// there is at least one such member (`with_me`: counting me, who has seen it).
    fn settled(&self, s: &MemberId, with_me: bool) -> Option<OpId<MemberId>> {
        let removals = self.h.removed_by(s);
        if removals.is_empty() {
            return None;
        }
        let view = self.view_me();
        removals.into_iter().find(|r| {
            let mut others = view.iter().filter(|m| **m != r.sender && (with_me || **m != self.me)).peekable();
            others.peek().is_some() && others.all(|m| *m == self.me || self.h.seen_by(m, r))
        })
    }

    /// Members I know of that S did not: the recipients of my forwarded member secret.
    pub(super) fn forward_targets(&self, s: &MemberId, r: &BTreeSet<MemberId>, v: &BTreeSet<MemberId>) -> Vec<MemberId> {
        v.iter().filter(|id| *id != s && !r.contains(id) && **id != self.me).copied().collect()
    }

    /// Whether an ack by `a` is a farewell (§7.5): it acknowledges a processed remove that
    /// removes or cancels `a` itself, sent by a member leaving on a late remove. It has no
    /// effect here (it is the evidence that releases the remove where it was withheld).
    fn is_farewell(&self, a: MemberId, of: &AckRef, lookup: &dyn Fn(&MemberId, u64) -> Option<AckTarget>) -> bool {
        let Some(os) = self.resolve(&of.of_sender) else { return false };
        let op = OpId::new(os, of.of_seq.0);
        let remove = match lookup(&os, op.seq) {
            Some(AckTarget::Known { kind, .. }) => kind == EnvelopeKind::Remove,
            // A newcomer knows the operations below its horizon from the history alone, and
            // so does every member a remove that every member has acknowledged.
            Some(AckTarget::BelowHorizon | AckTarget::Unretained) => self.h.is_remove(&op),
            _ => false,
        };
        remove && self.h.targets(&op).is_some_and(|t| t.contains(&a))
    }

    /// Whether `of` names an operation that arrived after its sender was retired here
    /// (§5.7) and was refused, which others processed.
    fn is_orphan(&self, of: &AckRef) -> bool {
        self.resolve(&of.of_sender).is_some_and(|os| self.refused_as_retired(&os, of.of_seq.0))
    }

    /// V4 for an ack (`add_ack = false`) or add-ack by `a` at `aq`; returns the acknowledged
    /// operation and whether the ack names another version of it than the one processed
    /// here (§7.6: a disputed ack, which is not the acker's fault and is not rejected).
    ///
    /// V4 (d) uses `H` for a create, add or remove and the [`AckTracker`] for an update
    /// in flight. Once every member has acknowledged an operation (its entry completed and
    /// the ordering layer forgot it, [`AckTarget::Unretained`]): a create, add or remove is
    /// still in `H` and checked there as before; for an update, an ack by a current member
    /// is a second one (every current member acknowledged it or inherited it from its
    /// adder), refused with [`RejectReason::AcknowledgedByAll`], and an ack by a member
    /// that is no longer one (a removed member's late ack) is accepted as below a horizon,
    /// without V4 (d): whether it is the first cannot be told any more. Refusing it would
    /// cut the removed member off here and not where the entry still lives, and views
    /// would split over its later late operations (§7.5).
    pub(super) fn check_ack(
        &self,
        a: MemberId,
        aq: u64,
        of: &AckRef,
        add_ack: bool,
        lookup: &dyn Fn(&MemberId, u64) -> Option<AckTarget>,
    ) -> Result<(MemberId, u64, bool), ProcessError> {
        let bad = |why| ProcessError::Reject(RejectReason::InvalidAck(why));
        let os = self.resolve(&of.of_sender).ok_or(bad("acknowledges an unknown sender"))?;
        let oq = of.of_seq.0;
        if os == a {
            return Err(bad("acknowledges its own message"));
        }
        let op = OpId::new(os, oq);
        let mut disputed = false;
        let target = lookup(&os, oq);
        let in_h = || {
            self.h.kind(&op).map(|k| match k {
                crate::dgm::OpKind::Create => EnvelopeKind::Create,
                crate::dgm::OpKind::Add => EnvelopeKind::Add,
                crate::dgm::OpKind::Remove => EnvelopeKind::Remove,
                crate::dgm::OpKind::Ack => EnvelopeKind::Ack,
            })
        };
        let kind = match target {
            None => return Err(bad("acknowledges an unprocessed message")),
            Some(AckTarget::Known { kind, hash }) => {
                disputed = hash != of.of_hash;
                Some(kind)
            }
            Some(AckTarget::BelowHorizon) => in_h(),
            Some(AckTarget::Unretained) => match in_h() {
                // A create, add or remove that every member has acknowledged, or an ack of one.
                Some(kind) => Some(kind),
                // An update every member has acknowledged, or an ack or application message:
                // a current member acknowledges neither.
                None if self.is_member(&a) => return Err(RejectReason::AcknowledgedByAll.into()),
                // A removed member's late ack, accepted as below a horizon.
                None => None,
            },
        };
        let expect_add_ack = match kind {
            Some(EnvelopeKind::Add) => self.h.target(&op) != Some(a),
            Some(EnvelopeKind::Create | EnvelopeKind::Update | EnvelopeKind::Remove) | None => false,
            Some(_) => return Err(bad("acknowledges an ack or application message")),
        };
        if add_ack != expect_add_ack {
            return Err(bad("wrong acknowledgment type"));
        }
        let membership = self.h.contains(&op);
        if membership && self.h.has_acked(&op, &a) {
            if target == Some(AckTarget::Unretained) {
                return Err(RejectReason::AcknowledgedByAll.into());
            }
            return Err(bad("acknowledged twice"));
        }
        if !membership && self.acks.has_acked(&(os, oq), &a) {
            return Err(bad("acknowledged twice"));
        }
        if membership {
            self.h.check(&Op::Ack { sender: a, seq: aq, of: op.clone() }).map_err(refused)?;
        }
        // §7.5: only a member that was ever removed or cancelled can trip the rule.
        if !self.h.removed_by(&a).is_empty() && self.h.follows_own_removal(&a, &op) {
            return Err(ProcessError::Reject(RejectReason::FollowsOwnRemoval));
        }
        Ok((os, oq, disputed))
    }

    /// `process-create`. `ids` are the other initial members' MIDs.
    pub(super) fn process_create<R: CryptoRng>(
        &mut self,
        env: &mut Env<'_, R>,
        s: MemberId,
        q: u64,
        ids: &BTreeSet<MemberId>,
        blk: Option<&SeedBlock>,
        bundles: &Bundles,
    ) -> Result<Processed, ProcessError> {
        self.h
            .apply(Op::Create { sender: s, seq: q, members: ids.iter().copied().collect() })
            .map_err(refused)?;
        self.process_seed(env, EnvelopeKind::Create, s, q, blk, bundles)
    }

    /// Processing of a create by a member it lists (`Group::from_create`): V1, V5, then
    /// `process-create`.
    pub(crate) fn process_initial_create<R: CryptoRng>(
        &mut self,
        env: &mut Env<'_, R>,
        creator: MemberId,
        creator_ik: IdentityKey,
        members: &[IdentityKey],
        seeds: &SeedBlock,
    ) -> Result<Processed, ProcessError> {
        let invalid = |why| ProcessError::Reject(RejectReason::InvalidCreate(why));
        if members.contains(&creator_ik) {
            return Err(invalid("the creator lists itself"));
        }
        if members.len() + 1 > MAX_GROUP {
            return Err(ProcessError::Reject(RejectReason::TooManyMembers { count: members.len() + 1, max: MAX_GROUP }));
        }
        self.learn(creator, creator_ik);
        let mut ids = BTreeSet::new();
        for ik in members {
            let id = MemberId::derive(&self.gid, ik, Origin::Operation(creator, SeqNo(1)));
            self.learn(id, *ik);
            ids.insert(id);
        }
        if !ids.contains(&self.me) {
            return Err(invalid("the create does not list me"));
        }
        check_seeds(seeds, &ids)?;
        // Every initial member knows every other: a create's ack forwards nothing, so no
        // first contact (and no one-time prekey) is needed here.
        let bundles = Bundles::new();
        let mut out = self.process_create(env, creator, 1, &ids, Some(seeds), &bundles)?;
        out.events.insert(0, Event::Joined { gid: self.gid, by: creator });
        Ok(out)
    }

    /// `process-remove`.
    pub(super) fn process_remove<R: CryptoRng>(
        &mut self,
        env: &mut Env<'_, R>,
        s: MemberId,
        q: u64,
        t: MemberId,
        blk: Option<&SeedBlock>,
        bundles: &Bundles,
    ) -> Result<Processed, ProcessError> {
        let before = self.view_me();
        self.h.apply(Op::Remove { sender: s, seq: q, target: t }).map_err(refused)?;
        let after = self.view_me();
        let gone: BTreeSet<MemberId> = before.difference(&after).copied().collect();
        // Members that leave are no longer awaited: what only they held up completes.
        let completed = self.acks.leave(&gone);
        let removed_event = Event::MembersRemoved { by: s, ids: gone };
        if !after.contains(&self.me) {
            // §7.5: a remove that takes me out (directly or by cancelling my add) gets a
            // farewell ack (no secret, no forward): it tells the others that I processed it
            // and will send nothing more, so that they stop keeping history for me (§6.7);
            // where the remove came late (its sender already removed) and was withheld, it
            // is the evidence that releases it.
            self.seq += 1;
            let of = AckRef { of_sender: s.tag(), of_seq: SeqNo(q), of_hash: [0; 16] };
            let reply = Some((ControlBody::Ack { of, forwards: Vec::new() }, SeqNo(self.seq)));
            return Ok(Processed {
                terminated_by: Some(s),
                reply,
                events: vec![removed_event],
                completed,
                ..Default::default()
            });
        }
        let mut out = self.process_seed(env, EnvelopeKind::Remove, s, q, blk, bundles)?;
        out.events.insert(0, removed_event);
        out.completed.splice(0..0, completed);
        Ok(out)
    }

    /// Opens the [`AckTracker`] entry of the create, update, remove or add `(s, q)` just
    /// processed: every current member but S and me is awaited.
    fn open_in_flight(&mut self, s: MemberId, q: u64, out: &mut Processed) {
        let mut pending = self.view_me();
        pending.remove(&s);
        pending.remove(&self.me);
        out.completed.extend(self.acks.open((s, q), pending, BTreeSet::new()));
    }

    /// `heal-check(γ, type, S, R, iAmRecipient)` (§5.8).
    pub(super) fn heal_check(&mut self, kind: EnvelopeKind, s: &MemberId, r: &BTreeSet<MemberId>, i_am_recipient: bool) -> bool {
        let view = self.view_me();
        let removed: BTreeSet<MemberId> = self.h.ever_added().into_iter().filter(|m| !view.contains(m)).collect();
        let knows_removed = removed.contains(s) || r.iter().any(|m| removed.contains(m));
        let was = self.heal_pending;
        if kind == EnvelopeKind::Remove && (!i_am_recipient || knows_removed) {
            self.heal_pending = true;
        } else if i_am_recipient && !knows_removed {
            self.heal_pending = false;
        }
        self.heal_pending && !was
    }

    /// `process-seed(γ, type, S, q, blk)`, then the operation is in flight.
    pub(super) fn process_seed<R: CryptoRng>(
        &mut self,
        env: &mut Env<'_, R>,
        kind: EnvelopeKind,
        s: MemberId,
        q: u64,
        blk: Option<&SeedBlock>,
        bundles: &Bundles,
    ) -> Result<Processed, ProcessError> {
        let mut out = self.apply_seed(env, kind, s, q, blk, bundles)?;
        self.open_in_flight(s, q, &mut out);
        Ok(out)
    }

    /// `process-seed(γ, type, S, q, blk)` itself.
    fn apply_seed<R: CryptoRng>(
        &mut self,
        env: &mut Env<'_, R>,
        kind: EnvelopeKind,
        s: MemberId,
        q: u64,
        blk: Option<&SeedBlock>,
        bundles: &Bundles,
    ) -> Result<Processed, ProcessError> {
        let mut r = self.member_view(&s);
        r.remove(&s);
        let seed = if s == self.me {
            self.next_seed.take().ok_or_else(|| fatal("no seed of my own in progress"))?
        } else {
            let blk = blk.ok_or_else(|| fatal("seed block missing"))?;
            let Some(k) = r.iter().position(|id| *id == self.me) else {
                // S did not know me (I was added concurrently): ack without a secret.
                self.seq += 1;
                let a = self.seq;
                let heal = self.heal_check(kind, &s, &r, false);
                let mut out = self.process_ack(env, self.me, a, (s, q), None)?;
                out.reply = Some((ControlBody::Ack { of: self.ack_ref(s, q), forwards: Vec::new() }, SeqNo(a)));
                if heal {
                    out.events.push(Event::HealPending);
                }
                return Ok(out);
            };
            let c = blk.cts.get(k).ok_or_else(|| fatal("seed block shorter than its recipients"))?;
            self.decrypt_from(env, &s, c, Misbehaviour::BadSeedCiphertext)?
        };
        for (id, m) in self.member_secrets(&seed, &s, q, r.iter().copied())? {
            self.ms.insert((s, q, id), m);
        }
        self.hold_since(s, q, env.now);
        let x = self.member_secrets(&seed, &s, q, core::iter::once(s))?.pop().map(|(_, m)| m);
        drop(seed);
        let x = x.ok_or_else(|| fatal("member secret derivation"))?;
        if kind != EnvelopeKind::Create {
            self.reset_ratchet(&s);
        }
        let is = self.update_ratchet(&s, RatchetInput::Member(&x))?;
        drop(x);
        let mut out = Processed { secrets: vec![self.secret(s, q, is)], ..Default::default() };
        if s == self.me {
            return Ok(out);
        }
        self.seq += 1;
        let a = self.seq;
        let v = self.view_me();
        let mine = self.ms.get(&(s, q, self.me)).cloned().ok_or_else(|| fatal("own member secret missing"))?;
        let mut forwards = Vec::new();
        for id in self.forward_targets(&s, &r, &v) {
            let ct = self.encrypt_to(env, bundles, &id, mine.expose())?;
            forwards.push(Forward { recipient: id.tag(), ct });
        }
        drop(mine);
        if self.heal_check(kind, &s, &r, true) {
            out.events.push(Event::HealPending);
        }
        let acked = self.process_ack(env, self.me, a, (s, q), None)?;
        out.secrets.extend(acked.secrets);
        let of = self.ack_ref(s, q);
        out.reply = Some((ControlBody::Ack { of, forwards }, SeqNo(a)));
        Ok(out)
    }

    pub(super) fn ack_ref(&self, s: MemberId, q: u64) -> AckRef {
        // The hash is filled in by the ordering layer, which holds it.
        AckRef { of_sender: s.tag(), of_seq: SeqNo(q), of_hash: [0; 16] }
    }

    /// `process-ack(γ, A, a, (S, q), fwdToMe)`.
    pub(super) fn process_ack<R: CryptoRng>(
        &mut self,
        env: &mut Env<'_, R>,
        a: MemberId,
        aq: u64,
        (s, q): (MemberId, u64),
        fwd: Option<&TwoSmCiphertext>,
    ) -> Result<Processed, ProcessError> {
        let Some(x) = self.take_ack_secret(env, a, aq, (s, q), fwd)? else { return Ok(Processed::default()) };
        if self.is_stale(&a) {
            // Its ratchet here was lost to the retention period (§5.7).
            return Ok(Processed::default());
        }
        let i = self.update_ratchet(&a, RatchetInput::Member(&x))?;
        Ok(Processed { secrets: vec![self.secret(a, aq, i)], ..Default::default() })
    }

    /// An ack by `a` of another version of `(s, q)` than the one processed here (§7.6): it
    /// counts as an ack in `H`, a forward to me is decrypted (keeping the 2SM session in
    /// step) and discarded, and the member secret of `a` derived from my version is
    /// erased unused, since `a` derived its own from the version it saw.
    pub(super) fn process_disputed_ack<R: CryptoRng>(
        &mut self,
        env: &mut Env<'_, R>,
        a: MemberId,
        aq: u64,
        (s, q): (MemberId, u64),
        fwd: Option<&TwoSmCiphertext>,
    ) -> Result<Processed, ProcessError> {
        drop(self.take_ack_secret(env, a, aq, (s, q), fwd)?);
        Ok(Processed::default())
    }

    /// What every ack does before its secret is used: it counts in `H` (for a membership
    /// operation), the member secret of `a` for `(s, q)` is taken out of `ms`, and a forward
    /// to me is decrypted. Returns the held secret, else the forwarded one.
    fn take_ack_secret<R: CryptoRng>(
        &mut self,
        env: &mut Env<'_, R>,
        a: MemberId,
        aq: u64,
        (s, q): (MemberId, u64),
        fwd: Option<&TwoSmCiphertext>,
    ) -> Result<Option<Secret32>, ProcessError> {
        let op = OpId::new(s, q);
        if self.h.is_create(&op) || self.h.is_add(&op) || self.h.is_remove(&op) {
            self.h.apply(Op::Ack { sender: a, seq: aq, of: op }).map_err(refused)?;
        }
        let held = self.ms.remove(&(s, q, a));
        if held.is_some() && self.member_secrets_held(&s, q) == 0 {
            self.ms_since.remove(&(s, q));
        }
        let forwarded = match fwd {
            Some(c) => Some(self.decrypt_from(env, &a, c, Misbehaviour::BadForward)?),
            None => None,
        };
        Ok(held.or(forwarded))
    }

    /// `process-add(γ, S, q, t)` for a member other than the newcomer, then the add is in
    /// flight. The newcomer, if the add makes it a member, takes S's position in every
    /// operation in flight (its Welcome covers what S had processed).
    pub(super) fn process_add<R: CryptoRng>(
        &mut self,
        env: &mut Env<'_, R>,
        s: MemberId,
        q: u64,
        t: MemberId,
        bundles: &Bundles,
    ) -> Result<Processed, ProcessError> {
        self.h.apply(Op::Add { sender: s, seq: q, target: t }).map_err(refused)?;
        if self.is_member(&t) {
            self.acks.inherit(&s, t);
        }
        let mut out = self.apply_add(env, s, q, t, bundles)?;
        self.open_in_flight(s, q, &mut out);
        Ok(out)
    }

    /// `process-add(γ, S, q, t)` itself, once `H` holds the add.
    fn apply_add<R: CryptoRng>(
        &mut self,
        env: &mut Env<'_, R>,
        s: MemberId,
        q: u64,
        t: MemberId,
        bundles: &Bundles,
    ) -> Result<Processed, ProcessError> {
        let mut out = Processed::default();
        let identity = *self.ik.get(&t).ok_or_else(|| fatal("add target identity"))?;
        if self.is_member(&t) {
            out.events.push(Event::MemberAdded { by: s, id: t, identity });
        } else {
            out.events.push(Event::AddCancelled { by: s, id: t });
        }
        // A stale adder's ratchet is lost here (§5.7): no welcome secret, no update secret,
        // and the newcomer's ratchet, which starts from the welcome secret, is lost too.
        if self.in_view(&self.me, &s) && self.is_stale(&s) {
            self.stale.insert(t);
        }
        if self.in_view(&self.me, &s) && !self.is_stale(&s) {
            if !self.rt.contains_key(&s) {
                return Err(fatal("no ratchet state for a member who knows me"));
            }
            let welcome = self.update_ratchet(&s, RatchetInput::Welcome)?;
            self.ms.insert((s, q, t), welcome);
            self.hold_since(s, q, env.now);
            let is = self.update_ratchet(&s, RatchetInput::Add)?;
            out.secrets.push(self.secret(s, q, is));
        }
        if s == self.me {
            return Ok(out);
        }
        self.seq += 1;
        let a = self.seq;
        let my_ik = self.ik.get(&self.me).copied();
        let duplicate = my_ik == Some(identity);
        let rc = if self.is_member(&t) && !duplicate {
            let rt_me = self.rt.get(&self.me).cloned().ok_or_else(|| fatal("no ratchet state of my own"))?;
            Some(self.encrypt_to(env, bundles, &t, rt_me.expose())?)
        } else {
            None
        };
        let acked = self.process_add_ack(env, self.me, a, (s, q), None)?;
        out.secrets.extend(acked.secrets);
        if duplicate && self.is_member(&t) {
            out.duplicate_instance = Some(t);
            out.events.push(Event::DuplicateInstance { id: t });
        }
        out.reply = Some((ControlBody::AddAck { of: self.ack_ref(s, q), ratchet_ct: rc }, SeqNo(a)));
        Ok(out)
    }

    /// `process-add-ack(γ, A, a, (S, q), rc)`.
    pub(super) fn process_add_ack<R: CryptoRng>(
        &mut self,
        env: &mut Env<'_, R>,
        a: MemberId,
        aq: u64,
        (s, q): (MemberId, u64),
        rc: Option<&TwoSmCiphertext>,
    ) -> Result<Processed, ProcessError> {
        let op = OpId::new(s, q);
        self.h.apply(Op::Ack { sender: a, seq: aq, of: op.clone() }).map_err(refused)?;
        if let Some(c) = rc
            && self.h.target(&op) == Some(self.me)
        {
            let state = self.decrypt_from(env, &a, c, Misbehaviour::BadRatchetCiphertext)?;
            self.rt.insert(a, state);
        }
        if self.in_view(&self.me, &a) && !self.is_stale(&a) {
            if !self.rt.contains_key(&a) {
                return Err(fatal("no ratchet state for a member who knows me"));
            }
            let i = self.update_ratchet(&a, RatchetInput::Add)?;
            return Ok(Processed { secrets: vec![self.secret(a, aq, i)], ..Default::default() });
        }
        Ok(Processed::default())
    }

    /// `process-welcome(γ, S, q, W)`: `history` is the adder's H before the add, with the
    /// identities it introduces; `ratchet_ct` the adder's ratchet state.
    pub(crate) fn process_welcome<R: CryptoRng>(
        &mut self,
        env: &mut Env<'_, R>,
        s: MemberId,
        q: u64,
        history: History<MemberId>,
        identities: &BTreeMap<MemberId, IdentityKey>,
        ratchet_ct: &TwoSmCiphertext,
    ) -> Result<Processed, ProcessError> {
        for (id, ik) in identities {
            self.learn(*id, *ik);
        }
        self.h = history;
        self.h.apply(Op::Add { sender: s, seq: q, target: self.me }).map_err(refused)?;
        let state = self.decrypt_from(env, &s, ratchet_ct, Misbehaviour::BadRatchetCiphertext)?;
        self.rt.insert(s, state);
        let welcome = self.update_ratchet(&s, RatchetInput::Welcome)?;
        self.ms.insert((s, q, self.me), welcome);
        self.hold_since(s, q, env.now);
        let is = self.update_ratchet(&s, RatchetInput::Add)?;
        self.seq += 1;
        let a = self.seq;
        let acked = self.process_ack(env, self.me, a, (s, q), None)?;
        let mut out = Processed { secrets: vec![self.secret(s, q, is)], ..Default::default() };
        out.secrets.extend(acked.secrets);
        out.events.push(Event::Joined { gid: self.gid, by: s });
        self.open_in_flight(s, q, &mut out);
        out.reply = Some((ControlBody::Ack { of: self.ack_ref(s, q), forwards: Vec::new() }, SeqNo(a)));
        Ok(out)
    }
}
