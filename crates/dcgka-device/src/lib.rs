//! # dcgka-device
//!
//! A sans-IO device for [`dcgka`] groups: one [`Identity`](dcgka::prekeys::Identity) and
//! every group it is in, doing what a real device must around the protocol library:
//!
//! - **routing** incoming bytes to the group that recognises them ([`Device::receive`]),
//!   joining from creates and Welcomes;
//! - the **device rules** of §6.6 ([`rules`]): one live instance per group, held and
//!   stale Welcomes, stale creates;
//! - the **backlog** of envelopes that arrive before the device has joined their group;
//! - an **envelope log** per group ([`log`]): every envelope the device accepted or sent,
//!   and every Welcome it sent until its target has joined;
//! - **sync** with peers from that log ([`sync`], §7.7);
//! - a **transport seam** ([`transport`]): the simulator and libp2p are two
//!   implementations of one [`Transport`], so the same device code runs over both;
//! - an **outbox** of what must still be transmitted ([`outbox`]);
//! - events as `(GroupId, Event)`;
//! - a **storage seam** ([`storage`]): every call commits what it changed as one unit
//!   before anything is returned for transmission.
//!
//! No sockets, clocks or global RNG: randomness, time and the PKI come in through
//! [`Env`] on each call.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod consts;
mod device;
pub mod log;
pub mod outbox;
pub mod rules;
pub mod storage;
pub mod sync;
pub mod transport;

pub use device::{Device, DeviceError, Env, Outcome, Report};
pub use outbox::{Destination, Transmit};
pub use storage::{Commit, MemoryStore, StateKey, Storage, Stored};
pub use sync::{GroupHeads, SyncError, SyncRequest, SyncResponse};
pub use transport::{Handed, Transport};
