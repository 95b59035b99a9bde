//! The storage seam: what a device commits after every call, as one unit, before it
//! returns anything for transmission.
//!
//! A [`Commit`] holds only what the call changed: state records that were written or
//! deleted (keyed by [`StateKey`], so a store updates rows rather than rewriting the
//! device), log entries appended, Welcomes kept or dropped, outbox items added or removed,
//! and the events for the application. A store applies it atomically (one SQLite
//! transaction, say) or fails; the device then refuses further calls until it is
//! reopened from the store ([`crate::Device::open`]), so nothing half-applied is ever
//! used or sent.
//!
//! [`MemoryStore`] is the in-memory implementation, used by tests and the simulator.

use std::collections::BTreeMap;
use std::convert::Infallible;

use dcgka::events::Event;
use dcgka::ids::{GroupId, MemberId};
use zeroize::Zeroizing;

use crate::log::{LogEntry, SentWelcome};
use crate::outbox::Transmit;

/// The key of one state record.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StateKey {
    /// The device's identity and prekey secrets ([`dcgka::prekeys::Identity::snapshot`]).
    Identity,
    /// The core of a group's live member instance: everything but the per-sender parts
    /// ([`dcgka::group::Group::records`]).
    Group(GroupId),
    /// One sender's part of a group's live instance: its ordering head, sender ratchet
    /// and message index. A received in-order message changes only this record.
    Sender(GroupId, MemberId),
    /// The device rules' record of a group: the instances it knows of and the Welcomes
    /// held for later (§6.6).
    Rules(GroupId),
    /// Envelopes that no group of this device recognises yet.
    Backlog,
}

/// Everything one device call changed, to be stored atomically.
#[derive(Debug, Default)]
pub struct Commit {
    /// State records written (`Some`) or deleted (`None`): only those whose bytes changed.
    /// Values are secret and zeroize on drop. Empty for a store that keeps no state
    /// ([`Storage::keeps_state`]).
    pub state: Vec<(StateKey, Option<Zeroizing<Vec<u8>>>)>,
    /// Envelopes appended to a group's log.
    pub log: Vec<(GroupId, LogEntry)>,
    /// Welcomes this device sent, kept to re-offer them.
    pub welcomes_kept: Vec<(GroupId, SentWelcome)>,
    /// Kept Welcomes dropped (their target joined or left), by target.
    pub welcomes_dropped: Vec<(GroupId, MemberId)>,
    /// New outbox items.
    pub outbox_added: Vec<Transmit>,
    /// Outbox items the transport confirmed as sent.
    pub outbox_removed: Vec<u64>,
    /// Events for the application, in order.
    pub events: Vec<(GroupId, Event)>,
}

impl Commit {
    /// Whether the commit changes nothing.
    pub fn is_empty(&self) -> bool {
        self.state.is_empty()
            && self.log.is_empty()
            && self.welcomes_kept.is_empty()
            && self.welcomes_dropped.is_empty()
            && self.outbox_added.is_empty()
            && self.outbox_removed.is_empty()
            && self.events.is_empty()
    }
}

/// Everything a store holds for one device, as read back by [`crate::Device::open`].
#[derive(Debug, Default, Clone)]
pub struct Stored {
    /// Every state record.
    pub state: BTreeMap<StateKey, Zeroizing<Vec<u8>>>,
    /// Every log entry, per group, in any order.
    pub log: Vec<(GroupId, LogEntry)>,
    /// Every kept Welcome.
    pub welcomes: Vec<(GroupId, SentWelcome)>,
    /// Every outbox item not yet confirmed as sent.
    pub outbox: Vec<Transmit>,
}

/// Where a device commits its changes.
pub trait Storage {
    /// Why a commit or load failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Applies `commit` atomically: all of it or nothing.
    fn commit(&mut self, commit: &Commit) -> Result<(), Self::Error>;

    /// Whether the store keeps state records. A store that does not (a simulation's) spares
    /// the device encoding them; [`Storage::load`] then cannot reopen the device.
    fn keeps_state(&self) -> bool {
        true
    }

    /// Reads back everything committed.
    fn load(&self) -> Result<Stored, Self::Error>;
}

/// The in-memory store.
#[derive(Clone, Debug)]
pub struct MemoryStore {
    stored: Stored,
    events: Vec<(GroupId, Event)>,
    commits: u64,
    state_bytes: u64,
    volatile: bool,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store that keeps everything committed ([`Storage::load`] returns it).
    pub fn new() -> Self {
        MemoryStore { stored: Stored::default(), events: Vec::new(), commits: 0, state_bytes: 0, volatile: false }
    }

    /// A store that only counts commits and keeps nothing: for simulations, where the
    /// devices' memory is the only copy and encoding every record would dominate the run.
    /// [`Storage::load`] returns an empty device.
    pub fn volatile() -> Self {
        MemoryStore { volatile: true, ..Self::new() }
    }

    /// Every event committed, in order (the application's inbox).
    pub fn events(&self) -> &[(GroupId, Event)] {
        &self.events
    }

    /// Number of commits applied.
    pub fn commits(&self) -> u64 {
        self.commits
    }

    /// Bytes of state records written over all commits.
    pub fn state_bytes_written(&self) -> u64 {
        self.state_bytes
    }
}

impl Storage for MemoryStore {
    type Error = Infallible;

    fn keeps_state(&self) -> bool {
        !self.volatile
    }

    fn commit(&mut self, c: &Commit) -> Result<(), Infallible> {
        self.commits += 1;
        if self.volatile {
            return Ok(());
        }
        let s = &mut self.stored;
        for (k, v) in &c.state {
            match v {
                Some(v) => {
                    self.state_bytes += v.len() as u64;
                    s.state.insert(*k, v.clone());
                }
                None => {
                    s.state.remove(k);
                }
            }
        }
        s.log.extend(c.log.iter().cloned());
        s.welcomes.extend(c.welcomes_kept.iter().cloned());
        s.welcomes.retain(|(g, w)| !c.welcomes_dropped.iter().any(|(dg, t)| dg == g && *t == w.target));
        s.outbox.extend(c.outbox_added.iter().cloned());
        s.outbox.retain(|t| !c.outbox_removed.contains(&t.id));
        self.events.extend(c.events.iter().cloned());
        Ok(())
    }

    fn load(&self) -> Result<Stored, Infallible> {
        Ok(self.stored.clone())
    }
}
