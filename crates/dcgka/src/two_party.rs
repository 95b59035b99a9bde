//! 2SM, the two-party secure messaging channel (§4; ePrint Fig. 2, instantiated with HPKE).
//!
//! Every send generates two fresh X25519 key pairs: one for the sender's next incoming
//! message (its public half travels) and one for the receiver (its *secret* half travels
//! inside the ciphertext). Every secret key is erased the moment it can no longer be
//! needed. The first message of a session is sealed to the peer's prekey bundle, fetched
//! lazily on the first send only, so the peer may be offline. It uses one X3DH-style KEM
//! over the signed and one-time prekeys ([`crypto::prekey_seal`]); later messages use HPKE.
//!
//! Correctness needs every ciphertext of one direction to be received, in order, with none
//! skipped; the ACB layer provides that order.

use rand_core::CryptoRng;
use zeroize::{Zeroize, Zeroizing};

use crate::codec::{Decode, DecodeError, Encode, Reader, Writer};
use crate::crypto::{self, CryptoError, IdentityKey, KEY_LEN, X25519Public, X25519Secret, labels};
use crate::ids::{GroupId, MemberId};
use crate::prekeys::{KeyStore, OneTimePrekeyId, PrekeyError, PrekeyProvider, SignedPrekeyId, VerifiedBundle};
use crate::snapshot::{SnapshotError, StateReader, StateWriter};

/// Which key of the receiver a 2SM ciphertext is sealed to, named from the **receiver's**
/// point of view (§4.2, correcting ePrint Fig. 2's inverted condition).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRef {
    /// A first message, sealed with the prekey KEM to the receiver's signed prekey and, when
    /// present, one of its one-time prekeys.
    Prekey {
        /// The receiver's signed prekey.
        spk_id: SignedPrekeyId,
        /// The receiver's one-time prekey, if the bundle had one.
        opk_id: Option<OneTimePrekeyId>,
    },
    /// Sealed to the key the receiver generated itself and sent at its index `i`.
    YourKey(u64),
    /// Sealed to the key pair whose secret half the sender gave the receiver last time.
    KeyIGaveYou,
}

impl Encode for KeyRef {
    fn encode(&self, w: &mut Writer) {
        match self {
            KeyRef::Prekey { spk_id, opk_id } => {
                w.u8(0);
                w.var(spk_id.0);
                w.opt(opk_id.as_ref(), |w, o| w.var(o.0));
            }
            KeyRef::YourKey(i) => {
                w.u8(1);
                w.var(*i);
            }
            KeyRef::KeyIGaveYou => w.u8(2),
        }
    }
}

impl Decode for KeyRef {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.u8()? {
            0 => Ok(KeyRef::Prekey {
                spk_id: SignedPrekeyId(r.var()?),
                opk_id: r.opt(|r| r.var().map(OneTimePrekeyId))?,
            }),
            1 => Ok(KeyRef::YourKey(r.var()?)),
            2 => Ok(KeyRef::KeyIGaveYou),
            t => Err(DecodeError::UnknownTag { what: "2SM key reference", tag: u64::from(t) }),
        }
    }
}

/// A 2SM ciphertext as it travels: `{ref, enc, ct}` (§4.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TwoSmCiphertext {
    /// Which receiver key it is sealed to.
    pub key_ref: KeyRef,
    /// The encapsulated key: HPKE's `enc`, or for a first message the prekey KEM's
    /// ephemeral public key `E`.
    pub enc: [u8; KEY_LEN],
    /// The AEAD ciphertext, the encoded plaintext plus a 16-byte tag (one layer, also for
    /// a first message with a one-time prekey).
    pub ct: Vec<u8>,
}

impl Encode for TwoSmCiphertext {
    fn encode(&self, w: &mut Writer) {
        self.key_ref.encode(w);
        w.raw(&self.enc);
        w.opaque(&self.ct);
    }
}

