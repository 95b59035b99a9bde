//! Thin wrappers around the primitives of cipher suite `DCGKA-v1` (§2.1), behind the
//! project's own types, and every KDF label of §2.3 in one place.
//!
//! - Ed25519 (`ed25519-dalek`), strict verification;
//! - X25519 (`x25519-dalek`) and HPKE base mode DHKEM(X25519, HKDF-SHA256) +
//!   ChaCha20-Poly1305 (`hpke`);
//! - the X3DH-style prekey KEM that seals a first 2SM message in one layer
//!   ([`prekey_seal`]/[`prekey_open`]), built from X25519, HKDF-SHA256 and
//!   ChaCha20-Poly1305;
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
/// Length of a ChaCha20-Poly1305 nonce.
const NONCE_LEN: usize = 12;

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
    /// HKDF `info` of the prekey KEM that seals a first 2SM message
    /// ([`prekey_seal`](super::prekey_seal)).
    pub const TWO_SM_PREKEY: &str = "2sm-prekey";
    /// AEAD associated data of every 2SM ciphertext (HPKE or prekey KEM).
    pub const TWO_SM_AAD: &str = "2sm-aad";
    /// Signature prefix of envelopes.
    pub const SIG_ENVELOPE: &str = "sig-envelope";
    /// Signature prefix of Welcome messages.
    pub const SIG_WELCOME: &str = "sig-welcome";
    /// An identity key certifying one of its member's group signing keys (§7.2).
    pub const SIG_SIGNING_KEY: &str = "sig-signing-key";
    /// Signature prefix of signed prekeys.
    pub const SIG_SIGNED_PREKEY: &str = "sig-signed-prekey";
    /// Signature prefix of one-time prekeys.
    pub const SIG_ONE_TIME_PREKEY: &str = "sig-one-time-prekey";
    /// Content hash of an envelope.
    pub const ENVELOPE_HASH: &str = "envelope-hash";
    /// Digest of a seed's recipient set.
    pub const RECIPIENTS_DIGEST: &str = "recipients-digest";
    /// An identity's signature over a network key it speaks through
    /// ([`crate::prekeys::NetworkAttestation`]).
    pub const SIG_NETWORK_KEY: &str = "sig-network-key";
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

impl X25519Public {
    /// Whether the key is usable for Diffie-Hellman: not one of the small-order points, for
    /// which every shared secret is all zero whatever the other party's secret (§2.1).
    ///
    /// Checked where a peer's key enters (prekey bundles, the sender's next key in a 2SM
    /// plaintext), so that sealing to a key this member accepted never fails later.
    pub fn is_contributory(&self) -> bool {
        // Any clamped scalar is a multiple of the cofactor 8 and not a multiple of the prime
        // order ℓ, so the product is the identity exactly when the point has small order.
        let probe = x25519_dalek::StaticSecret::from([0x5a; KEY_LEN]);
        probe.diffie_hellman(&x25519_dalek::PublicKey::from(self.0)).was_contributory()
    }
}

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

