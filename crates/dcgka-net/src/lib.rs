//! # dcgka-net
//!
//! Networked [`dcgka`] devices over rust-libp2p: one node per device, its state in its
//! SQLite store (`dcgka-store`), talking to other nodes over TCP with Noise and yamux.
//!
//! - **Broadcast**: one gossipsub topic per group, named by a hash of the group ID
//!   ([`behaviour::topic`]), so relays see nothing readable; message IDs are content
//!   hashes. A node checks an envelope by processing it (it decodes, its sender is known,
//!   its signature verifies where the node can check it) before gossipsub forwards it;
//!   peers that send garbage are scored down and, after [`consts::MAX_STRIKES`], refused.
//! - **Direct messages** (Welcomes) go over the project's request-response protocol
//!   ([`wire`]); one addressed to an offline device stays in the sender's outbox, and in
//!   any mailbox, until delivered.
//! - **Sync** (§7.7): on every new connection, when a received envelope has unmet
//!   dependencies, and periodically, a node sends what it holds and applies the answer,
//!   page by page. Every member serves its groups' envelope logs.
//! - **Contact exchange**: an [`Invitation`] is one line naming a device's identity key,
//!   its network identity and addresses; a prekey bundle is fetched from the device, or
//!   from a mailbox holding its stock.
//! - **Coalesced acks** on a timer: a node sends the acks a group holds once the group
//!   has been quiet for [`NodeConfig::ack_delay`].
//!
//! The protocol and device crates stay sans-IO: the device sees the network through the
//! device layer's transport seam ([`dcgka_device::Transport`]), which the simulator
//! implements too.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod behaviour;
pub mod consts;
pub mod datadir;
pub mod invite;
mod mailbox_node;
mod node;
pub mod traffic;
pub mod wire;

pub use datadir::DataDir;
pub use invite::{Invitation, InvitationError, short_name};
pub use libp2p::{Multiaddr, PeerId};
pub use mailbox_node::{MailboxHandle, spawn_mailbox};
pub use node::{Member, NodeConfig, NodeEvent, NodeHandle, spawn};

/// Why a node or one of its commands failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The device refused the call.
    #[error(transparent)]
    Device(#[from] dcgka_device::DeviceError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] dcgka_store::StoreError),
    /// The mailbox's file failed.
    #[error(transparent)]
    Mailbox(#[from] dcgka_mailbox::MailboxError),
    /// The data directory's files.
    #[error("data directory: {0}")]
    DataDir(String),
    /// The network engine failed to start.
    #[error("network engine: {0}")]
    Engine(String),
    /// An address could not be listened on.
    #[error("cannot listen on {0}")]
    Listen(String),
    /// An address could not be dialled.
    #[error("cannot dial {0}")]
    Dial(String),
    /// An invitation could not be read.
    #[error(transparent)]
    Invitation(#[from] InvitationError),
    /// No prekey bundle of the device could be fetched: neither it nor a mailbox of its
    /// answered with a valid one.
    #[error("no prekey bundle of {0} is reachable: it is offline and no mailbox holds its prekeys")]
    NoBundle(String),
    /// The node runs as many groups as it may ([`NodeConfig::max_groups`], at most
    /// [`consts::MAX_TOPICS`]): it creates no other.
    #[error("this node runs {0} groups, its maximum")]
    TooManyGroups(usize),
    /// No group of this device has this ID (or prefix).
    #[error("no group {0}")]
    UnknownGroup(String),
    /// Several groups start with this prefix.
    #[error("several groups start with {0}")]
    AmbiguousGroup(String),
    /// No member has this name.
    #[error("no member {0}")]
    UnknownMember(String),
    /// Several members have this name.
    #[error("several members are named {0}")]
    AmbiguousMember(String),
    /// The node has stopped.
    #[error("the node has stopped")]
    Stopped,
}
