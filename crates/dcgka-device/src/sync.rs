//! Sync as a protocol (§7.7): a device tells a peer what it holds, and the peer answers
//! with what its own envelope log has that the requester lacks, in the order the peer
//! took them (which respects causality), bounded in size. Welcomes are re-offered to
//! their target; a create is offered to an initial member that never held the group.
//!
//! Sans-IO: [`Device::sync_request`] and [`Device::answer_sync`] build the messages,
//! [`Device::apply_sync`] takes an answer; both messages have a canonical wire encoding
//! ([`SyncRequest::to_bytes`], [`SyncResponse::to_bytes`]) whose decoding is total.

use std::collections::{BTreeMap, BTreeSet};

use dcgka::EnvelopeKind;
use dcgka::IdentityKey;
use dcgka::codec::{DecodeError, Reader, Writer, check_sorted_set};
use dcgka::group::Group;
use dcgka::ids::{GroupId, MemberId, SeqNo};
use rand_core::CryptoRng;

use crate::consts::{
    MAX_SYNC_BUFFERED, MAX_SYNC_GROUPS, MAX_SYNC_RESPONSE_BYTES, MAX_SYNC_RESPONSE_ITEMS, MAX_SYNC_SENDERS,
};
use crate::device::{Changes, Device, DeviceError, Env, Report};
use crate::log::LogEntry;
use crate::storage::Storage;

const REQUEST_TAG: u8 = 0x51;
const RESPONSE_TAG: u8 = 0x52;

/// What a sync message violated.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// Not a well-formed sync message.
    #[error("malformed sync message: {0}")]
    Malformed(#[from] DecodeError),
    /// More groups than [`MAX_SYNC_GROUPS`].
    #[error("sync request lists {0} groups, the maximum is {MAX_SYNC_GROUPS}")]
    TooManyGroups(usize),
    /// More senders in one group than [`MAX_SYNC_SENDERS`].
    #[error("sync request lists {0} senders in one group, the maximum is {MAX_SYNC_SENDERS}")]
    TooManySenders(usize),
    /// More buffered candidates in one group than [`MAX_SYNC_BUFFERED`].
    #[error("sync request lists {0} buffered envelopes in one group, the maximum is {MAX_SYNC_BUFFERED}")]
    TooManyBuffered(usize),
    /// More envelopes and Welcomes in one response than [`MAX_SYNC_RESPONSE_ITEMS`].
    #[error("sync response carries {0} items, the maximum is {MAX_SYNC_RESPONSE_ITEMS}")]
    TooManyItems(usize),
    /// Several items in one response whose bytes exceed [`MAX_SYNC_RESPONSE_BYTES`] (a
    /// single item may be larger: it is always sent).
    #[error("sync response carries {0} bytes of items, the maximum is {MAX_SYNC_RESPONSE_BYTES}")]
    TooManyBytes(usize),
}

/// What the requester holds of one group in which it has an active instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupHeads {
    /// The group.
    pub gid: GroupId,
    /// Per sender, the highest sequence number held without gaps (sorted by sender).
    pub heads: Vec<(MemberId, SeqNo)>,
    /// Buffered envelopes above a gap, as `(sender, seq, short hash)` (sorted).
    pub buffered: Vec<(MemberId, SeqNo, [u8; 16])>,
}

/// A sync request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncRequest {
    /// The requester's identity key (Welcomes and creates for it are re-offered).
    pub identity: IdentityKey,
    /// Groups in which the requester has an active instance (sorted by group).
    pub groups: Vec<GroupHeads>,
    /// Other groups it holds or held an instance of: creates of these are stale (sorted).
    pub known: Vec<GroupId>,
}

/// A sync response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncResponse {
    /// Envelopes, in the order the responder took them.
    pub envelopes: Vec<Vec<u8>>,
    /// Welcomes for the requester.
    pub welcomes: Vec<Vec<u8>>,
    /// Whether the responder had more than fits in one response: ask again.
    pub more: bool,
}

