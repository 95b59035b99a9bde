//! The store's format constants and limits, each in one place.

/// The schema version this code writes (`PRAGMA user_version`). A file with a higher
/// version is refused ([`crate::StoreError::NewerVersion`]); a lower one would be migrated
/// (there is none yet: version 1 is the first).
pub const SCHEMA_VERSION: u32 = 1;

/// `PRAGMA application_id` of a dcgka store: "DCKS". A SQLite file with another
/// application ID is not a dcgka store ([`crate::StoreError::Foreign`]).
pub const APPLICATION_ID: i32 = 0x4443_4B53;

/// The value of the `format` row of the `meta` table.
pub const FORMAT_NAME: &[u8] = b"dcgka-store";

/// Length of the random store ID, which the row key derivation takes as its salt, so two
/// stores under one storage key never share a row key.
pub const STORE_ID_LEN: usize = 16;

/// Length of the Argon2id salt of a store opened by passphrase.
pub const SALT_LEN: usize = 16;

/// Length of the storage key and of the keys derived from it.
pub const KEY_LEN: usize = 32;

/// ChaCha20-Poly1305 nonce length; a fresh random nonce is stored with every sealed value.
pub const NONCE_LEN: usize = 12;

/// ChaCha20-Poly1305 tag length.
pub const TAG_LEN: usize = 16;

/// Bytes a sealed value adds to its plaintext: the nonce and the tag.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// Default Argon2id memory cost in KiB (64 MiB): the second recommended option of
/// RFC 9106 §4 (t = 3, p = 4, m = 64 MiB).
pub const DEFAULT_KDF_M_COST_KIB: u32 = 64 * 1024;

/// Default Argon2id passes (RFC 9106 §4, second recommended option).
pub const DEFAULT_KDF_T_COST: u32 = 3;

/// Default Argon2id lanes (RFC 9106 §4, second recommended option).
pub const DEFAULT_KDF_P_COST: u32 = 4;

/// Largest Argon2id memory cost a store may name (1 GiB): a file cannot make `open`
/// allocate more than this ([`crate::StoreError::KdfParams`]).
pub const MAX_KDF_M_COST_KIB: u32 = 1024 * 1024;

/// Largest Argon2id pass count a store may name.
pub const MAX_KDF_T_COST: u32 = 64;

/// Largest Argon2id lane count a store may name.
pub const MAX_KDF_P_COST: u32 = 64;

/// Largest value (sealed row) the store writes or reads: SQLite's length limit on the
/// connection, so an oversized value in a file is refused before it is allocated. The
/// largest record a device writes is its backlog (at most
/// [`dcgka_device::consts::MAX_BACKLOG_BYTES`], 16 MiB, plus framing).
pub const MAX_VALUE_BYTES: usize = 32 * 1024 * 1024;

/// Length of the SQLite file header, read before SQLite opens a file.
pub const SQLITE_HEADER_LEN: usize = 100;

/// The first 16 bytes of every SQLite database file.
pub const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Distinct reason texts (the library's `&'static str` reasons inside stored events) kept
/// for the life of the process when events are read back. Beyond it, a reason reads as
/// [`UNKEPT_REASON`].
pub const MAX_INTERNED_REASONS: usize = 1024;

/// Longest reason text a stored event may hold.
pub const MAX_REASON_LEN: usize = 1024;

/// What a stored reason text reads as once [`MAX_INTERNED_REASONS`] are kept.
pub const UNKEPT_REASON: &str = "(reason text not kept)";