impl Decode for TwoSmCiphertext {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(TwoSmCiphertext { key_ref: KeyRef::decode(r)?, enc: r.array()?, ct: r.opaque()?.to_vec() })
    }
}

/// Why a 2SM send or receive failed. On every error the session and key store are unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TwoPartyError {
    /// A first send needs the peer's prekey bundle and the provider has none: fetch one and
    /// retry.
    #[error("no prekey bundle available for {0:?}")]
    MissingPrekeyBundle(IdentityKey),
    /// The peer's bundle was refused, or a prekey secret named by a first message is gone.
    #[error(transparent)]
    Prekey(#[from] PrekeyError),
    /// A prekey message arrived after the session had already received a message.
    #[error("prekey message on a session that has already received")]
    UnexpectedPrekeyMessage,
    /// The ciphertext names one of my keys that I never had or have already erased
    /// (a replay, or a message from a diverged peer).
    #[error("no secret key at index {0}: never generated or already erased")]
    UnknownKeyIndex(u64),
    /// The ciphertext uses the key the peer gave me, but I hold none.
    #[error("no key received from the peer yet, or it was already used")]
    NoReceivedKey,
    /// The ciphertext did not authenticate.
    #[error("2SM ciphertext failed to decrypt")]
    DecryptionFailed,
    /// The peer's next public key, inside an authentic plaintext, is a small-order point.
    #[error("the peer's next 2SM key is a small-order point")]
    SmallOrderKey,
    /// The decrypted plaintext is malformed.
    #[error("malformed 2SM plaintext: {0}")]
    MalformedPlaintext(DecodeError),
    /// A primitive failed (a bug, or an invalid peer public key).
    #[error(transparent)]
    Crypto(CryptoError),
}

impl From<CryptoError> for TwoPartyError {
    fn from(e: CryptoError) -> Self {
        match e {
            CryptoError::DecryptionFailed => TwoPartyError::DecryptionFailed,
            other => TwoPartyError::Crypto(other),
        }
    }
}

/// The key I will encrypt my next message to (§4.1 `other_pk` and `other_pk_origin`).
#[derive(Clone, Debug, PartialEq, Eq)]
enum PeerKey {
    /// Not yet known: the first send fetches the peer's prekey bundle.
    Prekey,
    /// The peer generated it and holds its secret at its index `i`.
    Theirs { pk: X25519Public, index: u64 },
    /// I generated it and sent the peer its secret.
    Mine { pk: X25519Public },
}

/// The decrypted contents of a 2SM ciphertext (§4.3). Encoded with the fixed fields first
/// and the payload as the remaining bytes, so no length prefix is spent on it.
struct TwoSmPlaintext {
    key_for_receiver: X25519Secret,
    sender_key_index: u64,
    sender_new_pk: X25519Public,
    payload: Zeroizing<Vec<u8>>,
}

impl TwoSmPlaintext {
    fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::new();
        w.raw(&self.key_for_receiver.to_bytes()[..]);
        w.var(self.sender_key_index);
        w.raw(&self.sender_new_pk.0);
        w.raw(&self.payload);
        Zeroizing::new(w.into_bytes())
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes)?;
        let sk = Zeroizing::new(r.array::<KEY_LEN>()?);
        let key_for_receiver = X25519Secret::from_bytes(*sk);
        let sender_key_index = r.var()?;
        let sender_new_pk = X25519Public(r.array()?);
        let payload = Zeroizing::new(r.rest().to_vec());
        Ok(TwoSmPlaintext { key_for_receiver, sender_key_index, sender_new_pk, payload })
    }
}

/// What the enclosing state determines of a 2SM session (§4.1): the group, my MID, the
/// peer's MID and its identity key. A [`TwoPartySession`] holds them; a group's DCGKA state,
/// which knows them already, keeps only each peer's [`SessionState`] and supplies them on
/// every call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SessionContext {
    pub(crate) gid: GroupId,
    pub(crate) me: MemberId,
    pub(crate) peer: MemberId,
    pub(crate) peer_ik: IdentityKey,
}

