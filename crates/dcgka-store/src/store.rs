//! [`Store`]: one device's state in one SQLite file.

use std::cell::RefCell;
use std::fmt;
use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dcgka::events::Event;
use dcgka::ids::{GroupId, MemberId, SeqNo};
use dcgka_device::{Commit, Storage, Stored};
use rusqlite::{Connection, OpenFlags, OptionalExtension as _, TransactionBehavior, params};

use crate::consts::{
    APPLICATION_ID, FORMAT_NAME, MAX_VALUE_BYTES, SALT_LEN, SCHEMA_VERSION, SQLITE_HEADER_LEN, SQLITE_MAGIC,
    STORE_ID_LEN,
};
use crate::encode::{
    decode_event, decode_log_entry, decode_transmit, decode_welcome, encode_event, encode_log_entry, encode_transmit,
    encode_welcome, id32, state_columns, state_key,
};
use crate::error::StoreError;
use crate::key::{DerivedKeys, KdfParams, StorageKey};
use crate::seal::{Place, Sealer};

/// The tables of schema version 1. Every value column but `meta.value` holds a sealed
/// value; the other columns are the row's place (see the crate documentation for what is
/// encrypted and what is not).
const SCHEMA_V1: &str = "
CREATE TABLE meta (name TEXT PRIMARY KEY NOT NULL, value NOT NULL);
CREATE TABLE state (kind INTEGER NOT NULL, gid BLOB NOT NULL, member BLOB NOT NULL, sealed BLOB NOT NULL,
                    PRIMARY KEY (kind, gid, member));
CREATE TABLE log (gid BLOB NOT NULL, sender BLOB NOT NULL, seq INTEGER NOT NULL, sealed BLOB NOT NULL,
                  PRIMARY KEY (gid, sender, seq));
CREATE TABLE welcomes (gid BLOB NOT NULL, target BLOB NOT NULL, sealed BLOB NOT NULL, PRIMARY KEY (gid, target));
CREATE TABLE outbox (id INTEGER PRIMARY KEY NOT NULL, sealed BLOB NOT NULL);
CREATE TABLE inbox (id INTEGER PRIMARY KEY NOT NULL, sealed BLOB NOT NULL);
";

/// Every schema object of version 1 (`sqlite_schema` names, indexes included): a file
/// with anything else (a trigger, a view, another table) is refused as corrupt.
const SCHEMA_V1_OBJECTS: [&str; 10] = [
    "meta",
    "sqlite_autoindex_meta_1",
    "state",
    "sqlite_autoindex_state_1",
    "log",
    "sqlite_autoindex_log_1",
    "welcomes",
    "sqlite_autoindex_welcomes_1",
    "outbox",
    "inbox",
];

/// An event waiting in the inbox until the application marks it consumed.
#[derive(Clone, PartialEq, Eq)]
pub struct InboxEvent {
    /// The event's number: increasing, never reused by this store (an application that
    /// handles events before marking them consumed can tell one it has seen).
    pub id: u64,
    /// Its group.
    pub gid: GroupId,
    /// The event. A message's plaintext is secret: it is stored encrypted, and this
    /// type's `Debug` shows only its length.
    pub event: Event,
}

impl fmt::Debug for InboxEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InboxEvent {{ id: {}, gid: {:?}, event: ", self.id, self.gid)?;
        match &self.event {
            Event::Message { sender, seq, plaintext, .. } => {
                write!(f, "Message {{ sender: {sender:?}, seq: {seq:?}, plaintext: <{} bytes> }}", plaintext.len())?;
            }
            other => write!(f, "{other:?}")?,
        }
        f.write_str(" }")
    }
}

/// What commits wrote: row data is the bytes of every column of every row inserted or
/// updated (sealed values with their nonce and tag, and the key columns: a group or
/// member ID counts 32 bytes, an integer 8, a state record's kind 1). SQLite's own page
/// and journal writes are more; `dcgka bench --store` reports both views.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Commits applied.
    pub commits: u64,
    /// Rows inserted or updated.
    pub rows_written: u64,
    /// Rows deleted.
    pub rows_deleted: u64,
    /// Bytes of row data written.
    pub row_bytes: u64,
    /// Wall-clock time spent in [`Storage::commit`]: sealing, SQLite, and syncing to disk.
    pub time: Duration,
}

