//! The mailbox: its file, the groups it serves and their envelopes.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read as _;
use std::path::Path;

use dcgka::ids::{GroupId, MemberId, MemberTag, Origin, SeqNo};
use dcgka::{Group, IdentityKey, Peek, SenderRef, VerifyingKey};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params};
use sha2::{Digest as _, Sha256};

use crate::consts::{
    APPLICATION_ID, MAX_DIRECT_BYTES_PER_IDENTITY, MAX_DIRECTS_PER_IDENTITY, MAX_ENVELOPE_SIZE, MAX_GROUP_BYTES,
    MAX_GROUP_ENVELOPES, MAX_IDENTITIES, MAX_KNOWN_MEMBERS_PER_GROUP, MAX_MAILBOX_GROUPS,
    MAX_ONE_TIME_PREKEYS_PER_IDENTITY, SCHEMA_VERSION,
};
use crate::error::MailboxError;

/// The first 16 bytes of every SQLite database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// The schema of version 1. `envelope.pos` is the arrival order (a new row always takes
/// a position above every row held).
const SCHEMA_V1: &str = "
CREATE TABLE served (
    gid BLOB PRIMARY KEY NOT NULL,
    envelopes INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    evicted INTEGER NOT NULL DEFAULT 0,
    members INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE envelope (
    pos INTEGER PRIMARY KEY,
    gid BLOB NOT NULL REFERENCES served(gid) ON DELETE CASCADE,
    first INTEGER NOT NULL,
    sender BLOB NOT NULL,
    seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    hash BLOB NOT NULL,
    digest BLOB NOT NULL,
    ack_tag BLOB,
    ack_seq INTEGER,
    is_create INTEGER NOT NULL,
    bytes BLOB NOT NULL
);
CREATE UNIQUE INDEX envelope_digest ON envelope(gid, digest);
CREATE INDEX envelope_order ON envelope(gid);
CREATE INDEX envelope_sender ON envelope(gid, first, sender, seq);
CREATE TABLE invite (
    ik BLOB NOT NULL,
    pos INTEGER NOT NULL REFERENCES envelope(pos) ON DELETE CASCADE,
    PRIMARY KEY (ik, pos)
) WITHOUT ROWID;
CREATE INDEX invite_envelope ON invite(pos);
CREATE TABLE member (
    gid BLOB NOT NULL REFERENCES served(gid) ON DELETE CASCADE,
    tag BLOB NOT NULL,
    mid BLOB NOT NULL,
    PRIMARY KEY (gid, tag)
) WITHOUT ROWID;
CREATE TABLE direct (
    pos INTEGER PRIMARY KEY,
    ik BLOB NOT NULL,
    gid BLOB NOT NULL,
    digest BLOB NOT NULL,
    bytes BLOB NOT NULL
);
CREATE UNIQUE INDEX direct_digest ON direct(ik, digest);
CREATE INDEX direct_group ON direct(ik, gid);
CREATE TABLE signed_prekey (
    ik BLOB PRIMARY KEY NOT NULL,
    spk_id INTEGER NOT NULL,
    opk_floor INTEGER NOT NULL,
    bytes BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE one_time_prekey (
    ik BLOB NOT NULL REFERENCES signed_prekey(ik) ON DELETE CASCADE,
    opk_id INTEGER NOT NULL,
    not_after INTEGER NOT NULL,
    bytes BLOB NOT NULL,
    UNIQUE (ik, opk_id)
);
";

/// The tables of version 1.
const TABLES_V1: [&str; 7] = ["direct", "envelope", "invite", "member", "one_time_prekey", "served", "signed_prekey"];

/// The mailbox's bounds. [`Limits::default`] holds the constants of [`crate::consts`];
/// smaller values are for tests and small deployments. A zero stores (or learns) nothing
/// of that kind, except that a group always keeps the newest envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Groups served ([`MAX_MAILBOX_GROUPS`]).
    pub groups: usize,
    /// Envelopes held per group; the oldest are evicted beyond it ([`MAX_GROUP_ENVELOPES`]).
    pub group_envelopes: usize,
    /// Envelope bytes held per group; the oldest are evicted beyond it ([`MAX_GROUP_BYTES`]).
    pub group_bytes: usize,
    /// Largest single envelope or direct message ([`MAX_ENVELOPE_SIZE`]).
    pub envelope_size: usize,
    /// Direct messages held per identity ([`MAX_DIRECTS_PER_IDENTITY`]).
    pub directs_per_identity: usize,
    /// Direct message bytes held per identity ([`MAX_DIRECT_BYTES_PER_IDENTITY`]).
    pub direct_bytes_per_identity: usize,
    /// One-time prekeys stocked per identity ([`MAX_ONE_TIME_PREKEYS_PER_IDENTITY`]).
    pub one_time_prekeys_per_identity: usize,
    /// Identities with a prekey stock or held direct messages ([`MAX_IDENTITIES`]).
    pub identities: usize,
    /// Member IDs learned per group ([`MAX_KNOWN_MEMBERS_PER_GROUP`]).
    pub known_members_per_group: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            groups: MAX_MAILBOX_GROUPS,
            group_envelopes: MAX_GROUP_ENVELOPES,
            group_bytes: MAX_GROUP_BYTES,
            envelope_size: MAX_ENVELOPE_SIZE,
            directs_per_identity: MAX_DIRECTS_PER_IDENTITY,
            direct_bytes_per_identity: MAX_DIRECT_BYTES_PER_IDENTITY,
            one_time_prekeys_per_identity: MAX_ONE_TIME_PREKEYS_PER_IDENTITY,
            identities: MAX_IDENTITIES,
            known_members_per_group: MAX_KNOWN_MEMBERS_PER_GROUP,
        }
    }
}

