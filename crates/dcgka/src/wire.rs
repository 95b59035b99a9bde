//! The wire format of envelopes and control-message bodies (§5.2, §7.1, §8).
//!
//! ```text
//! Envelope = version:u8 ‖ kind:u8 ‖ [gid:[32] if create] ‖ seq:var
//!          ‖ sender:([32] IK if seq = 1, else [16] member tag)
//!          ‖ new_signing_key:opt<[32] ‖ key_cert:[64]> ‖ body ‖ signature:[64]
//! ```
//!
//! A new signing key travels with its certificate ([`CertifiedKey`], §7.2): a signature by
//! the sender's identity key over the group, the sender's MID, the sequence number of the
//! envelope (or batch item) that announces the key, and the key. Whoever knows the
//! member's identity key can check it, a newcomer included (§7.4).
//!
//! Two layout decisions relative to the spec's field list (both byte-neutral or better,
//! see ARCHITECTURE.md): `seq` precedes `sender`, so the decoder knows the sender field's
//! width, and `body` has no length prefix, being everything between the header and the
//! fixed-size signature at the end.
//!
//! The signature covers `info("sig-envelope","") ‖ gid ‖ full sender MID ‖` every wire
//! byte before it, so the group ID and full MID need not travel.
//!
//! A **batch** (kind 17, coalesced acknowledgments, §12) carries several consecutive items
//! of one sender under one signature: `body = count:var ‖ (kind:u8 ‖ body:opaque)*`. Its
//! `seq` is the first item's; the items take `seq, seq + 1, …`. Every item but the last is
//! an ack or add-ack; the last may be anything but a create, and only it may rotate the
//! signing key, which takes effect after the whole batch.

use crate::codec::{Decode, DecodeError, Encode, Reader, Writer, check_sorted_set};
use crate::consts::{MAX_BATCH_ITEMS, WIRE_VERSION};
use crate::crypto::{
    self, CryptoError, Hash32, IdentityKey, PreparedKey, SIGNATURE_LEN, Signature, SigningSecret, VerifyingKey, labels,
};
use crate::ids::{GroupId, MemberId, MemberTag, SeqNo};
use crate::prekeys::CarriedPrekey;
use crate::two_party::TwoSmCiphertext;

/// Smallest encoding of a [`TwoSmCiphertext`]: key ref 1 + enc 32 + length 1.
const MIN_TWO_SM_LEN: usize = 34;

/// The kind of an envelope (§7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EnvelopeKind {
    /// Group creation.
    Create,
    /// Acknowledgment of a create, update, remove, or of one's own add.
    Ack,
    /// PCS update.
    Update,
    /// Removal of a member.
    Remove,
    /// Addition of a member.
    Add,
    /// Acknowledgment of someone else's add.
    AddAck,
    /// Application message.
    Application,
    /// Several consecutive items of one sender under one signature: held acks and add-acks,
    /// then at most one other item (coalesced acknowledgments, §12).
    Batch,
}

impl EnvelopeKind {
    /// The wire tag.
    pub fn tag(self) -> u8 {
        match self {
            EnvelopeKind::Create => 1,
            EnvelopeKind::Ack => 2,
            EnvelopeKind::Update => 3,
            EnvelopeKind::Remove => 4,
            EnvelopeKind::Add => 5,
            EnvelopeKind::AddAck => 6,
            EnvelopeKind::Application => 16,
            EnvelopeKind::Batch => 17,
        }
    }

    /// Parses a wire tag.
    pub fn from_tag(tag: u8) -> Result<Self, DecodeError> {
        Ok(match tag {
            1 => EnvelopeKind::Create,
            2 => EnvelopeKind::Ack,
            3 => EnvelopeKind::Update,
            4 => EnvelopeKind::Remove,
            5 => EnvelopeKind::Add,
            6 => EnvelopeKind::AddAck,
            16 => EnvelopeKind::Application,
            17 => EnvelopeKind::Batch,
            t => return Err(DecodeError::UnknownTag { what: "envelope kind", tag: u64::from(t) }),
        })
    }

