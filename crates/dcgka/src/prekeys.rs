//! Identities, prekeys and the PKI (§3).
//!
//! A device has one long-term Ed25519 [`Identity`]. Its public key `IK` signs a
//! [`SignedPrekey`] (with a validity window and the suite, all covered by the
//! signature) and a batch of [`OneTimePrekey`]s. Their secrets live in the identity's
//! [`KeyStore`], which all groups share. Senders fetch a [`PrekeyBundle`] through a
//! [`PrekeyProvider`] and must [`verify`](PrekeyBundle::verify) it before use, which
//! turns it into a [`VerifiedBundle`].
//!
//! An identity is persisted with [`Identity::snapshot`] and [`Identity::restore`] (the
//! format is in [`crate::snapshot`]).

mod state;

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use rand_core::CryptoRng;
use zeroize::Zeroizing;

use crate::codec::{Decode, DecodeError, Encode, Reader, Writer};
use crate::consts::{MAX_ONE_TIME_PREKEYS, PREKEY_GRACE, PREKEY_MIN_REMAINING, PREKEY_SKEW, SUITE_ID};
use crate::crypto::{CryptoError, IdentityKey, Signature, SigningSecret, X25519Public, X25519Secret, labels};
use crate::snapshot::{SnapshotError, SnapshotKind, StateReader, StateWriter};

/// Identifier of a signed prekey, unique per identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SignedPrekeyId(pub u64);

/// Identifier of a one-time prekey, unique per identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OneTimePrekeyId(pub u64);

/// Why a prekey bundle was refused or a prekey secret was unavailable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrekeyError {
    /// The signed prekey's signature does not verify under the identity key.
    #[error("signed prekey signature does not verify")]
    BadSignedPrekeySignature,
    /// The one-time prekey's signature does not verify under the identity key.
    #[error("one-time prekey signature does not verify")]
    BadOneTimePrekeySignature,
    /// The bundle belongs to another identity than the one being contacted.
    #[error("bundle is for another identity")]
    WrongIdentity,
    /// The bundle names a cipher suite this implementation does not speak.
    #[error("unsupported suite {0}")]
    UnsupportedSuite(u16),
    /// The signed prekey is not yet valid at `now`.
    #[error("signed prekey not valid before {not_before} (now {now})")]
    NotYetValid {
        /// Start of validity.
        not_before: u64,
        /// The caller's time.
        now: u64,
    },
    /// The signed prekey has expired, or expires too soon to be used.
    #[error("signed prekey expires at {not_after}, too soon for now = {now}")]
    Expired {
        /// End of validity.
        not_after: u64,
        /// The caller's time.
        now: u64,
    },
    /// The one-time prekey has expired.
    #[error("one-time prekey expired at {not_after} (now {now})")]
    OneTimePrekeyExpired {
        /// End of validity.
        not_after: u64,
        /// The caller's time.
        now: u64,
    },
    /// The owner holds no secret for that signed prekey (never had it, or deleted it).
    #[error("unknown or deleted signed prekey {0:?}")]
    UnknownSignedPrekey(SignedPrekeyId),
    /// The owner holds no secret for that one-time prekey: never had it, or it was
    /// already consumed (each is usable once).
    #[error("unknown or already consumed one-time prekey {0:?}")]
    UnknownOneTimePrekey(OneTimePrekeyId),
    /// A prekey in the bundle is a small-order X25519 point, useless for key agreement.
    #[error("the bundle's {0} prekey is a small-order point")]
    SmallOrderPrekey(&'static str),
    /// The key store is full.
    #[error("key store holds {held} one-time prekeys, the maximum is {max}")]
    TooManyOneTimePrekeys {
        /// Currently held.
        held: usize,
        /// [`MAX_ONE_TIME_PREKEYS`].
        max: usize,
    },
}

/// The public part of a signed prekey (§3). The signature covers every field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedPrekey {
    /// The owner's identity key.
    pub ik: IdentityKey,
    /// The X25519 public key.
    pub spk_pub: X25519Public,
    /// Its identifier.
    pub spk_id: SignedPrekeyId,
    /// Start of validity, Unix seconds.
    pub not_before: u64,
    /// End of validity, Unix seconds.
    pub not_after: u64,
    /// Cipher suite, 1.
    pub suite: u16,
}

