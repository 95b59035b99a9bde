//! The plaintexts of sealed rows, in the project's canonical encoding
//! ([`dcgka::codec`]), and the key columns of state records.
//!
//! | Table | Key columns (plain) | Sealed plaintext |
//! |---|---|---|
//! | `state` | kind, gid, member | the record's bytes, as the device wrote them |
//! | `log` | gid, sender, seq | `pos:var ‖ last_seq:var ‖ hash:[16] ‖ envelope:opaque` |
//! | `welcomes` | gid, target | `identity:[32] ‖ welcome:opaque` |
//! | `outbox` | id | `gid:[32] ‖ destination ‖ bytes:opaque`, destination `0` (group) or `1 ‖ identity:[32]` |
//! | `inbox` | id | `gid:[32] ‖ event` (tags below) |
//!
//! Events: a tag byte, then the variant's fields in order (member IDs and identity keys
//! 32 bytes, hashes 16, counters varints, byte strings `opaque`, options `opt`, sets
//! sorted lists). Reasons are tagged the same way; the library's fixed reason texts are
//! written as `opaque` strings.

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};

use dcgka::codec::{DecodeError, Reader, Writer};
use dcgka::events::{DropReason, EquivocationEvidence, Event, MalformedBody, Misbehaviour, RejectReason};
use dcgka::ids::{Epoch, GroupId, MemberId, MessageIndex, SeqNo};
use dcgka::{CryptoError, RatchetError, VerifyingKey};
use dcgka_device::log::{LogEntry, SentWelcome};
use dcgka_device::{Destination, StateKey, Transmit};
use zeroize::Zeroizing;

use crate::consts::{MAX_INTERNED_REASONS, MAX_REASON_LEN, MAX_VALUE_BYTES, UNKEPT_REASON};
use crate::error::StoreError;

/// The key columns of a state record: kind, group ID (empty for device-wide records) and
/// member ID (empty but for sender records).
pub(crate) type StateColumns = (u8, Vec<u8>, Vec<u8>);

const KIND_IDENTITY: u8 = 0;
const KIND_GROUP: u8 = 1;
const KIND_SENDER: u8 = 2;
const KIND_RULES: u8 = 3;
const KIND_BACKLOG: u8 = 4;

/// The key columns of a state record.
pub(crate) fn state_columns(key: &StateKey) -> Result<StateColumns, StoreError> {
    Ok(match key {
        StateKey::Identity => (KIND_IDENTITY, Vec::new(), Vec::new()),
        StateKey::Group(g) => (KIND_GROUP, g.0.to_vec(), Vec::new()),
        StateKey::Sender(g, m) => (KIND_SENDER, g.0.to_vec(), m.0.to_vec()),
        StateKey::Rules(g) => (KIND_RULES, g.0.to_vec(), Vec::new()),
        StateKey::Backlog => (KIND_BACKLOG, Vec::new(), Vec::new()),
        _ => return Err(StoreError::Unsupported("a kind of state record")),
    })
}

/// The state key of stored key columns.
pub(crate) fn state_key(kind: u8, gid: &[u8], member: &[u8]) -> Result<StateKey, StoreError> {
    let bad = || {
        StoreError::Corrupt(format!(
            "state row with kind {kind} and key columns of {} and {} bytes",
            gid.len(),
            member.len()
        ))
    };
    let id32 = |b: &[u8]| <[u8; 32]>::try_from(b).map_err(|_| bad());
    Ok(match (kind, gid.is_empty(), member.is_empty()) {
        (KIND_IDENTITY, true, true) => StateKey::Identity,
        (KIND_GROUP, false, true) => StateKey::Group(GroupId(id32(gid)?)),
        (KIND_SENDER, false, false) => StateKey::Sender(GroupId(id32(gid)?), MemberId(id32(member)?)),
        (KIND_RULES, false, true) => StateKey::Rules(GroupId(id32(gid)?)),
        (KIND_BACKLOG, true, true) => StateKey::Backlog,
        _ => return Err(bad()),
    })
}

/// A 32-byte key column.
pub(crate) fn id32(table: &'static str, b: &[u8]) -> Result<[u8; 32], StoreError> {
    <[u8; 32]>::try_from(b).map_err(|_| StoreError::Corrupt(format!("{table}: a key column of {} bytes", b.len())))
}

fn corrupt(table: &'static str) -> impl Fn(DecodeError) -> StoreError {
    move |e| StoreError::Corrupt(format!("{table}: {e}"))
}