impl CommitStats {
    fn add(&mut self, o: &CommitStats) {
        self.commits += o.commits;
        self.rows_written += o.rows_written;
        self.rows_deleted += o.rows_deleted;
        self.row_bytes += o.row_bytes;
        self.time += o.time;
    }
}

/// How the caller unlocks a store.
enum Unlock<'a> {
    /// The storage key itself.
    Key(&'a StorageKey),
    /// A passphrase, run through the store's Argon2id parameters and salt.
    Passphrase(&'a [u8]),
}

/// One device's store: a SQLite file holding its identity, groups, envelope logs, kept
/// Welcomes, outbox and inbox, every secret sealed under the storage key. It implements
/// the device layer's [`Storage`]: each [`Commit`] is one SQLite transaction.
///
/// The store holds the file's lock from open to drop (SQLite's exclusive locking mode), so
/// a second store on the same file, in this process or another, fails with
/// [`StoreError::Locked`] rather than letting two devices sign with one state.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    key: StorageKey,
    sealer: Sealer,
    next_event: u64,
    /// What `open` read and checked, handed to the first [`Storage::load`].
    opened: RefCell<Option<Stored>>,
    last: CommitStats,
    totals: CommitStats,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("path", &self.path).field("totals", &self.totals).finish_non_exhaustive()
    }
}

impl Store {
    /// Creates a store at `path`, encrypted under `key`. Refuses to replace an existing
    /// file. The file appears whole or not at all (it is written under a temporary name,
    /// then renamed).
    pub fn create(path: impl AsRef<Path>, key: &StorageKey) -> Result<Store, StoreError> {
        Self::create_with(path.as_ref(), key.clone(), None)
    }

    /// Creates a store at `path` whose storage key is Argon2id of `passphrase` under a
    /// fresh random salt, with `params` ([`KdfParams::default`] for an application; tests
    /// may pass cheaper ones). The salt and parameters are stored in the file.
    pub fn create_with_passphrase(
        path: impl AsRef<Path>,
        passphrase: &[u8],
        params: KdfParams,
    ) -> Result<Store, StoreError> {
        let mut salt = [0u8; SALT_LEN];
        random(&mut salt)?;
        let key = params.derive(passphrase, &salt)?;
        Self::create_with(path.as_ref(), key, Some((params, salt)))
    }

    /// Opens the store at `path` with its storage key. Checks the file (a SQLite database
    /// of this application, whole, of a schema version this code reads, with exactly its
    /// tables), the key, and every row, before anything is written: a failing open leaves
    /// the file as it was.
    pub fn open(path: impl AsRef<Path>, key: &StorageKey) -> Result<Store, StoreError> {
        Self::open_with(path.as_ref(), Unlock::Key(key))
    }

    /// Opens a store created with [`Store::create_with_passphrase`].
    pub fn open_with_passphrase(path: impl AsRef<Path>, passphrase: &[u8]) -> Result<Store, StoreError> {
        Self::open_with(path.as_ref(), Unlock::Passphrase(passphrase))
    }

    /// Closes the store and opens it again from its file (without running the passphrase's
    /// key derivation again).
    pub fn reopen(self) -> Result<Store, StoreError> {
        let Store { conn, path, key, .. } = self;
        drop(conn);
        Self::open_with(&path, Unlock::Key(&key))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the last commit wrote.
    pub fn last_commit(&self) -> CommitStats {
        self.last
    }

    /// What every commit since this store was opened wrote.
    pub fn totals(&self) -> CommitStats {
        self.totals
    }

    /// The database's size in bytes (pages in use and free pages).
    pub fn database_bytes(&self) -> Result<u64, StoreError> {
        let pages: i64 = self.conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let size: i64 = self.conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        Ok(u64::try_from(pages.saturating_mul(size)).unwrap_or(0))
    }

    /// Every event not yet marked consumed, in the order the device committed them.
    pub fn inbox(&self) -> Result<Vec<InboxEvent>, StoreError> {
        self.inbox_after(None)
    }

    /// The events waiting in the inbox whose number is above `after` (all of them with
    /// `None`: numbers start at 0), in order: what arrived since the application last
    /// looked, without decrypting the rest again.
    pub fn inbox_after(&self, after: Option<u64>) -> Result<Vec<InboxEvent>, StoreError> {
        let mut stmt = self.conn.prepare_cached("SELECT id, sealed FROM inbox WHERE id >= ?1 ORDER BY id")?;
        let first = after.map_or(0, |a| a.saturating_add(1));
        let mut rows = stmt.query([i64_of(first)])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let id = u64_of(row.get(0)?);
            let sealed: Vec<u8> = row.get(1)?;
            let plain = self.sealer.open(Place::Inbox { id }, &sealed)?;
            let (gid, event) = decode_event(&plain)?;
            out.push(InboxEvent { id, gid, event });
        }
        Ok(out)
    }

