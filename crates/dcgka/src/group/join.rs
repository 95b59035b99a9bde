//! Creating a group and joining one, from a create or a Welcome (§5.4, §7.4).

use super::*;
use crate::consts::{MAX_GROUP, MAX_HISTORY_LEN};

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
        let (bytes, _) = g.emit(ctx, EnvelopeKind::Create, q, body.to_bytes());
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
        // The creator's first signing key is certified by its identity key (§7.2).
        let rotation = env.certified_key();
        if rotation.is_none_or(|k| k.verify(&creator_ik, &gid, &creator).is_err()) {
            return Err(cannot(JoinError::ForgedSigningKey { member: creator }));
        }
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
        g.ord.advance(&g.d, creator, 1, rotation, Some((EnvelopeKind::Create, env.short_hash())));
        let mut out = Output { accepted: vec![Accepted::of(creator, &env)], ..Default::default() };
        g.finish_processed(ctx, p, env.short_hash(), &mut out)?;
        Ok((g, out))
    }

    /// Reads what a Welcome says about itself, after checking its signature and its bounds
    /// and before replaying anything (§7.4, §9): the group, the adder and its identity key,
    /// how many members the history introduces and how long it is. The application decides
    /// from it whether to consent, then calls [`Group::join`]. Costs one signature check
    /// and time linear in the Welcome's size.
    pub fn inspect_welcome(welcome: &[u8]) -> Result<WelcomeSummary, GroupError> {
        Ok(Self::open_welcome(welcome)?.1)
    }

    /// Decodes a Welcome, checks its signature under the adder's identity key and its
    /// bounds ([`MAX_HISTORY_LEN`], [`MAX_GROUP`]), in that order, before anything whose
    /// cost grows faster than the Welcome's size. Returns it with its summary.
    fn open_welcome(welcome: &[u8]) -> Result<(Welcome, WelcomeSummary), GroupError> {
        let w = Welcome::from_bytes(welcome)?;
        let cannot = GroupError::CannotJoin;
        // The signature first: the adder's identity key is read from the log without
        // deriving anything, so a tampered Welcome costs one linear pass and one check.
        let adder_ik = identity_of(&w.history, w.adder).ok_or(cannot(JoinError::UnknownAdder))?;
        w.verify(&adder_ik).map_err(|_| GroupError::Dropped(DropReason::BadSignature))?;
        if w.history.len() > MAX_HISTORY_LEN {
            return Err(cannot(JoinError::HistoryTooLong { len: w.history.len(), max: MAX_HISTORY_LEN }));
        }
        let members_introduced = introduced(&w.history);
        if members_introduced > MAX_GROUP {
            return Err(cannot(JoinError::TooManyMembers { introduced: members_introduced, max: MAX_GROUP }));
        }
        let table = member_table(&w.gid, &w.history).map_err(|s| cannot(JoinError::InvalidHistory(s)))?;
        let adder =
            usize::try_from(w.adder).ok().and_then(|i| table.get(i)).copied().ok_or(cannot(JoinError::UnknownAdder))?;
        let summary = WelcomeSummary {
            gid: w.gid,
            adder,
            adder_identity: adder_ik,
            members_introduced,
            removes: w.history.iter().filter(|op| matches!(op, LogOp::Remove { .. })).count(),
            history_len: w.history.len(),
        };
        Ok((w, summary))
    }

    /// Joins a group from a Welcome (§7.4). Returns the new member's ack to broadcast.
    ///
    /// The Welcome's signature and bounds are checked before its history is replayed
    /// ([`Group::inspect_welcome`] shows the application the same checked summary first,
    /// for its consent).
    pub fn join<R: CryptoRng>(
        ctx: &mut Context<'_, R>,
        welcome: &[u8],
        config: GroupConfig,
    ) -> Result<(Group, Output), GroupError> {
        let (w, summary) = Self::open_welcome(welcome)?;
        let cannot = GroupError::CannotJoin;
        let replayed = replay_history(&w.gid, &w.history).map_err(|s| cannot(JoinError::InvalidHistory(s)))?;
        let adder = summary.adder;
        if replayed.identities.get(&adder) != Some(&summary.adder_identity) {
            return Err(cannot(JoinError::UnknownAdder));
        }
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
            // Each key must be certified by its member's identity key, from an envelope at
            // or below the horizon (§7.2, §7.4): the adder cannot substitute its own.
            let ik = replayed
                .identities
                .get(&id)
                .ok_or(cannot(JoinError::InvalidHistory("the sender table names an unknown member")))?;
            let forged = cannot(JoinError::ForgedSigningKey { member: id });
            let (key, cert) = match s.signing_key {
                Some(k) if (1..=s.hwm).contains(&k.seq.0) && k.verify(ik, &w.gid, &id).is_ok() => {
                    (k.key, Some((k.seq, k.cert)))
                }
                // A sender with nothing processed still signs with its identity key.
                None if s.hwm == 0 => (*ik, None),
                _ => return Err(forged),
            };
            g.ord.load(id, SenderState { hwm: s.hwm, key, cert, cut_off: s.cut_off });
            // A member the adder retired (§5.7): what it sent after the horizon is refused
            // here as there, and acks of it are recognised.
            if s.cut_off && g.d.h.departed(&id) && !g.d.is_member(&id) {
                g.d.refuse_after(id, s.hwm);
            }
        }
        let adder_state = g
            .ord
            .sender(&adder, &g.d)
            .ok_or(cannot(JoinError::InvalidHistory("the adder is missing from the sender table")))?;
        let adder_key = g.ord.senders().get(&adder).map(|s| s.key).unwrap_or(summary.adder_identity);
        if adder_state.hwm + 1 != q {
            return Err(cannot(JoinError::HorizonMismatch));
        }
        e.verify(&w.gid, &adder, &adder_key).map_err(|_| GroupError::Dropped(DropReason::BadSignature))?;
        let rotation = add.certified_key();
        if rotation.is_none_or(|k| k.verify(&summary.adder_identity, &w.gid, &adder).is_err()) {
            return Err(cannot(JoinError::ForgedSigningKey { member: adder }));
        }
        let p =
            g.d.process_welcome(&mut env!(ctx), adder, q, replayed.history, &replayed.identities, &w.ratchet_ct)
                .map_err(|e| match e {
                    ProcessError::Fatal(_) | ProcessError::BadCiphertext(_) => {
                        GroupError::CannotJoin(JoinError::Undecryptable)
                    }
                    other => map_process_error(other),
                })?;
        g.ord.advance(&g.d, adder, q, rotation, Some((EnvelopeKind::Add, e.short_hash())));
        let mut out = Output { accepted: vec![Accepted::of(adder, &e)], ..Default::default() };
        g.finish_processed(ctx, p, e.short_hash(), &mut out)?;
        Ok((g, out))
    }
}