fn reader(bytes: &[u8]) -> Result<Reader<'_>, DecodeError> {
    Reader::with_max_size(bytes, MAX_VALUE_BYTES)
}

// ------------------------------------------------------------------------------------
// Log entries, Welcomes, outbox items
// ------------------------------------------------------------------------------------

/// The sealed part of a log entry.
pub(crate) fn encode_log_entry(e: &LogEntry) -> Vec<u8> {
    let mut w = Writer::new();
    w.var(e.pos);
    w.var(e.last_seq.0);
    w.raw(&e.hash);
    w.opaque(&e.bytes);
    w.into_bytes()
}

pub(crate) fn decode_log_entry(sender: MemberId, seq: SeqNo, bytes: &[u8]) -> Result<LogEntry, StoreError> {
    let f = || -> Result<LogEntry, DecodeError> {
        let mut r = reader(bytes)?;
        let pos = r.var()?;
        let last_seq = SeqNo(r.var()?);
        let hash = r.array()?;
        let bytes = r.opaque()?.to_vec();
        r.finish()?;
        if last_seq < seq {
            return Err(DecodeError::InvalidField("a log entry ending before it starts"));
        }
        Ok(LogEntry { pos, sender, seq, last_seq, hash, bytes })
    };
    f().map_err(corrupt("log"))
}

/// The sealed part of a kept Welcome.
pub(crate) fn encode_welcome(w: &SentWelcome) -> Vec<u8> {
    let mut out = Writer::new();
    out.raw(&w.identity.0);
    out.opaque(&w.bytes);
    out.into_bytes()
}

pub(crate) fn decode_welcome(target: MemberId, bytes: &[u8]) -> Result<SentWelcome, StoreError> {
    let f = || -> Result<SentWelcome, DecodeError> {
        let mut r = reader(bytes)?;
        let identity = VerifyingKey(r.array()?);
        let bytes = r.opaque()?.to_vec();
        r.finish()?;
        Ok(SentWelcome { target, identity, bytes })
    };
    f().map_err(corrupt("welcomes"))
}

/// The sealed part of an outbox item.
pub(crate) fn encode_transmit(t: &Transmit) -> Result<Vec<u8>, StoreError> {
    let mut w = Writer::new();
    w.raw(&t.gid.0);
    match t.to {
        Destination::Group => w.u8(0),
        Destination::Identity(ik) => {
            w.u8(1);
            w.raw(&ik.0);
        }
        _ => return Err(StoreError::Unsupported("a kind of outbox destination")),
    }
    w.opaque(&t.bytes);
    Ok(w.into_bytes())
}

pub(crate) fn decode_transmit(id: u64, bytes: &[u8]) -> Result<Transmit, StoreError> {
    let f = || -> Result<Transmit, DecodeError> {
        let mut r = reader(bytes)?;
        let gid = GroupId(r.array()?);
        let to = match r.u8()? {
            0 => Destination::Group,
            1 => Destination::Identity(VerifyingKey(r.array()?)),
            t => return Err(DecodeError::UnknownTag { what: "destination", tag: u64::from(t) }),
        };
        let bytes = r.opaque()?.to_vec();
        r.finish()?;
        Ok(Transmit { id, gid, to, bytes })
    };
    f().map_err(corrupt("outbox"))
}

// ------------------------------------------------------------------------------------
// Events
// ------------------------------------------------------------------------------------

/// The sealed part of an inbox event: the group and the event. Secret (a message's
/// plaintext): the buffer zeroizes.
pub(crate) fn encode_event(gid: &GroupId, e: &Event) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    let mut w = Writer::secret();
    w.raw(&gid.0);
    write_event(&mut w, e)?;
    Ok(w.into_zeroizing())
}

pub(crate) fn decode_event(bytes: &[u8]) -> Result<(GroupId, Event), StoreError> {
    let f = || -> Result<(GroupId, Event), DecodeError> {
        let mut r = reader(bytes)?;
        let gid = GroupId(r.array()?);
        let e = read_event(&mut r)?;
        r.finish()?;
        Ok((gid, e))
    };
    f().map_err(corrupt("inbox"))
}

fn member(w: &mut Writer, m: &MemberId) {
    w.raw(&m.0);
}

fn read_member(r: &mut Reader<'_>) -> Result<MemberId, DecodeError> {
    Ok(MemberId(r.array()?))
}

fn flag(w: &mut Writer, b: bool) {
    w.u8(u8::from(b));
}