    /// Whether an envelope of this kind rotates its sender's signing key (§7.2), apart
    /// from the rotation every sender performs on its first envelope.
    pub fn rotates_signing_key(self) -> bool {
        matches!(self, EnvelopeKind::Create | EnvelopeKind::Update | EnvelopeKind::Remove | EnvelopeKind::Add)
    }
}

/// How an envelope names its sender: a 16-byte tag, or the full identity key in the
/// sender's first envelope (`seq = 1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SenderRef {
    /// A member the receiver already knows.
    Tag(MemberTag),
    /// The sender's identity key (first envelope only); the MID follows from the
    /// acknowledged operation.
    Identity(IdentityKey),
}

/// A parsed envelope. Parsing checks structure only: the signature has **not** been
/// verified (that needs the sender's current signing key, which only the group knows).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// What the body holds.
    pub kind: EnvelopeKind,
    /// The group ID, on the wire only in a create.
    pub gid: Option<GroupId>,
    /// The sender's sequence number.
    pub seq: SeqNo,
    /// The sender.
    pub sender: SenderRef,
    /// The sender's next signing key, present exactly when §7.2 requires it.
    pub new_signing_key: Option<VerifyingKey>,
    /// The certificate of `new_signing_key` by the sender's identity key (§7.2); present
    /// exactly when `new_signing_key` is.
    pub key_cert: Option<Signature>,
    /// The body: control content with its direct parts, or an application body.
    pub body: Vec<u8>,
    /// Signature under the sender's signing key before this envelope.
    pub signature: Signature,
}

/// A member's signing key, certified by its identity key (§7.2): `cert` is the identity
/// key's signature over `info("sig-signing-key", "") ‖ gid ‖ MID ‖ u64(seq) ‖ key`, `seq`
/// being the sequence number of the envelope (or batch item) that announced the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CertifiedKey {
    /// The signing key.
    pub key: VerifyingKey,
    /// The sequence number of the envelope that announced it.
    pub seq: SeqNo,
    /// The identity key's signature.
    pub cert: Signature,
}

impl CertifiedKey {
    fn message(gid: &GroupId, member: &MemberId, seq: SeqNo, key: &VerifyingKey) -> [u8; 104] {
        let mut m = [0u8; 104];
        m[..32].copy_from_slice(&gid.0);
        m[32..64].copy_from_slice(&member.0);
        m[64..72].copy_from_slice(&seq.0.to_be_bytes());
        m[72..].copy_from_slice(&key.0);
        m
    }

    /// Certifies `key` as `member`'s signing key from its envelope `seq` on, with the
    /// member's identity key.
    pub fn issue(identity: &SigningSecret, gid: &GroupId, member: &MemberId, seq: SeqNo, key: VerifyingKey) -> Self {
        let cert = identity.sign(labels::SIG_SIGNING_KEY, &[&Self::message(gid, member, seq, &key)]);
        CertifiedKey { key, seq, cert }
    }

    /// Checks the certificate under `member`'s identity key `ik`.
    pub fn verify(&self, ik: &IdentityKey, gid: &GroupId, member: &MemberId) -> Result<(), CryptoError> {
        ik.verify(labels::SIG_SIGNING_KEY, &[&Self::message(gid, member, self.seq, &self.key)], &self.cert)
    }
}

/// Whether §7.2 requires an envelope of `kind` at `seq` to carry a new signing key.
pub fn requires_rotation(kind: EnvelopeKind, seq: SeqNo) -> bool {
    kind.rotates_signing_key() || seq.0 == 1
}

impl Envelope {
    fn encode_unsigned(&self, w: &mut Writer) {
        w.u8(WIRE_VERSION);
        w.u8(self.kind.tag());
        if let Some(g) = &self.gid {
            w.raw(&g.0);
        }
        w.var(self.seq.0);
        match &self.sender {
            SenderRef::Tag(t) => w.raw(&t.0),
            SenderRef::Identity(ik) => w.raw(&ik.0),
        }
        w.opt(self.new_signing_key.as_ref(), |w, k| {
            w.raw(&k.0);
            w.raw(&self.key_cert.as_ref().map_or([0; SIGNATURE_LEN], |c| c.0));
        });
        w.raw(&self.body);
    }

