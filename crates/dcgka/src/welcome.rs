//! The Welcome: how a newcomer learns the group (§7.4).
//!
//! ```text
//! Welcome = version:u8 ‖ gid:[32] ‖ adder:var ‖ add_envelope:opaque ‖ history:list<LogOp>
//!         ‖ senders:list<SenderEntry> ‖ ratchet_ct:TwoSmCiphertext ‖ signature:[64]
//! SenderEntry = id:var ‖ hwm:var ‖ signing_key:opt<key:[32] ‖ seq:var ‖ cert:[64]> ‖ cut_off:u8
//! ```
//!
//! Each signing key in the sender table carries its certificate by its member's identity
//! key (§7.2), which the newcomer checks: the adder cannot substitute a key of its own.
//!
//! The history is the adder's `H` before the add as a compact operation log. Members are
//! numbered in the order the log introduces them (the creator is 0, the create's initial
//! members follow in list order, then each add's target), and every later reference is
//! that number as a varint. A compacted history (§6.7) starts with its compact base: a
//! `Folded` entry naming the folded create's creator, then one `Member` entry per member
//! whose add is folded (numbered in that order, before the log's own members), and ends
//! with a `Tail` entry (sequence numbers the log no longer shows, departed members). A
//! member the base no longer numbers (forgotten, §6.7) is named by its MID (`MidRef`). Identity keys appear once, where a member is introduced, and
//! MIDs are recomputed from them (§2.2), so neither MIDs nor tags travel. The signature,
//! by the adder's **identity** key, covers every preceding byte.

use std::collections::BTreeMap;

use crate::codec::{Decode, DecodeError, Encode, Reader, Writer};
use crate::consts::WIRE_VERSION;
use crate::crypto::{CryptoError, IdentityKey, Signature, SigningSecret, VerifyingKey, labels};
use crate::dgm::{BaseMember, Folded, History, Op, OpId};
use crate::ids::{GroupId, MemberId, Origin, SeqNo};
use crate::two_party::TwoSmCiphertext;
use crate::wire::CertifiedKey;

/// One operation of the history log; members are numbers in the log's member table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogOp {
    /// The create (sequence number 1): the creator's and the initial members' identity keys.
    Create {
        /// The creator's identity key.
        creator: IdentityKey,
        /// The other initial members' identity keys.
        members: Vec<IdentityKey>,
    },
    /// An add: the target is introduced with its identity key.
    Add {
        /// The adder's number.
        sender: u64,
        /// The adder's sequence number.
        seq: u64,
        /// The added identity.
        target: IdentityKey,
    },
    /// A remove.
    Remove {
        /// The remover's number.
        sender: u64,
        /// The remover's sequence number.
        seq: u64,
        /// The removed member's number.
        target: u64,
    },
    /// The base of a compacted history (§6.7): the create `(creator, 1)` is folded. First
    /// entry when present.
    Folded {
        /// The creator.
        creator: MidRef,
    },
    /// A member of the compact base: its identity and the operation that added it, which
    /// together give its MID (§2.2), and the folded removes that remove or cancel it.
    Member {
        /// Its identity key.
        identity: IdentityKey,
        /// `None` for the creator; else the operation `(sender, seq)` that introduced it
        /// (the create for an initial member).
        origin: Option<(MidRef, u64)>,
        /// The folded removes of it, in processing order.
        removed_by: Vec<(MidRef, u64)>,
    },
    /// The end of a compacted history: each member's highest sequence number where the
    /// log does not show it, and the departed members (numbers).
    Tail {
        /// `(member, seq)`.
        last_seq: Vec<(u64, u64)>,
        /// Members that said farewell.
        departed: Vec<u64>,
    },
    /// An ack or add-ack of a create, add or remove.
    Ack {
        /// The acker's number.
        sender: u64,
        /// The acker's sequence number.
        seq: u64,
        /// The acknowledged operation's sender number.
        of_sender: u64,
        /// The acknowledged operation's sequence number.
        of_seq: u64,
    },
}

/// A member named in a compacted history: by its number, or by its MID when the history
/// no longer numbers it (`0 ‖ mid:[32]`, or `n + 1` for number n, as one varint).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MidRef {
    /// A member of the log's member table.
    Number(u64),
    /// A member the history forgot.
    Mid(MemberId),
}

