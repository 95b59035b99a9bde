//! Sealing a value to its place: ChaCha20-Poly1305 under the row key, a fresh random nonce
//! per write stored in front of the ciphertext, and associated data naming the table and
//! the row's key columns, so that a row moved to another place (another table, group,
//! member, sequence number or item number) no longer authenticates.
//!
//! Sealed value: `nonce (12) ‖ ciphertext ‖ tag (16)`.
//! Associated data: `"dcgka-store v1" ‖ 0x00 ‖ table ‖ 0x00 ‖ key columns`, each key column
//! length-prefixed (one byte) or a big-endian `u64`.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use zeroize::Zeroizing;

use crate::consts::{KEY_LEN, MAX_VALUE_BYTES, NONCE_LEN, SEAL_OVERHEAD};
use crate::error::StoreError;

/// Where a sealed value lives: its table and key columns.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Place<'a> {
    /// A state record: kind, group (empty for device-wide records), member (empty but for
    /// sender records).
    State { kind: u8, gid: &'a [u8], member: &'a [u8] },
    /// An envelope log entry.
    Log { gid: &'a [u8], sender: &'a [u8], seq: u64 },
    /// A kept Welcome.
    Welcome { gid: &'a [u8], target: &'a [u8] },
    /// An outbox item.
    Outbox { id: u64 },
    /// An inbox event.
    Inbox { id: u64 },
}

impl Place<'_> {
    /// The table's name, as in the schema and in errors.
    pub(crate) fn table(&self) -> &'static str {
        match self {
            Place::State { .. } => "state",
            Place::Log { .. } => "log",
            Place::Welcome { .. } => "welcomes",
            Place::Outbox { .. } => "outbox",
            Place::Inbox { .. } => "inbox",
        }
    }

    fn associated_data(&self) -> Vec<u8> {
        let mut ad = Vec::with_capacity(96);
        ad.extend_from_slice(b"dcgka-store v1\0");
        ad.extend_from_slice(self.table().as_bytes());
        ad.push(0);
        let mut bytes = |b: &[u8]| {
            // Key columns are at most 32 bytes (checked where they are decoded).
            ad.push(u8::try_from(b.len()).unwrap_or(u8::MAX));
            ad.extend_from_slice(b);
        };
        match *self {
            Place::State { kind, gid, member } => {
                bytes(&[kind]);
                bytes(gid);
                bytes(member);
            }
            Place::Log { gid, sender, seq } => {
                bytes(gid);
                bytes(sender);
                bytes(&seq.to_be_bytes());
            }
            Place::Welcome { gid, target } => {
                bytes(gid);
                bytes(target);
            }
            Place::Outbox { id } | Place::Inbox { id } => bytes(&id.to_be_bytes()),
        }
        ad
    }
}

/// The row key, as a cipher.
pub(crate) struct Sealer {
    cipher: ChaCha20Poly1305,
}

impl Sealer {
    pub(crate) fn new(row_key: &Zeroizing<[u8; KEY_LEN]>) -> Self {
        let key: &[u8; KEY_LEN] = row_key;
        Sealer { cipher: ChaCha20Poly1305::new(key.into()) }
    }

    /// Seals `plaintext` to `place` under a fresh random nonce.
    pub(crate) fn seal(&self, place: Place<'_>, plaintext: &[u8]) -> Result<Vec<u8>, StoreError> {
        if plaintext.len() + SEAL_OVERHEAD > MAX_VALUE_BYTES {
            return Err(StoreError::TooLarge { max: MAX_VALUE_BYTES });
        }
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| StoreError::Randomness(e.to_string()))?;
        let ad = place.associated_data();
        let ct = self
            .cipher
            .encrypt(&Nonce::from(nonce), Payload { msg: plaintext, aad: &ad })
            .map_err(|_| StoreError::TooLarge { max: MAX_VALUE_BYTES })?;
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Opens a value sealed to `place`; [`StoreError::Tampered`] if it does not
    /// authenticate there.
    pub(crate) fn open(&self, place: Place<'_>, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let tampered = StoreError::Tampered(place.table());
        if sealed.len() < SEAL_OVERHEAD {
            return Err(tampered);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let mut n = [0u8; NONCE_LEN];
        n.copy_from_slice(nonce);
        let ad = place.associated_data();
        self.cipher.decrypt(&Nonce::from(n), Payload { msg: ct, aad: &ad }).map(Zeroizing::new).map_err(|_| tampered)
    }
}