/// What [`Mailbox::deposit`] did with an envelope.
#[must_use]
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deposit {
    /// Stored; `evicted` of the group's oldest envelopes made room for it.
    Stored {
        /// Envelopes evicted by this deposit.
        evicted: usize,
    },
    /// The same bytes are held already (same SHA-256 of the whole envelope).
    Duplicate,
}

/// What the mailbox holds of one sender (named by its wire tag) in one group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SenderHead {
    /// The sender's tag.
    pub tag: MemberTag,
    /// The lowest sequence number held.
    pub lowest: SeqNo,
    /// The highest sequence number held without a gap from `lowest` (batches cover
    /// `seq..=last_seq`).
    pub head: SeqNo,
}

/// What the mailbox holds of one group ([`Mailbox::heads`]): a device compares it with
/// its own log and deposits what the mailbox lacks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailboxHeads {
    /// Per sender tag (sorted): the envelopes sent under a tag.
    pub senders: Vec<SenderHead>,
    /// The short hashes of the first envelopes held (those naming their sender by identity
    /// key: a create, or a member's first ack), sorted and deduplicated.
    pub first_envelopes: Vec<[u8; 16]>,
}

/// What one served group holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupUsage {
    /// The group.
    pub gid: GroupId,
    /// Envelopes held.
    pub envelopes: usize,
    /// Their bytes.
    pub bytes: usize,
    /// Envelopes evicted so far to stay within the limits.
    pub evicted: u64,
    /// Member IDs learned.
    pub known_members: usize,
}

/// What the mailbox holds for one identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityUsage {
    /// The identity.
    pub ik: IdentityKey,
    /// Direct messages (Welcomes) held.
    pub directs: usize,
    /// Their bytes.
    pub direct_bytes: usize,
    /// Whether a signed prekey is stocked.
    pub signed_prekey: bool,
    /// One-time prekeys stocked (expired ones included until the next bundle or stock).
    pub one_time_prekeys: usize,
}

/// Everything the mailbox holds, by group and by identity (for tests and logs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Served groups, sorted.
    pub groups: Vec<GroupUsage>,
    /// Identities with held mail or prekey stock, sorted.
    pub identities: Vec<IdentityUsage>,
}

