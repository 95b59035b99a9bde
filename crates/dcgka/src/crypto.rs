//! Thin wrappers around the primitives of cipher suite `DCGKA-v1` (§2.1), behind the
//! project's own types, and every KDF label of §2.3 in one place.
//!
//! - Ed25519 (`ed25519-dalek`), strict verification;
//! - X25519 (`x25519-dalek`) and HPKE base mode DHKEM(X25519, HKDF-SHA256) +
//!   ChaCha20-Poly1305 (`hpke`);
//! - HKDF-SHA256 (`hkdf`), SHA-256 (`sha2`), ChaCha20-Poly1305 (`chacha20poly1305`).
//!
//! Secret types zeroize on drop and redact themselves in `Debug`.

use core::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use ed25519_dalek::Signer as _;
use hkdf::Hkdf;
use hpke::{Deserializable as _, OpModeR, OpModeS, Serializable as _};
use rand_core::CryptoRng;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

type HpkeKem = hpke::kem::X25519HkdfSha256;
type HpkeKdf = hpke::kdf::HkdfSha256;
type HpkeAead = hpke::aead::ChaCha20Poly1305;

/// Length of every symmetric secret, public key and hash in this suite.
pub const KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Length of an AEAD authentication tag.
pub const TAG_LEN: usize = 16;

/// Every label of §2.3. Each is combined with a fixed-length context by [`info`].
pub mod labels {
    /// Prefix of every `info` string.
    pub const PREFIX: &str = "DCGKA-v1 ";
    /// Member ID derivation (§2.2).
    pub const MEMBER_ID: &str = "member-id";
    /// `MS(seed, S, q, ID)`: member secret of `ID` from the seed of `(S, q)`.
    pub const MEMBER_SECRET: &str = "member-secret";
    /// Outer-ratchet input tag for a member secret.
    pub const INPUT_MEMBER: &str = "input-member";
    /// Outer-ratchet input constant `WELCOME`.
    pub const INPUT_WELCOME: &str = "input-welcome";
    /// Outer-ratchet input constant `ADD`.
    pub const INPUT_ADD: &str = "input-add";
    /// Outer ratchet: update-secret output.
    pub const RATCHET_UPDATE: &str = "ratchet-update";
    /// Outer ratchet: next state.
    pub const RATCHET_NEXT: &str = "ratchet-next";
    /// Inner ratchet: first chain key of an epoch.
    pub const APP_CHAIN_INIT: &str = "app-chain-init";
    /// Inner ratchet: message key.
    pub const APP_MESSAGE_KEY: &str = "app-message-key";
    /// Inner ratchet: next chain key.
    pub const APP_CHAIN_NEXT: &str = "app-chain-next";
    /// Associated data of application messages.
    pub const APP_AAD: &str = "app-aad";
    /// HPKE `info` of ordinary 2SM messages.
    pub const TWO_SM: &str = "2sm";
    /// HPKE `info` of the signed-prekey layer of a first 2SM message.
    pub const TWO_SM_PREKEY_SPK: &str = "2sm-prekey-spk";
    /// HPKE `info` of the one-time-prekey layer of a first 2SM message.
    pub const TWO_SM_PREKEY_OPK: &str = "2sm-prekey-opk";
    /// HPKE `aad` of every 2SM layer.
    pub const TWO_SM_AAD: &str = "2sm-aad";
    /// Signature prefix of envelopes.
    pub const SIG_ENVELOPE: &str = "sig-envelope";
    /// Signature prefix of Welcome messages.
    pub const SIG_WELCOME: &str = "sig-welcome";
    /// Signature prefix of signed prekeys.
    pub const SIG_SIGNED_PREKEY: &str = "sig-signed-prekey";
    /// Signature prefix of one-time prekeys.
    pub const SIG_ONE_TIME_PREKEY: &str = "sig-one-time-prekey";
    /// Content hash of an envelope.
    pub const ENVELOPE_HASH: &str = "envelope-hash";
    /// Digest of a seed's recipient set.
    pub const RECIPIENTS_DIGEST: &str = "recipients-digest";
}

/// Errors of the cryptographic layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// An AEAD or HPKE ciphertext did not authenticate under the given key and context.
    #[error("decryption failed: ciphertext or associated data not authentic")]
    DecryptionFailed,
    /// A signature did not verify under the expected key.
    #[error("signature verification failed")]
    BadSignature,
    /// A public key is not a valid, non-small-order curve point.
    #[error("invalid public key")]
    InvalidPublicKey,
    /// A primitive failed where its contract says it cannot: this is a bug.
    #[error("internal error in primitive: {0}")]
    Internal(&'static str),
}