impl MidRef {
    fn encode(&self, w: &mut Writer) {
        match self {
            MidRef::Mid(m) => {
                w.var(0);
                w.raw(&m.0);
            }
            MidRef::Number(n) => w.var(n.saturating_add(1)),
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match r.var()? {
            0 => MidRef::Mid(MemberId(r.array()?)),
            n => MidRef::Number(n - 1),
        })
    }

    fn resolve(&self, table: &[MemberId]) -> Result<MemberId, &'static str> {
        match self {
            MidRef::Mid(m) => Ok(*m),
            MidRef::Number(n) => {
                usize::try_from(*n).ok().and_then(|i| table.get(i)).copied().ok_or("history names an unknown member")
            }
        }
    }
}

impl Encode for LogOp {
    fn encode(&self, w: &mut Writer) {
        match self {
            LogOp::Folded { creator } => {
                w.u8(4);
                creator.encode(w);
            }
            LogOp::Member { identity, origin, removed_by } => {
                w.u8(5);
                w.raw(&identity.0);
                w.opt(origin.as_ref(), |w, (s, q)| {
                    s.encode(w);
                    w.var(*q);
                });
                w.list(removed_by, |w, (s, q)| {
                    s.encode(w);
                    w.var(*q);
                });
            }
            LogOp::Tail { last_seq, departed } => {
                w.u8(6);
                w.list(last_seq, |w, (m, q)| {
                    w.var(*m);
                    w.var(*q);
                });
                w.list(departed, |w, m| w.var(*m));
            }
            LogOp::Create { creator, members } => {
                w.u8(0);
                w.raw(&creator.0);
                w.list(members, |w, m| w.raw(&m.0));
            }
            LogOp::Add { sender, seq, target } => {
                w.u8(1);
                w.var(*sender);
                w.var(*seq);
                w.raw(&target.0);
            }
            LogOp::Remove { sender, seq, target } => {
                w.u8(2);
                w.var(*sender);
                w.var(*seq);
                w.var(*target);
            }
            LogOp::Ack { sender, seq, of_sender, of_seq } => {
                w.u8(3);
                w.var(*sender);
                w.var(*seq);
                w.var(*of_sender);
                w.var(*of_seq);
            }
        }
    }
}

impl Decode for LogOp {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match r.u8()? {
            0 => LogOp::Create {
                creator: VerifyingKey(r.array()?),
                members: r.list(32, |r| r.array().map(VerifyingKey))?,
            },
            1 => LogOp::Add { sender: r.var()?, seq: r.var()?, target: VerifyingKey(r.array()?) },
            2 => LogOp::Remove { sender: r.var()?, seq: r.var()?, target: r.var()? },
            3 => LogOp::Ack { sender: r.var()?, seq: r.var()?, of_sender: r.var()?, of_seq: r.var()? },
            4 => LogOp::Folded { creator: MidRef::decode(r)? },
            5 => LogOp::Member {
                identity: VerifyingKey(r.array()?),
                origin: r.opt(|r| Ok((MidRef::decode(r)?, r.var()?)))?,
                removed_by: r.list(2, |r| Ok((MidRef::decode(r)?, r.var()?)))?,
            },
            6 => LogOp::Tail { last_seq: r.list(2, |r| Ok((r.var()?, r.var()?)))?, departed: r.list(1, |r| r.var())? },
            t => return Err(DecodeError::UnknownTag { what: "history operation", tag: u64::from(t) }),
        })
    }
}

/// The adder's ordering state for one sender (§7.4 `senders`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SenderEntry {
    /// The sender's number in the member table.
    pub id: u64,
    /// Highest sequence number the adder processed from it: the newcomer's horizon.
    pub hwm: u64,
    /// Its current signing key with the certificate by its identity key (§7.2); `None`
    /// while the key is still the identity key (the sender has sent nothing the adder
    /// processed).
    pub signing_key: Option<CertifiedKey>,
    /// Whether the adder cut it off (§7.5); the mark must travel.
    pub cut_off: bool,
}

/// A Welcome as received: parsed, not yet verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Welcome {
    /// The group.
    pub gid: GroupId,
    /// The adder's number in the member table.
    pub adder: u64,
    /// The complete signed add envelope.
    pub add_envelope: Vec<u8>,
    /// The adder's history before the add.
    pub history: Vec<LogOp>,
    /// The adder's sender table before the add.
    pub senders: Vec<SenderEntry>,
    /// The adder's ratchet state before the add, over 2SM.
    pub ratchet_ct: TwoSmCiphertext,
    /// Signature by the adder's identity key.
    pub signature: Signature,
}