impl Encode for SignedPrekey {
    fn encode(&self, w: &mut Writer) {
        w.raw(&self.ik.0);
        w.raw(&self.spk_pub.0);
        w.var(self.spk_id.0);
        w.var(self.not_before);
        w.var(self.not_after);
        w.var(u64::from(self.suite));
    }
}

impl Decode for SignedPrekey {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(SignedPrekey {
            ik: crate::crypto::VerifyingKey(r.array()?),
            spk_pub: X25519Public(r.array()?),
            spk_id: SignedPrekeyId(r.var()?),
            not_before: r.var()?,
            not_after: r.var()?,
            suite: u16::try_from(r.var()?).map_err(|_| DecodeError::InvalidField("suite"))?,
        })
    }
}

/// The public part of a one-time prekey (§3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OneTimePrekey {
    /// The owner's identity key.
    pub ik: IdentityKey,
    /// The X25519 public key.
    pub opk_pub: X25519Public,
    /// Its identifier.
    pub opk_id: OneTimePrekeyId,
    /// End of validity, Unix seconds.
    pub not_after: u64,
}

impl Encode for OneTimePrekey {
    fn encode(&self, w: &mut Writer) {
        w.raw(&self.ik.0);
        w.raw(&self.opk_pub.0);
        w.var(self.opk_id.0);
        w.var(self.not_after);
    }
}

impl Decode for OneTimePrekey {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(OneTimePrekey {
            ik: crate::crypto::VerifyingKey(r.array()?),
            opk_pub: X25519Public(r.array()?),
            opk_id: OneTimePrekeyId(r.var()?),
            not_after: r.var()?,
        })
    }
}

/// A signed object: the value and the identity's signature over its encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed<T> {
    /// The signed value.
    pub value: T,
    /// Ed25519 signature by the identity key.
    pub signature: Signature,
}

impl<T: Encode> Encode for Signed<T> {
    fn encode(&self, w: &mut Writer) {
        self.value.encode(w);
        w.raw(&self.signature.0);
    }
}

impl<T: Decode> Decode for Signed<T> {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Signed { value: T::decode(r)?, signature: Signature(r.array()?) })
    }
}

/// A prekey bundle as published or received: not yet verified (§3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrekeyBundle {
    /// The signed prekey.
    pub signed_prekey: Signed<SignedPrekey>,
    /// At most one one-time prekey; absent when the pool ran out.
    pub one_time_prekey: Option<Signed<OneTimePrekey>>,
}

impl Encode for PrekeyBundle {
    fn encode(&self, w: &mut Writer) {
        w.u8(crate::consts::WIRE_VERSION);
        self.signed_prekey.encode(w);
        w.opt(self.one_time_prekey.as_ref(), |w, o| o.encode(w));
    }
}

impl Decode for PrekeyBundle {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let v = r.u8()?;
        if v != crate::consts::WIRE_VERSION {
            return Err(DecodeError::UnsupportedVersion(v));
        }
        Ok(PrekeyBundle { signed_prekey: Signed::decode(r)?, one_time_prekey: r.opt(Signed::decode)? })
    }
}

/// A bundle whose signatures, identity, suite and validity have been checked (§3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedBundle {
    /// The identity the bundle belongs to.
    pub ik: IdentityKey,
    /// Signed prekey id and public key.
    pub spk: (SignedPrekeyId, X25519Public),
    /// One-time prekey id and public key, if the bundle had one.
    pub opk: Option<(OneTimePrekeyId, X25519Public)>,
}