/// `PrekeySeal`: seals a first 2SM message to a prekey bundle in **one** layer, with an
/// X3DH-style KEM over the bundle's signed prekey (SPK) and, when present, its one-time
/// prekey (OPK). Returns `(E, ct)`: the fresh ephemeral public key (carried as
/// `TwoSmCiphertext.enc`) and the AEAD ciphertext, exactly `pt.len() + TAG_LEN` bytes.
///
/// ```text
/// e ← fresh X25519 secret; E = X25519(e, basepoint)
/// dh1 = X25519(e, spk_pub); dh2 = X25519(e, opk_pub)        (dh2 only with an OPK)
/// ikm = dh1 ‖ dh2                                          (or dh1)
/// ctx = binding ‖ u64(spk_id) ‖ 0x01 ‖ u64(opk_id) ‖ E ‖ spk_pub ‖ opk_pub   (with an OPK)
///     = binding ‖ u64(spk_id) ‖ 0x00 ‖ E ‖ spk_pub                          (without)
/// key ‖ nonce (32 + 12 bytes) = HKDF-SHA256(salt = "", ikm, info("2sm-prekey", ctx))
/// ct = ChaCha20-Poly1305(key, nonce, aad, pt)
/// ```
///
/// `binding` is the fixed-length context the caller binds (2SM: `gid ‖ sender ‖
/// recipient`); `aad` is authenticated as associated data (2SM: `info("2sm-aad",
/// encode(ref))`). Properties:
/// - **Confidential unless both the SPK secret and the OPK secret leak**: the key depends on
///   `dh1` and `dh2`, the combination X3DH obtains from DH3 and DH4 (without an OPK, on the
///   SPK secret alone, as before). Like HPKE, this needs only that `e` is fresh.
/// - **Every byte of context is bound**: both prekey IDs, whether an OPK is used, `E` and
///   both public keys go into the KDF, the caller's binding too, and `aad` into the AEAD.
///   Another group, sender, recipient, prekey or key reference yields another key, and a
///   modified `E` (even one giving the same shared secrets) changes the KDF input.
/// - A non-contributory shared secret (a small-order prekey) is refused with
///   [`CryptoError::InvalidPublicKey`].
/// - `e`, the DH outputs, `ikm`, the HKDF output and the AEAD's copy of the key are
///   zeroized when dropped (the nonce needs no secrecy). As for every KDF in this crate,
///   the HMAC state inside `hkdf` is not (`hmac`'s optional `zeroize` feature is off).
pub fn prekey_seal(
    rng: &mut impl CryptoRng,
    spk: (u64, &X25519Public),
    opk: Option<(u64, &X25519Public)>,
    binding: &[&[u8]],
    aad: &[u8],
    pt: &[u8],
) -> Result<([u8; KEY_LEN], Vec<u8>), CryptoError> {
    let e = X25519Secret::generate(rng);
    let enc = e.public_key();
    let dh1 = contributory_dh(&e, spk.1).ok_or(CryptoError::InvalidPublicKey)?;
    let dh2 = match opk {
        Some((_, opk_pub)) => Some(contributory_dh(&e, opk_pub).ok_or(CryptoError::InvalidPublicKey)?),
        None => None,
    };
    let ctx = prekey_context(binding, spk, opk, &enc);
    let (cipher, nonce) = prekey_aead(&dh1, dh2.as_ref(), &ctx)?;
    let ct = cipher.encrypt(&nonce, Payload { msg: pt, aad }).map_err(|_| CryptoError::Internal("AEAD seal"))?;
    Ok((enc.0, ct))
}

/// `PrekeyOpen`: reverses [`prekey_seal`] with the SPK secret and, when the message names
/// one, the OPK secret. `binding` and `aad` must equal the sender's. The plaintext zeroizes
/// on drop. Any mismatch (wrong or missing prekey secret, a flipped bit in `enc`, `ct`,
/// `aad` or `binding`, a small-order `enc`) is [`CryptoError::DecryptionFailed`]. Pure: the
/// caller deletes the OPK only after this succeeds.
pub fn prekey_open(
    spk: (u64, &X25519Secret),
    opk: Option<(u64, &X25519Secret)>,
    binding: &[&[u8]],
    enc: &[u8; KEY_LEN],
    aad: &[u8],
    ct: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let e_pub = X25519Public(*enc);
    let dh1 = contributory_dh(spk.1, &e_pub).ok_or(CryptoError::DecryptionFailed)?;
    let dh2 = match opk {
        Some((_, opk_sk)) => Some(contributory_dh(opk_sk, &e_pub).ok_or(CryptoError::DecryptionFailed)?),
        None => None,
    };
    let spk_pub = spk.1.public_key();
    let opk_pub = opk.map(|(id, sk)| (id, sk.public_key()));
    let ctx = prekey_context(binding, (spk.0, &spk_pub), opk_pub.as_ref().map(|(id, pk)| (*id, pk)), &e_pub);
    let (cipher, nonce) = prekey_aead(&dh1, dh2.as_ref(), &ctx)?;
    cipher.decrypt(&nonce, Payload { msg: ct, aad }).map(Zeroizing::new).map_err(|_| CryptoError::DecryptionFailed)
}