impl SyncRequest {
    /// `0x51 ‖ identity:[32] ‖ groups:list<gid:[32] ‖ heads:list<(member:[32], seq:var)> ‖
    /// buffered:list<(member:[32], seq:var, hash:[16])>> ‖ known:list<gid:[32]>`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(REQUEST_TAG);
        w.raw(&self.identity.0);
        w.list(&self.groups, |w, g| {
            w.raw(g.gid.as_bytes());
            w.list(&g.heads, |w, (m, s)| {
                w.raw(m.as_bytes());
                w.var(s.0);
            });
            w.list(&g.buffered, |w, (m, s, h)| {
                w.raw(m.as_bytes());
                w.var(s.0);
                w.raw(h);
            });
        });
        w.list(&self.known, |w, g| w.raw(g.as_bytes()));
        w.into_bytes()
    }

    /// Decodes a request; canonical and total, and every bound checked.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SyncError> {
        let mut r = Reader::new(bytes)?;
        if r.u8()? != REQUEST_TAG {
            return Err(DecodeError::InvalidField("not a sync request").into());
        }
        let identity: IdentityKey = dcgka::VerifyingKey(r.array()?);
        let groups = r.list(34, |r| {
            let gid = GroupId(r.array()?);
            let heads = r.list(33, |r| Ok((MemberId(r.array()?), SeqNo(r.var()?))))?;
            let buffered = r.list(49, |r| Ok((MemberId(r.array()?), SeqNo(r.var()?), r.array()?)))?;
            Ok(GroupHeads { gid, heads, buffered })
        })?;
        let known = r.list(32, |r| Ok(GroupId(r.array()?)))?;
        r.finish()?;
        let req = SyncRequest { identity, groups, known };
        req.check()?;
        Ok(req)
    }

    /// Checks the bounds and the canonical order.
    pub fn check(&self) -> Result<(), SyncError> {
        if self.groups.len() + self.known.len() > MAX_SYNC_GROUPS {
            return Err(SyncError::TooManyGroups(self.groups.len() + self.known.len()));
        }
        let gids: Vec<GroupId> = self.groups.iter().map(|g| g.gid).collect();
        check_sorted_set(&gids)?;
        check_sorted_set(&self.known)?;
        for g in &self.groups {
            if g.heads.len() > MAX_SYNC_SENDERS {
                return Err(SyncError::TooManySenders(g.heads.len()));
            }
            if g.buffered.len() > MAX_SYNC_BUFFERED {
                return Err(SyncError::TooManyBuffered(g.buffered.len()));
            }
            let senders: Vec<MemberId> = g.heads.iter().map(|(m, _)| *m).collect();
            check_sorted_set(&senders)?;
            check_sorted_set(&g.buffered)?;
        }
        Ok(())
    }
}