impl PrekeyBundle {
    /// The sender-side checks of §3: both signatures under `expected`, `ik` matching,
    /// suite 1, and `not_before − SKEW ≤ now`, `now + MIN_REMAINING ≤ not_after`.
    pub fn verify(&self, expected: &IdentityKey, now: u64) -> Result<VerifiedBundle, PrekeyError> {
        let spk = &self.signed_prekey.value;
        if spk.ik != *expected {
            return Err(PrekeyError::WrongIdentity);
        }
        expected
            .verify(labels::SIG_SIGNED_PREKEY, &[&spk.to_bytes()], &self.signed_prekey.signature)
            .map_err(|_| PrekeyError::BadSignedPrekeySignature)?;
        if spk.suite != SUITE_ID {
            return Err(PrekeyError::UnsupportedSuite(spk.suite));
        }
        if spk.not_before.saturating_sub(PREKEY_SKEW) > now {
            return Err(PrekeyError::NotYetValid { not_before: spk.not_before, now });
        }
        if now.saturating_add(PREKEY_MIN_REMAINING) > spk.not_after {
            return Err(PrekeyError::Expired { not_after: spk.not_after, now });
        }
        if !spk.spk_pub.is_contributory() {
            return Err(PrekeyError::SmallOrderPrekey("signed"));
        }
        let opk = match &self.one_time_prekey {
            None => None,
            Some(o) => {
                if o.value.ik != *expected {
                    return Err(PrekeyError::WrongIdentity);
                }
                expected
                    .verify(labels::SIG_ONE_TIME_PREKEY, &[&o.value.to_bytes()], &o.signature)
                    .map_err(|_| PrekeyError::BadOneTimePrekeySignature)?;
                if now > o.value.not_after {
                    return Err(PrekeyError::OneTimePrekeyExpired { not_after: o.value.not_after, now });
                }
                if !o.value.opk_pub.is_contributory() {
                    return Err(PrekeyError::SmallOrderPrekey("one-time"));
                }
                Some((o.value.opk_id, o.value.opk_pub))
            }
        };
        Ok(VerifiedBundle { ik: *expected, spk: (spk.spk_id, spk.spk_pub), opk })
    }
}

/// The newcomer's signed prekey as an add carries it (§5.2, §5.5): the fields of its
/// [`SignedPrekey`] that do not follow from the add (`ik` is the add's target, the suite
/// is 1) and the newcomer's signature. Every member seals its add-ack's `ratchet_ct` to it, so
/// no member needs to fetch the newcomer's bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CarriedPrekey {
    /// Its identifier.
    pub spk_id: SignedPrekeyId,
    /// The X25519 public key.
    pub spk_pub: X25519Public,
    /// Start of validity, Unix seconds (signed, not checked by receivers).
    pub not_before: u64,
    /// End of validity, Unix seconds (signed, not checked by receivers).
    pub not_after: u64,
    /// The identity's signature over the full [`SignedPrekey`] encoding.
    pub signature: Signature,
}

impl CarriedPrekey {
    /// The part of a signed prekey an add carries; `None` unless its suite is 1.
    pub fn of(spk: &Signed<SignedPrekey>) -> Option<Self> {
        let v = &spk.value;
        (v.suite == SUITE_ID).then_some(CarriedPrekey {
            spk_id: v.spk_id,
            spk_pub: v.spk_pub,
            not_before: v.not_before,
            not_after: v.not_after,
            signature: spk.signature,
        })
    }

    /// The receivers' check (§5.5): the signature of `target` over the signed prekey it
    /// stands for, and that the key is not a small-order point. No clock is consulted, so every member reaches the same verdict. The
    /// result is a signed-prekey-only bundle.
    pub fn verify(&self, target: &IdentityKey) -> Result<VerifiedBundle, PrekeyError> {
        let spk = SignedPrekey {
            ik: *target,
            spk_pub: self.spk_pub,
            spk_id: self.spk_id,
            not_before: self.not_before,
            not_after: self.not_after,
            suite: SUITE_ID,
        };
        target
            .verify(labels::SIG_SIGNED_PREKEY, &[&spk.to_bytes()], &self.signature)
            .map_err(|_| PrekeyError::BadSignedPrekeySignature)?;
        // Deterministic too: sealing an add-ack to a small-order key would fail at every member.
        if !self.spk_pub.is_contributory() {
            return Err(PrekeyError::SmallOrderPrekey("signed"));
        }
        Ok(VerifiedBundle { ik: *target, spk: (self.spk_id, self.spk_pub), opk: None })
    }
}

impl Encode for CarriedPrekey {
    fn encode(&self, w: &mut Writer) {
        w.raw(&self.spk_pub.0);
        w.var(self.spk_id.0);
        w.var(self.not_before);
        w.var(self.not_after);
        w.raw(&self.signature.0);
    }
}