/// The 2SM state σ for one (group, peer) pair (§4.1).
#[derive(Clone, Debug)]
pub struct TwoPartySession {
    ctx: SessionContext,
    state: SessionState,
}

/// The 2SM state σ without its context ([`SessionContext`]).
#[derive(Clone, Debug)]
pub(crate) struct SessionState {
    /// My secret keys the peer may still use, by ascending index: a short list (one
    /// entry while the two sides alternate), so a sorted vector rather than a map.
    my_sks: Vec<(u64, X25519Secret)>,
    next_index: u64,
    received_sk: Option<X25519Secret>,
    other: PeerKey,
    received_any: bool,
}

/// A successful receive that has not been applied yet (stage, then commit).
pub struct StagedReceive {
    session: TwoPartySession,
    payload: Zeroizing<Vec<u8>>,
    consumed_opk: Option<OneTimePrekeyId>,
}

impl core::fmt::Debug for StagedReceive {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StagedReceive")
            .field("session", &self.session)
            .field("payload", &format_args!("<redacted, {} bytes>", self.payload.len()))
            .field("consumed_opk", &self.consumed_opk)
            .finish()
    }
}

impl StagedReceive {
    /// The decrypted payload.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The one-time prekey this first message consumed, if any.
    pub fn consumed_one_time_prekey(&self) -> Option<OneTimePrekeyId> {
        self.consumed_opk
    }

    /// Applies the receive: replaces the session state and deletes a consumed one-time
    /// prekey from the key store for good. Returns the payload.
    pub fn commit(self, session: &mut TwoPartySession, keys: &mut KeyStore) -> Zeroizing<Vec<u8>> {
        if let Some(id) = self.consumed_opk {
            keys.delete_opk(id);
        }
        *session = self.session;
        self.payload
    }
}

/// Moves `keys` into a buffer of exactly `keys.len() + extra` slots and wipes the old
/// buffer: a plain reallocation, or the tail a `retain` leaves, would keep copies of secret
/// keys in memory that is freed or unused.
fn resize_wiped(keys: &mut Vec<(u64, X25519Secret)>, extra: usize) {
    let mut moved = Vec::with_capacity(keys.len() + extra);
    moved.append(keys);
    keys.spare_capacity_mut().zeroize();
    *keys = moved;
}

fn aad(key_ref: &KeyRef) -> Vec<u8> {
    crypto::info(labels::TWO_SM_AAD, &[&key_ref.to_bytes()])
}

impl TwoPartySession {
    /// `2SM-Init(me, P, gid)`. Fetches nothing: the peer's bundle is looked up on the first send.
    pub fn new(gid: GroupId, me: MemberId, peer: MemberId, peer_ik: IdentityKey) -> Self {
        TwoPartySession { ctx: SessionContext { gid, me, peer, peer_ik }, state: SessionState::new() }
    }

    /// The peer of this session.
    pub fn peer(&self) -> &MemberId {
        &self.ctx.peer
    }

    /// Number of my own secret keys still held (they are erased as the peer uses them).
    pub fn held_secret_keys(&self) -> usize {
        self.state.held_secret_keys()
    }

    /// Whether the next send is a first contact that needs the peer's prekey bundle.
    pub fn needs_bundle(&self) -> bool {
        self.state.needs_bundle()
    }

    /// The peer's identity key (whose bundle a first contact uses).
    pub fn peer_identity(&self) -> &IdentityKey {
        &self.ctx.peer_ik
    }