impl Usage {
    /// The usage of one group, if served.
    pub fn group(&self, gid: &GroupId) -> Option<&GroupUsage> {
        self.groups.iter().find(|g| g.gid == *gid)
    }

    /// The usage of one identity, if it has anything here.
    pub fn identity(&self, ik: &IdentityKey) -> Option<&IdentityUsage> {
        self.identities.iter().find(|i| i.ik == *ik)
    }

    /// Envelopes held over all groups.
    pub fn envelopes(&self) -> usize {
        self.groups.iter().map(|g| g.envelopes).sum()
    }

    /// Direct messages held over all identities.
    pub fn directs(&self) -> usize {
        self.identities.iter().map(|i| i.directs).sum()
    }
}

/// A mailbox on a SQLite file (or in memory). See the crate documentation.
pub struct Mailbox {
    pub(crate) conn: Connection,
    pub(crate) limits: Limits,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl Mailbox {
    /// Opens the mailbox file at `path`, creating it if missing, with the default limits.
    /// A file that is not a mailbox ([`MailboxError::Foreign`]), comes from a newer
    /// version ([`MailboxError::NewerVersion`]) or is damaged ([`MailboxError::Corrupt`])
    /// is refused and left untouched. The file stays locked until the mailbox is dropped.
    pub fn open(path: impl AsRef<Path>) -> Result<Mailbox, MailboxError> {
        Self::open_with_limits(path, Limits::default())
    }

    /// [`Mailbox::open`] with other limits.
    pub fn open_with_limits(path: impl AsRef<Path>, limits: Limits) -> Result<Mailbox, MailboxError> {
        let path = path.as_ref();
        precheck(path)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)?;
        Self::init(conn, limits, true)
    }

    /// A mailbox in memory (gone when dropped), with the default limits.
    pub fn open_in_memory() -> Result<Mailbox, MailboxError> {
        Self::open_in_memory_with_limits(Limits::default())
    }

    /// [`Mailbox::open_in_memory`] with other limits.
    pub fn open_in_memory_with_limits(limits: Limits) -> Result<Mailbox, MailboxError> {
        Self::init(Connection::open_in_memory()?, limits, false)
    }