impl Decode for CarriedPrekey {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(CarriedPrekey {
            spk_pub: X25519Public(r.array()?),
            spk_id: SignedPrekeyId(r.var()?),
            not_before: r.var()?,
            not_after: r.var()?,
            signature: Signature(r.array()?),
        })
    }
}

/// A signed prekey secret with the time after which the owner deletes it.
#[derive(Clone, Debug)]
struct SpkEntry {
    secret: X25519Secret,
    not_after: u64,
}

/// The owner's prekey secrets, shared by all its groups (§3).
///
/// A one-time prekey secret is deleted permanently the moment a first 2SM message under it
/// decrypts. Signed prekey secrets are kept until `not_after + GRACE`.
#[derive(Clone, Debug, Default)]
pub struct KeyStore {
    spks: BTreeMap<SignedPrekeyId, SpkEntry>,
    opks: BTreeMap<OneTimePrekeyId, X25519Secret>,
    next_spk: u64,
    next_opk: u64,
}

impl KeyStore {
    /// The signed prekey secret `id`.
    pub fn spk(&self, id: SignedPrekeyId) -> Result<&X25519Secret, PrekeyError> {
        self.spks.get(&id).map(|e| &e.secret).ok_or(PrekeyError::UnknownSignedPrekey(id))
    }

    /// The one-time prekey secret `id`, if it has not been consumed.
    pub fn opk(&self, id: OneTimePrekeyId) -> Result<&X25519Secret, PrekeyError> {
        self.opks.get(&id).ok_or(PrekeyError::UnknownOneTimePrekey(id))
    }

    /// Deletes a one-time prekey secret for good (its secret zeroizes on drop).
    pub fn delete_opk(&mut self, id: OneTimePrekeyId) {
        self.opks.remove(&id);
    }

    /// Whether a one-time prekey secret is still held.
    pub fn has_opk(&self, id: OneTimePrekeyId) -> bool {
        self.opks.contains_key(&id)
    }

    /// Number of unused one-time prekeys held.
    pub fn one_time_prekey_count(&self) -> usize {
        self.opks.len()
    }

    /// Deletes every signed prekey secret whose `not_after + GRACE` has passed.
    pub fn purge_expired(&mut self, now: u64) {
        self.spks.retain(|_, e| e.not_after.saturating_add(PREKEY_GRACE) >= now);
    }

    /// Deletes every unused one-time prekey and every signed prekey (after a suspected
    /// compromise, §3); the caller then publishes fresh ones.
    pub fn replace_all(&mut self) {
        self.spks.clear();
        self.opks.clear();
    }
}

/// An identity's signature over a network key ([`Identity::attest_network_key`]), so that
/// a peer that authenticated the network key (Noise does) knows which identity it talks
/// to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NetworkAttestation(pub [u8; 64]);

impl NetworkAttestation {
    /// Checks that `ik` signed `network_key`.
    pub fn verify(&self, ik: &IdentityKey, network_key: &[u8]) -> Result<(), CryptoError> {
        ik.verify(labels::SIG_NETWORK_KEY, &[network_key], &Signature(self.0))
    }
}

impl fmt::Debug for NetworkAttestation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NetworkAttestation({:02x}{:02x}{:02x}{:02x}…)", self.0[0], self.0[1], self.0[2], self.0[3])
    }
}

/// A device's long-term identity: the Ed25519 key pair and its [`KeyStore`].
#[derive(Clone, Debug)]
pub struct Identity {
    signing: SigningSecret,
    keys: KeyStore,
}

impl Identity {
    /// A fresh identity with an empty key store.
    pub fn generate(rng: &mut impl CryptoRng) -> Self {
        Identity { signing: SigningSecret::generate(rng), keys: KeyStore::default() }
    }

    /// The identity public key `IK`.
    pub fn public_key(&self) -> IdentityKey {
        self.signing.verifying_key()
    }

    /// The identity signing key (signs prekeys, Welcomes and first envelopes only).
    pub fn signing_key(&self) -> &SigningSecret {
        &self.signing
    }

    /// Signs `network_key` (the bytes of a transport's public key, e.g. a libp2p peer
    /// ID): a statement that this identity speaks through it, which a peer holding only
    /// the public keys can check ([`NetworkAttestation::verify`]). The signature is domain
    /// separated from every signature the protocol makes.
    pub fn attest_network_key(&self, network_key: &[u8]) -> NetworkAttestation {
        NetworkAttestation(self.signing.sign(labels::SIG_NETWORK_KEY, &[network_key]).0)
    }

