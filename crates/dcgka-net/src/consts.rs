//! The network layer's limits and timers, each in one place.

use std::time::Duration;

/// Bytes of one request or response frame of the project's request-response protocol
/// (sync pages, Welcomes, bundles). A larger frame is refused while it is read, before it
/// is buffered. A sync page is at most 4 MiB of items ([`dcgka_device::consts`]) and one
/// item may exceed that alone (a Welcome at n = 1024 is a few hundred KB): 16 MiB leaves
/// room for both.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Bytes of one gossip message (gossipsub's default is 64 KiB, less than an add or an
/// update at n = 1024). An envelope larger than this is not gossiped: it stays in the
/// sender's log and reaches the members by sync.
pub const MAX_GOSSIP_BYTES: usize = 4 * 1024 * 1024;

/// Group topics one node subscribes to (gossipsub's subscription filter; its default
/// count filter stops at 100).
pub const MAX_TOPICS: usize = 4096;

/// Invalid frames or envelopes a peer may send before this node disconnects it and
/// refuses it for good (this run).
pub const MAX_STRIKES: u32 = 8;

/// Characters of an invitation line (it is decoded only below this).
pub const MAX_INVITATION_CHARS: usize = 4096;

/// Addresses one invitation may carry.
pub const MAX_INVITATION_ADDRS: usize = 16;

/// How long a request may wait for its response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// How often a node syncs with every connected peer, redials the peers it was given and
/// offers its undelivered Welcomes again.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(5);

/// How long a group must be quiet before the node sends the acks it holds
/// (coalesced acks, spec §12).
pub const DEFAULT_ACK_DELAY: Duration = Duration::from_millis(150);

/// How long an idle connection is kept.
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// One-time prekeys a node hands out per peer and run, from its own stock: a peer asking
/// for more gets bundles with the signed prekey alone.
pub const MAX_BUNDLES_PER_PEER: u32 = 64;

/// Validity of the signed and one-time prekeys a node publishes (seconds).
pub const PREKEY_VALIDITY_SECS: u64 = 30 * 24 * 3600;

/// One-time prekeys a device keeps stocked at each mailbox.
pub const MAILBOX_PREKEY_STOCK: usize = 16;

/// Bundle requests a node keeps in flight ahead of first contacts with fellow members
/// (the rest wait for the next tick), so joining a large group does not flood the peers.
pub const MAX_PREFETCHES: usize = 64;