    /// Marks events consumed: they are deleted from the file (securely: their bytes are
    /// overwritten). Unknown IDs are ignored. One transaction.
    pub fn mark_consumed(&self, ids: &[u64]) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        {
            let mut del = tx.prepare_cached("DELETE FROM inbox WHERE id = ?1")?;
            for id in ids {
                del.execute([i64_of(*id)])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    // --------------------------------------------------------------------------------
    // Creating and opening
    // --------------------------------------------------------------------------------

    fn create_with(
        path: &Path,
        key: StorageKey,
        kdf: Option<(KdfParams, [u8; SALT_LEN])>,
    ) -> Result<Store, StoreError> {
        if fs::symlink_metadata(path).is_ok() {
            return Err(StoreError::AlreadyExists(path.to_path_buf()));
        }
        let tmp = suffixed(path, ".creating");
        let tmp_journal = suffixed(&tmp, "-journal");
        remove_if_present(&tmp)?;
        remove_if_present(&tmp_journal)?;
        let mut store_id = [0u8; STORE_ID_LEN];
        random(&mut store_id)?;
        let keys = DerivedKeys::derive(&key, &store_id)?;
        {
            let flags =
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let mut conn = Connection::open_with_flags(&tmp, flags)?;
            configure(&conn)?;
            set_journal(&conn)?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
            tx.execute_batch(SCHEMA_V1)?;
            tx.execute_batch(&format!(
                "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {SCHEMA_VERSION};"
            ))?;
            {
                let mut put = tx.prepare("INSERT INTO meta (name, value) VALUES (?1, ?2)")?;
                put.execute(params!["format", FORMAT_NAME])?;
                put.execute(params!["store_id", &store_id[..]])?;
                put.execute(params!["key_check", &keys.check[..]])?;
                put.execute(params!["next_event", 0i64])?;
                if let Some((p, salt)) = &kdf {
                    put.execute(params!["kdf_salt", &salt[..]])?;
                    put.execute(params!["kdf_m_cost_kib", i64::from(p.m_cost_kib)])?;
                    put.execute(params!["kdf_t_cost", i64::from(p.t_cost)])?;
                    put.execute(params!["kdf_p_cost", i64::from(p.p_cost)])?;
                }
            }
            tx.commit()?;
            conn.close().map_err(|(_, e)| StoreError::from(e))?;
        }
        remove_if_present(&tmp_journal)?;
        fs::rename(&tmp, path)?;
        sync_parent(path);
        Self::open_with(path, Unlock::Key(&key))
    }

    fn open_with(path: &Path, unlock: Unlock<'_>) -> Result<Store, StoreError> {
        precheck(path)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::CannotOpen) if fs::metadata(path).is_err() => {
                StoreError::Missing(path.to_path_buf())
            }
            _ => opened_error(e),
        })?;
        configure(&conn)?;
        // Take the file's lock for the store's lifetime (exclusive locking mode keeps it).
        conn.execute_batch("BEGIN EXCLUSIVE").map_err(opened_error)?;
        let checked = check_and_read(&conn, unlock);
        // Nothing was written: end the read transaction either way (the lock stays).
        let ended = conn.execute_batch(if checked.is_ok() { "COMMIT" } else { "ROLLBACK" });
        let (key, sealer, next_event, stored) = checked?;
        ended.map_err(opened_error)?;
        set_journal(&conn)?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
            key,
            sealer,
            next_event,
            opened: RefCell::new(Some(stored)),
            last: CommitStats::default(),
            totals: CommitStats::default(),
        })
    }

    /// Reads and checks every row.
    fn read_all(conn: &Connection, sealer: &Sealer) -> Result<Stored, StoreError> {
        let mut stored = Stored::default();
        {
            let mut stmt = conn.prepare("SELECT kind, gid, member, sealed FROM state")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let kind: i64 = row.get(0)?;
                let gid: Vec<u8> = row.get(1)?;
                let member: Vec<u8> = row.get(2)?;
                let sealed: Vec<u8> = row.get(3)?;
                let kind = u8::try_from(kind).map_err(|_| StoreError::Corrupt(format!("state row of kind {kind}")))?;
                let key = state_key(kind, &gid, &member)?;
                let value = sealer.open(Place::State { kind, gid: &gid, member: &member }, &sealed)?;
                stored.state.insert(key, value);
            }
        }
        {
            let mut stmt = conn.prepare("SELECT gid, sender, seq, sealed FROM log")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let gid: Vec<u8> = row.get(0)?;
                let sender: Vec<u8> = row.get(1)?;
                let seq = u64_of(row.get(2)?);
                let sealed: Vec<u8> = row.get(3)?;
                let plain = sealer.open(Place::Log { gid: &gid, sender: &sender, seq }, &sealed)?;
                let entry = decode_log_entry(MemberId(id32("log", &sender)?), SeqNo(seq), &plain)?;
                stored.log.push((GroupId(id32("log", &gid)?), entry));
            }
        }
        {
            let mut stmt = conn.prepare("SELECT gid, target, sealed FROM welcomes")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let gid: Vec<u8> = row.get(0)?;
                let target: Vec<u8> = row.get(1)?;
                let sealed: Vec<u8> = row.get(2)?;
                let plain = sealer.open(Place::Welcome { gid: &gid, target: &target }, &sealed)?;
                let w = decode_welcome(MemberId(id32("welcomes", &target)?), &plain)?;
                stored.welcomes.push((GroupId(id32("welcomes", &gid)?), w));
            }
        }
        {
            let mut stmt = conn.prepare("SELECT id, sealed FROM outbox ORDER BY id")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let id = u64_of(row.get(0)?);
                let sealed: Vec<u8> = row.get(1)?;
                let plain = sealer.open(Place::Outbox { id }, &sealed)?;
                stored.outbox.push(decode_transmit(id, &plain)?);
            }
        }
        {
            // The inbox is not part of the device's state, but it is checked like the rest.
            let mut stmt = conn.prepare("SELECT id, sealed FROM inbox")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let id = u64_of(row.get(0)?);
                let sealed: Vec<u8> = row.get(1)?;
                let plain = sealer.open(Place::Inbox { id }, &sealed)?;
                decode_event(&plain)?;
            }
        }
        Ok(stored)
    }

    fn apply(&mut self, c: &Commit) -> Result<(CommitStats, u64), StoreError> {
        let mut st = CommitStats { commits: 1, ..CommitStats::default() };
        let mut next_event = self.next_event;
        let sealer = &self.sealer;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut put = tx.prepare_cached(
                "INSERT INTO state (kind, gid, member, sealed) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (kind, gid, member) DO UPDATE SET sealed = excluded.sealed",
            )?;
            let mut del = tx.prepare_cached("DELETE FROM state WHERE kind = ?1 AND gid = ?2 AND member = ?3")?;
            for (key, value) in &c.state {
                let (kind, gid, member) = state_columns(key)?;
                match value {
                    Some(v) => {
                        let sealed = sealer.seal(Place::State { kind, gid: &gid, member: &member }, v)?;
                        put.execute(params![kind, gid, member, sealed])?;
                        st.rows_written += 1;
                        st.row_bytes += (1 + gid.len() + member.len() + sealed.len()) as u64;
                    }
                    None => {
                        st.rows_deleted += del.execute(params![kind, gid, member])? as u64;
                    }
                }
            }
        }
        {
            let mut put = tx.prepare_cached(
                "INSERT INTO log (gid, sender, seq, sealed) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (gid, sender, seq) DO UPDATE SET sealed = excluded.sealed",
            )?;
            for (gid, e) in &c.log {
                let seq = e.seq.0;
                let sealed = sealer.seal(Place::Log { gid: &gid.0, sender: &e.sender.0, seq }, &encode_log_entry(e))?;
                put.execute(params![&gid.0[..], &e.sender.0[..], i64_of(seq), sealed])?;
                st.rows_written += 1;
                st.row_bytes += (64 + 8 + sealed.len()) as u64;
            }
        }
        {
            let mut put = tx.prepare_cached(
                "INSERT INTO welcomes (gid, target, sealed) VALUES (?1, ?2, ?3)
                 ON CONFLICT (gid, target) DO UPDATE SET sealed = excluded.sealed",
            )?;
            for (gid, w) in &c.welcomes_kept {
                let sealed = sealer.seal(Place::Welcome { gid: &gid.0, target: &w.target.0 }, &encode_welcome(w))?;
                put.execute(params![&gid.0[..], &w.target.0[..], sealed])?;
                st.rows_written += 1;
                st.row_bytes += (64 + sealed.len()) as u64;
            }
            let mut del = tx.prepare_cached("DELETE FROM welcomes WHERE gid = ?1 AND target = ?2")?;
            for (gid, target) in &c.welcomes_dropped {
                st.rows_deleted += del.execute(params![&gid.0[..], &target.0[..]])? as u64;
            }
        }
        {
            let mut put = tx.prepare_cached(
                "INSERT INTO outbox (id, sealed) VALUES (?1, ?2) ON CONFLICT (id) DO UPDATE SET sealed = excluded.sealed",
            )?;
            for t in &c.outbox_added {
                let sealed = sealer.seal(Place::Outbox { id: t.id }, &encode_transmit(t)?)?;
                put.execute(params![i64_of(t.id), sealed])?;
                st.rows_written += 1;
                st.row_bytes += (8 + sealed.len()) as u64;
            }
            let mut del = tx.prepare_cached("DELETE FROM outbox WHERE id = ?1")?;
            for id in &c.outbox_removed {
                st.rows_deleted += del.execute([i64_of(*id)])? as u64;
            }
        }
        if !c.events.is_empty() {
            let mut put = tx.prepare_cached("INSERT INTO inbox (id, sealed) VALUES (?1, ?2)")?;
            for (gid, e) in &c.events {
                let id = next_event;
                next_event += 1;
                let sealed = sealer.seal(Place::Inbox { id }, &encode_event(gid, e)?)?;
                put.execute(params![i64_of(id), sealed])?;
                st.rows_written += 1;
                st.row_bytes += (8 + sealed.len()) as u64;
            }
            let mut counter = tx.prepare_cached("UPDATE meta SET value = ?1 WHERE name = 'next_event'")?;
            counter.execute([i64_of(next_event)])?;
            st.rows_written += 1;
            st.row_bytes += ("next_event".len() + 8) as u64;
        }
        tx.commit()?;
        Ok((st, next_event))
    }
}