/// `info(name, ctx) = "DCGKA-v1 " ‖ name ‖ 0x00 ‖ ctx` (§2.3); `ctx` is the concatenation
/// of `parts`.
pub fn info(name: &str, parts: &[&[u8]]) -> Vec<u8> {
    let len = labels::PREFIX.len() + name.len() + 1 + parts.iter().map(|p| p.len()).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(labels::PREFIX.as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    for p in parts {
        out.extend_from_slice(p);
    }
    out
}

/// A 32-byte secret (seed, member secret, ratchet state, chain or message key).
///
/// Zeroized on drop; `Debug` shows no key bytes; equality is constant-time.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Secret32([u8; KEY_LEN]);

impl Secret32 {
    /// Fresh randomness from the caller's CSPRNG.
    pub fn random(rng: &mut impl CryptoRng) -> Self {
        let mut b = [0u8; KEY_LEN];
        rng.fill_bytes(&mut b);
        Secret32(b)
    }

    /// Wraps bytes that are already secret (the caller's copy should be zeroized).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Secret32(bytes)
    }

    /// The secret bytes. Callers must not copy them into non-zeroizing storage.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl PartialEq for Secret32 {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}
impl Eq for Secret32 {}

impl fmt::Debug for Secret32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret32(<redacted>)")
    }
}

/// A SHA-256 output or digest; public.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hash32(pub [u8; KEY_LEN]);

/// `SHA-256(info(name, "") ‖ parts…)`.
pub fn hash(name: &str, parts: &[&[u8]]) -> Hash32 {
    let mut h = Sha256::new();
    h.update(info(name, &[]));
    for p in parts {
        h.update(p);
    }
    let mut out = [0u8; KEY_LEN];
    out.copy_from_slice(&h.finalize());
    Hash32(out)
}

/// A pseudorandom key: the result of `Extract(salt, ikm)`.
pub struct Prk(Hkdf<Sha256>);

impl fmt::Debug for Prk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Prk(<redacted>)")
    }
}

/// `Extract(salt, ikm)`; `salt = None` means `Z`, 32 zero bytes.
pub fn extract(salt: Option<&Secret32>, ikm: &[u8]) -> Prk {
    let zero = [0u8; KEY_LEN];
    let salt = salt.map_or(&zero[..], |s| &s.0[..]);
    let (_, hk) = Hkdf::<Sha256>::extract(Some(salt), ikm);
    Prk(hk)
}

impl Prk {
    /// Uses a 32-byte secret directly as a PRK (the inner ratchet's chain keys, §8).
    pub fn from_secret(prk: &Secret32) -> Result<Prk, CryptoError> {
        Hkdf::<Sha256>::from_prk(prk.expose()).map(Prk).map_err(|_| CryptoError::Internal("HKDF PRK length"))
    }

    /// `Expand(prk, info(name, ctx), 32)`.
    pub fn expand(&self, name: &str, parts: &[&[u8]]) -> Result<Secret32, CryptoError> {
        let mut okm = [0u8; KEY_LEN];
        self.0.expand(&info(name, parts), &mut okm).map_err(|_| CryptoError::Internal("HKDF output length"))?;
        Ok(Secret32(okm))
    }
}

/// `Expand(prk, name, ctx)` where the PRK is a 32-byte secret.
pub fn expand(prk: &Secret32, name: &str, parts: &[&[u8]]) -> Result<Secret32, CryptoError> {
    Prk::from_secret(prk)?.expand(name, parts)
}

/// ChaCha20-Poly1305 seal with the all-zero nonce: every key encrypts exactly one message.
pub fn aead_seal(key: &Secret32, aad: &[u8], pt: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let cipher = ChaCha20Poly1305::new(key.expose().into());
    cipher.encrypt(&Nonce::default(), Payload { msg: pt, aad }).map_err(|_| CryptoError::Internal("AEAD seal"))
}

/// ChaCha20-Poly1305 open with the all-zero nonce; the plaintext zeroizes on drop.
pub fn aead_open(key: &Secret32, aad: &[u8], ct: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let cipher = ChaCha20Poly1305::new(key.expose().into());
    cipher
        .decrypt(&Nonce::default(), Payload { msg: ct, aad })
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::DecryptionFailed)
}

/// An X25519 public key (prekeys and 2SM keys).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct X25519Public(pub [u8; KEY_LEN]);

impl fmt::Debug for X25519Public {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "X25519Public({:02x}{:02x}{:02x}{:02x}…)", self.0[0], self.0[1], self.0[2], self.0[3])
    }
}

/// An X25519 secret key; zeroized on drop, redacted in `Debug`.
#[derive(Clone)]
pub struct X25519Secret(x25519_dalek::StaticSecret);

impl X25519Secret {
    /// A fresh key pair's secret half.
    pub fn generate(rng: &mut impl CryptoRng) -> Self {
        X25519Secret(x25519_dalek::StaticSecret::random_from_rng(rng))
    }