    /// The wire bytes before the signature.
    pub fn unsigned_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode_unsigned(&mut w);
        w.into_bytes()
    }

    fn signed_message(&self, gid: &GroupId, sender: &MemberId) -> Vec<u8> {
        let unsigned = self.unsigned_bytes();
        let mut m = Vec::with_capacity(64 + unsigned.len());
        m.extend_from_slice(&gid.0);
        m.extend_from_slice(&sender.0);
        m.extend_from_slice(&unsigned);
        m
    }

    /// Builds and signs an envelope. `sender` is the full MID; the wire carries its tag, or
    /// `first_identity` when `seq = 1`.
    #[allow(clippy::too_many_arguments)]
    pub fn seal(
        kind: EnvelopeKind,
        gid: &GroupId,
        seq: SeqNo,
        sender: &MemberId,
        first_identity: Option<IdentityKey>,
        new_signing_key: Option<VerifyingKey>,
        key_cert: Option<Signature>,
        body: Vec<u8>,
        signing_key: &SigningSecret,
    ) -> Envelope {
        let sender_ref = match (seq.0, first_identity) {
            (1, Some(ik)) => SenderRef::Identity(ik),
            _ => SenderRef::Tag(sender.tag()),
        };
        let mut env = Envelope {
            kind,
            gid: (kind == EnvelopeKind::Create).then_some(*gid),
            seq,
            sender: sender_ref,
            key_cert: new_signing_key.and(key_cert),
            new_signing_key,
            body,
            signature: Signature([0; SIGNATURE_LEN]),
        };
        env.signature = signing_key.sign(labels::SIG_ENVELOPE, &[&env.signed_message(gid, sender)]);
        env
    }

    /// Verifies the signature under `key`, binding `gid` and the full sender MID.
    pub fn verify(&self, gid: &GroupId, sender: &MemberId, key: &VerifyingKey) -> Result<(), CryptoError> {
        self.verify_prepared(gid, sender, &key.prepare()?)
    }

    /// [`verify`](Self::verify) under a key decompressed beforehand.
    pub fn verify_prepared(&self, gid: &GroupId, sender: &MemberId, key: &PreparedKey) -> Result<(), CryptoError> {
        key.verify(labels::SIG_ENVELOPE, &[&self.signed_message(gid, sender)], &self.signature)
    }

    /// `envelope-hash`: SHA-256 over the bytes without the signature (acks reference its
    /// first 16 bytes).
    pub fn hash(&self) -> Hash32 {
        crypto::hash(labels::ENVELOPE_HASH, &[&self.unsigned_bytes()])
    }

    /// The sequence number of the envelope's last item: `seq` itself, except for a batch,
    /// whose items take `seq, seq + 1, …`.
    pub fn last_seq(&self) -> SeqNo {
        if self.kind != EnvelopeKind::Batch {
            return self.seq;
        }
        // Decoding checked the batch; its item count is the body's first varint.
        let count = Reader::new(&self.body).and_then(|mut r| r.var()).unwrap_or(1);
        SeqNo(self.seq.0.saturating_add(count.saturating_sub(1)))
    }

    /// The items the envelope carries, each as the envelope it stands for: a batch unrolls
    /// into one envelope per item (consecutive sequence numbers, the batch's signature, the
    /// new signing key on the last item only); any other envelope is its own single item.
    /// The unrolled envelopes are **not** separately signed: verify the batch, and use the
    /// batch's [`short_hash`](Self::short_hash) for all of them.
    pub fn items(&self) -> Result<Vec<Envelope>, DecodeError> {
        if self.kind != EnvelopeKind::Batch {
            return Ok(vec![self.clone()]);
        }
        let items = decode_batch(&self.body)?;
        let last = items.len().saturating_sub(1);
        Ok(items
            .into_iter()
            .enumerate()
            .map(|(i, item)| Envelope {
                kind: item.kind,
                gid: None,
                seq: SeqNo(self.seq.0 + i as u64),
                sender: self.sender,
                new_signing_key: if i == last { self.new_signing_key } else { None },
                key_cert: if i == last { self.key_cert } else { None },
                body: item.body,
                signature: self.signature,
            })
            .collect())
    }

    /// The new signing key with its certificate, bound to the sequence number of the item
    /// that announces it (a batch's last item), if the envelope rotates.
    pub fn certified_key(&self) -> Option<CertifiedKey> {
        Some(CertifiedKey { key: self.new_signing_key?, seq: self.last_seq(), cert: self.key_cert? })
    }

    /// The 16-byte prefix of [`hash`](Self::hash) that acks carry.
    pub fn short_hash(&self) -> [u8; 16] {
        let mut h = [0u8; 16];
        h.copy_from_slice(&self.hash().0[..16]);
        h
    }
}