impl Storage for Store {
    type Error = StoreError;

    fn commit(&mut self, commit: &Commit) -> Result<(), StoreError> {
        // Whatever `open` read is stale from now on.
        self.opened.get_mut().take();
        let start = Instant::now();
        let (mut st, next_event) = self.apply(commit)?;
        st.time = start.elapsed();
        self.next_event = next_event;
        self.last = st;
        self.totals.add(&st);
        Ok(())
    }

    fn load(&self) -> Result<Stored, StoreError> {
        if let Some(s) = self.opened.borrow_mut().take() {
            return Ok(s);
        }
        Self::read_all(&self.conn, &self.sealer)
    }
}

/// Checks the file's identity, version, schema and key, then reads every row, inside the
/// read transaction `open` holds.
fn check_and_read(conn: &Connection, unlock: Unlock<'_>) -> Result<(StorageKey, Sealer, u64, Stored), StoreError> {
    let app: i32 = conn.query_row("PRAGMA application_id", [], |r| r.get(0)).map_err(opened_error)?;
    if app != APPLICATION_ID {
        return Err(StoreError::Foreign("a SQLite database of another application"));
    }
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(opened_error)?;
    let version = u32::try_from(version).map_err(|_| StoreError::Corrupt(format!("schema version {version}")))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerVersion { found: version, supported: SCHEMA_VERSION });
    }
    if version == 0 {
        return Err(StoreError::Corrupt("no schema version".into()));
    }
    let problems: Vec<String> = {
        let mut stmt = conn.prepare("PRAGMA quick_check").map_err(opened_error)?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(opened_error)?;
        rows.collect::<Result<_, _>>().map_err(opened_error)?
    };
    if problems != ["ok"] {
        return Err(StoreError::Corrupt(problems.join("; ")));
    }
    let mut objects: Vec<String> = {
        let mut stmt = conn.prepare("SELECT name FROM sqlite_schema").map_err(opened_error)?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(opened_error)?;
        rows.collect::<Result<_, _>>().map_err(opened_error)?
    };
    objects.sort();
    let mut expected: Vec<&str> = SCHEMA_V1_OBJECTS.to_vec();
    expected.sort_unstable();
    if objects != expected {
        return Err(StoreError::Corrupt(format!("unexpected schema objects {objects:?}")));
    }
    let meta = |name: &str| -> Result<Option<rusqlite::types::Value>, StoreError> {
        Ok(conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| r.get(0)).optional()?)
    };
    let blob = |name: &'static str| -> Result<Vec<u8>, StoreError> {
        match meta(name)? {
            Some(rusqlite::types::Value::Blob(b)) => Ok(b),
            _ => Err(StoreError::Corrupt(format!("meta {name} missing or not a blob"))),
        }
    };
    let int = |name: &'static str| -> Result<i64, StoreError> {
        match meta(name)? {
            Some(rusqlite::types::Value::Integer(i)) => Ok(i),
            _ => Err(StoreError::Corrupt(format!("meta {name} missing or not an integer"))),
        }
    };
    if blob("format")? != FORMAT_NAME {
        return Err(StoreError::Foreign("the meta table names another format"));
    }
    let store_id = blob("store_id")?;
    if store_id.len() != STORE_ID_LEN {
        return Err(StoreError::Corrupt("store ID length".into()));
    }
    let check = blob("key_check")?;
    let next_event =
        u64::try_from(int("next_event")?).map_err(|_| StoreError::Corrupt("negative event counter".into()))?;
    let key = match unlock {
        Unlock::Key(k) => k.clone(),
        Unlock::Passphrase(p) => {
            if meta("kdf_salt")?.is_none() {
                // The store was created with a key, not a passphrase.
                return Err(StoreError::WrongKey);
            }
            let salt = blob("kdf_salt")?;
            let param = |name: &'static str| -> Result<u32, StoreError> {
                u32::try_from(int(name)?).map_err(|_| StoreError::KdfParams(format!("{name} out of range")))
            };
            let params = KdfParams {
                m_cost_kib: param("kdf_m_cost_kib")?,
                t_cost: param("kdf_t_cost")?,
                p_cost: param("kdf_p_cost")?,
            };
            params.derive(p, &salt)?
        }
    };
    let keys = DerivedKeys::derive(&key, &store_id)?;
    if !keys.matches(&check) {
        return Err(StoreError::WrongKey);
    }
    let sealer = Sealer::new(&keys.row);
    let max_event = conn.query_row("SELECT max(id) FROM inbox", [], |r| r.get::<_, Option<i64>>(0))?;
    if max_event.is_some_and(|m| u64_of(m) >= next_event) {
        return Err(StoreError::Corrupt("an inbox event beyond the event counter".into()));
    }
    let stored = Store::read_all(conn, &sealer)?;
    Ok((key, sealer, next_event, stored))
}

