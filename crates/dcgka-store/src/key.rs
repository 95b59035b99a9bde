//! The storage key: 32 bytes from the application, or derived from a passphrase with
//! Argon2id; and the keys the store derives from it.
//!
//! ```text
//! storage key K   = the application's 32 bytes, or Argon2id(passphrase, salt, m, t, p) (32 bytes)
//! PRK             = HKDF-SHA256-Extract(salt = store ID, IKM = K)
//! row key         = HKDF-Expand(PRK, "dcgka-store v1 row key", 32)
//! key check       = HKDF-Expand(PRK, "dcgka-store v1 key check", 32)
//! ```
//!
//! The key check is stored in the file: `open` compares it (in constant time) to tell a
//! wrong key from a corrupt row. It is an independent HKDF output, so it reveals nothing
//! of the row key. The store ID is random per store, so two stores under one storage key
//! never share a row key.

use std::fmt;

use hkdf::Hkdf;
use rand_core::CryptoRng;
use sha2::Sha256;
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use crate::consts::{
    DEFAULT_KDF_M_COST_KIB, DEFAULT_KDF_P_COST, DEFAULT_KDF_T_COST, KEY_LEN, MAX_KDF_M_COST_KIB, MAX_KDF_P_COST,
    MAX_KDF_T_COST,
};
use crate::error::StoreError;

/// The 32-byte key under which a store encrypts its rows. Zeroized on drop; its `Debug`
/// shows nothing of it.
#[derive(Clone)]
pub struct StorageKey(Zeroizing<[u8; KEY_LEN]>);

impl StorageKey {
    /// A key from the application's 32 bytes (from the platform's key store, say).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        StorageKey(Zeroizing::new(bytes))
    }

    /// A fresh random key.
    pub fn generate(rng: &mut impl CryptoRng) -> Self {
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        rng.fill_bytes(&mut k[..]);
        StorageKey(k)
    }

    /// A fresh random key from the operating system's generator.
    pub fn random() -> Result<Self, StoreError> {
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        getrandom::fill(&mut k[..]).map_err(|e| StoreError::Randomness(e.to_string()))?;
        Ok(StorageKey(k))
    }

    /// The key's bytes, for the application to keep (in a platform key store).
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for StorageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StorageKey(<redacted>)")
    }
}

/// Argon2id parameters for a store opened by passphrase. Stored in the file (they are not
/// secret), so a store opens with the parameters it was created with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl Default for KdfParams {
    /// RFC 9106 §4, the second recommended option: Argon2id with t = 3, p = 4 and 64 MiB.
    fn default() -> Self {
        KdfParams { m_cost_kib: DEFAULT_KDF_M_COST_KIB, t_cost: DEFAULT_KDF_T_COST, p_cost: DEFAULT_KDF_P_COST }
    }
}

impl KdfParams {
    /// Checks the parameters against Argon2's rules and this crate's upper bounds.
    pub fn check(&self) -> Result<(), StoreError> {
        let bad = |why: String| Err(StoreError::KdfParams(why));
        if self.m_cost_kib > MAX_KDF_M_COST_KIB {
            return bad(format!("memory {} KiB exceeds {MAX_KDF_M_COST_KIB} KiB", self.m_cost_kib));
        }
        if self.t_cost > MAX_KDF_T_COST {
            return bad(format!("{} passes exceed {MAX_KDF_T_COST}", self.t_cost));
        }
        if self.p_cost > MAX_KDF_P_COST {
            return bad(format!("{} lanes exceed {MAX_KDF_P_COST}", self.p_cost));
        }
        self.argon2_params().map(|_| ())
    }

    fn argon2_params(&self) -> Result<argon2::Params, StoreError> {
        argon2::Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(KEY_LEN))
            .map_err(|e| StoreError::KdfParams(e.to_string()))
    }

    /// Argon2id of `passphrase` under `salt`: the storage key.
    pub fn derive(&self, passphrase: &[u8], salt: &[u8]) -> Result<StorageKey, StoreError> {
        self.check()?;
        let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, self.argon2_params()?);
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        a.hash_password_into(passphrase, salt, &mut out[..]).map_err(|e| StoreError::KdfParams(e.to_string()))?;
        Ok(StorageKey(out))
    }
}

/// The keys a store derives from its storage key and store ID.
pub(crate) struct DerivedKeys {
    /// The ChaCha20-Poly1305 key of every row.
    pub(crate) row: Zeroizing<[u8; KEY_LEN]>,
    /// The value stored to recognise the key.
    pub(crate) check: [u8; KEY_LEN],
}

impl DerivedKeys {
    pub(crate) fn derive(key: &StorageKey, store_id: &[u8]) -> Result<Self, StoreError> {
        let hk = Hkdf::<Sha256>::new(Some(store_id), key.expose());
        let mut row = Zeroizing::new([0u8; KEY_LEN]);
        let mut check = [0u8; KEY_LEN];
        let failed = |_| StoreError::Unsupported("an HKDF output length");
        hk.expand(b"dcgka-store v1 row key", &mut row[..]).map_err(failed)?;
        hk.expand(b"dcgka-store v1 key check", &mut check).map_err(failed)?;
        Ok(DerivedKeys { row, check })
    }

    /// Whether `stored` is this key's check value (constant time).
    pub(crate) fn matches(&self, stored: &[u8]) -> bool {
        stored.len() == KEY_LEN && bool::from(self.check.ct_eq(stored))
    }
}
