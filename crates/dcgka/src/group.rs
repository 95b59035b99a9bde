//! The group API (§9): one [`Group`] per group and device. Bytes in, events and bytes out.
//!
//! The application never touches the DCGKA internals. Every call either succeeds and
//! returns an [`Output`] (envelopes to broadcast, Welcomes to deliver, events), or fails
//! with a [`GroupError`] and leaves the group exactly as it was.
//!
//! Caller obligations: persist the group state ([`Group::snapshot`]) before transmitting
//! the output (otherwise a crash could reuse a key); broadcast every envelope in
//! `broadcast`; deliver each Welcome in `direct` to its recipient; feed every received byte
//! string to [`Group::receive`] (duplicates and garbage are harmless).

use std::collections::{BTreeMap, BTreeSet};

use rand_core::CryptoRng;
use zeroize::Zeroizing;

use crate::codec::{Decode, DecodeError, Encode};
use crate::consts::MAX_BATCH_ITEMS;
use crate::crypto::{IdentityKey, KEY_LEN, SigningSecret, VerifyingKey};
use crate::dcgka::{Dcgka, Env, ProcessError, Processed, StagedAdd, UpdateSecret};
use crate::events::{DropReason, Event, RejectReason};
use crate::ids::{Epoch, GroupId, MemberId, MemberTag, MessageIndex, Origin, SeqNo};
use crate::ordering::{Arrival, Body, BufferError, Ordering, SenderState, Step, Verified};
use crate::prekeys::{Identity, PrekeyProvider};
use crate::ratchet::{RatchetError, SenderRatchet};
use crate::snapshot::{SnapshotError, StateReader, StateWriter};
use crate::welcome::{SenderEntry, Welcome, encode_history, member_table, replay_history};
use crate::wire::{
    ApplicationBody, BatchItem, ControlBody, Envelope, EnvelopeKind, SenderRef, encode_batch, requires_rotation,
};

/// What every call needs from the caller: randomness, time, prekey bundles and the
/// device's identity (whose key store first messages consume).
pub struct Context<'a, R: CryptoRng> {
    /// The CSPRNG.
    pub rng: &'a mut R,
    /// Unix seconds, used only for prekey validity.
    pub now: u64,
    /// Where bundles of other identities come from.
    pub prekeys: &'a mut dyn PrekeyProvider,
    /// This device's identity and key store.
    pub identity: &'a mut Identity,
}

/// Options of a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    /// Perform an update before sending or adding when a concurrent or missed removal may
    /// have left a removed member able to compute this member's keys (§5.8). Default on.
    pub auto_heal: bool,
    /// Coalesced acknowledgments (CCS §8.1, spec §12): hold acks and add-acks instead of
    /// sending each at once, and send them with this member's next envelope as one batch
    /// under one signature. The application must then call [`Group::flush_acks`] when it
    /// has nothing else to send for a while (a timer), so that the others learn the acks.
    /// Default off.
    pub coalesce_acks: bool,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig { auto_heal: true, coalesce_acks: false }
    }
}

/// An ack or add-ack of mine that is processed locally but not yet sent (coalescing).
#[derive(Clone, Debug)]
struct HeldItem {
    seq: SeqNo,
    item: BatchItem,
}

/// The state of a group at this device.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Usable.
    Active,
    /// This member was removed; its secrets are erased.
    Removed {
        /// The remover.
        by: MemberId,
    },
    /// Local state diverged (§5.6 FATAL); the group is unusable.
    Corrupted {
        /// What happened.
        reason: String,
    },
}

/// Why a create or Welcome cannot make this device a member.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The envelope is not a create (or its body is not a create body).
    #[error("not a create envelope")]
    NotACreate,
    /// The Welcome's add envelope does not hold an add.
    #[error("the Welcome does not carry an add")]
    NotAnAdd,
    /// The add (or the create) does not name this device's identity.
    #[error("the add envelope does not add this device")]
    NotForMe,
    /// The adder is not in the Welcome's member table.
    #[error("unknown adder")]
    UnknownAdder,
    /// The Welcome's history or sender table is inconsistent.
    #[error("invalid Welcome history: {0}")]
    InvalidHistory(&'static str),
    /// The add does not directly follow the adder's horizon in the sender table.
    #[error("the add does not follow the adder's horizon")]
    HorizonMismatch,
    /// The create or Welcome is invalid as the protocol defines it (§5.6).
    #[error("rejected: {0}")]
    Rejected(RejectReason),
    /// The Welcome's ratchet state could not be decrypted or used.
    #[error("the Welcome's ratchet state cannot be used")]
    Undecryptable,
}

/// Why a call failed. The group is unchanged in every case.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// The bytes are not a well-formed envelope or Welcome.
    #[error("malformed input: {0}")]
    Malformed(#[from] DecodeError),
    /// The group is not active.
    #[error("group is not active: {0:?}")]
    NotActive(Status),
    /// The envelope was discarded: a forgery, a replay, or a non-member's.
    #[error("envelope dropped: {0}")]
    Dropped(DropReason),
    /// My own envelope came back.
    #[error("own envelope echoed back")]
    OwnEnvelope,
    /// The envelope could not be buffered.
    #[error(transparent)]
    Buffer(#[from] BufferError),
    /// A first contact needs this identity's prekey bundle: put one in the provider and retry.
    #[error("prekey bundle needed for {0:?}")]
    MissingPrekeyBundle(IdentityKey),
    /// The requested operation is not allowed (removing a non-member, adding a member...).
    #[error("operation refused: {0}")]
    InvalidOperation(RejectReason),
    /// The create or Welcome is invalid or not for this device.
    #[error("cannot join: {0}")]
    CannotJoin(JoinError),
    /// The plaintext is too large.
    #[error("plaintext of {size} bytes exceeds the maximum {max}")]
    PlaintextTooLarge {
        /// Its size.
        size: usize,
        /// [`crate::consts::MAX_PLAINTEXT_SIZE`].
        max: usize,
    },
    /// An internal invariant failed, or a local operation met state that can no longer
    /// stay consistent (§5.6 FATAL): a bug or corrupted state. The group is unchanged.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// A Welcome to deliver to one new member (§7.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WelcomeMessage {
    /// The member instance the Welcome makes its recipient.
    pub member: MemberId,
    /// The recipient's identity key (where to deliver it).
    pub identity: IdentityKey,
    /// The Welcome.
    pub bytes: Vec<u8>,
}

/// What became of the envelope passed to [`Group::receive`]. Harmless outcomes are not
/// errors: a duplicate, one's own envelope coming back, or an envelope kept for later.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// Processed in this call (with whatever it made ready).
    Processed,
    /// Authentic or not yet verifiable, and kept until it is ready (§7.3).
    Buffered,
    /// Already processed: a duplicate or a replay.
    Duplicate,
    /// This member's own envelope came back.
    OwnEnvelope,
    /// Discarded: a forgery, a non-member's envelope, or an envelope of another group.
    Dropped(DropReason),
}

