//! Answering a device's sync request from what the mailbox holds, paged exactly like
//! [`dcgka_device::Device::answer_sync`].

use std::collections::{BTreeMap, BTreeSet};

use dcgka::ids::{GroupId, MemberId, MemberTag, Origin};
use dcgka::{IdentityKey, VerifyingKey};
use dcgka_device::consts::{MAX_SYNC_RESPONSE_BYTES, MAX_SYNC_RESPONSE_ITEMS};
use dcgka_device::{GroupHeads, SyncRequest, SyncResponse};
use rusqlite::{Connection, TransactionBehavior, params};

use crate::error::MailboxError;
use crate::mailbox::{Limits, Mailbox, array, group_counts, known_member, learn_member, seq_of, usize_of};

/// A response being filled, within [`MAX_SYNC_RESPONSE_BYTES`] and
/// [`MAX_SYNC_RESPONSE_ITEMS`]; at least one item always goes.
#[derive(Default)]
struct Page {
    resp: SyncResponse,
    size: usize,
}

impl Page {
    /// Whether an item of `len` bytes still fits (it is then counted); sets `more` if not.
    fn admit(&mut self, len: usize) -> bool {
        let over = !self.resp.is_empty()
            && (self.size + len > MAX_SYNC_RESPONSE_BYTES || self.resp.len() + 1 > MAX_SYNC_RESPONSE_ITEMS);
        if over {
            self.resp.more = true;
        } else {
            self.size += len;
        }
        !over
    }
}

impl Mailbox {
    /// What the mailbox holds that the requester lacks, bounded like a device's answer
    /// (`more` is set when something did not fit: ask again).
    ///
    /// - Welcomes held for `req.identity` come first. A Welcome for a group the request
    ///   lists among its active `groups` (served here or not) is deleted instead: its
    ///   target has joined. The request's identity is not authenticated here: the network
    ///   layer must make sure the requester holds it (otherwise anyone could have another
    ///   identity's Welcomes deleted), and use [`Mailbox::answer_sync_guest`] when it
    ///   cannot.
    /// - For each served group in `req.groups`, in arrival order: every envelope whose
    ///   last sequence number lies above the requester's head for its sender (0 if not
    ///   listed), except single envelopes listed in `buffered`. A first envelope (sender
    ///   named by identity key) is skipped only when its sender's member ID can be derived
    ///   here and the requester's head for it covers it; otherwise it is served (a
    ///   duplicate is harmless).
    /// - For each served group the request lists neither in `groups` nor in `known`: the
    ///   creates that invite `req.identity` (an initial member that never joined).
    ///
    /// Member IDs of senders the group holds envelopes of are learned from the request's
    /// heads (and kept), so that later first envelopes can be matched.
    pub fn answer_sync(&mut self, req: &SyncRequest) -> Result<SyncResponse, MailboxError> {
        self.answer(req, true)
    }

    /// [`Mailbox::answer_sync`] for a requester whose identity is not established: the
    /// same answer (Welcomes are ciphertext only their target can open), but no Welcome
    /// is deleted, so that nobody can have another identity's Welcomes dropped.
    pub fn answer_sync_guest(&mut self, req: &SyncRequest) -> Result<SyncResponse, MailboxError> {
        self.answer(req, false)
    }

    fn answer(&mut self, req: &SyncRequest, authenticated: bool) -> Result<SyncResponse, MailboxError> {
        req.check()?;
        let limits = self.limits;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut active = Vec::new();
        for g in &req.groups {
            if group_counts(&tx, &g.gid)?.is_some() {
                active.push(g);
            }
        }
        for g in req.groups.iter().filter(|_| authenticated) {
            tx.prepare_cached("DELETE FROM direct WHERE ik = ?1 AND gid = ?2")?
                .execute(params![&req.identity.0[..], &g.gid.0[..]])?;
        }
        for g in &active {
            learn_from_heads(&tx, g, &limits)?;
        }
        let mut page = Page::default();
        fill(&tx, req, &active, &limits, &mut page)?;
        tx.commit()?;
        Ok(page.resp)
    }
}

/// Fills `page` until it is full or everything is in.
fn fill(
    conn: &Connection,
    req: &SyncRequest,
    active: &[&GroupHeads],
    limits: &Limits,
    page: &mut Page,
) -> Result<(), MailboxError> {
    {
        let mut stmt = conn.prepare_cached("SELECT length(bytes), bytes FROM direct WHERE ik = ?1 ORDER BY pos")?;
        let mut rows = stmt.query([&req.identity.0[..]])?;
        while let Some(row) = rows.next()? {
            if !page.admit(usize_of(row.get(0)?)) {
                return Ok(());
            }
            page.resp.welcomes.push(row.get(1)?);
        }
    }
    for g in active {
        if !group_envelopes(conn, g, limits, page)? {
            return Ok(());
        }
    }
    let listed: BTreeSet<GroupId> = req.groups.iter().map(|g| g.gid).chain(req.known.iter().copied()).collect();
    let mut stmt = conn.prepare_cached(
        "SELECT e.gid, length(e.bytes), e.bytes FROM invite i JOIN envelope e ON e.pos = i.pos
         WHERE i.ik = ?1 ORDER BY e.gid, e.pos",
    )?;
    let mut rows = stmt.query([&req.identity.0[..]])?;
    while let Some(row) = rows.next()? {
        let gid = GroupId(array(row.get(0)?, "group id")?);
        if listed.contains(&gid) {
            continue;
        }
        if !page.admit(usize_of(row.get(1)?)) {
            return Ok(());
        }
        page.resp.envelopes.push(row.get(2)?);
    }
    Ok(())
}