impl Welcome {
    fn encode_unsigned(&self, w: &mut Writer) {
        w.u8(WIRE_VERSION);
        w.raw(&self.gid.0);
        w.var(self.adder);
        w.opaque(&self.add_envelope);
        w.list(&self.history, |w, o| o.encode(w));
        w.list(&self.senders, |w, s| {
            w.var(s.id);
            w.var(s.hwm);
            w.opt(s.signing_key.as_ref(), |w, k| {
                w.raw(&k.key.0);
                w.var(k.seq.0);
                w.raw(&k.cert.0);
            });
            w.u8(u8::from(s.cut_off));
        });
        self.ratchet_ct.encode(w);
    }

    fn unsigned_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode_unsigned(&mut w);
        w.into_bytes()
    }

    /// Signs the Welcome with the adder's identity key.
    pub fn sign(&mut self, identity: &SigningSecret) {
        self.signature = identity.sign(labels::SIG_WELCOME, &[&self.unsigned_bytes()]);
    }

    /// Verifies the signature under the adder's identity key.
    pub fn verify(&self, adder_ik: &IdentityKey) -> Result<(), CryptoError> {
        adder_ik.verify(labels::SIG_WELCOME, &[&self.unsigned_bytes()], &self.signature)
    }
}

impl Encode for Welcome {
    fn encode(&self, w: &mut Writer) {
        self.encode_unsigned(w);
        w.raw(&self.signature.0);
    }
}

impl Decode for Welcome {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let v = r.u8()?;
        if v != WIRE_VERSION {
            return Err(DecodeError::UnsupportedVersion(v));
        }
        Ok(Welcome {
            gid: GroupId(r.array()?),
            adder: r.var()?,
            add_envelope: r.opaque()?.to_vec(),
            history: r.list(2, LogOp::decode)?,
            senders: r.list(4, |r| {
                Ok(SenderEntry {
                    id: r.var()?,
                    hwm: r.var()?,
                    signing_key: r.opt(|r| {
                        Ok(CertifiedKey { key: VerifyingKey(r.array()?), seq: SeqNo(r.var()?), cert: Signature(r.array()?) })
                    })?,
                    cut_off: r.flag()?,
                })
            })?,
            ratchet_ct: TwoSmCiphertext::decode(r)?,
            signature: Signature(r.array()?),
        })
    }
}

/// A history rebuilt from a log: `H`, every member's identity, and the member table.
pub(crate) struct Replayed {
    pub(crate) history: History<MemberId>,
    pub(crate) identities: BTreeMap<MemberId, IdentityKey>,
    pub(crate) table: Vec<MemberId>,
}