/// The connection's settings, applied before anything is read.
fn configure(conn: &Connection) -> Result<(), StoreError> {
    // Hold the file's lock from the first read to the connection's end: no second writer.
    pragma(conn, "locking_mode", "EXCLUSIVE")?;
    // Overwrite deleted content (rows, cells, freed pages) with zeros: forward secrecy on disk.
    pragma(conn, "secure_delete", "ON")?;
    // No temporary files (sorts, temporary tables) on disk.
    pragma(conn, "temp_store", "MEMORY")?;
    pragma(conn, "cell_size_check", "ON")?;
    pragma(conn, "trusted_schema", "OFF")?;
    conn.set_limit(rusqlite::limits::Limit::SQLITE_LIMIT_LENGTH, i32::try_from(MAX_VALUE_BYTES).unwrap_or(i32::MAX))?;
    Ok(())
}

/// The journal: a rollback journal truncated to zero bytes at the end of every
/// transaction (never kept with old pages in it), synced fully.
fn set_journal(conn: &Connection) -> Result<(), StoreError> {
    let mode: String = conn.query_row("PRAGMA journal_mode = TRUNCATE", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("truncate") {
        return Err(StoreError::Corrupt(format!("journal mode {mode} could not be left")));
    }
    pragma(conn, "synchronous", "FULL")?;
    Ok(())
}

fn pragma(conn: &Connection, name: &str, value: &str) -> Result<(), StoreError> {
    let _: Option<rusqlite::types::Value> =
        conn.query_row(&format!("PRAGMA {name} = {value}"), [], |r| r.get(0)).optional()?;
    Ok(())
}

/// A SQLite error once the file is known to start with SQLite's header: "not a database"
/// then means a damaged header.
fn opened_error(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => StoreError::Corrupt(e.to_string()),
        _ => StoreError::from(e),
    }
}

