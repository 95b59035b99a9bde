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
use crate::dcgka::{AckTarget, Dcgka, Env, ProcessError, Processed, StagedAdd, UpdateSecret};
use crate::events::{DropReason, EquivocationEvidence, Event, MalformedBody, RejectReason};
use crate::ids::{Epoch, GroupId, MemberId, MemberTag, MessageIndex, Origin, SeqNo};
use crate::ordering::{Arrival, Body, BufferError, Ordering, SenderState, Step, Verified};
use crate::prekeys::{Identity, PrekeyProvider};
use crate::ratchet::{RatchetError, SenderRatchet};
use crate::snapshot::{SnapshotError, StateReader, StateWriter};
use crate::welcome::{
    LogOp, SenderEntry, Welcome, encode_history, identity_of, introduced, member_table, replay_history,
};
use crate::wire::{
    ApplicationBody, BatchItem, CertifiedKey, ControlBody, Envelope, EnvelopeKind, SenderRef, encode_batch,
    requires_rotation,
};

/// An ack or add-ack of mine that is processed locally but not yet sent (coalescing).
#[derive(Clone, Debug)]
struct HeldItem {
    seq: SeqNo,
    item: BatchItem,
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
    /// Whether the history is compacted (always, but for [`Group::set_compaction`]).
    compaction: bool,
    /// Members that left `member-view(me)` without departing, and since when (§5.7).
    absent_since: BTreeMap<MemberId, u64>,
    /// The history's size when `absent_since` was last brought up to date (not stored: a
    /// restored group looks again).
    absent_checked: Option<(usize, usize)>,
}

/// The seed that stands for an erased signing secret (after TERMINATE): public, so it
/// authenticates nothing, and a removed instance never signs (§5.7).
const ERASED_SIGNING_SEED: [u8; KEY_LEN] = [0; KEY_LEN];

fn map_process_error(e: ProcessError) -> GroupError {
    match e {
        ProcessError::Reject(r) => GroupError::InvalidOperation(r),
        ProcessError::NeedBundle(ik) => GroupError::MissingPrekeyBundle(ik),
        ProcessError::Fatal(s) => GroupError::Internal(s),
        ProcessError::BadCiphertext(_) => {
            GroupError::Internal("a 2SM message from an authenticated sender does not decrypt")
        }
    }
}

macro_rules! env {
    ($ctx:expr) => {
        Env { rng: &mut *$ctx.rng, keys: $ctx.identity.key_store_mut(), provider: &mut *$ctx.prekeys, now: $ctx.now }
    };
}

// The layers of the group, one file each; the macro above is visible in all of them.
mod emit;
mod join;
mod local;
mod receive;
mod retention;
mod state;
#[cfg(test)]
mod tests;
mod types;

pub use types::{
    Accepted, Context, GroupConfig, GroupError, GroupRecords, JoinError, Output, Peek, Received, Status,
    WelcomeMessage, WelcomeSummary, welcome_target,
};

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
            compaction: true,
            absent_since: BTreeMap::new(),
            absent_checked: None,
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

    /// Whether an update is pending: a heal after concurrent removals (§5.8), or a resync
    /// after another member acknowledged another version of an update or remove than mine
    /// (§7.6). With `auto_heal`, the next send or add performs it first.
    pub fn heal_pending(&self) -> bool {
        self.d.heal_pending || self.d.resync_pending
    }

    /// The identity key behind an ever-added member.
    pub fn identity_of(&self, id: &MemberId) -> Option<IdentityKey> {
        self.d.ik.get(id).copied()
    }

    /// The identity keys of the current members to whom my next two-party message is a
    /// first contact: an update, remove or add in this group needs their prekey bundles
    /// (and fails with [`GroupError::MissingPrekeyBundle`] without them). A networked
    /// application fetches these while the members are reachable.
    pub fn first_contacts(&self) -> Vec<IdentityKey> {
        self.d.first_contacts()
    }

    /// `member-view(id)` as this member knows it.
    pub fn member_view(&self, id: &MemberId) -> BTreeSet<MemberId> {
        self.d.member_view(id)
    }

    /// This member's options in this group.
    pub fn config(&self) -> GroupConfig {
        self.config
    }

    /// Changes this member's options in this group; they apply from the next call on. None
    /// of them must agree across members, so each may change at any time (acks already
    /// held for coalescing still leave with the next envelope or [`Group::flush_acks`]).
    pub fn set_config(&mut self, config: GroupConfig) {
        self.config = config;
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

    /// Bytes waiting in the buffer, as counted against
    /// [`MAX_BUFFERED_BYTES`](crate::consts::MAX_BUFFERED_BYTES).
    pub fn pending_bytes(&self) -> usize {
        self.ord.buffered_bytes()
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

    /// Number of operations in flight here: creates, updates, removes and adds processed
    /// here that not every current member has acknowledged yet (docs/protocol.md §5.6,
    /// V4 (d)).
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn in_flight(&self) -> usize {
        self.d.in_flight()
    }

    /// The members whose ack of the operation `(sender, seq)` is still awaited here; `None`
    /// if it is not in flight (every member acknowledged it, or it was not processed here).
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn awaited_acks(&self, sender: &MemberId, seq: SeqNo) -> Option<BTreeSet<MemberId>> {
        self.d.awaited(sender, seq.0)
    }

    /// Whether the ordering layer still holds the kind and hash of `(sender, seq)`. (The
    /// key it was verified under may stay longer, while a recent hash needs it.)
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn retains(&self, sender: &MemberId, seq: SeqNo) -> bool {
        self.ord.retains(sender, seq.0)
    }

    /// The number of retained operation hashes and of retained keys in the ordering layer.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn retained_counts(&self) -> (usize, usize) {
        self.ord.retained_counts()
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

    /// My current signing secret, so that a test or fuzz harness can seal envelopes that
    /// verify as mine (authenticated insider input), or check that an ended instance erased
    /// it (its seed is then all zeros, §5.7). Test hook only.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn signing_secret(&self) -> &SigningSecret {
        &self.signing
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

    /// Test hook: whether the membership history is compacted (§6.7; on by default, and
    /// after every restore). Tests that inspect the acks recorded in `H`, or compare a run
    /// with and without compaction, turn it off.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn set_compaction(&mut self, on: bool) {
        self.compaction = on;
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
}
