//! The transport seam: what a device needs from a network, owned by this project so that
//! the same device code runs over the simulator (`dcgka-sim`) and over libp2p
//! (`dcgka-net`).
//!
//! A device produces [`Transmit`]s: envelopes for every member of a group and Welcomes
//! for one identity. A [`Transport`] takes each one and says whether it is out of the
//! device's hands ([`Handed::Sent`]: broadcast, or delivered) or whether its delivery is
//! still to be confirmed ([`Handed::Later`]: a Welcome whose target is offline, say). Only
//! what is [`Handed::Sent`] leaves the outbox ([`dispatch`]); the rest is offered again.
//!
//! Incoming traffic needs no seam: whatever the network delivers goes to
//! [`Device::receive`], [`Device::receive_welcome`] or, for sync (§7.7),
//! [`Device::answer_sync`] and [`Device::apply_sync`], which every transport calls the same
//! way.

use dcgka::IdentityKey;
use dcgka::ids::GroupId;

use crate::device::{Device, DeviceError};
use crate::outbox::{Destination, Transmit};
use crate::storage::Storage;

/// What became of one item handed to a [`Transport`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handed {
    /// Out of the device's hands: it leaves the outbox. (A broadcast counts as sent once
    /// it is published or queued for publication: peers that miss it get it by sync.)
    Sent,
    /// Not confirmed yet: it stays in the outbox, and the transport calls
    /// [`Device::mark_sent`] itself once it is delivered.
    Later,
}

/// A network, as a device sees it.
pub trait Transport {
    /// Why an item could not even be queued (it stays in the outbox).
    type Error: std::error::Error;

    /// Sends an envelope to every member of `gid`.
    fn broadcast(&mut self, gid: &GroupId, envelope: &[u8]) -> Result<Handed, Self::Error>;

    /// Sends `bytes` (a Welcome to `gid`) to the device holding `to`. `id` is the outbox
    /// item's number, for [`Device::mark_sent`] once the delivery is confirmed
    /// ([`Handed::Later`]).
    fn direct(&mut self, id: u64, to: &IdentityKey, gid: &GroupId, bytes: &[u8]) -> Result<Handed, Self::Error>;
}

/// What [`dispatch`] did with a list of outbox items.
#[derive(Debug)]
pub struct Dispatched<E> {
    /// Ids of the items that left the device's hands ([`Handed::Sent`]).
    pub sent: Vec<u64>,
    /// Items the transport could not queue, with why (they stay in the outbox).
    pub failed: Vec<(u64, E)>,
}

/// Hands `items` to `transport`, in order: the ids of those that left the device's hands
/// are for [`Device::mark_sent`]; the items the transport failed on are left for the next
/// attempt.
pub fn dispatch<T: Transport>(transport: &mut T, items: &[Transmit]) -> Dispatched<T::Error> {
    let mut sent = Vec::new();
    let mut failed = Vec::new();
    for t in items {
        let r = match t.to {
            Destination::Group => transport.broadcast(&t.gid, &t.bytes),
            Destination::Identity(ik) => transport.direct(t.id, &ik, &t.gid, &t.bytes),
        };
        match r {
            Ok(Handed::Sent) => sent.push(t.id),
            Ok(Handed::Later) => {}
            Err(e) => failed.push((t.id, e)),
        }
    }
    Dispatched { sent, failed }
}

impl<S: Storage> Device<S> {
    /// Offers everything in the outbox to `transport` ([`dispatch`]) and removes from it
    /// what left the device's hands (one commit).
    pub fn flush_outbox<T: Transport>(&mut self, transport: &mut T) -> Result<Dispatched<T::Error>, DeviceError> {
        let items = self.outbox().to_vec();
        let d = dispatch(transport, &items);
        if !d.sent.is_empty() {
            self.mark_sent(&d.sent)?;
        }
        Ok(d)
    }
}