    fn init(conn: Connection, limits: Limits, on_disk: bool) -> Result<Mailbox, MailboxError> {
        // The file is held exclusively for the mailbox's life: waiting for it never helps.
        conn.busy_timeout(std::time::Duration::ZERO)?;
        // Settings that write nothing to the file.
        pragma(&conn, "locking_mode", "EXCLUSIVE")?;
        pragma(&conn, "foreign_keys", "ON")?;
        pragma(&conn, "temp_store", "MEMORY")?;
        pragma(&conn, "trusted_schema", "OFF")?;
        pragma(&conn, "cell_size_check", "ON")?;
        conn.execute_batch("BEGIN EXCLUSIVE")?;
        let checked = check_or_create(&conn);
        let ended = conn.execute_batch(if checked.is_ok() { "COMMIT" } else { "ROLLBACK" });
        checked?;
        ended?;
        if on_disk {
            let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(MailboxError::Corrupt(format!("journal mode {mode} could not be left")));
            }
            // A bundle handed out must stay handed out across a power failure.
            pragma(&conn, "synchronous", "FULL")?;
        }
        Ok(Mailbox { conn, limits })
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Starts serving `gid`; `true` if it was not served yet.
    pub fn serve(&mut self, gid: GroupId) -> Result<bool, MailboxError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if group_counts(&tx, &gid)?.is_some() {
            return Ok(false);
        }
        let served: i64 = tx.query_row("SELECT count(*) FROM served", [], |r| r.get(0))?;
        if usize_of(served) >= self.limits.groups {
            return Err(MailboxError::TooManyGroups { max: self.limits.groups });
        }
        tx.execute("INSERT INTO served (gid) VALUES (?1)", [&gid.0[..]])?;
        tx.commit()?;
        Ok(true)
    }

    /// Stops serving `gid` and deletes its envelopes; `true` if it was served. Welcomes
    /// held for the group's newcomers stay until their targets join.
    pub fn unserve(&mut self, gid: &GroupId) -> Result<bool, MailboxError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx.execute("DELETE FROM served WHERE gid = ?1", [&gid.0[..]])?;
        tx.commit()?;
        Ok(n > 0)
    }

    /// The groups served, sorted.
    pub fn served(&self) -> Result<Vec<GroupId>, MailboxError> {
        let mut stmt = self.conn.prepare_cached("SELECT gid FROM served ORDER BY gid")?;
        let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(GroupId(array(row?, "group id")?));
        }
        Ok(out)
    }

    /// Stores an envelope of a served group. It must decode ([`Group::peek`]; nothing is
    /// verified: the mailbox holds no group key); a create must name `gid`. When the group
    /// is full, its oldest envelopes are evicted to make room.
    pub fn deposit(&mut self, gid: &GroupId, envelope: &[u8]) -> Result<Deposit, MailboxError> {
        let limits = self.limits;
        let max = limits.envelope_size.min(limits.group_bytes);
        if envelope.len() > max {
            return Err(MailboxError::TooLarge { size: envelope.len(), max });
        }
        let peek = Group::peek(envelope).map_err(MailboxError::Malformed)?;
        if let Some(found) = peek.gid
            && found != *gid
        {
            return Err(MailboxError::WrongGroup { expected: *gid, found });
        }
        let seq = sql_seq(peek.seq)?;
        let last_seq = sql_seq(peek.last_seq)?;
        let digest = sha256(envelope);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let Some(counts) = group_counts(&tx, gid)? else {
            return Err(MailboxError::NotServed(*gid));
        };
        let held = tx
            .prepare_cached("SELECT 1 FROM envelope WHERE gid = ?1 AND digest = ?2")?
            .query_row(params![&gid.0[..], &digest[..]], |_| Ok(()))
            .optional()?;
        if held.is_some() {
            return Ok(Deposit::Duplicate);
        }
        let evicted = evict(&tx, gid, &counts, envelope.len(), &limits)?;
        let (first, sender): (bool, Vec<u8>) = match peek.sender {
            SenderRef::Tag(t) => (false, t.0.to_vec()),
            SenderRef::Identity(ik) => (true, ik.0.to_vec()),
        };
        let (ack_tag, ack_seq) = match peek.acknowledges {
            Some((t, s)) => (Some(t.0.to_vec()), Some(sql_seq(s)?)),
            None => (None, None),
        };
        tx.prepare_cached(
            "INSERT INTO envelope (gid, first, sender, seq, last_seq, hash, digest, ack_tag, ack_seq, is_create, bytes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?
        .execute(params![
            &gid.0[..],
            first,
            sender,
            seq,
            last_seq,
            &peek.hash[..],
            &digest[..],
            ack_tag,
            ack_seq,
            peek.gid.is_some(),
            envelope
        ])?;
        tx.prepare_cached(
            "UPDATE served SET envelopes = envelopes + 1, bytes = bytes + ?2, evicted = evicted + ?3 WHERE gid = ?1",
        )?
        .execute(params![&gid.0[..], i64_of(envelope.len()), i64_of(evicted)])?;
        let pos = tx.last_insert_rowid();
        for ik in &peek.invites {
            tx.prepare_cached("INSERT OR IGNORE INTO invite (ik, pos) VALUES (?1, ?2)")?
                .execute(params![&ik.0[..], pos])?;
        }
        if let Some(mid) = first_sender_id(&tx, gid, &peek)? {
            learn_member(&tx, gid, mid, &limits)?;
        }
        tx.commit()?;
        Ok(Deposit::Stored { evicted })
    }

    /// What the mailbox holds of `gid`: per sender tag, the envelopes held without a gap
    /// from the lowest one; and the short hashes of the first envelopes held. A device
    /// deposits what lies above these heads (and the first envelopes not listed).
    pub fn heads(&self, gid: &GroupId) -> Result<MailboxHeads, MailboxError> {
        if group_counts(&self.conn, gid)?.is_none() {
            return Err(MailboxError::NotServed(*gid));
        }
        let mut out = MailboxHeads::default();
        let mut stmt = self.conn.prepare_cached(
            "SELECT sender, seq, last_seq FROM envelope WHERE gid = ?1 AND first = 0 ORDER BY sender, seq, last_seq",
        )?;
        let mut rows = stmt.query([&gid.0[..]])?;
        let mut current: Option<(SenderHead, bool)> = None;
        while let Some(row) = rows.next()? {
            let tag = MemberTag(array(row.get(0)?, "sender tag")?);
            let seq = seq_of(row.get(1)?);
            let last_seq = seq_of(row.get(2)?);
            match &mut current {
                Some((h, gap)) if h.tag == tag => {
                    if !*gap {
                        if seq.0 <= h.head.0.saturating_add(1) {
                            h.head = h.head.max(last_seq);
                        } else {
                            *gap = true;
                        }
                    }
                }
                _ => {
                    if let Some((h, _)) = current.take() {
                        out.senders.push(h);
                    }
                    current = Some((SenderHead { tag, lowest: seq, head: last_seq }, false));
                }
            }
        }
        if let Some((h, _)) = current {
            out.senders.push(h);
        }
        let mut stmt = self
            .conn
            .prepare_cached("SELECT DISTINCT hash FROM envelope WHERE gid = ?1 AND first = 1 ORDER BY hash")?;
        let rows = stmt.query_map([&gid.0[..]], |r| r.get::<_, Vec<u8>>(0))?;
        for row in rows {
            out.first_envelopes.push(array(row?, "short hash")?);
        }
        Ok(out)
    }

    /// Counts and bytes per served group and per identity.
    pub fn usage(&self) -> Result<Usage, MailboxError> {
        let mut usage = Usage::default();
        let mut stmt =
            self.conn.prepare_cached("SELECT gid, envelopes, bytes, evicted, members FROM served ORDER BY gid")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            usage.groups.push(GroupUsage {
                gid: GroupId(array(row.get(0)?, "group id")?),
                envelopes: usize_of(row.get(1)?),
                bytes: usize_of(row.get(2)?),
                evicted: u64::try_from(row.get::<_, i64>(3)?).unwrap_or(0),
                known_members: usize_of(row.get(4)?),
            });
        }
        let mut ids: BTreeMap<[u8; 32], IdentityUsage> = BTreeMap::new();
        let blank = |ik: [u8; 32]| IdentityUsage {
            ik: VerifyingKey(ik),
            directs: 0,
            direct_bytes: 0,
            signed_prekey: false,
            one_time_prekeys: 0,
        };
        let mut stmt =
            self.conn.prepare_cached("SELECT ik, count(*), sum(length(bytes)) FROM direct GROUP BY ik ORDER BY ik")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let ik = array(row.get(0)?, "identity key")?;
            let u = ids.entry(ik).or_insert_with(|| blank(ik));
            u.directs = usize_of(row.get(1)?);
            u.direct_bytes = usize_of(row.get(2)?);
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT s.ik, (SELECT count(*) FROM one_time_prekey o WHERE o.ik = s.ik) FROM signed_prekey s",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let ik = array(row.get(0)?, "identity key")?;
            let u = ids.entry(ik).or_insert_with(|| blank(ik));
            u.signed_prekey = true;
            u.one_time_prekeys = usize_of(row.get(1)?);
        }
        usage.identities = ids.into_values().collect();
        Ok(usage)
    }
}