/// Adds the envelopes of one group the requester lacks; `false` once the page is full.
fn group_envelopes(conn: &Connection, g: &GroupHeads, limits: &Limits, page: &mut Page) -> Result<bool, MailboxError> {
    let mut heads: BTreeMap<MemberTag, u64> = BTreeMap::new();
    for (m, s) in &g.heads {
        let h = heads.entry(m.tag()).or_default();
        *h = (*h).max(s.0);
    }
    let buffered: BTreeSet<(MemberTag, u64, [u8; 16])> =
        g.buffered.iter().map(|(m, s, h)| (m.tag(), s.0, *h)).collect();
    let buffered_any: BTreeSet<(u64, [u8; 16])> = g.buffered.iter().map(|(_, s, h)| (s.0, *h)).collect();
    let mut adders: BTreeMap<MemberTag, Option<MemberId>> = BTreeMap::new();
    let mut learned: Vec<MemberId> = Vec::new();
    let mut full = false;
    {
        let mut stmt = conn.prepare_cached(
            "SELECT first, sender, seq, last_seq, hash, ack_tag, ack_seq, is_create, length(bytes), bytes
             FROM envelope WHERE gid = ?1 ORDER BY pos",
        )?;
        let mut rows = stmt.query([&g.gid.0[..]])?;
        while let Some(row) = rows.next()? {
            let first: bool = row.get(0)?;
            let sender: Vec<u8> = row.get(1)?;
            let seq = seq_of(row.get(2)?).0;
            let last_seq = seq_of(row.get(3)?).0;
            let hash: [u8; 16] = array(row.get(4)?, "short hash")?;
            let (tag, single_buffered) = if first {
                let ik: IdentityKey = VerifyingKey(array(sender, "identity key")?);
                let mid = if row.get::<_, bool>(7)? {
                    Some(MemberId::derive(&g.gid, &ik, Origin::Creator))
                } else {
                    match (row.get::<_, Option<Vec<u8>>>(5)?, row.get::<_, Option<i64>>(6)?) {
                        (Some(t), Some(s)) => {
                            let t = MemberTag(array(t, "acknowledged tag")?);
                            let adder = match adders.get(&t) {
                                Some(a) => *a,
                                None => {
                                    let a = known_member(conn, &g.gid, &t)?;
                                    adders.insert(t, a);
                                    a
                                }
                            };
                            adder.map(|a| MemberId::derive(&g.gid, &ik, Origin::Operation(a, seq_of(s))))
                        }
                        _ => None,
                    }
                };
                if let Some(m) = mid {
                    learned.push(m);
                }
                (mid.map(|m| m.tag()), buffered_any.contains(&(seq, hash)))
            } else {
                let t = MemberTag(array(sender, "sender tag")?);
                (Some(t), buffered.contains(&(t, seq, hash)))
            };
            let hwm = tag.and_then(|t| heads.get(&t).copied()).unwrap_or(0);
            if last_seq <= hwm || (seq == last_seq && single_buffered) {
                continue;
            }
            if !page.admit(usize_of(row.get(8)?)) {
                full = true;
                break;
            }
            page.resp.envelopes.push(row.get(9)?);
        }
    }
    for m in learned {
        learn_member(conn, &g.gid, m, limits)?;
    }
    Ok(!full)
}

/// Learns the member IDs of a request's heads whose tags are sender tags of envelopes
/// held in the group (so a request cannot fill the table with IDs of no sender here).
fn learn_from_heads(conn: &Connection, g: &GroupHeads, limits: &Limits) -> Result<(), MailboxError> {
    if g.heads.is_empty() {
        return Ok(());
    }
    let senders: BTreeSet<Vec<u8>> = {
        let mut stmt = conn.prepare_cached("SELECT DISTINCT sender FROM envelope WHERE gid = ?1 AND first = 0")?;
        stmt.query_map([&g.gid.0[..]], |r| r.get(0))?.collect::<Result<_, _>>()?
    };
    for (m, _) in &g.heads {
        if senders.contains(&m.tag().0[..]) {
            learn_member(conn, &g.gid, *m, limits)?;
        }
    }
    Ok(())
}
