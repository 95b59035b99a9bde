//! The mailbox's format constants and limits, each in one place. Every limit is the
//! default of one field of [`crate::Limits`] and has its own error variant or a documented
//! eviction.

/// The schema version this code writes (`PRAGMA user_version`). A file with a higher
/// version is refused ([`crate::MailboxError::NewerVersion`]).
pub const SCHEMA_VERSION: u32 = 1;

/// `PRAGMA application_id` of a mailbox file: "DCMB". A SQLite file with another
/// application ID is refused ([`crate::MailboxError::Foreign`]).
pub const APPLICATION_ID: i32 = 0x4443_4D42;

/// Groups one mailbox serves ([`crate::MailboxError::TooManyGroups`]).
pub const MAX_MAILBOX_GROUPS: usize = 1_000;

/// Envelopes held per group. Beyond it the group's oldest envelopes are evicted (counted
/// in [`crate::GroupUsage::evicted`]); devices see the gap in the sequence numbers.
pub const MAX_GROUP_ENVELOPES: usize = 100_000;

/// Envelope bytes held per group (64 MiB). Beyond it the group's oldest envelopes are
/// evicted, as for [`MAX_GROUP_ENVELOPES`].
pub const MAX_GROUP_BYTES: usize = 64 * 1024 * 1024;

/// Largest single envelope taken (16 MiB, the library's own
/// [`dcgka::consts::MAX_MESSAGE_SIZE`]; an add at n = 1024 is a few hundred KB)
/// ([`crate::MailboxError::TooLarge`]).
pub const MAX_ENVELOPE_SIZE: usize = 16 * 1024 * 1024;

/// Direct messages (Welcomes) held per identity ([`crate::MailboxError::TooManyDirects`]).
pub const MAX_DIRECTS_PER_IDENTITY: usize = 32;

/// Bytes of direct messages held per identity (32 MiB)
/// ([`crate::MailboxError::DirectBytesExceeded`]). A single direct message is at most
/// [`MAX_ENVELOPE_SIZE`] ([`crate::MailboxError::TooLarge`]).
pub const MAX_DIRECT_BYTES_PER_IDENTITY: usize = 32 * 1024 * 1024;

/// One-time prekeys stocked per identity ([`crate::MailboxError::TooManyOneTimePrekeys`]).
pub const MAX_ONE_TIME_PREKEYS_PER_IDENTITY: usize = 1_000;

/// Identities with a prekey stock or held direct messages
/// ([`crate::MailboxError::TooManyIdentities`]).
pub const MAX_IDENTITIES: usize = 10_000;

/// Member IDs learned per group (from creates, first envelopes and sync requests), used
/// to tell whether a requester holds a member's first envelope. Beyond it no more are
/// learned: first envelopes of unknown members are then served again, which is harmless
/// (the device reports a duplicate).
pub const MAX_KNOWN_MEMBERS_PER_GROUP: usize = 65_536;
