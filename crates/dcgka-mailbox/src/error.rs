//! Why a mailbox call could not run. On any error, nothing changed.

use dcgka::GroupError;
use dcgka::ids::GroupId;
use dcgka::prekeys::PrekeyError;
use dcgka_device::SyncError;

/// Why a mailbox call could not run. Every mutating call is one transaction: an error
/// leaves the mailbox exactly as it was.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum MailboxError {
    /// The file is not a mailbox: not a SQLite database, or one of another application.
    /// Nothing was written to it.
    #[error("not a mailbox file: {0}")]
    Foreign(&'static str),
    /// The file was written by a newer version of this crate. Nothing was written to it.
    #[error("mailbox schema version {found} is newer than the supported {supported}")]
    NewerVersion {
        /// The file's schema version.
        found: u32,
        /// [`crate::consts::SCHEMA_VERSION`].
        supported: u32,
    },
    /// The file claims to be a mailbox but its contents are damaged.
    #[error("corrupt mailbox: {0}")]
    Corrupt(String),
    /// Another connection holds the file.
    #[error("the mailbox file is locked by another process")]
    Locked,
    /// The group is not served here.
    #[error("group {0} is not served here")]
    NotServed(GroupId),
    /// Serving another group would exceed the limit.
    #[error("the mailbox serves {max} groups already, the maximum")]
    TooManyGroups {
        /// [`crate::Limits::groups`].
        max: usize,
    },
    /// The bytes do not decode as an envelope (or a Welcome, for a direct message).
    #[error("malformed: {0}")]
    Malformed(GroupError),
    /// A sequence number or prekey ID beyond what the mailbox stores (2^63 − 1).
    #[error("{what} {value} out of range")]
    OutOfRange {
        /// What the number is.
        what: &'static str,
        /// The number.
        value: u64,
    },
    /// A create or Welcome of another group than the one named.
    #[error("the message belongs to group {found}, not {expected}")]
    WrongGroup {
        /// The group named by the caller.
        expected: GroupId,
        /// The group the message names.
        found: GroupId,
    },
    /// A single envelope or direct message larger than allowed.
    #[error("{size} bytes, the maximum is {max}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// [`crate::Limits::envelope_size`].
        max: usize,
    },
    /// The identity holds as many direct messages as allowed.
    #[error("{held} direct messages held for the identity, the maximum is {max}")]
    TooManyDirects {
        /// Held now.
        held: usize,
        /// [`crate::Limits::directs_per_identity`].
        max: usize,
    },
    /// The identity's direct messages would exceed the byte limit.
    #[error("{held} bytes of direct messages held for the identity, {size} more exceed {max}")]
    DirectBytesExceeded {
        /// Held now.
        held: usize,
        /// The new message's size.
        size: usize,
        /// [`crate::Limits::direct_bytes_per_identity`].
        max: usize,
    },
    /// A new identity (prekey stock or held mail) would exceed the limit.
    #[error("the mailbox holds material of {max} identities, the maximum")]
    TooManyIdentities {
        /// [`crate::Limits::identities`].
        max: usize,
    },
    /// The identity's one-time prekey stock would exceed the limit.
    #[error("{held} one-time prekeys stocked, {adding} more exceed {max}")]
    TooManyOneTimePrekeys {
        /// Stocked now (unexpired).
        held: usize,
        /// New keys in the call.
        adding: usize,
        /// [`crate::Limits::one_time_prekeys_per_identity`].
        max: usize,
    },
    /// A prekey failed verification: the signed prekey (`index` = `None`) or the one-time
    /// prekey at `index`. Nothing was stocked.
    #[error("prekey {index:?} refused: {error}")]
    Prekey {
        /// Which one-time prekey, or `None` for the signed prekey.
        index: Option<usize>,
        /// Why.
        error: PrekeyError,
    },
    /// A signed prekey older (lower ID) than the one stocked: a replayed upload.
    #[error("signed prekey {offered} is older than the stocked {stocked}")]
    StaleSignedPrekey {
        /// The offered ID.
        offered: u64,
        /// The stocked ID.
        stocked: u64,
    },
    /// A sync request violating its bounds or canonical order.
    #[error("invalid sync request: {0}")]
    Sync(#[from] SyncError),
    /// A stored row no longer decodes: the file was altered behind the mailbox.
    #[error("stored {0} does not decode")]
    BadRow(&'static str),
    /// Any other SQLite failure (disk full, I/O error).
    #[error("SQLite: {0}")]
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for MailboxError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        match e.sqlite_error_code() {
            Some(C::DatabaseBusy | C::DatabaseLocked) => MailboxError::Locked,
            Some(C::DatabaseCorrupt) => MailboxError::Corrupt(e.to_string()),
            Some(C::NotADatabase) => MailboxError::Foreign("not a SQLite database"),
            _ => MailboxError::Sqlite(e),
        }
    }
}