impl Encode for Envelope {
    fn encode(&self, w: &mut Writer) {
        self.encode_unsigned(w);
        w.raw(&self.signature.0);
    }
}

impl Decode for Envelope {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let v = r.u8()?;
        if v != WIRE_VERSION {
            return Err(DecodeError::UnsupportedVersion(v));
        }
        let kind = EnvelopeKind::from_tag(r.u8()?)?;
        let gid = if kind == EnvelopeKind::Create { Some(GroupId(r.array()?)) } else { None };
        let seq = SeqNo(r.var()?);
        if seq.0 == 0 {
            return Err(DecodeError::InvalidField("sequence numbers start at 1"));
        }
        let sender = if seq.0 == 1 {
            SenderRef::Identity(VerifyingKey(r.array()?))
        } else {
            SenderRef::Tag(MemberTag(r.array()?))
        };
        let rotation = r.opt(|r| Ok((VerifyingKey(r.array()?), Signature(r.array()?))))?;
        let (new_signing_key, key_cert) = (rotation.map(|(k, _)| k), rotation.map(|(_, c)| c));
        let body_len = r
            .remaining()
            .checked_sub(SIGNATURE_LEN)
            .ok_or(DecodeError::Truncated { offset: r.position(), needed: SIGNATURE_LEN })?;
        let body = r.take(body_len)?.to_vec();
        let signature = Signature(r.array()?);
        let rotates = if kind == EnvelopeKind::Batch {
            // A first envelope names its sender by identity key and is never batched.
            if seq.0 == 1 {
                return Err(DecodeError::InvalidField("a batch never holds a sender's first envelope"));
            }
            let items = decode_batch(&body)?;
            if seq.0.checked_add(items.len() as u64).is_none() {
                return Err(DecodeError::InvalidField("batch sequence numbers overflow"));
            }
            items.last().is_some_and(|i| i.kind.rotates_signing_key())
        } else {
            requires_rotation(kind, seq)
        };
        if new_signing_key.is_some() != rotates {
            return Err(DecodeError::InvalidField("signing-key rotation present exactly when required"));
        }
        Ok(Envelope { kind, gid, seq, sender, new_signing_key, key_cert, body, signature })
    }
}

/// One item of a batch envelope: the kind and body a single envelope would carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchItem {
    /// The item's kind.
    pub kind: EnvelopeKind,
    /// Its body.
    pub body: Vec<u8>,
}

/// Encodes a batch body: `count:var ‖ (kind:u8 ‖ body:opaque)*`.
pub fn encode_batch(items: &[BatchItem]) -> Vec<u8> {
    let mut w = Writer::new();
    w.list(items, |w, i| {
        w.u8(i.kind.tag());
        w.opaque(&i.body);
    });
    w.into_bytes()
}

