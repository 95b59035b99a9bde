//! A node's data directory: the files one device keeps.
//!
//! | file | what | secret |
//! |---|---|---|
//! | `device.sqlite` | the device store (`dcgka-store`): identity, groups, logs, outbox, inbox | encrypted under the storage key |
//! | `storage.key` | the 32-byte storage key | yes: mode 0600 (an application would keep it in the platform's key store) |
//! | `network.key` | the node's libp2p key (its peer ID), separate from the group identity | yes: mode 0600 |
//! | `identity.pub` | the device's group identity key, in hex | no |
//! | `addresses` | the addresses the node listened on last, one per line | no |
//! | `mailbox.sqlite` | a mailbox node's mail (`dcgka-mailbox`): ciphertext and public prekeys only | no |
//!
//! `identity.pub` and `addresses` let `dcgka invite` print an invitation while the node
//! runs (the store is locked by the running node).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use dcgka::IdentityKey;
use dcgka::group::GroupConfig;
use dcgka::prekeys::Identity;
use dcgka_device::Device;
use dcgka_store::{StorageKey, Store};
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};

use crate::NetError;
use crate::invite::{Invitation, hex};
use crate::node::os_rng;

/// The device store's file.
pub const DEVICE_FILE: &str = "device.sqlite";
/// The storage key's file.
pub const STORAGE_KEY_FILE: &str = "storage.key";
/// The network key's file.
pub const NETWORK_KEY_FILE: &str = "network.key";
/// The public identity key's file.
pub const IDENTITY_FILE: &str = "identity.pub";
/// The last listening addresses' file.
pub const ADDRESSES_FILE: &str = "addresses";
/// A mailbox node's file.
pub const MAILBOX_FILE: &str = "mailbox.sqlite";

fn io_err(path: &Path, e: std::io::Error) -> NetError {
    NetError::DataDir(format!("{}: {e}", path.display()))
}

/// Writes a secret file readable by its owner only, atomically (a temporary file renamed).
fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), NetError> {
    let tmp = path.with_extension("tmp");
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(|e| io_err(&tmp, e))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(|e| io_err(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}

fn read_or_make(path: &Path, make: impl FnOnce() -> Result<Vec<u8>, NetError>) -> Result<Vec<u8>, NetError> {
    match fs::read(path) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let b = make()?;
            write_secret(path, &b)?;
            Ok(b)
        }
        Err(e) => Err(io_err(path, e)),
    }
}

/// One node's directory.
#[derive(Clone, Debug)]
pub struct DataDir {
    path: PathBuf,
}

impl DataDir {
    /// The directory at `path` (created when missing).
    pub fn new(path: impl AsRef<Path>) -> Result<DataDir, NetError> {
        let path = path.as_ref().to_path_buf();
        fs::create_dir_all(&path).map_err(|e| io_err(&path, e))?;
        Ok(DataDir { path })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The storage key (made on first use).
    pub fn storage_key(&self) -> Result<StorageKey, NetError> {
        let path = self.path.join(STORAGE_KEY_FILE);
        let bytes = read_or_make(&path, || {
            let k = StorageKey::random().map_err(|e| NetError::DataDir(e.to_string()))?;
            Ok(k.expose().to_vec())
        })?;
        let k: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| NetError::DataDir(format!("{} is not a 32-byte key", path.display())))?;
        Ok(StorageKey::from_bytes(k))
    }

    /// The node's network key (made on first use).
    pub fn network_key(&self) -> Result<Keypair, NetError> {
        let path = self.path.join(NETWORK_KEY_FILE);
        let bytes = read_or_make(&path, || {
            Keypair::generate_ed25519().to_protobuf_encoding().map_err(|e| NetError::DataDir(e.to_string()))
        })?;
        Keypair::from_protobuf_encoding(&bytes)
            .map_err(|e| NetError::DataDir(format!("{}: not a network key: {e}", path.display())))
    }

    /// The device: opened from its store, or made with a fresh identity on first use.
    /// Groups run with coalesced acks (a node sends them after a quiet period, §12).
    pub fn device(&self) -> Result<Device<Store>, NetError> {
        let key = self.storage_key()?;
        let path = self.path.join(DEVICE_FILE);
        let config = GroupConfig { coalesce_acks: true, ..GroupConfig::default() };
        let device = if path.exists() {
            Device::open(config, Store::open(&path, &key)?)?
        } else {
            let mut rng = os_rng()?;
            Device::new(Identity::generate(&mut rng), config, Store::create(&path, &key)?)?
        };
        let ik = device.public_key();
        write_public(&self.path.join(IDENTITY_FILE), &hex(&ik.0))?;
        Ok(device)
    }

    /// A mailbox node's mail: opened, or made on first use.
    pub fn mailbox(&self) -> Result<dcgka_mailbox::Mailbox, NetError> {
        Ok(dcgka_mailbox::Mailbox::open(self.path.join(MAILBOX_FILE))?)
    }

    /// Records the addresses the node listens on (for `dcgka invite`).
    pub fn record_addresses(&self, addrs: &[Multiaddr]) -> Result<(), NetError> {
        let text: String = addrs.iter().map(|a| format!("{a}\n")).collect();
        write_public(&self.path.join(ADDRESSES_FILE), &text)
    }

    /// The invitation of the device in this directory, from its public files (works while
    /// its node runs).
    pub fn invitation(&self) -> Result<Invitation, NetError> {
        let path = self.path.join(IDENTITY_FILE);
        let text = fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
        let identity = parse_hex_key(text.trim())
            .ok_or_else(|| NetError::DataDir(format!("{}: not an identity key", path.display())))?;
        let peer = PeerId::from_public_key(&self.network_key()?.public());
        let path = self.path.join(ADDRESSES_FILE);
        let addrs = match fs::read_to_string(&path) {
            Ok(t) => t.lines().filter_map(|l| l.trim().parse().ok()).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err(&path, e)),
        };
        Ok(Invitation { identity, peer, addrs, mailboxes: Vec::new() })
    }
}

fn write_public(path: &Path, text: &str) -> Result<(), NetError> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text).map_err(|e| io_err(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}

/// A 32-byte key in hex.
pub(crate) fn parse_hex_key(s: &str) -> Option<IdentityKey> {
    if s.len() != 64 {
        return None;
    }
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(dcgka::VerifyingKey(k))
}