    /// The key store.
    pub fn key_store(&self) -> &KeyStore {
        &self.keys
    }

    /// The key store, mutably (to delete consumed one-time prekeys).
    pub fn key_store_mut(&mut self) -> &mut KeyStore {
        &mut self.keys
    }

    /// This identity as bytes: the identity signing key and the whole [`KeyStore`] (every
    /// signed prekey secret with its `not_after`, every unused one-time prekey secret, and
    /// the counters that number the next prekeys). [`Identity::restore`] turns it back into
    /// an identity that behaves exactly like this one, and whose snapshot is byte for byte
    /// the same (the format is in [`crate::snapshot`]).
    ///
    /// Persist it whenever the key store changed, in particular together with the group
    /// snapshots of a call that consumed a one-time prekey (a first 2SM message deletes
    /// it), and before publishing newly generated prekeys. The bytes hold the identity's
    /// secrets: the buffer zeroizes on drop; encrypt them at rest.
    pub fn snapshot(&self) -> Zeroizing<Vec<u8>> {
        let mut w = StateWriter::of_kind(SnapshotKind::Identity);
        self.encode_state(&mut w);
        w.finish()
    }

    /// Rebuilds an identity from [`Identity::snapshot`] bytes. Decoding is canonical and
    /// total: a group snapshot, another version, a truncation or any corruption that the
    /// format can detect gives a [`SnapshotError`], never a panic. (Snapshots carry no
    /// integrity check of their own: storage that may be tampered with needs authenticated
    /// encryption.)
    pub fn restore(bytes: &[u8]) -> Result<Identity, SnapshotError> {
        let mut r = StateReader::open_kind(bytes, SnapshotKind::Identity)?;
        let identity = Identity::decode_state(&mut r)?;
        r.finish()?;
        Ok(identity)
    }

    /// Generates and signs a new signed prekey valid over `[not_before, not_after]`.
    pub fn new_signed_prekey(
        &mut self,
        rng: &mut impl CryptoRng,
        not_before: u64,
        not_after: u64,
    ) -> Signed<SignedPrekey> {
        let secret = X25519Secret::generate(rng);
        self.keys.next_spk += 1;
        let value = SignedPrekey {
            ik: self.public_key(),
            spk_pub: secret.public_key(),
            spk_id: SignedPrekeyId(self.keys.next_spk),
            not_before,
            not_after,
            suite: SUITE_ID,
        };
        self.keys.spks.insert(value.spk_id, SpkEntry { secret, not_after });
        let signature = self.signing.sign(labels::SIG_SIGNED_PREKEY, &[&value.to_bytes()]);
        Signed { value, signature }
    }

    /// Generates and signs `count` one-time prekeys expiring at `not_after`.
    pub fn new_one_time_prekeys(
        &mut self,
        rng: &mut impl CryptoRng,
        count: usize,
        not_after: u64,
    ) -> Result<Vec<Signed<OneTimePrekey>>, PrekeyError> {
        let held = self.keys.opks.len();
        if held.saturating_add(count) > MAX_ONE_TIME_PREKEYS {
            return Err(PrekeyError::TooManyOneTimePrekeys { held, max: MAX_ONE_TIME_PREKEYS });
        }
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let secret = X25519Secret::generate(rng);
            self.keys.next_opk += 1;
            let value = OneTimePrekey {
                ik: self.public_key(),
                opk_pub: secret.public_key(),
                opk_id: OneTimePrekeyId(self.keys.next_opk),
                not_after,
            };
            self.keys.opks.insert(value.opk_id, secret);
            let signature = self.signing.sign(labels::SIG_ONE_TIME_PREKEY, &[&value.to_bytes()]);
            out.push(Signed { value, signature });
        }
        Ok(out)
    }
}

/// Looks up prekey bundles of other identities: the PKI as the library sees it (§3).
///
/// Synchronous and typically a local cache. Each call may hand out a one-time prekey,
/// which must then never be handed out again.
pub trait PrekeyProvider {
    /// A bundle for `ik`, or `None` if none is known (the caller fetches one and retries).
    fn bundle(&mut self, ik: &IdentityKey) -> Option<PrekeyBundle>;
}

