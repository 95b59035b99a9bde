//! The store's errors: one variant per way a file can fail to open or a call can fail.

use std::path::PathBuf;

/// Why the store could not be created, opened, read or written. A failing open leaves the
/// file exactly as it was.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// There is no file at the path.
    #[error("no store at {0}")]
    Missing(PathBuf),
    /// `create` found a file at the path and leaves it alone.
    #[error("a file already exists at {0}")]
    AlreadyExists(PathBuf),
    /// Another connection (in this or another process) holds the store.
    #[error("the store is locked by another connection")]
    Locked,
    /// The file is shorter than its SQLite header says (it was cut).
    #[error("the file is truncated: {len} bytes, its header needs {expected}")]
    Truncated {
        /// The file's length.
        len: u64,
        /// The length its header implies (the SQLite header itself when shorter than it).
        expected: u64,
    },
    /// The file is not a dcgka store: not a SQLite database, or a SQLite database of
    /// another application.
    #[error("not a dcgka store: {0}")]
    Foreign(&'static str),
    /// SQLite reports the file malformed, or the store's tables are not what version
    /// [`crate::consts::SCHEMA_VERSION`] wrote.
    #[error("the store is corrupt: {0}")]
    Corrupt(String),
    /// The storage key (or passphrase) is not the one the store was created with.
    #[error("wrong storage key")]
    WrongKey,
    /// The store was written by a newer version of this crate.
    #[error("schema version {found} is newer than this code's {supported}")]
    NewerVersion {
        /// The file's schema version.
        found: u32,
        /// [`crate::consts::SCHEMA_VERSION`].
        supported: u32,
    },
    /// A row does not authenticate under the store's key: it was modified, or moved from
    /// another place (table, group, key) or another store.
    #[error("a row of table {0} does not authenticate (modified or moved)")]
    Tampered(&'static str),
    /// A value is larger than [`crate::consts::MAX_VALUE_BYTES`].
    #[error("a value exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// Argon2id parameters out of range (given to `create`, or named by a file).
    #[error("invalid key derivation parameters: {0}")]
    KdfParams(String),
    /// Something the device committed that this version of the store cannot write (a
    /// state key or event kind added to the library after it).
    #[error("this store version cannot store {0}")]
    Unsupported(&'static str),
    /// The operating system's random number generator failed (nonces, salts, store IDs).
    #[error("no randomness from the operating system: {0}")]
    Randomness(String),
    /// The operating system refused a file operation.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Any other SQLite failure (disk full, I/O error).
    #[error("SQLite: {0}")]
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        match e.sqlite_error_code() {
            Some(C::DatabaseBusy | C::DatabaseLocked) => StoreError::Locked,
            Some(C::DatabaseCorrupt) => StoreError::Corrupt(e.to_string()),
            Some(C::NotADatabase) => StoreError::Foreign("not a SQLite database"),
            Some(C::TooBig) => StoreError::TooLarge { max: crate::consts::MAX_VALUE_BYTES },
            _ => StoreError::Sqlite(e),
        }
    }
}