/// `X25519(sk, pk)`, or `None` if the result is all zero (`pk` has small order).
fn contributory_dh(sk: &X25519Secret, pk: &X25519Public) -> Option<x25519_dalek::SharedSecret> {
    let ss = sk.0.diffie_hellman(&x25519_dalek::PublicKey::from(pk.0));
    ss.was_contributory().then_some(ss)
}

/// The KDF context of the prekey KEM: `binding ‖ u64(spk_id) ‖ flag ‖ [u64(opk_id)] ‖ E ‖
/// spk_pub ‖ [opk_pub]`. The flag byte makes the two shapes unambiguous.
fn prekey_context(
    binding: &[&[u8]],
    spk: (u64, &X25519Public),
    opk: Option<(u64, &X25519Public)>,
    enc: &X25519Public,
) -> Vec<u8> {
    let mut ctx = Vec::with_capacity(binding.iter().map(|p| p.len()).sum::<usize>() + 8 + 1 + 8 + 3 * KEY_LEN);
    for p in binding {
        ctx.extend_from_slice(p);
    }
    ctx.extend_from_slice(&spk.0.to_be_bytes());
    match opk {
        Some((opk_id, _)) => {
            ctx.push(1);
            ctx.extend_from_slice(&opk_id.to_be_bytes());
        }
        None => ctx.push(0),
    }
    ctx.extend_from_slice(&enc.0);
    ctx.extend_from_slice(&spk.1.0);
    if let Some((_, opk_pub)) = opk {
        ctx.extend_from_slice(&opk_pub.0);
    }
    ctx
}

/// `key ‖ nonce = HKDF-SHA256(salt = "", dh1 ‖ [dh2], info("2sm-prekey", ctx))`, as a
/// keyed AEAD (which zeroizes its key on drop) and its nonce. `ikm` and `okm` are zeroized.
/// An empty salt is HKDF's default of `HashLen` zero bytes (RFC 5869 §2.2).
fn prekey_aead(
    dh1: &x25519_dalek::SharedSecret,
    dh2: Option<&x25519_dalek::SharedSecret>,
    ctx: &[u8],
) -> Result<(ChaCha20Poly1305, Nonce), CryptoError> {
    let mut ikm = Zeroizing::new([0u8; 2 * KEY_LEN]);
    ikm[..KEY_LEN].copy_from_slice(dh1.as_bytes());
    let ikm_len = match dh2 {
        Some(dh2) => {
            ikm[KEY_LEN..].copy_from_slice(dh2.as_bytes());
            2 * KEY_LEN
        }
        None => KEY_LEN,
    };
    let hk = Hkdf::<Sha256>::new(Some(&[]), &ikm[..ikm_len]);
    let mut okm = Zeroizing::new([0u8; KEY_LEN + NONCE_LEN]);
    hk.expand(&info(labels::TWO_SM_PREKEY, &[ctx]), &mut okm[..])
        .map_err(|_| CryptoError::Internal("HKDF output length"))?;
    let cipher =
        ChaCha20Poly1305::new_from_slice(&okm[..KEY_LEN]).map_err(|_| CryptoError::Internal("AEAD key length"))?;
    let nonce = <&Nonce>::try_from(&okm[KEY_LEN..]).map_err(|_| CryptoError::Internal("AEAD nonce length"))?;
    Ok((cipher, *nonce))
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
        self.prepare()?.verify(label, parts, sig)
    }

    /// Decompresses and checks the key once, for repeated verification (a sender's
    /// current signing key): saves a point decompression per signature.
    pub fn prepare(&self) -> Result<PreparedKey, CryptoError> {
        let vk = ed25519_dalek::VerifyingKey::from_bytes(&self.0).map_err(|_| CryptoError::InvalidPublicKey)?;
        if vk.is_weak() {
            return Err(CryptoError::InvalidPublicKey);
        }
        Ok(PreparedKey(vk))
    }
}