impl SyncResponse {
    /// `0x52 ‖ envelopes:list<opaque> ‖ welcomes:list<opaque> ‖ more:u8`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(RESPONSE_TAG);
        w.list(&self.envelopes, |w, e| w.opaque(e));
        w.list(&self.welcomes, |w, e| w.opaque(e));
        w.u8(u8::from(self.more));
        w.into_bytes()
    }

    /// Decodes a response (total; the items are checked when applied). The bounds are the
    /// ones [`Device::answer_sync`] keeps: at most [`MAX_SYNC_RESPONSE_ITEMS`] items, and
    /// at most [`MAX_SYNC_RESPONSE_BYTES`] of them unless there is only one.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SyncError> {
        let mut r = Reader::new(bytes)?;
        if r.u8()? != RESPONSE_TAG {
            return Err(DecodeError::InvalidField("not a sync response").into());
        }
        let envelopes = r.list(1, |r| Ok(r.opaque()?.to_vec()))?;
        let welcomes = r.list(1, |r| Ok(r.opaque()?.to_vec()))?;
        let more = r.flag()?;
        r.finish()?;
        let items = envelopes.len() + welcomes.len();
        if items > MAX_SYNC_RESPONSE_ITEMS {
            return Err(SyncError::TooManyItems(items));
        }
        let bytes: usize = envelopes.iter().chain(&welcomes).map(Vec::len).sum();
        if items > 1 && bytes > MAX_SYNC_RESPONSE_BYTES {
            return Err(SyncError::TooManyBytes(bytes));
        }
        Ok(SyncResponse { envelopes, welcomes, more })
    }

    /// Number of envelopes and Welcomes.
    pub fn len(&self) -> usize {
        self.envelopes.len() + self.welcomes.len()
    }

    /// Whether the response carries nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<S: Storage> Device<S> {
    /// What this device holds, for a peer to answer.
    pub fn sync_request(&self) -> SyncRequest {
        let mut groups = Vec::new();
        let mut known = Vec::new();
        for (gid, slot) in self.slots() {
            match slot.active() {
                Some(g) => {
                    let heads = g.sync_state().into_iter().collect();
                    let mut buffered = g.buffered_candidates();
                    buffered.sort();
                    buffered.dedup();
                    buffered.truncate(MAX_SYNC_BUFFERED);
                    groups.push(GroupHeads { gid: *gid, heads, buffered });
                }
                None if slot.create_is_stale() => known.push(*gid),
                None => {}
            }
        }
        SyncRequest { identity: self.public_key(), groups, known }
    }

    /// What this device's logs have that the requester lacks, bounded in size.
    pub fn answer_sync(&self, req: &SyncRequest) -> SyncResponse {
        let mut resp = SyncResponse::default();
        let mut size = 0usize;
        let full = |resp: &mut SyncResponse, size: &mut usize, len: usize| {
            let over =
                !resp.is_empty() && (*size + len > MAX_SYNC_RESPONSE_BYTES || resp.len() + 1 > MAX_SYNC_RESPONSE_ITEMS);
            if !over {
                *size += len;
            }
            over
        };
        for (gid, slot) in self.slots() {
            for w in slot.log.welcomes().iter().filter(|w| w.identity == req.identity) {
                if full(&mut resp, &mut size, w.bytes.len()) {
                    resp.more = true;
                    return resp;
                }
                resp.welcomes.push(w.bytes.clone());
            }
            let mut entries: Vec<&LogEntry> = Vec::new();
            match req.groups.binary_search_by(|g| g.gid.cmp(gid)) {
                Ok(i) => {
                    let g = &req.groups[i];
                    let heads: BTreeMap<MemberId, u64> = g.heads.iter().map(|(m, s)| (*m, s.0)).collect();
                    let buffered: BTreeSet<(MemberId, SeqNo, [u8; 16])> = g.buffered.iter().copied().collect();
                    for sender in slot.log.senders() {
                        let hwm = heads.get(sender).copied().unwrap_or(0);
                        entries.extend(
                            slot.log
                                .after(sender, hwm)
                                .filter(|e| !(e.seq == e.last_seq && buffered.contains(&(e.sender, e.seq, e.hash)))),
                        );
                    }
                }
                Err(_) if req.known.binary_search(gid).is_err() => {
                    // The requester never held this group: offer the create if it lists it.
                    entries.extend(slot.log.senders().filter_map(|s| slot.log.get(s, SeqNo(1))).filter(|e| {
                        Group::peek(&e.bytes)
                            .is_ok_and(|p| p.kind == EnvelopeKind::Create && p.invites.contains(&req.identity))
                    }));
                }
                Err(_) => {}
            }
            entries.sort_by_key(|e| e.pos);
            for e in entries {
                if full(&mut resp, &mut size, e.bytes.len()) {
                    resp.more = true;
                    return resp;
                }
                resp.envelopes.push(e.bytes.clone());
            }
        }
        resp
    }

    /// Takes a peer's answer: Welcomes first, then the envelopes in order, as one call.
    /// Items a group refuses do not fail the call; they are reported in `errors`.
    pub fn apply_sync<R: CryptoRng>(
        &mut self,
        env: &mut Env<'_, R>,
        resp: &SyncResponse,
    ) -> Result<Report, DeviceError> {
        self.check_usable()?;
        let mut ch = Changes::default();
        for w in &resp.welcomes {
            match self.receive_welcome_inner(env, w, &mut ch) {
                Ok(o) => ch.report.outcomes.push(o),
                Err(e) => ch.record(e),
            }
        }
        for e in &resp.envelopes {
            match self.receive_envelope(env, e, &mut ch) {
                Ok(o) => ch.report.outcomes.push(o),
                Err(e) => ch.record(e),
            }
        }
        self.finish_call(env, ch)
    }
}