/// Decodes and checks a batch body (§12): between 2 and [`MAX_BATCH_ITEMS`] items, every
/// item but the last an ack or add-ack, the last neither a create nor a batch.
pub fn decode_batch(body: &[u8]) -> Result<Vec<BatchItem>, DecodeError> {
    let mut r = Reader::new(body)?;
    let items = r.list(2, |r| {
        let kind = EnvelopeKind::from_tag(r.u8()?)?;
        Ok(BatchItem { kind, body: r.opaque()?.to_vec() })
    })?;
    r.finish()?;
    if items.len() > MAX_BATCH_ITEMS {
        return Err(DecodeError::ListTooLong { count: items.len() as u64, max: MAX_BATCH_ITEMS });
    }
    if items.len() < 2 {
        return Err(DecodeError::InvalidField("a batch holds at least 2 items"));
    }
    let (last, held) = items.split_last().ok_or(DecodeError::InvalidField("empty batch"))?;
    if held.iter().any(|i| !matches!(i.kind, EnvelopeKind::Ack | EnvelopeKind::AddAck)) {
        return Err(DecodeError::InvalidField("only acks and add-acks precede a batch's last item"));
    }
    if matches!(last.kind, EnvelopeKind::Create | EnvelopeKind::Batch) {
        return Err(DecodeError::InvalidField("a batch never carries a create or a batch"));
    }
    Ok(items)
}

/// Seeds of one create, update or remove, one 2SM ciphertext per recipient in ascending
/// MID order, with the digest of that recipient list (§5.2, V5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedBlock {
    /// `recipients-digest` of the sorted recipients.
    pub recipients_digest: Hash32,
    /// One ciphertext per recipient.
    pub cts: Vec<TwoSmCiphertext>,
}

impl Encode for SeedBlock {
    fn encode(&self, w: &mut Writer) {
        w.raw(&self.recipients_digest.0);
        w.list(&self.cts, |w, c| c.encode(w));
    }
}

impl Decode for SeedBlock {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(SeedBlock { recipients_digest: Hash32(r.array()?), cts: r.list(MIN_TWO_SM_LEN, TwoSmCiphertext::decode)? })
    }
}

/// `recipients-digest` of a sorted recipient list (§2.3).
pub fn recipients_digest(sorted: &[MemberId]) -> Hash32 {
    let parts: Vec<&[u8]> = sorted.iter().map(|m| &m.0[..]).collect();
    crypto::hash(labels::RECIPIENTS_DIGEST, &parts)
}

/// The operation an ack or add-ack acknowledges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AckRef {
    /// Tag of the acknowledged operation's sender.
    pub of_sender: MemberTag,
    /// Its sequence number.
    pub of_seq: SeqNo,
    /// First 16 bytes of its envelope hash.
    pub of_hash: [u8; 16],
}

impl Encode for AckRef {
    fn encode(&self, w: &mut Writer) {
        w.raw(&self.of_sender.0);
        w.var(self.of_seq.0);
        w.raw(&self.of_hash);
    }
}

impl Decode for AckRef {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(AckRef { of_sender: MemberTag(r.array()?), of_seq: SeqNo(r.var()?), of_hash: r.array()? })
    }
}

/// A member secret forwarded to a concurrently added member (§5.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    /// Tag of the recipient.
    pub recipient: MemberTag,
    /// The 2SM ciphertext of the forwarded member secret.
    pub ct: TwoSmCiphertext,
}

/// The content of a control envelope with its direct parts (§5.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlBody {
    /// `create`: the other initial members' identity keys (sorted, no duplicates) and the seeds.
    Create {
        /// Identity keys of the other initial members.
        members: Vec<IdentityKey>,
        /// Seeds, one per initial member in ascending MID order.
        seeds: SeedBlock,
    },
    /// `update`.
    Update {
        /// Seeds to every other member of the sender's view.
        seeds: SeedBlock,
    },
    /// `remove`.
    Remove {
        /// Tag of the removed member.
        target: MemberTag,
        /// Seeds to every member of the sender's view but the target.
        seeds: SeedBlock,
    },
    /// `add`: the new member's identity key (its MID follows from the add itself) and its
    /// signed prekey, to which every member seals its add-ack (§5.5).
    Add {
        /// Identity key of the added person.
        target: IdentityKey,
        /// The added person's signed prekey, signed by `target`.
        prekey: CarriedPrekey,
    },
    /// `ack`.
    Ack {
        /// What is acknowledged.
        of: AckRef,
        /// Forwarded member secrets, usually none.
        forwards: Vec<Forward>,
    },
    /// `add-ack`.
    AddAck {
        /// What is acknowledged.
        of: AckRef,
        /// The acker's ratchet state for the added member, absent for a cancelled add.
        ratchet_ct: Option<TwoSmCiphertext>,
    },
}