fn usize_var(r: &mut Reader<'_>) -> Result<usize, DecodeError> {
    usize::try_from(r.var()?).map_err(|_| DecodeError::InvalidField("a size beyond this platform"))
}

fn text(w: &mut Writer, s: &str) {
    w.opaque(s.as_bytes());
}

fn read_text(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    let b = r.opaque()?;
    if b.len() > MAX_REASON_LEN {
        return Err(DecodeError::InvalidField("a reason text beyond MAX_REASON_LEN"));
    }
    String::from_utf8(b.to_vec()).map_err(|_| DecodeError::InvalidField("a reason text that is not UTF-8"))
}

/// The library's fixed reason texts (`&'static str`) read back from a file: each distinct
/// text is kept once for the life of the process, at most [`MAX_INTERNED_REASONS`] of them.
static INTERNED: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());

fn read_static(r: &mut Reader<'_>) -> Result<&'static str, DecodeError> {
    let s = read_text(r)?;
    let mut set = INTERNED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(k) = set.get(s.as_str()) {
        return Ok(k);
    }
    if set.len() >= MAX_INTERNED_REASONS {
        return Ok(UNKEPT_REASON);
    }
    let kept: &'static str = Box::leak(s.into_boxed_str());
    set.insert(kept);
    Ok(kept)
}

fn write_event(w: &mut Writer, e: &Event) -> Result<(), StoreError> {
    match e {
        Event::Joined { gid, by } => {
            w.u8(0);
            w.raw(&gid.0);
            member(w, by);
        }
        Event::MemberAdded { by, id, identity } => {
            w.u8(1);
            member(w, by);
            member(w, id);
            w.raw(&identity.0);
        }
        Event::AddCancelled { by, id } => {
            w.u8(2);
            member(w, by);
            member(w, id);
        }
        Event::MembersRemoved { by, ids } => {
            w.u8(3);
            member(w, by);
            let ids: Vec<&MemberId> = ids.iter().collect();
            w.list(&ids, |w, m| member(w, m));
        }
        Event::Updated { by } => {
            w.u8(4);
            member(w, by);
        }
        Event::Message { sender, seq, epoch, index, plaintext, sender_removed } => {
            w.u8(5);
            member(w, sender);
            w.var(seq.0);
            w.var(epoch.0);
            w.var(u64::from(index.0));
            w.opaque(plaintext);
            flag(w, *sender_removed);
        }
        Event::Undecryptable { sender, seq, reason } => {
            w.u8(6);
            member(w, sender);
            w.var(seq.0);
            write_ratchet_error(w, reason);
        }
        Event::Rejected { sender, seq, reason } => {
            w.u8(7);
            member(w, sender);
            w.var(seq.0);
            write_reject(w, reason)?;
        }
        Event::Dropped { sender, seq, reason } => {
            w.u8(8);
            member(w, sender);
            w.var(seq.0);
            write_drop(w, reason)?;
        }
        Event::Equivocation { sender, seq, evidence } => {
            w.u8(9);
            member(w, sender);
            w.var(seq.0);
            match evidence {
                EquivocationEvidence::Envelopes { first, second } => {
                    w.u8(0);
                    w.opaque(first);
                    w.opaque(second);
                }
                EquivocationEvidence::Processed { processed, other } => {
                    w.u8(1);
                    w.raw(processed);
                    w.opaque(other);
                }
                EquivocationEvidence::Ack { acker, ack, processed, acked } => {
                    w.u8(2);
                    member(w, acker);
                    w.opaque(ack);
                    w.raw(processed);
                    w.raw(acked);
                }
                _ => return Err(StoreError::Unsupported("a kind of equivocation evidence")),
            }
        }
        Event::StateForkSuspected { mine, seen } => {
            w.u8(10);
            w.var(mine.0);
            w.var(seen.0);
        }
        Event::DuplicateInstance { id } => {
            w.u8(11);
            member(w, id);
        }
        Event::RemovedFromGroup { by } => {
            w.u8(12);
            member(w, by);
        }
        Event::GroupStateCorrupted { reason } => {
            w.u8(13);
            text(w, reason);
        }
        Event::HealPending => w.u8(14),
        Event::PrekeyBundleNeeded { identity } => {
            w.u8(15);
            w.raw(&identity.0);
        }
        Event::Misbehaviour { sender, seq, kind, envelope, batch } => {
            w.u8(16);
            member(w, sender);
            w.var(seq.0);
            w.u8(match kind {
                Misbehaviour::BadSeedCiphertext => 0,
                Misbehaviour::BadForward => 1,
                Misbehaviour::BadRatchetCiphertext => 2,
                _ => return Err(StoreError::Unsupported("a kind of misbehaviour")),
            });
            w.opaque(envelope);
            w.opt(batch.as_ref(), |w, h| w.raw(h));
        }
        Event::LateOperation { sender, seq, remover, removal } => {
            w.u8(17);
            member(w, sender);
            w.var(seq.0);
            member(w, remover);
            w.var(removal.0);
        }
        Event::LateOperationWithheld { sender, seq } => {
            w.u8(18);
            member(w, sender);
            w.var(seq.0);
        }
        _ => return Err(StoreError::Unsupported("a kind of event")),
    }
    Ok(())
}

fn read_event(r: &mut Reader<'_>) -> Result<Event, DecodeError> {
    let tag = r.u8()?;
    Ok(match tag {
        0 => Event::Joined { gid: GroupId(r.array()?), by: read_member(r)? },
        1 => Event::MemberAdded { by: read_member(r)?, id: read_member(r)?, identity: VerifyingKey(r.array()?) },
        2 => Event::AddCancelled { by: read_member(r)?, id: read_member(r)? },
        3 => {
            let by = read_member(r)?;
            let ids = r.list(32, read_member)?;
            dcgka::codec::check_sorted_set(&ids)?;
            Event::MembersRemoved { by, ids: ids.into_iter().collect() }
        }
        4 => Event::Updated { by: read_member(r)? },
        5 => Event::Message {
            sender: read_member(r)?,
            seq: SeqNo(r.var()?),
            epoch: Epoch(r.var()?),
            index: MessageIndex(r.var_u32()?),
            plaintext: r.opaque()?.to_vec(),
            sender_removed: r.flag()?,
        },
        6 => Event::Undecryptable { sender: read_member(r)?, seq: SeqNo(r.var()?), reason: read_ratchet_error(r)? },
        7 => Event::Rejected { sender: read_member(r)?, seq: SeqNo(r.var()?), reason: read_reject(r)? },
        8 => Event::Dropped { sender: read_member(r)?, seq: SeqNo(r.var()?), reason: read_drop(r)? },
        9 => {
            let sender = read_member(r)?;
            let seq = SeqNo(r.var()?);
            let evidence = match r.u8()? {
                0 => EquivocationEvidence::Envelopes { first: r.opaque()?.to_vec(), second: r.opaque()?.to_vec() },
                1 => EquivocationEvidence::Processed { processed: r.array()?, other: r.opaque()?.to_vec() },
                2 => EquivocationEvidence::Ack {
                    acker: read_member(r)?,
                    ack: r.opaque()?.to_vec(),
                    processed: r.array()?,
                    acked: r.array()?,
                },
                t => return Err(DecodeError::UnknownTag { what: "equivocation evidence", tag: u64::from(t) }),
            };
            Event::Equivocation { sender, seq, evidence }
        }
        10 => Event::StateForkSuspected { mine: SeqNo(r.var()?), seen: SeqNo(r.var()?) },
        11 => Event::DuplicateInstance { id: read_member(r)? },
        12 => Event::RemovedFromGroup { by: read_member(r)? },
        13 => Event::GroupStateCorrupted { reason: read_text(r)? },
        14 => Event::HealPending,
        15 => Event::PrekeyBundleNeeded { identity: VerifyingKey(r.array()?) },
        16 => Event::Misbehaviour {
            sender: read_member(r)?,
            seq: SeqNo(r.var()?),
            kind: match r.u8()? {
                0 => Misbehaviour::BadSeedCiphertext,
                1 => Misbehaviour::BadForward,
                2 => Misbehaviour::BadRatchetCiphertext,
                t => return Err(DecodeError::UnknownTag { what: "misbehaviour", tag: u64::from(t) }),
            },
            envelope: r.opaque()?.to_vec(),
            batch: r.opt(|r| r.array())?,
        },
        17 => Event::LateOperation {
            sender: read_member(r)?,
            seq: SeqNo(r.var()?),
            remover: read_member(r)?,
            removal: SeqNo(r.var()?),
        },
        18 => Event::LateOperationWithheld { sender: read_member(r)?, seq: SeqNo(r.var()?) },
        t => return Err(DecodeError::UnknownTag { what: "event", tag: u64::from(t) }),
    })
}

fn write_drop(w: &mut Writer, d: &DropReason) -> Result<(), StoreError> {
    w.u8(match d {
        DropReason::BadSignature => 0,
        DropReason::NotAMember => 1,
        DropReason::Duplicate => 2,
        _ => return Err(StoreError::Unsupported("a kind of drop reason")),
    });
    Ok(())
}

fn read_drop(r: &mut Reader<'_>) -> Result<DropReason, DecodeError> {
    Ok(match r.u8()? {
        0 => DropReason::BadSignature,
        1 => DropReason::NotAMember,
        2 => DropReason::Duplicate,
        t => return Err(DecodeError::UnknownTag { what: "drop reason", tag: u64::from(t) }),
    })
}

fn write_crypto_error(w: &mut Writer, e: &CryptoError) {
    match e {
        CryptoError::DecryptionFailed => w.u8(0),
        CryptoError::BadSignature => w.u8(1),
        CryptoError::InvalidPublicKey => w.u8(2),
        CryptoError::Internal(s) => {
            w.u8(3);
            text(w, s);
        }
    }
}

fn read_crypto_error(r: &mut Reader<'_>) -> Result<CryptoError, DecodeError> {
    Ok(match r.u8()? {
        0 => CryptoError::DecryptionFailed,
        1 => CryptoError::BadSignature,
        2 => CryptoError::InvalidPublicKey,
        3 => CryptoError::Internal(read_static(r)?),
        t => return Err(DecodeError::UnknownTag { what: "crypto error", tag: u64::from(t) }),
    })
}

fn write_ratchet_error(w: &mut Writer, e: &RatchetError) {
    match e {
        RatchetError::NotForUs { epoch, held } => {
            w.u8(0);
            w.var(epoch.0);
            w.opt(held.as_ref(), |w, h| w.var(h.0));
        }
        RatchetError::StaleEpoch { epoch, current } => {
            w.u8(1);
            w.var(epoch.0);
            w.var(current.0);
        }
        RatchetError::TooFarAhead { index, next, jump, max } => {
            w.u8(2);
            w.var(u64::from(index.0));
            w.var(u64::from(next.0));
            w.var(u64::from(*jump));
            w.var(u64::from(*max));
        }
        RatchetError::KeyUnavailable(i) => {
            w.u8(3);
            w.var(u64::from(i.0));
        }
        RatchetError::AuthenticationFailed => w.u8(4),
        RatchetError::PlaintextTooLarge { size, max } => {
            w.u8(5);
            w.var(*size as u64);
            w.var(*max as u64);
        }
        RatchetError::ChainExhausted => w.u8(6),
        RatchetError::Crypto(c) => {
            w.u8(7);
            write_crypto_error(w, c);
        }
    }
}

fn read_ratchet_error(r: &mut Reader<'_>) -> Result<RatchetError, DecodeError> {
    Ok(match r.u8()? {
        0 => RatchetError::NotForUs { epoch: Epoch(r.var()?), held: r.opt(|r| Ok(Epoch(r.var()?)))? },
        1 => RatchetError::StaleEpoch { epoch: Epoch(r.var()?), current: Epoch(r.var()?) },
        2 => RatchetError::TooFarAhead {
            index: MessageIndex(r.var_u32()?),
            next: MessageIndex(r.var_u32()?),
            jump: r.var_u32()?,
            max: r.var_u32()?,
        },
        3 => RatchetError::KeyUnavailable(MessageIndex(r.var_u32()?)),
        4 => RatchetError::AuthenticationFailed,
        5 => RatchetError::PlaintextTooLarge { size: usize_var(r)?, max: usize_var(r)? },
        6 => RatchetError::ChainExhausted,
        7 => RatchetError::Crypto(read_crypto_error(r)?),
        t => return Err(DecodeError::UnknownTag { what: "ratchet error", tag: u64::from(t) }),
    })
}

fn write_decode_error(w: &mut Writer, e: &DecodeError) {
    match e {
        DecodeError::Truncated { offset, needed } => {
            w.u8(0);
            w.var(*offset as u64);
            w.var(*needed as u64);
        }
        DecodeError::TrailingBytes(n) => {
            w.u8(1);
            w.var(*n as u64);
        }
        DecodeError::BadVarint(o) => {
            w.u8(2);
            w.var(*o as u64);
        }
        DecodeError::BadFlag { offset, flag } => {
            w.u8(3);
            w.var(*offset as u64);
            w.u8(*flag);
        }
        DecodeError::UnknownTag { what, tag } => {
            w.u8(4);
            text(w, what);
            w.var(*tag);
        }
        DecodeError::UnsupportedVersion(v) => {
            w.u8(5);
            w.u8(*v);
        }
        DecodeError::TooLarge { size, max } => {
            w.u8(6);
            w.var(*size as u64);
            w.var(*max as u64);
        }
        DecodeError::ListTooLong { count, max } => {
            w.u8(7);
            w.var(*count);
            w.var(*max as u64);
        }
        DecodeError::NotCanonicalSet => w.u8(8),
        DecodeError::InvalidField(s) => {
            w.u8(9);
            text(w, s);
        }
    }
}

fn read_decode_error(r: &mut Reader<'_>) -> Result<DecodeError, DecodeError> {
    Ok(match r.u8()? {
        0 => DecodeError::Truncated { offset: usize_var(r)?, needed: usize_var(r)? },
        1 => DecodeError::TrailingBytes(usize_var(r)?),
        2 => DecodeError::BadVarint(usize_var(r)?),
        3 => DecodeError::BadFlag { offset: usize_var(r)?, flag: r.u8()? },
        4 => DecodeError::UnknownTag { what: read_static(r)?, tag: r.var()? },
        5 => DecodeError::UnsupportedVersion(r.u8()?),
        6 => DecodeError::TooLarge { size: usize_var(r)?, max: usize_var(r)? },
        7 => DecodeError::ListTooLong { count: r.var()?, max: usize_var(r)? },
        8 => DecodeError::NotCanonicalSet,
        9 => DecodeError::InvalidField(read_static(r)?),
        t => return Err(DecodeError::UnknownTag { what: "decode error", tag: u64::from(t) }),
    })
}

fn write_reject(w: &mut Writer, e: &RejectReason) -> Result<(), StoreError> {
    match e {
        RejectReason::InvalidCreate(s) => {
            w.u8(0);
            text(w, s);
        }
        RejectReason::TooManyMembers { count, max } => {
            w.u8(1);
            w.var(*count as u64);
            w.var(*max as u64);
        }
        RejectReason::InvalidAdd(s) => {
            w.u8(2);
            text(w, s);
        }
        RejectReason::InvalidRemove(s) => {
            w.u8(3);
            text(w, s);
        }
        RejectReason::InvalidAck(s) => {
            w.u8(4);
            text(w, s);
        }
        RejectReason::HashMismatch => w.u8(5),
        RejectReason::AcknowledgedByAll => w.u8(6),
        RejectReason::FollowsOwnRemoval => w.u8(7),
        RejectReason::RecipientsMismatch => w.u8(8),
        RejectReason::Malformed(m) => {
            w.u8(9);
            match m {
                MalformedBody::Decode(d) => {
                    w.u8(0);
                    write_decode_error(w, d);
                }
                MalformedBody::History(s) => {
                    w.u8(1);
                    text(w, s);
                }
                MalformedBody::Invalid(s) => {
                    w.u8(2);
                    text(w, s);
                }
                _ => return Err(StoreError::Unsupported("a kind of malformed body")),
            }
        }
        RejectReason::InvalidKeyCertificate => w.u8(10),
        RejectReason::CutOff => w.u8(11),
        RejectReason::Application(a) => {
            w.u8(12);
            write_ratchet_error(w, a);
        }
        _ => return Err(StoreError::Unsupported("a kind of reject reason")),
    }
    Ok(())
}

fn read_reject(r: &mut Reader<'_>) -> Result<RejectReason, DecodeError> {
    Ok(match r.u8()? {
        0 => RejectReason::InvalidCreate(read_static(r)?),
        1 => RejectReason::TooManyMembers { count: usize_var(r)?, max: usize_var(r)? },
        2 => RejectReason::InvalidAdd(read_static(r)?),
        3 => RejectReason::InvalidRemove(read_static(r)?),
        4 => RejectReason::InvalidAck(read_static(r)?),
        5 => RejectReason::HashMismatch,
        6 => RejectReason::AcknowledgedByAll,
        7 => RejectReason::FollowsOwnRemoval,
        8 => RejectReason::RecipientsMismatch,
        9 => RejectReason::Malformed(match r.u8()? {
            0 => MalformedBody::Decode(read_decode_error(r)?),
            1 => MalformedBody::History(read_static(r)?),
            2 => MalformedBody::Invalid(read_static(r)?),
            t => return Err(DecodeError::UnknownTag { what: "malformed body", tag: u64::from(t) }),
        }),
        10 => RejectReason::InvalidKeyCertificate,
        11 => RejectReason::CutOff,
        12 => RejectReason::Application(read_ratchet_error(r)?),
        t => return Err(DecodeError::UnknownTag { what: "reject reason", tag: u64::from(t) }),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn m(b: u8) -> MemberId {
        MemberId([b; 32])
    }

    /// One event of every kind the store writes, with every reason kind.
    pub(crate) fn every_event() -> Vec<Event> {
        let ratchet = vec![
            RatchetError::NotForUs { epoch: Epoch(3), held: Some(Epoch(2)) },
            RatchetError::NotForUs { epoch: Epoch(3), held: None },
            RatchetError::StaleEpoch { epoch: Epoch(1), current: Epoch(4) },
            RatchetError::TooFarAhead { index: MessageIndex(2000), next: MessageIndex(1), jump: 1999, max: 1000 },
            RatchetError::KeyUnavailable(MessageIndex(7)),
            RatchetError::AuthenticationFailed,
            RatchetError::PlaintextTooLarge { size: 1 << 30, max: 1 << 24 },
            RatchetError::ChainExhausted,
            RatchetError::Crypto(CryptoError::DecryptionFailed),
            RatchetError::Crypto(CryptoError::BadSignature),
            RatchetError::Crypto(CryptoError::InvalidPublicKey),
            RatchetError::Crypto(CryptoError::Internal("HKDF PRK length")),
        ];
        let decode = vec![
            DecodeError::Truncated { offset: 3, needed: 9 },
            DecodeError::TrailingBytes(2),
            DecodeError::BadVarint(5),
            DecodeError::BadFlag { offset: 1, flag: 7 },
            DecodeError::UnknownTag { what: "body", tag: 99 },
            DecodeError::UnsupportedVersion(9),
            DecodeError::TooLarge { size: 10, max: 5 },
            DecodeError::ListTooLong { count: 1 << 40, max: 1 << 20 },
            DecodeError::NotCanonicalSet,
            DecodeError::InvalidField("a field"),
        ];
        let mut reject = vec![
            RejectReason::InvalidCreate("lists its sender"),
            RejectReason::TooManyMembers { count: 2000, max: 1024 },
            RejectReason::InvalidAdd("not fresh"),
            RejectReason::InvalidRemove("not in view"),
            RejectReason::InvalidAck("twice"),
            RejectReason::HashMismatch,
            RejectReason::AcknowledgedByAll,
            RejectReason::FollowsOwnRemoval,
            RejectReason::RecipientsMismatch,
            RejectReason::Malformed(MalformedBody::History("refused")),
            RejectReason::Malformed(MalformedBody::Invalid("inconsistent")),
            RejectReason::InvalidKeyCertificate,
            RejectReason::CutOff,
        ];
        reject.extend(decode.into_iter().map(|d| RejectReason::Malformed(MalformedBody::Decode(d))));
        reject.extend(ratchet.iter().cloned().map(RejectReason::Application));
        let mut v = vec![
            Event::Joined { gid: GroupId([9; 32]), by: m(1) },
            Event::MemberAdded { by: m(1), id: m(2), identity: VerifyingKey([3; 32]) },
            Event::AddCancelled { by: m(1), id: m(2) },
            Event::MembersRemoved { by: m(1), ids: [m(2), m(3)].into_iter().collect() },
            Event::Updated { by: m(4) },
            Event::Message {
                sender: m(5),
                seq: SeqNo(u64::MAX),
                epoch: Epoch(4),
                index: MessageIndex(u32::MAX),
                plaintext: b"secret words".to_vec(),
                sender_removed: true,
            },
            Event::Equivocation {
                sender: m(1),
                seq: SeqNo(4),
                evidence: EquivocationEvidence::Envelopes { first: vec![1, 2], second: vec![3] },
            },
            Event::Equivocation {
                sender: m(1),
                seq: SeqNo(4),
                evidence: EquivocationEvidence::Processed { processed: [5; 16], other: vec![6; 40] },
            },
            Event::Equivocation {
                sender: m(1),
                seq: SeqNo(4),
                evidence: EquivocationEvidence::Ack {
                    acker: m(2),
                    ack: vec![7; 9],
                    processed: [8; 16],
                    acked: [9; 16],
                },
            },
            Event::StateForkSuspected { mine: SeqNo(3), seen: SeqNo(5) },
            Event::DuplicateInstance { id: m(6) },
            Event::RemovedFromGroup { by: m(7) },
            Event::GroupStateCorrupted { reason: "a reason".into() },
            Event::HealPending,
            Event::PrekeyBundleNeeded { identity: VerifyingKey([4; 32]) },
            Event::Misbehaviour {
                sender: m(8),
                seq: SeqNo(2),
                kind: Misbehaviour::BadForward,
                envelope: vec![1; 20],
                batch: Some([2; 16]),
            },
            Event::Misbehaviour {
                sender: m(8),
                seq: SeqNo(2),
                kind: Misbehaviour::BadSeedCiphertext,
                envelope: vec![],
                batch: None,
            },
            Event::Misbehaviour {
                sender: m(8),
                seq: SeqNo(2),
                kind: Misbehaviour::BadRatchetCiphertext,
                envelope: vec![1],
                batch: None,
            },
            Event::LateOperation { sender: m(1), seq: SeqNo(2), remover: m(3), removal: SeqNo(4) },
            Event::LateOperationWithheld { sender: m(1), seq: SeqNo(9) },
        ];
        v.extend(ratchet.into_iter().map(|reason| Event::Undecryptable { sender: m(1), seq: SeqNo(2), reason }));
        v.extend(reject.into_iter().map(|reason| Event::Rejected { sender: m(1), seq: SeqNo(2), reason }));
        for reason in [DropReason::BadSignature, DropReason::NotAMember, DropReason::Duplicate] {
            v.push(Event::Dropped { sender: m(1), seq: SeqNo(2), reason });
        }
        v
    }

    #[test]
    fn every_event_round_trips() {
        let gid = GroupId([1; 32]);
        for e in every_event() {
            let bytes = encode_event(&gid, &e).unwrap();
            let (g, back) = decode_event(&bytes).unwrap();
            assert_eq!((g, &back), (gid, &e));
            // Canonical: re-encoding gives the same bytes; every truncation is an error.
            assert_eq!(encode_event(&g, &back).unwrap(), bytes);
            for cut in 0..bytes.len() {
                assert!(decode_event(&bytes[..cut]).is_err(), "{e:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn reasons_read_back_are_kept_once() {
        let gid = GroupId([1; 32]);
        let e = Event::Rejected {
            sender: m(1),
            seq: SeqNo(1),
            reason: RejectReason::InvalidAck(String::from("a text made at run time").leak()),
        };
        let bytes = encode_event(&gid, &e).unwrap();
        let a = decode_event(&bytes).unwrap().1;
        let b = decode_event(&bytes).unwrap().1;
        let (
            Event::Rejected { reason: RejectReason::InvalidAck(x), .. },
            Event::Rejected { reason: RejectReason::InvalidAck(y), .. },
        ) = (&a, &b)
        else {
            panic!()
        };
        assert!(std::ptr::eq(*x, *y), "one copy of each text");
        assert_eq!(a, e);
    }

    #[test]
    fn other_records_round_trip_and_refuse_junk() {
        let entry =
            LogEntry { pos: 7, sender: m(1), seq: SeqNo(3), last_seq: SeqNo(5), hash: [4; 16], bytes: vec![1, 2, 3] };
        let b = encode_log_entry(&entry);
        assert_eq!(decode_log_entry(m(1), SeqNo(3), &b).unwrap(), entry);
        assert!(decode_log_entry(m(1), SeqNo(6), &b).is_err(), "ends before it starts");
        let w = SentWelcome { target: m(2), identity: VerifyingKey([5; 32]), bytes: vec![9; 10] };
        assert_eq!(decode_welcome(m(2), &encode_welcome(&w)).unwrap(), w);
        for to in [Destination::Group, Destination::Identity(VerifyingKey([6; 32]))] {
            let t = Transmit { id: 4, gid: GroupId([2; 32]), to, bytes: vec![1; 5] };
            assert_eq!(decode_transmit(4, &encode_transmit(&t).unwrap()).unwrap(), t);
        }
        for key in [
            StateKey::Identity,
            StateKey::Backlog,
            StateKey::Group(GroupId([1; 32])),
            StateKey::Rules(GroupId([1; 32])),
            StateKey::Sender(GroupId([1; 32]), m(3)),
        ] {
            let (k, g, mm) = state_columns(&key).unwrap();
            assert_eq!(state_key(k, &g, &mm).unwrap(), key);
        }
        assert!(state_key(0, &[1; 32], &[]).is_err());
        assert!(state_key(2, &[1; 32], &[1; 31]).is_err());
        assert!(state_key(9, &[], &[]).is_err());
    }
}