/// A group's counters: `(envelopes, bytes, members)`, or `None` if it is not served.
pub(crate) struct GroupCounts {
    pub(crate) envelopes: usize,
    pub(crate) bytes: usize,
    pub(crate) members: usize,
}

pub(crate) fn group_counts(conn: &Connection, gid: &GroupId) -> Result<Option<GroupCounts>, MailboxError> {
    Ok(conn
        .prepare_cached("SELECT envelopes, bytes, members FROM served WHERE gid = ?1")?
        .query_row([&gid.0[..]], |r| {
            Ok(GroupCounts { envelopes: usize_of(r.get(0)?), bytes: usize_of(r.get(1)?), members: usize_of(r.get(2)?) })
        })
        .optional()?)
}

/// Deletes the group's oldest envelopes until one of `len` bytes fits; returns how many.
fn evict(
    tx: &Transaction<'_>,
    gid: &GroupId,
    counts: &GroupCounts,
    len: usize,
    limits: &Limits,
) -> Result<usize, MailboxError> {
    let mut excess_count = (counts.envelopes + 1).saturating_sub(limits.group_envelopes.max(1));
    let mut excess_bytes = (counts.bytes + len).saturating_sub(limits.group_bytes);
    if excess_count == 0 && excess_bytes == 0 {
        return Ok(0);
    }
    let (mut n, mut freed, mut last) = (0usize, 0usize, None);
    {
        let mut stmt = tx.prepare_cached("SELECT pos, length(bytes) FROM envelope WHERE gid = ?1 ORDER BY pos")?;
        let mut rows = stmt.query([&gid.0[..]])?;
        while excess_count > 0 || excess_bytes > 0 {
            let Some(row) = rows.next()? else { break };
            let size = usize_of(row.get(1)?);
            last = Some(row.get::<_, i64>(0)?);
            n += 1;
            freed += size;
            excess_count = excess_count.saturating_sub(1);
            excess_bytes = excess_bytes.saturating_sub(size);
        }
    }
    if let Some(last) = last {
        tx.prepare_cached("DELETE FROM envelope WHERE gid = ?1 AND pos <= ?2")?.execute(params![&gid.0[..], last])?;
        tx.prepare_cached("UPDATE served SET envelopes = envelopes - ?2, bytes = bytes - ?3 WHERE gid = ?1")?
            .execute(params![&gid.0[..], i64_of(n), i64_of(freed)])?;
    }
    Ok(n)
}

