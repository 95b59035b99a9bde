//! The device layer's limits, each with its own error or documented eviction.

/// Envelopes kept in the backlog (no group recognises them yet); the oldest is evicted
/// beyond it.
pub const MAX_BACKLOG_ENVELOPES: usize = 1024;

/// Bytes kept in the backlog; the oldest envelopes are evicted beyond it.
pub const MAX_BACKLOG_BYTES: usize = 16 * 1024 * 1024;

/// Groups one sync request may describe ([`crate::sync::SyncError::TooManyGroups`]).
pub const MAX_SYNC_GROUPS: usize = 1024;

/// Senders one group of a sync request may list ([`crate::sync::SyncError::TooManySenders`]).
pub const MAX_SYNC_SENDERS: usize = 4096;

/// Buffered candidates one group of a sync request may list
/// ([`crate::sync::SyncError::TooManyBuffered`]).
pub const MAX_SYNC_BUFFERED: usize = 4096;

/// Bytes of envelopes and Welcomes in one sync response; the rest follows in the next
/// exchange (`more` is set). At least one item is always sent
/// ([`crate::sync::SyncError::TooManyBytes`] for a response with several items over it).
pub const MAX_SYNC_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Envelopes and Welcomes in one sync response; the rest follows in the next exchange
/// ([`crate::sync::SyncError::TooManyItems`]).
pub const MAX_SYNC_RESPONSE_ITEMS: usize = 4096;