/// What a call produced.
#[must_use = "an Output holds envelopes to transmit and events to show"]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// For [`Group::receive`]: what became of the envelope passed in. `None` for every
    /// other call.
    pub received: Option<Received>,
    /// Envelopes to broadcast to the group, in order. With [`GroupConfig::coalesce_acks`],
    /// acks are held instead and leave with the next envelope or [`Group::flush_acks`].
    pub broadcast: Vec<Vec<u8>>,
    /// Welcomes to deliver, one per new member.
    pub direct: Vec<WelcomeMessage>,
    /// Events, in order.
    pub events: Vec<Event>,
    /// Every envelope of another member that this call authenticated and took into its
    /// sender's sequence, in the order taken (a device's envelope log, from which it serves
    /// peers that missed them, §7.7). A batch appears once, whole.
    pub accepted: Vec<Accepted>,
}

/// An authentic envelope of another member, taken into its sender's sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// Its sender.
    pub sender: MemberId,
    /// Its sequence number (the first item's, for a batch).
    pub seq: SeqNo,
    /// The sequence number of its last item: `seq`, except for a batch.
    pub last_seq: SeqNo,
    /// Its short hash (what acks reference).
    pub hash: [u8; 16],
    /// The envelope, in its wire encoding.
    pub bytes: Vec<u8>,
}

impl Accepted {
    fn of(sender: MemberId, env: &Envelope) -> Self {
        Accepted { sender, seq: env.seq, last_seq: env.last_seq(), hash: env.short_hash(), bytes: env.to_bytes() }
    }
}

impl Output {
    fn extend(&mut self, other: Output) {
        self.broadcast.extend(other.broadcast);
        self.direct.extend(other.direct);
        self.events.extend(other.events);
        self.accepted.extend(other.accepted);
    }
}

/// Routing information read from an envelope without verifying anything (§9 `peek`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peek {
    /// The group ID, present only in a create.
    pub gid: Option<GroupId>,
    /// The kind.
    pub kind: EnvelopeKind,
    /// The sender reference (a tag, or the identity key of a first envelope).
    pub sender: SenderRef,
    /// The sequence number (of the first item, for a batch).
    pub seq: SeqNo,
    /// The sequence number of the last item: `seq`, except for a batch.
    pub last_seq: SeqNo,
    /// For a first envelope (an ack carrying its sender's identity key): the tag and
    /// sequence number of the operation it acknowledges, which names the group it
    /// belongs to.
    pub acknowledges: Option<(MemberTag, SeqNo)>,
    /// The kind of the last item: `kind`, except for a batch, which stands for the
    /// operation or message its held acks travel with.
    pub last_kind: EnvelopeKind,
    /// For a create: the identity keys of the other initial members it invites.
    pub invites: Vec<IdentityKey>,
    /// The envelope's short hash (what acks reference, §7.1).
    pub hash: [u8; 16],
}

/// The group and the member instance a Welcome would make this device, read without
/// verifying anything (for routing, and for the device-level rules of §6.6).
pub fn welcome_target(welcome: &[u8], identity: &IdentityKey) -> Result<(GroupId, MemberId), GroupError> {
    let w = Welcome::from_bytes(welcome)?;
    let table = member_table(&w.gid, &w.history).map_err(|s| GroupError::CannotJoin(JoinError::InvalidHistory(s)))?;
    let adder = usize::try_from(w.adder)
        .ok()
        .and_then(|i| table.get(i))
        .copied()
        .ok_or(GroupError::CannotJoin(JoinError::UnknownAdder))?;
    let e = Envelope::from_bytes(&w.add_envelope)?;
    Ok((w.gid, MemberId::derive(&w.gid, identity, Origin::Operation(adder, e.last_seq()))))
}

/// One member's state in one group.
#[derive(Clone, Debug)]
pub struct Group {
    config: GroupConfig,
    my_ik: IdentityKey,
    d: Dcgka,
    ord: Ordering,
    /// My current signing key (the identity key until my first envelope rotates it).
    signing: SigningSecret,
    fs: BTreeMap<MemberId, SenderRatchet>,
    /// Per sender: the epoch of its last application message and the next index in it.
    app_index: BTreeMap<MemberId, (Epoch, u32)>,
    status: Status,
    /// A duplicate instance of my identity still to be removed (§6.6).
    pending_removal: Option<MemberId>,
    /// Test hook: keep processing after my own removal, as an attacker holding my state would.
    #[cfg(any(test, feature = "test-hooks"))]
    adversarial: bool,
    /// My acks and add-acks not sent yet, in sequence order (coalescing only).
    held: Vec<HeldItem>,
}

fn map_process_error(e: ProcessError) -> GroupError {
    match e {
        ProcessError::Reject(r) => GroupError::InvalidOperation(r),
        ProcessError::NeedBundle(ik) => GroupError::MissingPrekeyBundle(ik),
        ProcessError::Fatal(s) => GroupError::Internal(s),
    }
}

macro_rules! env {
    ($ctx:expr) => {
        Env { rng: &mut *$ctx.rng, keys: $ctx.identity.key_store_mut(), provider: &mut *$ctx.prekeys, now: $ctx.now }
    };
}

impl Group {
    fn blank(config: GroupConfig, identity: &Identity, d: Dcgka) -> Self {
        Group {
            config,
            my_ik: identity.public_key(),
            d,
            ord: Ordering::default(),
            signing: identity.signing_key().clone(),
            fs: BTreeMap::new(),
            app_index: BTreeMap::new(),
            status: Status::Active,
            pending_removal: None,
            #[cfg(any(test, feature = "test-hooks"))]
            adversarial: false,
            held: Vec::new(),
        }
    }

    // --------------------------------------------------------------------------------
    // Queries
    // --------------------------------------------------------------------------------

    /// `member-view(me)`: the current members.
    pub fn members(&self) -> BTreeSet<MemberId> {
        self.d.view_me()
    }

    /// My membership instance ID.
    pub fn me(&self) -> MemberId {
        self.d.me
    }

    /// The group ID.
    pub fn gid(&self) -> GroupId {
        self.d.gid
    }

    /// The group's status.
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// Whether a heal (update) is pending (§5.8).
    pub fn heal_pending(&self) -> bool {
        self.d.heal_pending
    }

    /// The identity key behind an ever-added member.
    pub fn identity_of(&self, id: &MemberId) -> Option<IdentityKey> {
        self.d.ik.get(id).copied()
    }

    /// `member-view(id)` as this member knows it.
    pub fn member_view(&self, id: &MemberId) -> BTreeSet<MemberId> {
        self.d.member_view(id)
    }

    /// Every member ever added here, current or not.
    pub fn ever_added(&self) -> BTreeSet<MemberId> {
        self.d.h.ever_added()
    }