/// An in-memory directory: each identity's current signed prekey and a pool of one-time
/// prekeys, popped atomically one per bundle. When the pool is empty, bundles carry the
/// signed prekey alone (§3, "No OPK left").
#[derive(Clone, Debug, Default)]
pub struct InMemoryPrekeyDirectory {
    entries: BTreeMap<IdentityKey, (Signed<SignedPrekey>, VecDeque<Signed<OneTimePrekey>>)>,
}

impl InMemoryPrekeyDirectory {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Publishes (or replaces) an identity's signed prekey.
    pub fn publish_signed_prekey(&mut self, spk: Signed<SignedPrekey>) {
        let ik = spk.value.ik;
        match self.entries.get_mut(&ik) {
            Some(e) => e.0 = spk,
            None => {
                self.entries.insert(ik, (spk, VecDeque::new()));
            }
        }
    }

    /// Adds one-time prekeys to their identity's pool. Keys of an identity without a
    /// published signed prekey are ignored.
    pub fn publish_one_time_prekeys(&mut self, opks: Vec<Signed<OneTimePrekey>>) {
        for o in opks {
            if let Some(e) = self.entries.get_mut(&o.value.ik) {
                e.1.push_back(o);
            }
        }
    }

    /// Publishes a fresh signed prekey and `opk_count` one-time prekeys of `identity`, valid
    /// from `now` for the default validity.
    pub fn publish_identity(
        &mut self,
        rng: &mut impl CryptoRng,
        identity: &mut Identity,
        now: u64,
        opk_count: usize,
    ) -> Result<(), PrekeyError> {
        let not_after = now.saturating_add(crate::consts::PREKEY_DEFAULT_VALIDITY);
        let spk = identity.new_signed_prekey(rng, now, not_after);
        let opks = identity.new_one_time_prekeys(rng, opk_count, not_after)?;
        self.publish_signed_prekey(spk);
        self.publish_one_time_prekeys(opks);
        Ok(())
    }

    /// Drops the one-time prekeys that expired before `now` from every pool: they would
    /// only make bundles fail verification.
    pub fn drop_expired(&mut self, now: u64) {
        for (_, pool) in self.entries.values_mut() {
            pool.retain(|o| o.value.not_after >= now);
        }
    }

    /// Whether a signed prekey of `ik` is held (a bundle can be handed out for it).
    pub fn has_signed_prekey(&self, ik: &IdentityKey) -> bool {
        self.entries.contains_key(ik)
    }

    /// The signed prekey held for `ik`, if any (it is public: anyone may pass it on).
    pub fn signed_prekey(&self, ik: &IdentityKey) -> Option<&Signed<SignedPrekey>> {
        self.entries.get(ik).map(|e| &e.0)
    }

    /// One-time prekeys left in `ik`'s pool.
    pub fn remaining_one_time_prekeys(&self, ik: &IdentityKey) -> usize {
        self.entries.get(ik).map_or(0, |e| e.1.len())
    }
}