impl ControlBody {
    /// The envelope kind that carries this body.
    pub fn kind(&self) -> EnvelopeKind {
        match self {
            ControlBody::Create { .. } => EnvelopeKind::Create,
            ControlBody::Update { .. } => EnvelopeKind::Update,
            ControlBody::Remove { .. } => EnvelopeKind::Remove,
            ControlBody::Add { .. } => EnvelopeKind::Add,
            ControlBody::Ack { .. } => EnvelopeKind::Ack,
            ControlBody::AddAck { .. } => EnvelopeKind::AddAck,
        }
    }

    /// Encodes the body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            ControlBody::Create { members, seeds } => {
                w.list(members, |w, m| w.raw(&m.0));
                seeds.encode(&mut w);
            }
            ControlBody::Update { seeds } => seeds.encode(&mut w),
            ControlBody::Remove { target, seeds } => {
                w.raw(&target.0);
                seeds.encode(&mut w);
            }
            ControlBody::Add { target, prekey } => {
                w.raw(&target.0);
                prekey.encode(&mut w);
            }
            ControlBody::Ack { of, forwards } => {
                of.encode(&mut w);
                w.list(forwards, |w, f| {
                    w.raw(&f.recipient.0);
                    f.ct.encode(w);
                });
            }
            ControlBody::AddAck { of, ratchet_ct } => {
                of.encode(&mut w);
                w.opt(ratchet_ct.as_ref(), |w, c| c.encode(w));
            }
        }
        w.into_bytes()
    }

    /// Decodes the body of an envelope of `kind`; `Application` is not a control kind.
    pub fn from_bytes(kind: EnvelopeKind, bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes)?;
        let body = match kind {
            EnvelopeKind::Create => {
                let members = r.list(32, |r| r.array().map(VerifyingKey))?;
                check_sorted_set(&members)?;
                ControlBody::Create { members, seeds: SeedBlock::decode(&mut r)? }
            }
            EnvelopeKind::Update => ControlBody::Update { seeds: SeedBlock::decode(&mut r)? },
            EnvelopeKind::Remove => {
                ControlBody::Remove { target: MemberTag(r.array()?), seeds: SeedBlock::decode(&mut r)? }
            }
            EnvelopeKind::Add => {
                ControlBody::Add { target: VerifyingKey(r.array()?), prekey: CarriedPrekey::decode(&mut r)? }
            }
            EnvelopeKind::Ack => ControlBody::Ack {
                of: AckRef::decode(&mut r)?,
                forwards: r.list(16 + MIN_TWO_SM_LEN, |r| {
                    Ok(Forward { recipient: MemberTag(r.array()?), ct: TwoSmCiphertext::decode(r)? })
                })?,
            },
            EnvelopeKind::AddAck => {
                ControlBody::AddAck { of: AckRef::decode(&mut r)?, ratchet_ct: r.opt(TwoSmCiphertext::decode)? }
            }
            EnvelopeKind::Application | EnvelopeKind::Batch => {
                return Err(DecodeError::UnknownTag { what: "control kind", tag: u64::from(kind.tag()) });
            }
        };
        r.finish()?;
        Ok(body)
    }
}

/// The body of an application envelope (§8): the epoch as a delta `seq − epoch`, then the
/// AEAD ciphertext. The message index does not travel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplicationBody {
    /// `seq − epoch`.
    pub epoch_delta: u64,
    /// ChaCha20-Poly1305 ciphertext with its tag.
    pub ct: Vec<u8>,
}

impl ApplicationBody {
    /// Encodes the body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.var(self.epoch_delta);
        w.raw(&self.ct);
        w.into_bytes()
    }

    /// Decodes the body.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes)?;
        let epoch_delta = r.var()?;
        if epoch_delta == 0 {
            return Err(DecodeError::InvalidField("an application message follows its epoch's control message"));
        }
        let ct = r.rest().to_vec();
        if ct.len() < crypto::TAG_LEN {
            return Err(DecodeError::Truncated { offset: r.position(), needed: crypto::TAG_LEN });
        }
        Ok(ApplicationBody { epoch_delta, ct })
    }
}
