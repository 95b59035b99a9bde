//! The device rules of §6.6, for one group at one device.
//!
//! - **One live instance per group.** A Welcome that arrives while the device holds an
//!   active instance of that group is held, and used only once that instance has ended
//!   (removed or corrupted), in the order received.
//! - **Stale Welcomes.** A Welcome is stale, and discarded for good, if the add it answers
//!   is in the history of any instance of this device, including a history received in a
//!   Welcome: the instance it would create is one this device already knows of (as itself,
//!   or as another member, added and perhaps removed since).
//! - **Stale creates.** A create is stale once the device holds or held an instance of
//!   that group.

use std::collections::BTreeSet;

use dcgka::codec::{DecodeError, Reader, Writer};
use dcgka::group::{Group, Status};
use dcgka::ids::MemberId;

use crate::log::EnvelopeLog;

/// Everything the device keeps about one group (internal).
#[derive(Clone, Debug, Default)]
pub struct Slot {
    /// The live instance (active; a terminated one is retired at the end of each call).
    pub(crate) live: Option<Group>,
    /// Welcomes held while an instance is live, in order of arrival.
    pub(crate) pending: Vec<Vec<u8>>,
    /// Every instance any instance of this device knew of, its own included.
    pub(crate) known: BTreeSet<MemberId>,
    /// The envelope log.
    pub(crate) log: EnvelopeLog,
}

impl Slot {
    /// The live instance, if active.
    pub(crate) fn active(&self) -> Option<&Group> {
        self.live.as_ref().filter(|g| *g.status() == Status::Active)
    }

    /// Records every instance the live instance knows of (whatever its status: a
    /// terminated instance still knows which adds it processed).
    pub(crate) fn learn_instances(&mut self) {
        if let Some(g) = &self.live {
            self.known.insert(g.me());
            self.known.extend(g.ever_added());
        }
    }

    /// §6.6: whether a create of this group is stale (this device holds or held an
    /// instance of it).
    pub(crate) fn create_is_stale(&self) -> bool {
        self.live.is_some() || !self.known.is_empty()
    }

    /// §6.6: whether a Welcome making this device `target` is stale.
    pub(crate) fn welcome_is_stale(&self, target: &MemberId) -> bool {
        self.known.contains(target)
    }

    /// The rules record: `known:list<[32]> ‖ pending:list<opaque>`.
    pub(crate) fn encode_rules(&self) -> Vec<u8> {
        let mut w = Writer::new();
        let known: Vec<&MemberId> = self.known.iter().collect();
        w.list(&known, |w, m| w.raw(m.as_bytes()));
        w.list(&self.pending, |w, p| w.opaque(p));
        w.into_bytes()
    }

    pub(crate) fn decode_rules(&mut self, bytes: &[u8]) -> Result<(), DecodeError> {
        let mut r = Reader::new(bytes)?;
        let known = r.list(32, |r| Ok(MemberId(r.array()?)))?;
        dcgka::codec::check_sorted_set(&known)?;
        self.known = known.into_iter().collect();
        self.pending = r.list(1, |r| Ok(r.opaque()?.to_vec()))?;
        r.finish()
    }
}