/// Encodes `h` as a log: its compact base (if compacted), its operations, its tail. `ik`
/// must hold the identity of every member `h` still knows; returns the log and each
/// member's number.
pub(crate) fn encode_history(
    h: &History<MemberId>,
    ik: &BTreeMap<MemberId, IdentityKey>,
) -> Option<(Vec<LogOp>, BTreeMap<MemberId, u64>)> {
    let f = h.folded();
    let mut num: BTreeMap<MemberId, u64> = BTreeMap::new();
    let mut log = Vec::with_capacity(f.members.len() + f.ops.len() + 2);
    let number = |num: &BTreeMap<MemberId, u64>, m: &MemberId| num.get(m).copied();
    let mref = |num: &BTreeMap<MemberId, u64>, m: &MemberId| num.get(m).map_or(MidRef::Mid(*m), |n| MidRef::Number(*n));
    if let Some(c) = &f.create {
        log.push(LogOp::Folded { creator: MidRef::Mid(c.sender) });
    }
    for b in &f.members {
        let origin = (b.addop.sender != b.id).then(|| (mref(&num, &b.addop.sender), b.addop.seq));
        let removed_by = b.removed_by.iter().map(|r| (mref(&num, &r.sender), r.seq)).collect();
        log.push(LogOp::Member { identity: *ik.get(&b.id)?, origin, removed_by });
        let n = num.len() as u64;
        num.insert(b.id, n);
    }
    for op in &f.ops {
        let entry = match op {
            Op::Create { sender, members, .. } => {
                let creator = *ik.get(sender)?;
                num.insert(*sender, 0);
                let mut iks = Vec::with_capacity(members.len());
                for m in members {
                    let i = *ik.get(m)?;
                    // Members are listed in MID order; numbering follows the list.
                    let n = num.len() as u64;
                    num.insert(*m, n);
                    iks.push(i);
                }
                LogOp::Create { creator, members: iks }
            }
            Op::Add { sender, seq, target } => {
                let e = LogOp::Add { sender: number(&num, sender)?, seq: *seq, target: *ik.get(target)? };
                let n = num.len() as u64;
                num.insert(*target, n);
                e
            }
            Op::Remove { sender, seq, target } => {
                LogOp::Remove { sender: number(&num, sender)?, seq: *seq, target: number(&num, target)? }
            }
            Op::Ack { sender, seq, of } => LogOp::Ack {
                sender: number(&num, sender)?,
                seq: *seq,
                of_sender: number(&num, &of.sender)?,
                of_seq: of.seq,
            },
        };
        log.push(entry);
    }
    if f.create.is_some() || !f.departed.is_empty() {
        let mut last_seq = Vec::with_capacity(f.last_seq.len());
        for (m, q) in &f.last_seq {
            last_seq.push((number(&num, m)?, *q));
        }
        let mut departed = Vec::with_capacity(f.departed.len());
        for m in &f.departed {
            departed.push(number(&num, m)?);
        }
        log.push(LogOp::Tail { last_seq, departed });
    }
    Some((log, num))
}

/// How many member instances a log introduces (the creator, the initial members and each
/// add's target), counted without deriving anything.
pub(crate) fn introduced(log: &[LogOp]) -> usize {
    log.iter()
        .map(|op| match op {
            LogOp::Create { members, .. } => 1 + members.len(),
            LogOp::Add { .. } | LogOp::Member { .. } => 1,
            LogOp::Remove { .. } | LogOp::Ack { .. } | LogOp::Folded { .. } | LogOp::Tail { .. } => 0,
        })
        .fold(0usize, usize::saturating_add)
}

/// The identity key of member number `n` of a log, found without deriving any MID: all a
/// newcomer needs to check the Welcome's signature before anything costly.
pub(crate) fn identity_of(log: &[LogOp], n: u64) -> Option<IdentityKey> {
    let mut next = 0u64;
    for op in log {
        match op {
            LogOp::Create { creator, members } => {
                if n == next {
                    return Some(*creator);
                }
                let i = usize::try_from(n - next - 1).ok()?;
                if let Some(ik) = members.get(i) {
                    return Some(*ik);
                }
                next = next.checked_add(1 + members.len() as u64)?;
            }
            LogOp::Add { target: identity, .. } | LogOp::Member { identity, .. } => {
                if n == next {
                    return Some(*identity);
                }
                next = next.checked_add(1)?;
            }
            LogOp::Remove { .. } | LogOp::Ack { .. } | LogOp::Folded { .. } | LogOp::Tail { .. } => {}
        }
    }
    None
}

/// The MID of a base member (`LogOp::Member`): from its identity and origin (§2.2).
fn base_mid(
    gid: &GroupId,
    identity: &IdentityKey,
    origin: &Option<(MidRef, u64)>,
    table: &[MemberId],
) -> Result<MemberId, &'static str> {
    Ok(match origin {
        None => MemberId::derive(gid, identity, Origin::Creator),
        Some((s, q)) => MemberId::derive(gid, identity, Origin::Operation(s.resolve(table)?, SeqNo(*q))),
    })
}

/// The member table a log introduces (creator, initial members, then each add's
/// target), without replaying the history.
pub(crate) fn member_table(gid: &GroupId, log: &[LogOp]) -> Result<Vec<MemberId>, &'static str> {
    let mut table: Vec<MemberId> = Vec::new();
    for op in log {
        match op {
            LogOp::Create { creator, members } => {
                let c = MemberId::derive(gid, creator, Origin::Creator);
                table.push(c);
                table.extend(members.iter().map(|ik| MemberId::derive(gid, ik, Origin::Operation(c, SeqNo(1)))));
            }
            LogOp::Add { sender, seq, target } => {
                let s = usize::try_from(*sender)
                    .ok()
                    .and_then(|i| table.get(i))
                    .copied()
                    .ok_or("history names an unknown member")?;
                table.push(MemberId::derive(gid, target, Origin::Operation(s, SeqNo(*seq))));
            }
            LogOp::Member { identity, origin, .. } => {
                let m = base_mid(gid, identity, origin, &table)?;
                table.push(m);
            }
            LogOp::Remove { .. } | LogOp::Ack { .. } | LogOp::Folded { .. } | LogOp::Tail { .. } => {}
        }
    }
    Ok(table)
}