/// The member ID behind a first envelope, when it can be told: a create names its group
/// (the creator), a first ack names the operation that introduced its sender, whose
/// sender's ID must be known here.
pub(crate) fn first_sender_id(conn: &Connection, gid: &GroupId, peek: &Peek) -> Result<Option<MemberId>, MailboxError> {
    let SenderRef::Identity(ik) = peek.sender else { return Ok(None) };
    if peek.gid.is_some() {
        return Ok(Some(MemberId::derive(gid, &ik, Origin::Creator)));
    }
    let Some((tag, seq)) = peek.acknowledges else { return Ok(None) };
    Ok(known_member(conn, gid, &tag)?.map(|adder| MemberId::derive(gid, &ik, Origin::Operation(adder, seq))))
}

/// The member ID learned for `tag` in `gid`.
pub(crate) fn known_member(
    conn: &Connection,
    gid: &GroupId,
    tag: &MemberTag,
) -> Result<Option<MemberId>, MailboxError> {
    let mid = conn
        .prepare_cached("SELECT mid FROM member WHERE gid = ?1 AND tag = ?2")?
        .query_row(params![&gid.0[..], &tag.0[..]], |r| r.get::<_, Vec<u8>>(0))
        .optional()?;
    mid.map(|m| array(m, "member id").map(MemberId)).transpose()
}