/// The checks made on the raw file before SQLite opens it (reading only): present, a
/// SQLite database, as long as its header says. Skipped when a rollback journal with
/// content is beside it (a crash mid-commit): SQLite then restores the last committed
/// state from the journal on the first read.
fn precheck(path: &Path) -> Result<(), StoreError> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(StoreError::Missing(path.to_path_buf())),
        Err(e) => return Err(e.into()),
    };
    if !meta.is_file() {
        return Err(StoreError::Foreign("not a regular file"));
    }
    if fs::metadata(suffixed(path, "-journal")).is_ok_and(|m| m.len() > 0) {
        return Ok(());
    }
    let len = meta.len();
    let mut head = Vec::with_capacity(SQLITE_HEADER_LEN);
    fs::File::open(path)?.take(SQLITE_HEADER_LEN as u64).read_to_end(&mut head)?;
    let magic_len = head.len().min(SQLITE_MAGIC.len());
    if head[..magic_len] != SQLITE_MAGIC[..magic_len] {
        return Err(StoreError::Foreign("not a SQLite database"));
    }
    if head.len() < SQLITE_HEADER_LEN {
        return Err(StoreError::Truncated { len, expected: SQLITE_HEADER_LEN as u64 });
    }
    let be32 = |at: usize| u32::from_be_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
    let page_size = match u16::from_be_bytes([head[16], head[17]]) {
        1 => 65536u64,
        p if p >= 512 && p.is_power_of_two() => u64::from(p),
        p => return Err(StoreError::Corrupt(format!("page size {p} in the header"))),
    };
    let (change, pages, valid_for) = (be32(24), be32(28), be32(92));
    if valid_for == change && pages > 0 {
        let expected = u64::from(pages) * page_size;
        if len < expected {
            return Err(StoreError::Truncated { len, expected });
        }
    }
    if len % page_size != 0 {
        return Err(StoreError::Truncated { len, expected: len.div_ceil(page_size) * page_size });
    }
    Ok(())
}

fn random(out: &mut [u8]) -> Result<(), StoreError> {
    getrandom::fill(out).map_err(|e| StoreError::Randomness(e.to_string()))
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn remove_if_present(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

/// Makes a rename durable (best effort: not every platform can sync a directory).
fn sync_parent(path: &Path) {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
}

/// SQLite integers are signed: a `u64` is stored as the `i64` with the same bits.
fn i64_of(v: u64) -> i64 {
    i64::from_ne_bytes(v.to_ne_bytes())
}

fn u64_of(v: i64) -> u64 {
    u64::from_ne_bytes(v.to_ne_bytes())
}