    /// `{sender → hwm}`, for sync (§7.7).
    pub fn sync_state(&self) -> BTreeMap<MemberId, SeqNo> {
        self.ord.senders().iter().map(|(k, v)| (*k, SeqNo(v.hwm))).collect()
    }

    /// Envelopes waiting in the buffer.
    pub fn pending(&self) -> usize {
        self.ord.buffered()
    }

    /// My last used sequence number.
    pub fn seq(&self) -> SeqNo {
        SeqNo(self.d.seq)
    }

    /// Number of member secrets held (they are deleted as acks arrive, §5.7).
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn member_secret_count(&self) -> usize {
        self.d.member_secret_count()
    }

    /// Every member secret still held, as `(sender, seq, member)` (§10 oracle 4).
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn member_secret_keys(&self) -> Vec<(MemberId, SeqNo, MemberId)> {
        self.d.member_secret_keys()
    }

    /// Members whose member secret for operation `(sender, seq)` is still held here.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn member_secrets_pending(&self, sender: &MemberId, seq: SeqNo) -> Vec<MemberId> {
        self.d.member_secrets_of(sender, seq.0)
    }

    /// The membership history, for comparing histories across members (§10 oracle 5).
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn history(&self) -> &crate::dgm::History<MemberId> {
        &self.d.h
    }

    /// Whether `id`'s outer ratchet state here equals `other`'s (§10 oracle 2).
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn same_ratchet_state(&self, other: &Group, id: &MemberId) -> bool {
        match (self.d.ratchet_state(id), other.d.ratchet_state(id)) {
            (Some(a), Some(b)) => a == b,
            (None, None) => true,
            _ => false,
        }
    }

    /// Whether I hold an outer ratchet state for `id`.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn has_ratchet_state(&self, id: &MemberId) -> bool {
        self.d.ratchet_state(id).is_some()
    }

    /// The epoch of my sending ratchet for `id`, if any.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn sender_epoch(&self, id: &MemberId) -> Option<Epoch> {
        self.fs.get(id).map(|r| r.epoch())
    }

    /// Whether an envelope with this routing information belongs to this group as far as
    /// this member can tell: a create of this group, a sender tag of a member ever added
    /// here, or a first envelope acknowledging an operation of such a member. Nothing is
    /// verified; routing only.
    pub fn recognises(&self, peek: &Peek) -> bool {
        match peek.sender {
            SenderRef::Tag(t) => self.d.resolve(&t).is_some(),
            SenderRef::Identity(_) => match (peek.gid, peek.acknowledges) {
                (Some(gid), _) => gid == self.d.gid,
                (None, Some((tag, _))) => self.d.resolve(&tag).is_some(),
                (None, None) => false,
            },
        }
    }

    /// Every buffered candidate of a known sender, as `(sender, seq, short hash)`: what a
    /// sync request reports as held already (§7.7).
    pub fn buffered_candidates(&self) -> Vec<(MemberId, SeqNo, [u8; 16])> {
        self.ord.buffered_candidates(&self.d)
    }

    /// Reads routing information without verifying anything.
    pub fn peek(bytes: &[u8]) -> Result<Peek, GroupError> {
        let e = Envelope::from_bytes(bytes)?;
        let (mut acknowledges, mut invites) = (None, Vec::new());
        if let SenderRef::Identity(_) = e.sender {
            match ControlBody::from_bytes(e.kind, &e.body) {
                Ok(ControlBody::Ack { of, .. }) => acknowledges = Some((of.of_sender, of.of_seq)),
                Ok(ControlBody::Create { members, .. }) => invites = members,
                _ => {}
            }
        }
        let last_kind = match e.kind {
            EnvelopeKind::Batch => e.items()?.last().map_or(e.kind, |i| i.kind),
            k => k,
        };
        Ok(Peek {
            gid: e.gid,
            kind: e.kind,
            sender: e.sender,
            seq: e.seq,
            last_seq: e.last_seq(),
            acknowledges,
            last_kind,
            invites,
            hash: e.short_hash(),
        })
    }

    /// Test hook: from now on, keep processing after this member's own removal (the status
    /// still becomes `Removed`) and never erase secrets, as an attacker holding this state
    /// would; after the removal, envelopes are taken from the transcript without signature
    /// checks. Used by the security oracles; never enable it on a real device.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn set_adversarial(&mut self, on: bool) {
        self.adversarial = on;
    }

    /// Test hook: whether this is an adversarial copy ([`Group::set_adversarial`]).
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn is_adversarial(&self) -> bool {
        self.adversarial
    }

    /// Whether this is an adversarial test copy ([`Group::set_adversarial`]); always false
    /// without the `test-hooks` feature.
    fn adversarial(&self) -> bool {
        #[cfg(any(test, feature = "test-hooks"))]
        return self.adversarial;
        #[cfg(not(any(test, feature = "test-hooks")))]
        false
    }

    /// Whether signature checks are skipped: an adversarial test copy after its removal
    /// reads a recorded transcript.
    fn trusting(&self) -> bool {
        self.adversarial() && self.status != Status::Active
    }

    /// Whether processing continues: while active, or, for an adversarial test copy, also
    /// after its own removal.
    fn processing(&self) -> bool {
        match self.status {
            Status::Active => true,
            Status::Removed { .. } => self.adversarial(),
            Status::Corrupted { .. } => false,
        }
    }

    // --------------------------------------------------------------------------------
    // State snapshots
    // --------------------------------------------------------------------------------

    /// This member's complete state in this group as bytes: everything that determines
    /// the group's future behaviour, secrets included (the [`crate::snapshot`] format).
    /// [`Group::restore`] turns it back into an equal group, and a restored group's
    /// snapshot is byte for byte the same.
    ///
    /// Persist it **before transmitting** anything a call returned, together with the
    /// device's [`Identity`] (which is not part of it): a device that crashes after sending
    /// and restarts from an older state would reuse sequence numbers, seeds and keys.
    ///
    /// The bytes are as secret as the state: the buffer zeroizes on drop; encrypt them at
    /// rest. A group in any status can be saved. The adversarial test flag is not part of
    /// the format: a restored group is an ordinary member.
    pub fn snapshot(&self) -> Zeroizing<Vec<u8>> {
        let mut w = StateWriter::new();
        self.encode_state(&mut w);
        w.finish()
    }

    /// Rebuilds a group from [`Group::snapshot`] bytes. Decoding is canonical and total:
    /// the bytes of another version, a truncation or any corruption that the format can
    /// detect give a [`SnapshotError`], never a panic. (Snapshots carry no integrity check
    /// of their own: storage that may be tampered with needs authenticated encryption.)
    pub fn restore(bytes: &[u8]) -> Result<Group, SnapshotError> {
        let mut r = StateReader::open(bytes)?;
        let g = Group::decode_state(&mut r)?;
        r.finish()?;
        Ok(g)
    }

    /// The size of this member's [`snapshot`](Group::snapshot) in bytes.
    pub fn state_size(&self) -> usize {
        self.snapshot().len()
    }

    /// The group layer of a snapshot: `auto_heal:u8 ‖ coalesce_acks:u8 ‖ my_ik:[32] ‖ γ ‖
    /// ordering ‖ signing:[32] ‖ fs:map<member, sender ratchet> ‖ app_index:map<member,
    /// (epoch:var, next:var)> ‖ status ‖ pending_removal:opt<member> ‖
    /// held:list<(seq:var, kind:u8, body:opaque)>`; `status` is `0` (active), `1 ‖ by`
    /// (removed) or `2 ‖ reason:opaque` (corrupted).
    fn encode_state(&self, w: &mut StateWriter) {
        w.flag(self.config.auto_heal);
        w.flag(self.config.coalesce_acks);
        w.raw(&self.my_ik.0);
        self.d.encode_state(w);
        self.ord.encode_state(w);
        w.raw(&self.signing.to_bytes()[..]);
        w.map(&self.fs, |w, id, r| {
            w.member(id);
            r.encode_state(w);
        });
        w.map(&self.app_index, |w, id, (epoch, next)| {
            w.member(id);
            w.var(epoch.0);
            w.var(u64::from(*next));
        });
        match &self.status {
            Status::Active => w.u8(0),
            Status::Removed { by } => {
                w.u8(1);
                w.member(by);
            }
            Status::Corrupted { reason } => {
                w.u8(2);
                w.opaque(reason.as_bytes());
            }
        }
        w.flag(self.pending_removal.is_some());
        if let Some(t) = &self.pending_removal {
            w.member(t);
        }
        w.items(self.held.iter(), |w, h| {
            w.var(h.seq.0);
            w.u8(h.item.kind.tag());
            w.opaque(&h.item.body);
        });
    }

    fn decode_state(r: &mut StateReader<'_>) -> Result<Group, SnapshotError> {
        let config = GroupConfig { auto_heal: r.flag()?, coalesce_acks: r.flag()? };
        let my_ik = VerifyingKey(r.array()?);
        let d = Dcgka::decode_state(r)?;
        let ord = Ordering::decode_state(r)?;
        let signing = SigningSecret::from_bytes(&Zeroizing::new(r.array()?));
        let fs = r.map(2 + KEY_LEN, |r| {
            let id = r.member()?;
            Ok((id, SenderRatchet::decode_state(r, d.gid, id)?))
        })?;
        let app_index = r.map(3, |r| Ok((r.member()?, (Epoch(r.var()?), r.var_u32()?))))?;
        let status = match r.u8()? {
            0 => Status::Active,
            1 => Status::Removed { by: r.member()? },
            2 => {
                let reason = String::from_utf8(r.opaque()?.to_vec())
                    .map_err(|_| DecodeError::InvalidField("corruption reason is not UTF-8"))?;
                Status::Corrupted { reason }
            }
            t => return Err(DecodeError::UnknownTag { what: "group status", tag: u64::from(t) }.into()),
        };
        let pending_removal = if r.flag()? { Some(r.member()?) } else { None };
        let held = r.items(3, |r| {
            let seq = SeqNo(r.var()?);
            let kind = EnvelopeKind::from_tag(r.u8()?)?;
            Ok(HeldItem { seq, item: BatchItem { kind, body: r.opaque()?.to_vec() } })
        })?;
        Ok(Group {
            config,
            my_ik,
            d,
            ord,
            signing,
            fs,
            app_index,
            status,
            pending_removal,
            #[cfg(any(test, feature = "test-hooks"))]
            adversarial: false,
            held,
        })
    }

    // --------------------------------------------------------------------------------
    // Emitting my own envelopes
    // --------------------------------------------------------------------------------

    /// Signs and records one of my envelopes; rotates my signing key where §7.2 says so.
    /// Held acks go first, in one batch with it.
    fn emit(&mut self, rng: &mut impl CryptoRng, kind: EnvelopeKind, seq: SeqNo, body: Vec<u8>) -> (Vec<u8>, Envelope) {
        let next = requires_rotation(kind, seq).then(|| SigningSecret::generate(rng));
        let new_key = next.as_ref().map(SigningSecret::verifying_key);
        let mut held = std::mem::take(&mut self.held);
        let env = match held.first().map(|h| h.seq) {
            None => {
                let first = (seq.0 == 1).then_some(self.my_ik);
                Envelope::seal(kind, &self.d.gid, seq, &self.d.me, first, new_key, body, &self.signing)
            }
            Some(start) => {
                held.push(HeldItem { seq, item: BatchItem { kind, body } });
                self.seal_batch(start, held, new_key)
            }
        };
        let retain =
            matches!(kind, EnvelopeKind::Create | EnvelopeKind::Update | EnvelopeKind::Remove | EnvelopeKind::Add)
                .then(|| (kind, env.short_hash()));
        self.ord.advance(&self.d, self.d.me, seq.0, env.new_signing_key, retain);
        if let Some(k) = next {
            self.signing = k;
        }
        (env.to_bytes(), env)
    }

    /// Seals held items (consecutive from `start`) as one batch under my current key.
    fn seal_batch(&self, start: SeqNo, items: Vec<HeldItem>, new_key: Option<crate::crypto::VerifyingKey>) -> Envelope {
        debug_assert!(items.iter().enumerate().all(|(i, h)| h.seq.0 == start.0 + i as u64));
        let items: Vec<BatchItem> = items.into_iter().map(|h| h.item).collect();
        Envelope::seal(
            EnvelopeKind::Batch,
            &self.d.gid,
            start,
            &self.d.me,
            None,
            new_key,
            encode_batch(&items),
            &self.signing,
        )
    }

    /// Emits a reply (ack or add-ack) to the envelope whose short hash is `hash`; with
    /// coalescing, holds it instead (and sends the held ones once a batch would be full).
    fn emit_reply(&mut self, rng: &mut impl CryptoRng, reply: (ControlBody, SeqNo), hash: [u8; 16]) -> Option<Vec<u8>> {
        let (mut body, seq) = reply;
        match &mut body {
            ControlBody::Ack { of, .. } | ControlBody::AddAck { of, .. } => of.of_hash = hash,
            _ => {}
        }
        let kind = body.kind();
        // A first envelope carries its sender's identity key and is never held.
        if self.config.coalesce_acks && seq.0 > 1 && matches!(kind, EnvelopeKind::Ack | EnvelopeKind::AddAck) {
            self.ord.advance(&self.d, self.d.me, seq.0, None, None);
            self.held.push(HeldItem { seq, item: BatchItem { kind, body: body.to_bytes() } });
            if self.held.len() + 1 >= MAX_BATCH_ITEMS {
                return self.flush_held();
            }
            return None;
        }
        Some(self.emit(rng, kind, seq, body.to_bytes()).0)
    }

    /// Sends the held acks: one envelope, or a batch of several. None if nothing is held.
    fn flush_held(&mut self) -> Option<Vec<u8>> {
        let mut held = std::mem::take(&mut self.held);
        let env = match held.as_slice() {
            [] => return None,
            [_] => {
                let h = held.pop()?;
                Envelope::seal(h.item.kind, &self.d.gid, h.seq, &self.d.me, None, None, h.item.body, &self.signing)
            }
            [first, ..] => {
                let start = first.seq;
                self.seal_batch(start, held, None)
            }
        };
        Some(env.to_bytes())
    }

    /// Number of acks and add-acks held for coalescing ([`GroupConfig::coalesce_acks`]).
    pub fn held_acks(&self) -> usize {
        self.held.len()
    }

    /// Sends the held acks now (coalescing, §12): one envelope, or one batch for several.
    /// Call it when the application has had nothing to send for a while. Empty output if
    /// nothing is held.
    pub fn flush_acks(&mut self) -> Result<Output, GroupError> {
        self.require_active()?;
        Ok(Output { broadcast: self.flush_held().into_iter().collect(), ..Default::default() })
    }

    fn apply_secrets(&mut self, secrets: Vec<UpdateSecret>) -> Result<(), GroupError> {
        for s in secrets {
            let r = SenderRatchet::new(self.d.gid, s.member, s.epoch, s.secret)
                .map_err(|_| GroupError::Internal("sender ratchet from an update secret"))?;
            self.fs.insert(s.member, r);
        }
        Ok(())
    }

    /// Applies the results of a local operation, or of processing, to the outer layers.
    fn absorb(&mut self, p: Processed, out: &mut Output) -> Result<(), GroupError> {
        self.apply_secrets(p.secrets)?;
        out.events.extend(p.events);
        Ok(())
    }

    fn require_active(&self) -> Result<(), GroupError> {
        match &self.status {
            Status::Active => Ok(()),
            s => Err(GroupError::NotActive(s.clone())),
        }
    }

    // --------------------------------------------------------------------------------
    // Creating and joining
    // --------------------------------------------------------------------------------

    /// Creates a group with `others` (identity keys) as the other initial members. The
    /// create envelope in `broadcast` makes them join ([`Group::from_create`]).
    pub fn create<R: CryptoRng>(
        ctx: &mut Context<'_, R>,
        others: &[IdentityKey],
        config: GroupConfig,
    ) -> Result<(Group, Output), GroupError> {
        let mut raw = [0u8; 32];
        ctx.rng.fill_bytes(&mut raw);
        let gid = GroupId(raw);
        let me = MemberId::derive(&gid, &ctx.identity.public_key(), Origin::Creator);
        let mut g = Group::blank(config, ctx.identity, Dcgka::new(me, gid, ctx.identity.public_key()));
        let staged = g.d.stage_create(&mut env!(ctx), others).map_err(map_process_error)?;
        let (body, q, p) = g.d.commit_create(&mut env!(ctx), staged).map_err(map_process_error)?;
        let mut out = Output::default();
        let (bytes, _) = g.emit(ctx.rng, EnvelopeKind::Create, q, body.to_bytes());
        out.broadcast.push(bytes);
        g.absorb(p, &mut out)?;
        Ok((g, out))
    }

    /// Joins a group from a create envelope that lists this device. The application
    /// decides beforehand (with [`Group::peek`]) whether to consent.
    pub fn from_create<R: CryptoRng>(
        ctx: &mut Context<'_, R>,
        bytes: &[u8],
        config: GroupConfig,
    ) -> Result<(Group, Output), GroupError> {
        let env = Envelope::from_bytes(bytes)?;
        let cannot = GroupError::CannotJoin;
        let (EnvelopeKind::Create, Some(gid), SenderRef::Identity(creator_ik)) = (env.kind, env.gid, env.sender) else {
            return Err(cannot(JoinError::NotACreate));
        };
        let creator = MemberId::derive(&gid, &creator_ik, Origin::Creator);
        env.verify(&gid, &creator, &creator_ik).map_err(|_| GroupError::Dropped(DropReason::BadSignature))?;
        let ControlBody::Create { members, seeds } = ControlBody::from_bytes(EnvelopeKind::Create, &env.body)? else {
            return Err(cannot(JoinError::NotACreate));
        };
        let my_ik = ctx.identity.public_key();
        let me = MemberId::derive(&gid, &my_ik, Origin::Operation(creator, SeqNo(1)));
        if creator_ik == my_ik {
            return Err(GroupError::OwnEnvelope);
        }
        let mut g = Group::blank(config, ctx.identity, Dcgka::new(me, gid, my_ik));
        let p = match g.d.process_initial_create(&mut env!(ctx), creator, creator_ik, &members, &seeds) {
            Ok(p) => p,
            Err(ProcessError::Reject(r)) => return Err(GroupError::CannotJoin(JoinError::Rejected(r))),
            Err(e) => return Err(map_process_error(e)),
        };
        g.ord.advance(&g.d, creator, 1, env.new_signing_key, Some((EnvelopeKind::Create, env.short_hash())));
        let mut out = Output { accepted: vec![Accepted::of(creator, &env)], ..Default::default() };
        g.finish_processed(ctx, p, env.short_hash(), &mut out)?;
        Ok((g, out))
    }

    /// Joins a group from a Welcome (§7.4). Returns the new member's ack to broadcast.
    pub fn join<R: CryptoRng>(
        ctx: &mut Context<'_, R>,
        welcome: &[u8],
        config: GroupConfig,
    ) -> Result<(Group, Output), GroupError> {
        let w = Welcome::from_bytes(welcome)?;
        let cannot = GroupError::CannotJoin;
        let replayed = replay_history(&w.gid, &w.history).map_err(|s| cannot(JoinError::InvalidHistory(s)))?;
        let adder = usize::try_from(w.adder)
            .ok()
            .and_then(|i| replayed.table.get(i))
            .copied()
            .ok_or(cannot(JoinError::UnknownAdder))?;
        let adder_ik = *replayed.identities.get(&adder).ok_or(cannot(JoinError::UnknownAdder))?;
        w.verify(&adder_ik).map_err(|_| GroupError::Dropped(DropReason::BadSignature))?;
        // The add may be the last item of a batch that begins with the adder's held acks;
        // the adder's horizon then falls inside the batch (§12).
        let e = Envelope::from_bytes(&w.add_envelope)?;
        let add = e.items()?.pop().ok_or(cannot(JoinError::NotAnAdd))?;
        let my_ik = ctx.identity.public_key();
        if add.kind != EnvelopeKind::Add {
            return Err(cannot(JoinError::NotAnAdd));
        }
        let ControlBody::Add { target } = ControlBody::from_bytes(EnvelopeKind::Add, &add.body)? else {
            return Err(cannot(JoinError::NotAnAdd));
        };
        if e.sender != SenderRef::Tag(adder.tag()) || target != my_ik {
            return Err(cannot(JoinError::NotForMe));
        }
        let q = add.seq.0;
        let me = MemberId::derive(&w.gid, &my_ik, Origin::Operation(adder, add.seq));
        let mut g = Group::blank(config, ctx.identity, Dcgka::new(me, w.gid, my_ik));
        for s in &w.senders {
            let id = usize::try_from(s.id)
                .ok()
                .and_then(|i| replayed.table.get(i))
                .copied()
                .ok_or(cannot(JoinError::InvalidHistory("the sender table names an unknown member")))?;
            g.ord.load(id, SenderState { hwm: s.hwm, key: s.signing_key, cut_off: s.cut_off });
        }
        let adder_state = g
            .ord
            .sender(&adder, &g.d)
            .ok_or(cannot(JoinError::InvalidHistory("the adder is missing from the sender table")))?;
        let adder_key = g.ord.senders().get(&adder).map(|s| s.key).unwrap_or(adder_ik);
        if adder_state.hwm + 1 != q {
            return Err(cannot(JoinError::HorizonMismatch));
        }
        e.verify(&w.gid, &adder, &adder_key).map_err(|_| GroupError::Dropped(DropReason::BadSignature))?;
        let p =
            g.d.process_welcome(&mut env!(ctx), adder, q, replayed.history, &replayed.identities, &w.ratchet_ct)
                .map_err(|e| match e {
                    ProcessError::Fatal(_) => GroupError::CannotJoin(JoinError::Undecryptable),
                    other => map_process_error(other),
                })?;
        g.ord.advance(&g.d, adder, q, add.new_signing_key, Some((EnvelopeKind::Add, e.short_hash())));
        let mut out = Output { accepted: vec![Accepted::of(adder, &e)], ..Default::default() };
        g.finish_processed(ctx, p, e.short_hash(), &mut out)?;
        Ok((g, out))
    }

    // --------------------------------------------------------------------------------
    // Local operations
    // --------------------------------------------------------------------------------

    fn heal_if_pending<R: CryptoRng>(&mut self, ctx: &mut Context<'_, R>, out: &mut Output) -> Result<(), GroupError> {
        if self.config.auto_heal && self.d.heal_pending {
            out.extend(self.update(ctx)?);
        }
        Ok(())
    }

    /// A PCS update: fresh seeds to every other member.
    pub fn update<R: CryptoRng>(&mut self, ctx: &mut Context<'_, R>) -> Result<Output, GroupError> {
        self.require_active()?;
        // Dcgka::update validates and prefetches before it changes anything.
        let (body, q, p) = self.d.update(&mut env!(ctx)).map_err(map_process_error)?;
        let mut out = Output::default();
        let (bytes, _) = self.emit(ctx.rng, EnvelopeKind::Update, q, body.to_bytes());
        out.broadcast.push(bytes);
        self.absorb(p, &mut out)?;
        out.events.insert(0, Event::Updated { by: self.d.me });
        Ok(out)
    }

    /// Removes a member (it can then decrypt nothing sent after its removal).
    pub fn remove<R: CryptoRng>(&mut self, ctx: &mut Context<'_, R>, id: MemberId) -> Result<Output, GroupError> {
        self.require_active()?;
        let (body, q, p) = self.d.remove(&mut env!(ctx), id).map_err(map_process_error)?;
        let mut out = Output::default();
        let (bytes, _) = self.emit(ctx.rng, EnvelopeKind::Remove, q, body.to_bytes());
        out.broadcast.push(bytes);
        self.absorb(p, &mut out)?;
        Ok(out)
    }

    /// Adds the person with identity key `ik` as a new member instance. `direct` holds the
    /// Welcome for it. With a heal pending, an update goes first (§5.8).
    ///
    /// One transaction: the add is staged first (validated, the newcomer's prekey bundle
    /// fetched), so that every refusal happens before anything changes, then the heal
    /// update (atomic on its own) and the add are committed. Only a FATAL failure (§5.6)
    /// can occur after that; it corrupts the group, as FATAL does.
    pub fn add<R: CryptoRng>(&mut self, ctx: &mut Context<'_, R>, ik: IdentityKey) -> Result<Output, GroupError> {
        self.require_active()?;
        let staged = self.d.stage_add(&mut env!(ctx), ik).map_err(map_process_error)?;
        let mut out = Output::default();
        self.heal_if_pending(ctx, &mut out)?;
        let healed = !out.broadcast.is_empty();
        match self.add_staged(ctx, staged, &mut out) {
            Ok(()) => Ok(out),
            // Nothing changed: the add was refused before its commit and no heal ran.
            Err((e, false)) if !healed => Err(e),
            Err((e, _)) => {
                let mut lost = Output::default();
                self.corrupt("a committed add failed".to_string(), &mut lost);
                Err(e)
            }
        }
    }

    /// The add after staging (and any heal update). The flag in an error says whether the
    /// group changed before it.
    fn add_staged<R: CryptoRng>(
        &mut self,
        ctx: &mut Context<'_, R>,
        staged: StagedAdd,
        out: &mut Output,
    ) -> Result<(), (GroupError, bool)> {
        let unchanged = |e| (e, false);
        let ik = staged.identity();
        let t = self.d.add_target(&staged).map_err(|e| unchanged(map_process_error(e)))?;
        // The Welcome carries the history and sender table from before the add.
        let (history, num) =
            encode_history(&self.d.h, &self.d.ik).ok_or(unchanged(GroupError::Internal("history encoding")))?;
        let mut senders = Vec::new();
        for id in self.d.h.ever_added() {
            let Some(n) = num.get(&id) else { continue };
            let st = if id == self.d.me {
                SenderState { hwm: self.d.seq, key: self.signing.verifying_key(), cut_off: false }
            } else {
                self.ord.sender(&id, &self.d).ok_or(unchanged(GroupError::Internal("sender state")))?
            };
            senders.push(SenderEntry { id: *n, hwm: st.hwm, signing_key: st.key, cut_off: st.cut_off });
        }
        let adder = *num.get(&self.d.me).ok_or(unchanged(GroupError::Internal("adder number")))?;
        let (ratchet_ct, body, q, p) =
            self.d.commit_add(&mut env!(ctx), staged, t).map_err(|e| (map_process_error(e), true))?;
        let (add_bytes, _) = self.emit(ctx.rng, EnvelopeKind::Add, q, body.to_bytes());
        let mut w = Welcome {
            gid: self.d.gid,
            adder,
            add_envelope: add_bytes.clone(),
            history,
            senders,
            ratchet_ct,
            signature: crate::crypto::Signature([0; 64]),
        };
        w.sign(ctx.identity.signing_key());
        out.broadcast.push(add_bytes);
        out.direct.push(WelcomeMessage { member: t, identity: ik, bytes: w.to_bytes() });
        self.absorb(p, out).map_err(|e| (e, true))
    }

    /// Encrypts and sends an application message. With a heal pending, an update goes
    /// first (§5.8).
    pub fn send<R: CryptoRng>(&mut self, ctx: &mut Context<'_, R>, plaintext: &[u8]) -> Result<Output, GroupError> {
        self.require_active()?;
        if plaintext.len() > crate::consts::MAX_PLAINTEXT_SIZE {
            return Err(GroupError::PlaintextTooLarge {
                size: plaintext.len(),
                max: crate::consts::MAX_PLAINTEXT_SIZE,
            });
        }
        if !self.fs.contains_key(&self.d.me) {
            return Err(GroupError::Internal("no sending ratchet"));
        }
        // The heal update is atomic on its own; after it, encryption cannot fail.
        let mut out = Output::default();
        self.heal_if_pending(ctx, &mut out)?;
        let seq = SeqNo(self.d.seq + 1);
        let fs = self.fs.get_mut(&self.d.me).ok_or(GroupError::Internal("no sending ratchet"))?;
        let epoch = fs.epoch();
        let (_, ct) = fs.encrypt(seq, plaintext).map_err(|_| GroupError::Internal("sending ratchet"))?;
        self.d.seq = seq.0;
        let body = ApplicationBody { epoch_delta: seq.0 - epoch.0, ct }.to_bytes();
        let (bytes, _) = self.emit(ctx.rng, EnvelopeKind::Application, seq, body);
        out.broadcast.push(bytes);
        Ok(out)
    }

    // --------------------------------------------------------------------------------
    // Receiving
    // --------------------------------------------------------------------------------

    /// Feeds one envelope of this group. Returns the acks to broadcast and the events of
    /// every envelope this made ready (one call may release many buffered ones).
    ///
    /// [`Output::received`] says what became of it: processed, buffered for later, a
    /// duplicate, an echo of my own, or dropped (a forgery or a non-member's envelope).
    /// Those are not errors; an error means the envelope could not be taken at all
    /// (malformed, the group is not active, or a buffer bound is reached).
    pub fn receive<R: CryptoRng>(&mut self, ctx: &mut Context<'_, R>, bytes: &[u8]) -> Result<Output, GroupError> {
        let harmless = |r| Ok(Output { received: Some(r), ..Output::default() });
        match self.receive_inner(ctx, bytes) {
            Ok(out) => Ok(out),
            Err(GroupError::Dropped(DropReason::Duplicate)) => harmless(Received::Duplicate),
            Err(GroupError::Dropped(r)) => harmless(Received::Dropped(r)),
            Err(GroupError::OwnEnvelope) => harmless(Received::OwnEnvelope),
            Err(e) => Err(e),
        }
    }

    fn receive_inner<R: CryptoRng>(&mut self, ctx: &mut Context<'_, R>, bytes: &[u8]) -> Result<Output, GroupError> {
        if !self.processing() {
            self.require_active()?;
        }
        let env = Envelope::from_bytes(bytes)?;
        let incoming = (env.sender, env.seq);
        let (sender, last, unrolled) = match self.ord.arrive(&self.d, env, self.trusting())? {
            Arrival::Dropped(reason) => return Err(GroupError::Dropped(reason)),
            Arrival::Own => return Err(GroupError::OwnEnvelope),
            Arrival::Equivocation { sender, seq } => {
                return Ok(Output {
                    received: Some(Received::Duplicate),
                    events: vec![Event::Equivocation { sender, seq }],
                    ..Default::default()
                });
            }
            Arrival::Taken { sender, last, unrolled } => (sender, last, unrolled),
        };
        let (mut out, dropped) = self.drain(ctx, Some(incoming));
        if let Some(batch) = unrolled {
            out.accepted.insert(0, Accepted::of(sender, &batch));
        }
        if let Some(reason) = &dropped
            && out.broadcast.is_empty()
            && out.events.iter().all(|e| matches!(e, Event::Dropped { .. }))
        {
            return Err(GroupError::Dropped(reason.clone()));
        }
        out.received = Some(match dropped {
            Some(reason) => Received::Dropped(reason),
            None if self.ord.hwm(&sender) >= last => Received::Processed,
            None => Received::Buffered,
        });
        Ok(out)
    }

    /// Retries processing of buffered envelopes (after a missing prekey bundle was supplied).
    pub fn process_pending<R: CryptoRng>(&mut self, ctx: &mut Context<'_, R>) -> Result<Output, GroupError> {
        self.require_active()?;
        Ok(self.drain(ctx, None).0)
    }

    /// Processes every ready envelope. Returns the output and, if the envelope identified
    /// by `incoming` was discarded, why.
    fn drain<R: CryptoRng>(
        &mut self,
        ctx: &mut Context<'_, R>,
        incoming: Option<(SenderRef, SeqNo)>,
    ) -> (Output, Option<DropReason>) {
        let mut out = Output::default();
        let mut incoming_dropped = None;
        if let Some(t) = self.pending_removal.take() {
            self.remove_duplicate(ctx, t, &mut out);
        }
        let was_active = self.status == Status::Active;
        // A removal ends the call, as for a real member; an adversarial copy goes on only in
        // later calls (and its output is never sent).
        while self.processing() && (!was_active || self.status == Status::Active) {
            let Some(step) = self.ord.next(&self.d, self.trusting()) else { break };
            let (sender, chosen, forged) = match step {
                Step::Discarded { candidates, reason } => {
                    for b in candidates {
                        if incoming == Some((b.env.sender, b.env.seq)) {
                            incoming_dropped = Some(reason.clone());
                        }
                    }
                    continue;
                }
                Step::Unrolled { sender, batch } => {
                    out.accepted.push(Accepted::of(sender, &batch));
                    continue;
                }
                Step::Next { sender, chosen, forged } => (sender, chosen, forged),
            };
            for b in &forged {
                if incoming == Some((b.env.sender, b.env.seq)) && chosen.is_none() {
                    incoming_dropped = Some(DropReason::BadSignature);
                } else {
                    out.events.push(Event::Dropped { sender, seq: b.env.seq, reason: DropReason::BadSignature });
                }
            }
            let Some(v) = chosen else { continue };
            match self.process_one(ctx, &v, &mut out) {
                // An item of a batch was logged with its batch.
                Ok(()) if v.buffered.hash.is_none() => out.accepted.push(Accepted::of(sender, v.env())),
                Ok(()) => {}
                Err(ik) => {
                    self.ord.unbuffer_back(vec![v.buffered.clone()]);
                    out.events.push(Event::PrekeyBundleNeeded { identity: ik });
                    break;
                }
            }
        }
        (out, incoming_dropped)
    }

    fn remove_duplicate<R: CryptoRng>(&mut self, ctx: &mut Context<'_, R>, t: MemberId, out: &mut Output) {
        if !self.d.is_member(&t) {
            return;
        }
        match self.remove(ctx, t) {
            Ok(o) => out.extend(o),
            Err(GroupError::MissingPrekeyBundle(ik)) => {
                self.pending_removal = Some(t);
                out.events.push(Event::PrekeyBundleNeeded { identity: ik });
            }
            Err(_) => {}
        }
    }

    /// Processes one verified envelope as one transaction. `Err(ik)` means a first contact
    /// needs `ik`'s bundle and nothing changed.
    fn process_one<R: CryptoRng>(
        &mut self,
        ctx: &mut Context<'_, R>,
        v: &Verified,
        out: &mut Output,
    ) -> Result<(), IdentityKey> {
        let (sender, env) = (v.sender, v.env());
        let seq = env.seq.0;
        // An item of a batch is acknowledged under the batch's hash.
        let hash = v.buffered.hash.unwrap_or_else(|| env.short_hash());
        if v.state.cut_off {
            self.reject(sender, env, RejectReason::CutOff, out, false);
            return Ok(());
        }
        let body = match &v.body {
            Body::Application(body) => {
                self.process_application(sender, env, body, out);
                return Ok(());
            }
            Body::Malformed(e) => {
                let control = env.kind != EnvelopeKind::Application;
                self.reject(sender, env, RejectReason::Malformed(e.to_string()), out, control);
                return Ok(());
            }
            Body::Control(body) => body,
        };
        let ord = &self.ord;
        let lookup = |s: &MemberId, q: u64| ord.lookup(s, q);
        let result = self.d.process(&mut env!(ctx), sender, seq, body, &lookup);
        match result {
            Ok(p) => {
                let retain = matches!(env.kind, EnvelopeKind::Update | EnvelopeKind::Remove | EnvelopeKind::Add)
                    .then_some((env.kind, hash));
                self.ord.advance(&self.d, sender, seq, env.new_signing_key, retain);
                if let Err(e) = self.finish_processed(ctx, p, hash, out) {
                    self.corrupt(e.to_string(), out);
                }
                Ok(())
            }
            Err(ProcessError::Reject(r)) => {
                let equivocation = r == RejectReason::HashMismatch;
                self.reject(sender, env, r, out, true);
                if equivocation
                    && let ControlBody::Ack { of, .. } | ControlBody::AddAck { of, .. } = body
                    && let Some(s) = self.d.resolve(&of.of_sender)
                {
                    out.events.push(Event::Equivocation { sender: s, seq: of.of_seq });
                }
                Ok(())
            }
            Err(ProcessError::NeedBundle(ik)) => Err(ik),
            Err(ProcessError::Fatal(reason)) => {
                self.ord.advance(&self.d, sender, seq, env.new_signing_key, None);
                self.corrupt(reason.to_string(), out);
                Ok(())
            }
        }
    }

    /// After processing: the reply, re-keying, TERMINATE, the duplicate-instance removal.
    fn finish_processed<R: CryptoRng>(
        &mut self,
        ctx: &mut Context<'_, R>,
        p: Processed,
        hash: [u8; 16],
        out: &mut Output,
    ) -> Result<(), GroupError> {
        let reply = p.reply;
        let terminated = p.terminated_by;
        let duplicate = p.duplicate_instance;
        self.apply_secrets(p.secrets)?;
        out.events.extend(p.events);
        if let Some(by) = terminated {
            out.events.push(Event::RemovedFromGroup { by });
            self.status = Status::Removed { by };
            if self.adversarial() {
                // A test copy of an attacker holding this state: keep everything.
                return Ok(());
            }
            self.d.erase_secrets();
            self.fs.clear();
            self.held.clear();
            self.ord.clear_buffer();
            return Ok(());
        }
        if let Some(r) = reply
            && let Some(bytes) = self.emit_reply(ctx.rng, r, hash)
        {
            out.broadcast.push(bytes);
        }
        if let Some(t) = duplicate {
            self.remove_duplicate(ctx, t, out);
        }
        Ok(())
    }

    fn corrupt(&mut self, reason: String, out: &mut Output) {
        out.events.push(Event::GroupStateCorrupted { reason: reason.clone() });
        self.status = Status::Corrupted { reason };
        self.held.clear();
        self.ord.clear_buffer();
    }

    /// §5.6 REJECT: consume the sequence number, rotate the key, and for a control
    /// envelope cut the sender off.
    fn reject(&mut self, sender: MemberId, env: &Envelope, reason: RejectReason, out: &mut Output, control: bool) {
        self.ord.advance(&self.d, sender, env.seq.0, env.new_signing_key, None);
        if control {
            self.ord.cut_off(&self.d, sender);
        }
        out.events.push(Event::Rejected { sender, seq: env.seq, reason });
    }

    fn process_application(&mut self, sender: MemberId, env: &Envelope, body: &ApplicationBody, out: &mut Output) {
        let seq = env.seq;
        let Some(epoch) = seq.0.checked_sub(body.epoch_delta).map(Epoch) else {
            return self.reject(sender, env, RejectReason::Malformed("epoch after sequence number".into()), out, false);
        };
        let index = match self.app_index.get(&sender) {
            Some((e, n)) if *e == epoch => *n,
            _ => 0,
        };
        self.app_index.insert(sender, (epoch, index.saturating_add(1)));
        self.ord.advance(&self.d, sender, seq.0, None, None);
        let result = match self.fs.get_mut(&sender) {
            None => Err(RatchetError::NotForUs { epoch, held: None }),
            Some(r) => r.decrypt(epoch, MessageIndex(index), seq, &body.ct),
        };
        match result {
            Ok(pt) => out.events.push(Event::Message {
                sender,
                seq,
                epoch,
                index: MessageIndex(index),
                plaintext: pt.to_vec(),
                sender_removed: !self.d.is_member(&sender),
            }),
            Err(reason @ RatchetError::NotForUs { .. }) => {
                out.events.push(Event::Undecryptable { sender, seq, reason })
            }
            Err(e) => out.events.push(Event::Rejected { sender, seq, reason: RejectReason::Application(e) }),
        }
    }

    /// Test hook: whether this state could decrypt the application envelope `bytes`
    /// (from a member it knows), without changing anything. Only the ratchet is consulted:
    /// the caller feeds the transcript before it first.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn can_decrypt(&self, bytes: &[u8], index: MessageIndex) -> Option<Vec<u8>> {
        let env = Envelope::from_bytes(bytes).ok()?;
        let SenderRef::Tag(t) = env.sender else { return None };
        let sender = self.d.resolve(&t)?;
        let body = ApplicationBody::from_bytes(&env.body).ok()?;
        let epoch = Epoch(env.seq.0.checked_sub(body.epoch_delta)?);
        let mut r = self.fs.get(&sender)?.clone();
        r.decrypt(epoch, index, env.seq, &body.ct).ok().map(|p| p.to_vec())
    }
}