    /// `2SM-Send`: encrypts `payload` to the peer, fetching and verifying the peer's bundle
    /// through `provider` on a first contact. Atomic: on error nothing changes (a one-time
    /// prekey handed out by the provider is then simply never used).
    pub fn send(
        &mut self,
        rng: &mut impl CryptoRng,
        provider: &mut dyn PrekeyProvider,
        now: u64,
        payload: &[u8],
    ) -> Result<TwoSmCiphertext, TwoPartyError> {
        let ik = self.ctx.peer_ik;
        let bundle = if self.needs_bundle() {
            let b = provider.bundle(&ik).ok_or(TwoPartyError::MissingPrekeyBundle(ik))?;
            Some(b.verify(&ik, now)?)
        } else {
            None
        };
        self.send_prepared(rng, bundle.as_ref(), payload)
    }

    /// `2SM-Send` with the peer's bundle already fetched and verified (needed exactly when
    /// [`needs_bundle`](Self::needs_bundle) is true; ignored otherwise). Atomic.
    pub fn send_prepared(
        &mut self,
        rng: &mut impl CryptoRng,
        bundle: Option<&VerifiedBundle>,
        payload: &[u8],
    ) -> Result<TwoSmCiphertext, TwoPartyError> {
        self.state.send_prepared(&self.ctx, rng, bundle, payload)
    }

    /// `2SM-Receive`, staged: decrypts without changing anything. Apply the result with
    /// [`StagedReceive::commit`].
    pub fn receive_staged(&self, keys: &KeyStore, c: &TwoSmCiphertext) -> Result<StagedReceive, TwoPartyError> {
        let (state, payload, consumed_opk) = self.state.receive_staged(&self.ctx, keys, c)?;
        Ok(StagedReceive { session: TwoPartySession { ctx: self.ctx, state }, payload, consumed_opk })
    }

    /// `2SM-Receive`: decrypts and applies in one step. On error nothing changes.
    pub fn receive(&mut self, keys: &mut KeyStore, c: &TwoSmCiphertext) -> Result<Zeroizing<Vec<u8>>, TwoPartyError> {
        self.state.receive(&self.ctx, keys, c)
    }
}

/// A staged receive of [`SessionState::receive_staged`]: the new state, the payload and the
/// one-time prekey it consumed.
type Staged = (SessionState, Zeroizing<Vec<u8>>, Option<OneTimePrekeyId>);

impl SessionState {
    /// A session before its first message either way.
    pub(crate) fn new() -> Self {
        SessionState { my_sks: Vec::new(), next_index: 1, received_sk: None, other: PeerKey::Prekey, received_any: false }
    }

    /// [`TwoPartySession::held_secret_keys`].
    pub(crate) fn held_secret_keys(&self) -> usize {
        self.my_sks.len() + usize::from(self.received_sk.is_some())
    }

    /// [`TwoPartySession::needs_bundle`].
    pub(crate) fn needs_bundle(&self) -> bool {
        self.other == PeerKey::Prekey
    }

    /// Snapshot encoding: `my_sks:list<(index:var, sk:[32])> ‖ next_index:var ‖
    /// received_sk:opt<[32]> ‖ other ‖ received_any:u8`, where `other` is `0` (prekey), `1
    /// ‖ pk:[32] ‖ index:var` (the peer's key) or `2 ‖ pk:[32]` (a key I gave the peer). The
    /// context ([`SessionContext`]) comes from the enclosing state.
    pub(crate) fn encode_state(&self, w: &mut StateWriter) {
        w.items(self.my_sks.iter(), |w, (i, sk)| {
            w.var(*i);
            w.raw(&sk.to_bytes()[..]);
        });
        w.var(self.next_index);
        w.opt(self.received_sk.as_ref(), |w, sk| w.raw(&sk.to_bytes()[..]));
        match &self.other {
            PeerKey::Prekey => w.u8(0),
            PeerKey::Theirs { pk, index } => {
                w.u8(1);
                w.raw(&pk.0);
                w.var(*index);
            }
            PeerKey::Mine { pk } => {
                w.u8(2);
                w.raw(&pk.0);
            }
        }
        w.flag(self.received_any);
    }

