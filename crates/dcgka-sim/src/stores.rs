//! Where the simulated devices keep their state: volatile memory by default, or a
//! persistent store a test or the demo plugs in ([`crate::Sim::use_stores`]), which the
//! simulator can reopen before every device call ([`crate::Sim::reopen_stores`]) so that
//! every call runs on a device read back from its store.

use std::fmt;
use std::sync::{Mutex, PoisonError};

use dcgka_device::{Commit, MemoryStore, Storage, Stored};

/// An error of a plugged store.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A store that keeps a device across restarts (a database file, say).
pub trait PersistentStore: Send {
    /// [`Storage::commit`].
    fn commit(&mut self, commit: &Commit) -> Result<(), BoxError>;
    /// [`Storage::load`].
    fn load(&self) -> Result<Stored, BoxError>;
    /// Closes the store and opens it again from where it keeps its data.
    fn reopen(self: Box<Self>) -> Result<Box<dyn PersistentStore>, BoxError>;
}

/// The store under a simulated device.
pub struct SimStore(Inner);

enum Inner {
    Memory(MemoryStore),
    /// Behind a lock so that [`crate::Sim`] can take the store out of a device it is about
    /// to reopen (the device only lends its store by reference).
    Persistent(Mutex<Option<Box<dyn PersistentStore>>>),
}

impl SimStore {
    /// Volatile memory that keeps nothing ([`MemoryStore::volatile`]): the simulator's
    /// default, where the devices' memory is the only copy.
    pub fn volatile() -> Self {
        SimStore(Inner::Memory(MemoryStore::volatile()))
    }

    /// A persistent store.
    pub fn persistent(store: Box<dyn PersistentStore>) -> Self {
        SimStore(Inner::Persistent(Mutex::new(Some(store))))
    }

    /// Whether this is a persistent store.
    pub fn is_persistent(&self) -> bool {
        matches!(self.0, Inner::Persistent(_))
    }

    /// Takes the persistent store out (the device keeping this one can no longer commit).
    pub(crate) fn take(&self) -> Option<Box<dyn PersistentStore>> {
        match &self.0 {
            Inner::Memory(_) => None,
            Inner::Persistent(m) => m.lock().unwrap_or_else(PoisonError::into_inner).take(),
        }
    }
}

/// A copy of a device on a persistent store (the security game's compromise) keeps its
/// state in volatile memory: it must never write to the original's store.
impl Clone for SimStore {
    fn clone(&self) -> Self {
        match &self.0 {
            Inner::Memory(m) => SimStore(Inner::Memory(m.clone())),
            Inner::Persistent(_) => SimStore::volatile(),
        }
    }
}

impl fmt::Debug for SimStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Inner::Memory(m) => f.debug_tuple("SimStore").field(m).finish(),
            Inner::Persistent(_) => f.write_str("SimStore(persistent)"),
        }
    }
}

/// Why a plugged store failed.
#[derive(Debug)]
pub struct SimStoreError(pub BoxError);

impl fmt::Display for SimStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SimStoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

fn closed() -> SimStoreError {
    SimStoreError("the store was taken out of this device to reopen it".into())
}

impl Storage for SimStore {
    type Error = SimStoreError;

    fn commit(&mut self, commit: &Commit) -> Result<(), SimStoreError> {
        match &mut self.0 {
            Inner::Memory(m) => match m.commit(commit) {
                Ok(()) => Ok(()),
            },
            Inner::Persistent(p) => match p.get_mut().unwrap_or_else(PoisonError::into_inner) {
                Some(s) => s.commit(commit).map_err(SimStoreError),
                None => Err(closed()),
            },
        }
    }

    fn keeps_state(&self) -> bool {
        match &self.0 {
            Inner::Memory(m) => m.keeps_state(),
            Inner::Persistent(_) => true,
        }
    }

    fn load(&self) -> Result<Stored, SimStoreError> {
        match &self.0 {
            Inner::Memory(m) => match m.load() {
                Ok(s) => Ok(s),
            },
            Inner::Persistent(p) => match &*p.lock().unwrap_or_else(PoisonError::into_inner) {
                Some(s) => s.load().map_err(SimStoreError),
                None => Err(closed()),
            },
        }
    }
}
