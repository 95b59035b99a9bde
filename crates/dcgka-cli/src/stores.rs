//! Devices on SQLite stores for `dcgka demo --data-dir` and `dcgka bench --store`: the
//! simulator's persistent-store adapter, the device files and the demo's storage key.

use std::path::{Path, PathBuf};

use dcgka_device::{Commit, Storage, Stored};
use dcgka_sim::stores::{BoxError, PersistentStore};
use dcgka_store::{StorageKey, Store};

/// A device's store, plugged into the simulator.
pub(crate) struct DiskStore(pub(crate) Store);

impl PersistentStore for DiskStore {
    fn commit(&mut self, commit: &Commit) -> Result<(), BoxError> {
        Ok(self.0.commit(commit)?)
    }

    fn load(&self) -> Result<Stored, BoxError> {
        Ok(self.0.load()?)
    }

    fn reopen(self: Box<Self>) -> Result<Box<dyn PersistentStore>, BoxError> {
        Ok(Box::new(DiskStore(self.0.reopen()?)))
    }
}

/// The file of the device named `name` in `dir`.
pub(crate) fn device_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.sqlite"))
}

/// The demo's storage key file in `dir`. An application keeps its key in the platform's
/// key store, or derives it from a passphrase; the demo keeps it beside the stores so
/// that a second run can open them.
pub(crate) fn key_path(dir: &Path) -> PathBuf {
    dir.join("demo.key")
}

/// The demo's storage key: read from `dir`, or made and written there.
pub(crate) fn demo_key(dir: &Path) -> Result<StorageKey, String> {
    let path = key_path(dir);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let k: [u8; 32] =
                bytes.try_into().map_err(|_| format!("{} is not a 32-byte storage key", path.display()))?;
            Ok(StorageKey::from_bytes(k))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let k = StorageKey::random().map_err(|e| e.to_string())?;
            std::fs::write(&path, k.expose()).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(k)
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// `1234567` as `1,234,567`.
pub(crate) fn thousands(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