    /// Reverses [`encode_state`](Self::encode_state).
    pub(crate) fn decode_state(r: &mut StateReader<'_>) -> Result<Self, SnapshotError> {
        fn secret(r: &mut Reader<'_>) -> Result<X25519Secret, DecodeError> {
            let sk = Zeroizing::new(r.array::<KEY_LEN>()?);
            Ok(X25519Secret::from_bytes(*sk))
        }
        let my_sks: Vec<(u64, X25519Secret)> = r.items(1 + KEY_LEN, |r| Ok((r.var()?, secret(r)?)))?;
        if !my_sks.windows(2).all(|w| w[0].0 < w[1].0) {
            return Err(DecodeError::NotCanonicalSet.into());
        }
        let next_index = r.var()?;
        let received_sk = r.opt(secret)?;
        let other = match r.u8()? {
            0 => PeerKey::Prekey,
            1 => PeerKey::Theirs { pk: X25519Public(r.array()?), index: r.var()? },
            2 => PeerKey::Mine { pk: X25519Public(r.array()?) },
            t => return Err(DecodeError::UnknownTag { what: "2SM peer key", tag: u64::from(t) }.into()),
        };
        let received_any = r.flag()?;
        Ok(SessionState { my_sks, next_index, received_sk, other, received_any })
    }


    /// [`TwoPartySession::send_prepared`] in context `ctx`.
    pub(crate) fn send_prepared(
        &mut self,
        ctx: &SessionContext,
        rng: &mut impl CryptoRng,
        bundle: Option<&VerifiedBundle>,
        payload: &[u8],
    ) -> Result<TwoSmCiphertext, TwoPartyError> {
        let bundle = match (&self.other, bundle) {
            (PeerKey::Prekey, None) => return Err(TwoPartyError::MissingPrekeyBundle(ctx.peer_ik)),
            (PeerKey::Prekey, Some(b)) if b.ik != ctx.peer_ik => {
                return Err(TwoPartyError::Prekey(PrekeyError::WrongIdentity));
            }
            (PeerKey::Prekey, Some(b)) => Some(b),
            _ => None,
        };
        let sk_a = X25519Secret::generate(rng);
        let sk_b = X25519Secret::generate(rng);
        let pk_b = sk_b.public_key();
        let pt = TwoSmPlaintext {
            key_for_receiver: sk_b,
            sender_key_index: self.next_index,
            sender_new_pk: sk_a.public_key(),
            payload: Zeroizing::new(payload.to_vec()),
        }
        .encode();
        let (me, peer, gid) = (ctx.me.0, ctx.peer.0, ctx.gid.0);
        let (key_ref, enc, ct) = match (&self.other, bundle) {
            (_, Some(b)) => {
                let key_ref = KeyRef::Prekey { spk_id: b.spk.0, opk_id: b.opk.map(|o| o.0) };
                let (spk_id, spk_pub) = &b.spk;
                let opk = b.opk.as_ref().map(|(id, pk)| (id.0, pk));
                let (enc, ct) =
                    crypto::prekey_seal(rng, (spk_id.0, spk_pub), opk, &[&gid, &me, &peer], &aad(&key_ref), &pt)?;
                (key_ref, enc, ct)
            }
            (PeerKey::Theirs { pk, index }, None) => {
                let key_ref = KeyRef::YourKey(*index);
                let info = crypto::info(labels::TWO_SM, &[&gid, &me, &peer]);
                let (enc, ct) = crypto::hpke_seal(rng, pk, &info, &aad(&key_ref), &pt)?;
                (key_ref, enc, ct)
            }
            (PeerKey::Mine { pk }, None) => {
                let key_ref = KeyRef::KeyIGaveYou;
                let info = crypto::info(labels::TWO_SM, &[&gid, &me, &peer]);
                let (enc, ct) = crypto::hpke_seal(rng, pk, &info, &aad(&key_ref), &pt)?;
                (key_ref, enc, ct)
            }
            (PeerKey::Prekey, None) => return Err(TwoPartyError::Crypto(CryptoError::Internal("2SM prekey state"))),
        };
        // Commit: nothing below can fail.
        // Indices only grow: the new key goes last.
        if self.my_sks.len() == self.my_sks.capacity() {
            resize_wiped(&mut self.my_sks, 1);
        }
        self.my_sks.push((self.next_index, sk_a));
        self.next_index += 1;
        self.other = PeerKey::Mine { pk: pk_b };
        Ok(TwoSmCiphertext { key_ref, enc, ct })
    }