/// An Ed25519 public key decompressed and checked (not small-order) once.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PreparedKey(ed25519_dalek::VerifyingKey);

impl fmt::Debug for PreparedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PreparedKey({:?})", self.public())
    }
}

impl PreparedKey {
    /// The compressed public key.
    pub fn public(&self) -> VerifyingKey {
        VerifyingKey(self.0.to_bytes())
    }

    /// Strict Ed25519 verification, as [`VerifyingKey::verify`].
    pub fn verify(&self, label: &str, parts: &[&[u8]], sig: &Signature) -> Result<(), CryptoError> {
        let msg = info(label, parts);
        let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
        self.0.verify_strict(&msg, &sig).map_err(|_| CryptoError::BadSignature)
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    const GID: [u8; 32] = [0x0a; 32];
    const ALICE: [u8; 32] = [0x0b; 32];
    const BOB: [u8; 32] = [0x0c; 32];
    const AAD: &[u8] = b"associated data";
    const PT: &[u8] = b"a first 2SM plaintext";

    struct Recipient {
        spk: X25519Secret,
        opk: X25519Secret,
    }

    fn setup(seed: u64) -> (ChaCha20Rng, Recipient) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let spk = X25519Secret::generate(&mut rng);
        let opk = X25519Secret::generate(&mut rng);
        (rng, Recipient { spk, opk })
    }

    fn seal(rng: &mut ChaCha20Rng, r: &Recipient, with_opk: bool) -> ([u8; KEY_LEN], Vec<u8>) {
        let opk_pub = r.opk.public_key();
        let opk = with_opk.then_some((9, &opk_pub));
        prekey_seal(rng, (3, &r.spk.public_key()), opk, &[&GID, &ALICE, &BOB], AAD, PT).unwrap()
    }

    fn open(
        spk: (u64, &X25519Secret),
        opk: Option<(u64, &X25519Secret)>,
        binding: &[&[u8]],
        enc: &[u8; KEY_LEN],
        aad: &[u8],
        ct: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        prekey_open(spk, opk, binding, enc, aad, ct).map(|p| p.to_vec())
    }

    #[test]
    fn prekey_kem_round_trips_in_one_layer() {
        let (mut rng, r) = setup(1);
        for with_opk in [true, false] {
            let (enc, ct) = seal(&mut rng, &r, with_opk);
            assert_eq!(ct.len(), PT.len() + TAG_LEN, "one AEAD tag, no inner encapsulated key");
            let opk = with_opk.then_some((9, &r.opk));
            assert_eq!(open((3, &r.spk), opk, &[&GID, &ALICE, &BOB], &enc, AAD, &ct).unwrap(), PT);
        }
    }