    /// Restores a secret from its bytes (received inside a 2SM plaintext, or a snapshot).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        X25519Secret(x25519_dalek::StaticSecret::from(bytes))
    }

    /// The secret bytes, for encoding inside an encrypted payload or snapshot.
    pub fn to_bytes(&self) -> Zeroizing<[u8; KEY_LEN]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The matching public key.
    pub fn public_key(&self) -> X25519Public {
        X25519Public(x25519_dalek::PublicKey::from(&self.0).to_bytes())
    }

    fn to_hpke(&self) -> Result<<HpkeKem as hpke::Kem>::PrivateKey, CryptoError> {
        <HpkeKem as hpke::Kem>::PrivateKey::from_bytes(self.0.as_bytes())
            .map_err(|_| CryptoError::Internal("HPKE private key"))
    }
}

impl fmt::Debug for X25519Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("X25519Secret(<redacted>)")
    }
}

/// HPKE `SealBase` (RFC 9180) to `pk`: returns `(enc, ct)`.
pub fn hpke_seal(
    rng: &mut impl CryptoRng,
    pk: &X25519Public,
    info: &[u8],
    aad: &[u8],
    pt: &[u8],
) -> Result<([u8; KEY_LEN], Vec<u8>), CryptoError> {
    let pk = <HpkeKem as hpke::Kem>::PublicKey::from_bytes(&pk.0).map_err(|_| CryptoError::InvalidPublicKey)?;
    let (enc, ct) =
        hpke::single_shot_seal_with_rng::<HpkeAead, HpkeKdf, HpkeKem>(&OpModeS::Base, &pk, info, pt, aad, rng)
            .map_err(|_| CryptoError::InvalidPublicKey)?;
    let mut e = [0u8; KEY_LEN];
    let bytes = enc.to_bytes();
    if bytes.len() != KEY_LEN {
        return Err(CryptoError::Internal("HPKE encapsulated key length"));
    }
    e.copy_from_slice(&bytes);
    Ok((e, ct))
}

/// HPKE `OpenBase`; the plaintext zeroizes on drop.
pub fn hpke_open(
    sk: &X25519Secret,
    enc: &[u8; KEY_LEN],
    info: &[u8],
    aad: &[u8],
    ct: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let sk = sk.to_hpke()?;
    let enc = <HpkeKem as hpke::Kem>::EncappedKey::from_bytes(enc).map_err(|_| CryptoError::DecryptionFailed)?;
    hpke::single_shot_open::<HpkeAead, HpkeKdf, HpkeKem>(&OpModeR::Base, &sk, &enc, info, ct, aad)
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::DecryptionFailed)
}

/// An Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; SIGNATURE_LEN]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({:02x}{:02x}{:02x}{:02x}…)", self.0[0], self.0[1], self.0[2], self.0[3])
    }
}

/// An Ed25519 public key: a device's long-term identity key `IK` (§2.2) or a rotated
/// group signing key (§7.2).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VerifyingKey(pub [u8; KEY_LEN]);

/// A device's long-term identity key `IK`: its Ed25519 public key.
pub type IdentityKey = VerifyingKey;

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey({:02x}{:02x}{:02x}{:02x}…)", self.0[0], self.0[1], self.0[2], self.0[3])
    }
}

impl VerifyingKey {
    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Strict Ed25519 verification of `sig` over `info(label, "") ‖ parts…`.
    ///
    /// Rejects non-canonical encodings and small-order keys and `R` values (§2.1).
    pub fn verify(&self, label: &str, parts: &[&[u8]], sig: &Signature) -> Result<(), CryptoError> {
        let vk = ed25519_dalek::VerifyingKey::from_bytes(&self.0).map_err(|_| CryptoError::InvalidPublicKey)?;
        if vk.is_weak() {
            return Err(CryptoError::InvalidPublicKey);
        }
        let msg = info(label, parts);
        let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
        vk.verify_strict(&msg, &sig).map_err(|_| CryptoError::BadSignature)
    }
}

/// An Ed25519 signing key (identity key or group signing key); zeroized on drop.
#[derive(Clone)]
pub struct SigningSecret(ed25519_dalek::SigningKey);

impl SigningSecret {
    /// A fresh key pair's secret half.
    pub fn generate(rng: &mut impl CryptoRng) -> Self {
        SigningSecret(ed25519_dalek::SigningKey::generate(rng))
    }

    /// Restores a key from its 32-byte seed (snapshots).
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> Self {
        SigningSecret(ed25519_dalek::SigningKey::from_bytes(bytes))
    }

    /// The 32-byte seed, for snapshots only.
    pub fn to_bytes(&self) -> Zeroizing<[u8; KEY_LEN]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The public half.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey(self.0.verifying_key().to_bytes())
    }

    /// Signs `info(label, "") ‖ parts…`.
    pub fn sign(&self, label: &str, parts: &[&[u8]]) -> Signature {
        Signature(self.0.sign(&info(label, parts)).to_bytes())
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningSecret(public: {:?}, secret: <redacted>)", self.verifying_key())
    }
}