/// Records `tag(mid) → mid` in `gid` unless the tag is known or the group knows as many
/// members as allowed. The first mapping of a tag stays.
pub(crate) fn learn_member(
    conn: &Connection,
    gid: &GroupId,
    mid: MemberId,
    limits: &Limits,
) -> Result<bool, MailboxError> {
    let Some(counts) = group_counts(conn, gid)? else { return Ok(false) };
    if counts.members >= limits.known_members_per_group {
        return Ok(false);
    }
    let n = conn
        .prepare_cached("INSERT OR IGNORE INTO member (gid, tag, mid) VALUES (?1, ?2, ?3)")?
        .execute(params![&gid.0[..], &mid.tag().0[..], &mid.0[..]])?;
    if n > 0 {
        conn.prepare_cached("UPDATE served SET members = members + 1 WHERE gid = ?1")?.execute([&gid.0[..]])?;
    }
    Ok(n > 0)
}

/// Checks the file's identity and version, or writes the schema into an empty database.
fn check_or_create(conn: &Connection) -> Result<(), MailboxError> {
    let app: i32 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let objects: i64 = conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
    if app == 0 && version == 0 && objects == 0 {
        conn.execute_batch(SCHEMA_V1)?;
        conn.execute_batch(&format!(
            "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {SCHEMA_VERSION};"
        ))?;
        return Ok(());
    }
    if app != APPLICATION_ID {
        return Err(MailboxError::Foreign("a SQLite database of another application"));
    }
    let found = u32::try_from(version).map_err(|_| MailboxError::Corrupt(format!("schema version {version}")))?;
    if found > SCHEMA_VERSION {
        return Err(MailboxError::NewerVersion { found, supported: SCHEMA_VERSION });
    }
    if found == 0 {
        return Err(MailboxError::Corrupt("no schema version".into()));
    }
    let mut stmt = conn.prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")?;
    let tables: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    if tables != TABLES_V1 {
        return Err(MailboxError::Corrupt(format!("unexpected tables {tables:?}")));
    }
    Ok(())
}

/// Refuses, reading only, a file that is not empty and does not start as SQLite files do,
/// so SQLite never opens (or journals next to) it.
fn precheck(path: &Path) -> Result<(), MailboxError> {
    let mut file = match fs::File::open(path) {
        Ok(f) => f,
        Err(_) => return Ok(()), // Missing (created below) or unreadable (SQLite reports it).
    };
    let mut head = Vec::with_capacity(SQLITE_MAGIC.len());
    file.by_ref()
        .take(SQLITE_MAGIC.len() as u64)
        .read_to_end(&mut head)
        .map_err(|e| MailboxError::Corrupt(e.to_string()))?;
    if head.is_empty() || head == SQLITE_MAGIC { Ok(()) } else { Err(MailboxError::Foreign("not a SQLite database")) }
}

fn pragma(conn: &Connection, name: &str, value: &str) -> Result<(), MailboxError> {
    let _: Option<rusqlite::types::Value> =
        conn.query_row(&format!("PRAGMA {name} = {value}"), [], |r| r.get(0)).optional()?;
    Ok(())
}

/// SHA-256 of the whole byte string: what tells duplicates apart.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&Sha256::digest(bytes));
    out
}

/// A stored fixed-length blob.
pub(crate) fn array<const N: usize>(bytes: Vec<u8>, what: &'static str) -> Result<[u8; N], MailboxError> {
    <[u8; N]>::try_from(bytes).map_err(|_| MailboxError::BadRow(what))
}

/// A sequence number as SQLite stores it.
pub(crate) fn sql_seq(s: SeqNo) -> Result<i64, MailboxError> {
    sql_u64(s.0, "sequence number")
}

/// A number from the network as SQLite stores it (at most 2^63 − 1).
pub(crate) fn sql_u64(value: u64, what: &'static str) -> Result<i64, MailboxError> {
    i64::try_from(value).map_err(|_| MailboxError::OutOfRange { what, value })
}

/// A stored sequence number (never negative: only [`sql_seq`] values are written).
pub(crate) fn seq_of(v: i64) -> SeqNo {
    SeqNo(u64::try_from(v).unwrap_or(0))
}

/// A count or size as SQLite stores it.
pub(crate) fn i64_of(v: usize) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A stored count or size.
pub(crate) fn usize_of(v: i64) -> usize {
    usize::try_from(v).unwrap_or(0)
}