    #[test]
    fn prekey_open_needs_both_secrets_and_the_exact_context() {
        let (mut rng, r) = setup(2);
        let (enc, ct) = seal(&mut rng, &r, true);
        let binding: &[&[u8]] = &[&GID, &ALICE, &BOB];
        let (spk, opk) = ((3, &r.spk), Some((9, &r.opk)));
        let other = X25519Secret::generate(&mut rng);
        let fail = Err(CryptoError::DecryptionFailed);
        assert_eq!(open(spk, None, binding, &enc, AAD, &ct), fail, "without the OPK secret");
        assert_eq!(open((3, &other), opk, binding, &enc, AAD, &ct), fail, "with the wrong SPK");
        assert_eq!(open(spk, Some((9, &other)), binding, &enc, AAD, &ct), fail, "with the wrong OPK");
        assert_eq!(open((4, &r.spk), opk, binding, &enc, AAD, &ct), fail, "another SPK id");
        assert_eq!(open(spk, Some((8, &r.opk)), binding, &enc, AAD, &ct), fail, "another OPK id");
        for bit in [0, 77, 8 * KEY_LEN - 2] {
            let mut bad = enc;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(open(spk, opk, binding, &bad, AAD, &ct), fail, "enc bit {bit}");
        }
        for bit in [0, 8 * PT.len() + 3, 8 * ct.len() - 1] {
            let mut bad = ct.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(open(spk, opk, binding, &enc, AAD, &bad), fail, "ct bit {bit}");
        }
        let mut aad = AAD.to_vec();
        aad[0] ^= 0x80;
        assert_eq!(open(spk, opk, binding, &enc, &aad, &ct), fail, "aad");
        let mut gid = GID;
        gid[31] ^= 1;
        assert_eq!(open(spk, opk, &[&gid, &ALICE, &BOB], &enc, AAD, &ct), fail, "wrong gid");
        assert_eq!(open(spk, opk, &[&GID, &BOB, &ALICE], &enc, AAD, &ct), fail, "sender and recipient swapped");
        assert_eq!(open(spk, opk, &[&GID, &[0x0d; 32], &BOB], &enc, AAD, &ct), fail, "wrong peer");
        assert_eq!(open(spk, opk, binding, &enc, AAD, &ct).unwrap(), PT);
    }

    #[test]
    fn an_equivalent_encapsulated_key_is_refused_through_the_kdf_context() {
        // X25519 ignores the top bit of a public key: flipping it gives the same DH
        // outputs, so only binding `E` itself into the KDF context catches it.
        let (mut rng, r) = setup(3);
        let (enc, ct) = seal(&mut rng, &r, true);
        let mut twin = enc;
        twin[31] ^= 0x80;
        let same = |a: &[u8; KEY_LEN], b: &[u8; KEY_LEN]| {
            let (x, y) = (contributory_dh(&r.spk, &X25519Public(*a)), contributory_dh(&r.spk, &X25519Public(*b)));
            x.zip(y).is_some_and(|(x, y)| x.as_bytes() == y.as_bytes())
        };
        assert!(same(&enc, &twin));
        let opk = Some((9, &r.opk));
        assert_eq!(open((3, &r.spk), opk, &[&GID, &ALICE, &BOB], &twin, AAD, &ct), Err(CryptoError::DecryptionFailed));
    }

    #[test]
    fn non_contributory_keys_are_refused() {
        let (mut rng, r) = setup(4);
        // u = 0 (order 2) and a point of order 8: X25519 with either is all zero.
        let order_8: [u8; KEY_LEN] = [
            0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a, 0xda, 0x09,
            0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00,
        ];
        let small_order = [[0; KEY_LEN], order_8];
        let binding: &[&[u8]] = &[&GID, &ALICE, &BOB];
        let (spk_pub, opk_pub) = (r.spk.public_key(), r.opk.public_key());
        for bad in small_order.map(X25519Public) {
            let mut seal_err = |spk: &X25519Public, opk: Option<&X25519Public>| {
                prekey_seal(&mut rng, (3, spk), opk.map(|o| (9, o)), binding, AAD, PT).err()
            };
            assert_eq!(seal_err(&bad, None), Some(CryptoError::InvalidPublicKey), "small-order SPK");
            assert_eq!(seal_err(&spk_pub, Some(&bad)), Some(CryptoError::InvalidPublicKey), "small-order OPK");
            assert_eq!(seal_err(&spk_pub, Some(&opk_pub)), None);
            let ct = vec![0u8; PT.len() + TAG_LEN];
            assert_eq!(
                open((3, &r.spk), Some((9, &r.opk)), binding, &bad.0, AAD, &ct),
                Err(CryptoError::DecryptionFailed),
                "small-order encapsulated key"
            );
        }
    }
}