impl PrekeyProvider for InMemoryPrekeyDirectory {
    fn bundle(&mut self, ik: &IdentityKey) -> Option<PrekeyBundle> {
        let (spk, pool) = self.entries.get_mut(ik)?;
        Some(PrekeyBundle { signed_prekey: spk.clone(), one_time_prekey: pool.pop_front() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    const NOW: u64 = 1_800_000_000;

    fn setup() -> (ChaCha20Rng, Identity, InMemoryPrekeyDirectory) {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let mut id = Identity::generate(&mut rng);
        let mut dir = InMemoryPrekeyDirectory::new();
        dir.publish_identity(&mut rng, &mut id, NOW, 2).unwrap();
        (rng, id, dir)
    }

    #[test]
    fn valid_bundle_verifies_and_pool_falls_back_to_spk_only() {
        let (_, id, mut dir) = setup();
        let ik = id.public_key();
        let b1 = dir.bundle(&ik).unwrap().verify(&ik, NOW).unwrap();
        let b2 = dir.bundle(&ik).unwrap().verify(&ik, NOW).unwrap();
        assert!(b1.opk.is_some() && b2.opk.is_some());
        assert_ne!(b1.opk, b2.opk, "each one-time prekey is handed out once");
        let b3 = dir.bundle(&ik).unwrap().verify(&ik, NOW).unwrap();
        assert_eq!(b3.opk, None, "empty pool: signed prekey alone");
        assert_eq!(b3.spk, b1.spk);
    }

    #[test]
    fn bad_signature_forged_expiry_and_past_expiry_are_refused() {
        let (mut rng, id, mut dir) = setup();
        let ik = id.public_key();
        let good = dir.bundle(&ik).unwrap();

        let mut forged_expiry = good.clone();
        forged_expiry.signed_prekey.value.not_after += 1_000_000;
        assert_eq!(forged_expiry.verify(&ik, NOW), Err(PrekeyError::BadSignedPrekeySignature));

        let mut bad_sig = good.clone();
        bad_sig.signed_prekey.signature.0[5] ^= 1;
        assert_eq!(bad_sig.verify(&ik, NOW), Err(PrekeyError::BadSignedPrekeySignature));

        let mut bad_opk = good.clone();
        if let Some(o) = bad_opk.one_time_prekey.as_mut() {
            o.value.not_after += 1;
        }
        assert_eq!(bad_opk.verify(&ik, NOW), Err(PrekeyError::BadOneTimePrekeySignature));

        let late = NOW + crate::consts::PREKEY_DEFAULT_VALIDITY;
        assert!(matches!(good.verify(&ik, late), Err(PrekeyError::Expired { .. })));
        assert!(matches!(good.verify(&ik, NOW - 2 * PREKEY_SKEW), Err(PrekeyError::NotYetValid { .. })));

        // Another identity re-signing the same content is not the expected identity.
        let mut other = Identity::generate(&mut rng);
        let spk = other.new_signed_prekey(&mut rng, NOW, NOW + crate::consts::PREKEY_DEFAULT_VALIDITY);
        let by_other = PrekeyBundle { signed_prekey: spk, one_time_prekey: None };
        assert_eq!(by_other.verify(&ik, NOW), Err(PrekeyError::WrongIdentity));
        let mut relabelled = by_other.clone();
        relabelled.signed_prekey.value.ik = ik;
        assert_eq!(relabelled.verify(&ik, NOW), Err(PrekeyError::BadSignedPrekeySignature));
    }

    #[test]
    fn bundle_round_trips_and_spk_expires_from_the_store() {
        let (_, mut id, mut dir) = setup();
        let ik = id.public_key();
        let b = dir.bundle(&ik).unwrap();
        assert_eq!(PrekeyBundle::from_bytes(&b.to_bytes()).unwrap(), b);
        let spk_id = b.signed_prekey.value.spk_id;
        let not_after = b.signed_prekey.value.not_after;
        id.key_store_mut().purge_expired(not_after + PREKEY_GRACE);
        assert!(id.key_store().spk(spk_id).is_ok(), "kept through the grace period");
        id.key_store_mut().purge_expired(not_after + PREKEY_GRACE + 1);
        assert_eq!(id.key_store().spk(spk_id).err(), Some(PrekeyError::UnknownSignedPrekey(spk_id)));
    }

    #[test]
    fn debug_shows_no_secret_bytes() {
        let (_, id, _) = setup();
        let s = format!("{id:?}");
        assert!(s.contains("redacted"));
        let seed = id.signing_key().to_bytes();
        let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!s.contains(&hex[..16]));
    }

    #[test]
    fn a_network_attestation_binds_one_identity_to_one_network_key() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let (alice, mallory) = (Identity::generate(&mut rng), Identity::generate(&mut rng));
        let att = alice.attest_network_key(b"peer-a");
        assert_eq!(att.verify(&alice.public_key(), b"peer-a"), Ok(()));
        // Another network key, another identity, or another signer: refused.
        assert!(att.verify(&alice.public_key(), b"peer-m").is_err());
        assert!(att.verify(&mallory.public_key(), b"peer-a").is_err());
        assert!(mallory.attest_network_key(b"peer-a").verify(&alice.public_key(), b"peer-a").is_err());
        // It is no signed prekey: the labels differ.
        let mut bytes = att.0;
        bytes[0] ^= 1;
        assert!(NetworkAttestation(bytes).verify(&alice.public_key(), b"peer-a").is_err());
    }
}
