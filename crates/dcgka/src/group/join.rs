//! Creating a group and joining one, from a create or a Welcome (§5.4, §7.4).

use super::*;

impl Group {
    /// Creates a group with `others` (identity keys) as the other initial members. The
    /// create envelope in `broadcast` makes them join ([`Group::from_create`]).
    pub fn create<R: CryptoRng>(
        ctx: &mut Context<'_, R>,
        others: &[IdentityKey],
        config: GroupConfig,
    ) -> Result<(Group, Output), GroupError> {
        let mut raw = [0u8; 32];
        ctx.rng.fill_bytes(&mut raw);
        let gid = GroupId(raw);
        let me = MemberId::derive(&gid, &ctx.identity.public_key(), Origin::Creator);
        let mut g = Group::blank(config, ctx.identity, Dcgka::new(me, gid, ctx.identity.public_key()));
        let staged = g.d.stage_create(&mut env!(ctx), others).map_err(map_process_error)?;
        let (body, q, p) = g.d.commit_create(&mut env!(ctx), staged).map_err(map_process_error)?;
        let mut out = Output::default();
        let (bytes, _) = g.emit(ctx.rng, EnvelopeKind::Create, q, body.to_bytes());
        out.broadcast.push(bytes);
        g.absorb(p, &mut out)?;
        Ok((g, out))
    }

    /// Joins a group from a create envelope that lists this device. The application
    /// decides beforehand (with [`Group::peek`]) whether to consent.
    pub fn from_create<R: CryptoRng>(
        ctx: &mut Context<'_, R>,
        bytes: &[u8],
        config: GroupConfig,
    ) -> Result<(Group, Output), GroupError> {
        let env = Envelope::from_bytes(bytes)?;
        let cannot = GroupError::CannotJoin;
        let (EnvelopeKind::Create, Some(gid), SenderRef::Identity(creator_ik)) = (env.kind, env.gid, env.sender) else {
            return Err(cannot(JoinError::NotACreate));
        };
        let creator = MemberId::derive(&gid, &creator_ik, Origin::Creator);
        env.verify(&gid, &creator, &creator_ik).map_err(|_| GroupError::Dropped(DropReason::BadSignature))?;
        let ControlBody::Create { members, seeds } = ControlBody::from_bytes(EnvelopeKind::Create, &env.body)? else {
            return Err(cannot(JoinError::NotACreate));
        };
        let my_ik = ctx.identity.public_key();
        let me = MemberId::derive(&gid, &my_ik, Origin::Operation(creator, SeqNo(1)));
        if creator_ik == my_ik {
            return Err(GroupError::OwnEnvelope);
        }
        let mut g = Group::blank(config, ctx.identity, Dcgka::new(me, gid, my_ik));
        let p = match g.d.process_initial_create(&mut env!(ctx), creator, creator_ik, &members, &seeds) {
            Ok(p) => p,
            Err(ProcessError::Reject(r)) => return Err(GroupError::CannotJoin(JoinError::Rejected(r))),
            Err(e) => return Err(map_process_error(e)),
        };
        g.ord.advance(&g.d, creator, 1, env.new_signing_key, Some((EnvelopeKind::Create, env.short_hash())));
        let mut out = Output { accepted: vec![Accepted::of(creator, &env)], ..Default::default() };
        g.finish_processed(ctx, p, env.short_hash(), &mut out)?;
        Ok((g, out))
    }

    /// Joins a group from a Welcome (§7.4). Returns the new member's ack to broadcast.
    pub fn join<R: CryptoRng>(
        ctx: &mut Context<'_, R>,
        welcome: &[u8],
        config: GroupConfig,
    ) -> Result<(Group, Output), GroupError> {
        let w = Welcome::from_bytes(welcome)?;
        let cannot = GroupError::CannotJoin;
        let replayed = replay_history(&w.gid, &w.history).map_err(|s| cannot(JoinError::InvalidHistory(s)))?;
        let adder = usize::try_from(w.adder)
            .ok()
            .and_then(|i| replayed.table.get(i))
            .copied()
            .ok_or(cannot(JoinError::UnknownAdder))?;
        let adder_ik = *replayed.identities.get(&adder).ok_or(cannot(JoinError::UnknownAdder))?;
        w.verify(&adder_ik).map_err(|_| GroupError::Dropped(DropReason::BadSignature))?;
        // The add may be the last item of a batch that begins with the adder's held acks;
        // the adder's horizon then falls inside the batch (§12).
        let e = Envelope::from_bytes(&w.add_envelope)?;
        let add = e.items()?.pop().ok_or(cannot(JoinError::NotAnAdd))?;
        let my_ik = ctx.identity.public_key();
        if add.kind != EnvelopeKind::Add {
            return Err(cannot(JoinError::NotAnAdd));
        }
        let ControlBody::Add { target, .. } = ControlBody::from_bytes(EnvelopeKind::Add, &add.body)? else {
            return Err(cannot(JoinError::NotAnAdd));
        };
        if e.sender != SenderRef::Tag(adder.tag()) || target != my_ik {
            return Err(cannot(JoinError::NotForMe));
        }
        let q = add.seq.0;
        let me = MemberId::derive(&w.gid, &my_ik, Origin::Operation(adder, add.seq));
        let mut g = Group::blank(config, ctx.identity, Dcgka::new(me, w.gid, my_ik));
        for s in &w.senders {
            let id = usize::try_from(s.id)
                .ok()
                .and_then(|i| replayed.table.get(i))
                .copied()
                .ok_or(cannot(JoinError::InvalidHistory("the sender table names an unknown member")))?;
            g.ord.load(id, SenderState { hwm: s.hwm, key: s.signing_key, cut_off: s.cut_off });
        }
        let adder_state = g
            .ord
            .sender(&adder, &g.d)
            .ok_or(cannot(JoinError::InvalidHistory("the adder is missing from the sender table")))?;
        let adder_key = g.ord.senders().get(&adder).map(|s| s.key).unwrap_or(adder_ik);
        if adder_state.hwm + 1 != q {
            return Err(cannot(JoinError::HorizonMismatch));
        }
        e.verify(&w.gid, &adder, &adder_key).map_err(|_| GroupError::Dropped(DropReason::BadSignature))?;
        let p =
            g.d.process_welcome(&mut env!(ctx), adder, q, replayed.history, &replayed.identities, &w.ratchet_ct)
                .map_err(|e| match e {
                    ProcessError::Fatal(_) | ProcessError::BadCiphertext(_) => {
                        GroupError::CannotJoin(JoinError::Undecryptable)
                    }
                    other => map_process_error(other),
                })?;
        g.ord.advance(&g.d, adder, q, add.new_signing_key, Some((EnvelopeKind::Add, e.short_hash())));
        let mut out = Output { accepted: vec![Accepted::of(adder, &e)], ..Default::default() };
        g.finish_processed(ctx, p, e.short_hash(), &mut out)?;
        Ok((g, out))
    }
}
