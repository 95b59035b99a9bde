//! Every limit of the protocol, in one place.
//!
//! Each constant is documented with the spec section that introduces it. Exceeding a
//! limit is always its own error variant carrying the numbers involved, never a panic.

/// Format version (high nibble) and cipher suite (low nibble) of every envelope (§7.1).
pub const WIRE_VERSION: u8 = 0x11;

/// The one cipher suite this crate implements, `DCGKA-v1` (§2.1).
pub const SUITE_ID: u16 = 1;

/// Largest encoded object (envelope, Welcome, bundle) the decoder accepts, in bytes.
///
/// The decoder never allocates more than the input it was given, and refuses inputs
/// longer than this before looking at them.
pub const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// Largest number of items in any decoded list (members, ciphertexts, forwards).
pub const MAX_LIST_LEN: usize = 65_536;

/// Largest application plaintext accepted by the sender ratchet and the group API.
pub const MAX_PLAINTEXT_SIZE: usize = 1024 * 1024;

/// Largest group size at creation (V1, §5.6, the creator included:
/// [`crate::events::RejectReason::TooManyMembers`]), and the most member instances the
/// history log of a Welcome may introduce (the removed ones it still knows included, §7.4): a
/// newcomer refuses a log that introduces more ([`crate::group::JoinError::TooManyMembers`])
/// before replaying it, and an adder whose history knows more refuses to add. Compaction
/// (§6.7) forgets removed members once every member that may still send has seen their
/// removal, so the bound is on members and removals in flight, not on the group's age.
pub const MAX_GROUP: usize = 1024;

/// Most operations in the history log of a Welcome (§7.4). A newcomer refuses a longer log
/// ([`crate::group::JoinError::HistoryTooLong`]) before replaying it, and an adder whose
/// history is longer refuses to add. The log holds the compact base and the operations not
/// yet folded (§6.7), so it grows with the group and what is in flight, not with its age. Replaying costs time and memory in the log's length;
/// the decoder's list bound ([`MAX_LIST_LEN`]) would refuse a log only slightly longer.
pub const MAX_HISTORY_LEN: usize = 50_000;

/// How far ahead of the next expected message index a sender ratchet will jump (§8).
pub const MAX_SKIP: u32 = 1000;

/// How many skipped message keys a sender ratchet keeps per sender (§8). The oldest is
/// evicted first.
pub const MAX_SKIPPED: usize = 100;

/// Tolerated clock skew when checking a signed prekey's `not_before` (§3), in seconds.
pub const PREKEY_SKEW: u64 = 60 * 60;

/// A signed prekey must stay valid at least this long to be used by a sender (§3), in seconds.
pub const PREKEY_MIN_REMAINING: u64 = 7 * 24 * 60 * 60;

/// How long the owner keeps a signed prekey secret after its `not_after` (§3), in seconds.
pub const PREKEY_GRACE: u64 = 30 * 24 * 60 * 60;

/// Recommended validity of a freshly generated signed prekey (§3), in seconds.
pub const PREKEY_DEFAULT_VALIDITY: u64 = 90 * 24 * 60 * 60;

/// Default retention period (spec §5.7), in seconds: how long a member keeps the member
/// secrets awaiting a slow member's acknowledgment, and what it keeps of a removed member
/// that has not processed its removal, before dropping them
/// ([`crate::group::GroupConfig::retention_secs`]).
pub const DEFAULT_RETENTION_SECS: u64 = 30 * 24 * 60 * 60;

/// Most one-time prekeys a [`crate::prekeys::KeyStore`] holds at once.
pub const MAX_ONE_TIME_PREKEYS: usize = 10_000;

/// How far beyond a known sender's high-water mark an envelope may be buffered (§7.3).
pub const MAX_AHEAD: u64 = 10_000;

/// Buffered envelopes per sender (§7.3).
pub const MAX_BUFFERED_PER_SENDER: usize = 1_000;

/// Buffered envelopes per group (§7.3).
pub const MAX_BUFFERED_PER_GROUP: usize = 10_000;

/// Buffered bytes per group (§7.3).
pub const MAX_BUFFERED_BYTES: usize = 16 * 1024 * 1024;

/// Buffered envelopes from senders this group does not know yet (§7.3).
pub const MAX_BUFFERED_UNKNOWN: usize = 256;

/// Distinct candidate envelopes kept for one (sender, sequence number) slot before it is
/// ready: a forgery cannot crowd out the genuine envelope, up to this many forgeries.
pub const MAX_CANDIDATES_PER_SLOT: usize = 4;

/// Unverified envelopes buffered per claimed sender (§7.3). An envelope beyond its sender's
/// next one cannot be verified yet, so it is buffered on its word only: this budget, not
/// the group's, is what an outsider can fill, and verified data evicts it when it needs
/// room.
pub const MAX_UNVERIFIED_PER_SENDER: usize = 64;

/// Unverified bytes buffered per claimed sender (§7.3): room for one application message of
/// [`MAX_PLAINTEXT_SIZE`] and its overhead.
pub const MAX_UNVERIFIED_BYTES_PER_SENDER: usize = 2 * 1024 * 1024;

/// How far beyond its sender's high-water mark an unverified envelope counts as near (§7.3);
/// one further ahead counts as far ahead and gets the far budgets.
pub const UNVERIFIED_NEAR: u64 = 64;

/// Unverified envelopes buffered per claimed sender further than [`UNVERIFIED_NEAR`] ahead
/// of its high-water mark (§7.3).
pub const MAX_UNVERIFIED_FAR_PER_SENDER: usize = 4;

/// Unverified bytes buffered per claimed sender further than [`UNVERIFIED_NEAR`] ahead of
/// its high-water mark (§7.3).
pub const MAX_UNVERIFIED_FAR_BYTES_PER_SENDER: usize = 64 * 1024;

/// Bytes of first envelopes buffered (senders not known yet, §7.3); the oldest-looking entry
/// (the one furthest from becoming ready) is evicted to make room.
pub const MAX_BUFFERED_UNKNOWN_BYTES: usize = 1024 * 1024;

/// Short hashes kept per sender of its latest processed acks and application messages, so
/// that a second authentic version of one is reported as equivocation (§7.6).
pub const MAX_RECENT_HASHES: usize = 16;

/// Senders whose current signing key is kept decompressed, for the senders verified most
/// recently (§7.3). A decompressed Ed25519 key takes 192 bytes against 32 compressed, so the
/// cache is bounded (to about 29 KiB) rather than one per member; it holds every sender of
/// a group of up to 128 members, and in a larger group a sender outside it costs one point
/// decompression (about a tenth of a verification) per verified envelope. It is not part of
/// a snapshot, and a restored group starts with it empty.
pub const MAX_PREPARED_KEYS: usize = 128;

/// Most items in one batch envelope (coalesced acknowledgments, §12). A member holding
/// this many items minus one sends them at once, so a batch never exceeds it; a longer
/// one is [`crate::codec::DecodeError::ListTooLong`] with this `max`.
pub const MAX_BATCH_ITEMS: usize = 64;

/// Largest state snapshot [`crate::group::Group::restore`] accepts, in bytes. A snapshot
/// holds the membership history, which grows with every membership operation, and up to
/// [`MAX_BUFFERED_BYTES`] of buffered envelopes; this bound is far above both for any
/// realistic group.
pub const MAX_SNAPSHOT_SIZE: usize = 1 << 30;
