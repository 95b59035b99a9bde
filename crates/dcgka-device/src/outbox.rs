//! The outbox: what the device produced and the transport has not confirmed as sent.

use dcgka::IdentityKey;
use dcgka::ids::GroupId;

/// Where a [`Transmit`] goes.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// Every member of the group (an envelope).
    Group,
    /// One device, by identity key (a Welcome).
    Identity(IdentityKey),
}

/// Bytes to transmit, kept in the outbox until [`crate::Device::mark_sent`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The outbox item's number.
    pub id: u64,
    /// The group.
    pub gid: GroupId,
    /// Where to.
    pub to: Destination,
    /// What.
    pub bytes: Vec<u8>,
}