/// Replays a log into a history, recomputing every MID. Any inconsistency is an error.
pub(crate) fn replay_history(gid: &GroupId, log: &[LogOp]) -> Result<Replayed, &'static str> {
    let mut table: Vec<MemberId> = Vec::new();
    let mut identities = BTreeMap::new();
    let mut f = Folded {
        create: None,
        members: Vec::new(),
        ops: Vec::with_capacity(log.len()),
        last_seq: BTreeMap::new(),
        departed: Default::default(),
    };
    let member = |table: &Vec<MemberId>, n: u64| -> Result<MemberId, &'static str> {
        usize::try_from(n).ok().and_then(|i| table.get(i)).copied().ok_or("history names an unknown member")
    };
    let last = log.len().saturating_sub(1);
    for (k, op) in log.iter().enumerate() {
        let op = match op {
            LogOp::Folded { creator } => {
                if k != 0 {
                    return Err("the compact base is not first");
                }
                f.create = Some(OpId::new(creator.resolve(&table)?, 1));
                continue;
            }
            LogOp::Member { identity, origin, removed_by } => {
                let create = f.create.clone().ok_or("a base member without a folded create")?;
                if !f.ops.is_empty() {
                    return Err("a base member after the log");
                }
                let m = base_mid(gid, identity, origin, &table)?;
                let (addop, adder) = match origin {
                    None => (create, None),
                    Some((s, q)) => {
                        let op = OpId::new(s.resolve(&table)?, *q);
                        let adder = (op != create).then_some(op.sender);
                        (op, adder)
                    }
                };
                let mut rs = Vec::with_capacity(removed_by.len());
                for (s, q) in removed_by {
                    rs.push(OpId::new(s.resolve(&table)?, *q));
                }
                table.push(m);
                identities.insert(m, *identity);
                f.members.push(BaseMember { id: m, addop, adder, removed_by: rs });
                continue;
            }
            LogOp::Tail { last_seq, departed } => {
                if k != last {
                    return Err("the tail is not last");
                }
                for (n, q) in last_seq {
                    f.last_seq.insert(member(&table, *n)?, *q);
                }
                for n in departed {
                    f.departed.insert(member(&table, *n)?);
                }
                continue;
            }
            LogOp::Create { creator, members } => {
                if k != 0 {
                    return Err("the create is not first");
                }
                let c = MemberId::derive(gid, creator, Origin::Creator);
                table.push(c);
                identities.insert(c, *creator);
                let mut ids = Vec::with_capacity(members.len());
                for ik in members {
                    let m = MemberId::derive(gid, ik, Origin::Operation(c, SeqNo(1)));
                    table.push(m);
                    identities.insert(m, *ik);
                    ids.push(m);
                }
                Op::Create { sender: c, seq: 1, members: ids }
            }
            LogOp::Add { sender, seq, target } => {
                let s = member(&table, *sender)?;
                let t = MemberId::derive(gid, target, Origin::Operation(s, SeqNo(*seq)));
                table.push(t);
                identities.insert(t, *target);
                Op::Add { sender: s, seq: *seq, target: t }
            }
            LogOp::Remove { sender, seq, target } => {
                Op::Remove { sender: member(&table, *sender)?, seq: *seq, target: member(&table, *target)? }
            }
            LogOp::Ack { sender, seq, of_sender, of_seq } => Op::Ack {
                sender: member(&table, *sender)?,
                seq: *seq,
                of: OpId::new(member(&table, *of_sender)?, *of_seq),
            },
        };
        if k == 0 && !matches!(op, Op::Create { .. }) {
            return Err("the history does not start with a create");
        }
        f.ops.push(op);
    }
    if log.is_empty() {
        return Err("the history does not start with a create");
    }
    let h = History::rebuilt(f).map_err(|_| "the history is not a valid operation sequence")?;
    Ok(Replayed { history: h, identities, table })
}