    /// [`TwoPartySession::receive_staged`] in context `ctx`: the new state, the payload and
    /// the one-time prekey consumed.
    pub(crate) fn receive_staged(
        &self,
        ctx: &SessionContext,
        keys: &KeyStore,
        c: &TwoSmCiphertext,
    ) -> Result<Staged, TwoPartyError> {
        let (me, peer, gid) = (ctx.me.0, ctx.peer.0, ctx.gid.0);
        let aad = aad(&c.key_ref);
        let mut consumed_opk = None;
        let pt = match c.key_ref {
            KeyRef::Prekey { spk_id, opk_id } => {
                if self.received_any {
                    return Err(TwoPartyError::UnexpectedPrekeyMessage);
                }
                let spk = keys.spk(spk_id)?;
                let opk = match opk_id {
                    Some(id) => Some((id.0, keys.opk(id)?)),
                    None => None,
                };
                let pt = crypto::prekey_open((spk_id.0, spk), opk, &[&gid, &peer, &me], &c.enc, &aad, &c.ct)?;
                // Deleted from the key store only when the staged receive is committed.
                consumed_opk = opk_id;
                pt
            }
            KeyRef::YourKey(i) => {
                let sk = self
                    .my_sks
                    .binary_search_by_key(&i, |(j, _)| *j)
                    .ok()
                    .and_then(|k| self.my_sks.get(k))
                    .map(|(_, sk)| sk)
                    .ok_or(TwoPartyError::UnknownKeyIndex(i))?;
                let info = crypto::info(labels::TWO_SM, &[&gid, &peer, &me]);
                crypto::hpke_open(sk, &c.enc, &info, &aad, &c.ct)?
            }
            KeyRef::KeyIGaveYou => {
                let sk = self.received_sk.as_ref().ok_or(TwoPartyError::NoReceivedKey)?;
                let info = crypto::info(labels::TWO_SM, &[&gid, &peer, &me]);
                crypto::hpke_open(sk, &c.enc, &info, &aad, &c.ct)?
            }
        };
        let pt = TwoSmPlaintext::decode(&pt).map_err(TwoPartyError::MalformedPlaintext)?;
        if !pt.sender_new_pk.is_contributory() {
            // Sealing the next message to this key would fail: refuse it now, while the
            // session is unchanged, instead of failing later in a send.
            return Err(TwoPartyError::SmallOrderKey);
        }
        let mut session = self.clone();
        if let KeyRef::YourKey(i) = c.key_ref {
            // The peer never uses my keys at indices <= i again.
            session.my_sks.retain(|(j, _)| *j > i);
            resize_wiped(&mut session.my_sks, 0);
        }
        session.received_sk = Some(pt.key_for_receiver);
        session.other = PeerKey::Theirs { pk: pt.sender_new_pk, index: pt.sender_key_index };
        session.received_any = true;
        Ok((session, pt.payload, consumed_opk))
    }

    /// [`TwoPartySession::receive`] in context `ctx`.
    pub(crate) fn receive(
        &mut self,
        ctx: &SessionContext,
        keys: &mut KeyStore,
        c: &TwoSmCiphertext,
    ) -> Result<Zeroizing<Vec<u8>>, TwoPartyError> {
        let (state, payload, consumed_opk) = self.receive_staged(ctx, keys, c)?;
        if let Some(id) = consumed_opk {
            keys.delete_opk(id);
        }
        *self = state;
        Ok(payload)
    }
}
