//! The group API's types: the call context and configuration, what a call produced, the
//! group's status and the errors.

use super::*;

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
    /// Withhold a removed member's late operations (spec §7.5): an update, remove or add of
    /// a member whose removal every current member here has seen is not processed until
    /// some other member is known to have processed it (its acknowledgment arrives), and
    /// [`Event::LateOperationWithheld`] reports it. An operation that no member processed
    /// before the removal settled there is then never applied anywhere, so a removed
    /// member that ignores its removal cannot remove anyone once its removal has settled.
    /// Every member reaches the same verdict, and the option is safe to set per member: a
    /// member without it processes the operation and acknowledges it, which releases it
    /// everywhere (the bound holds where every member sets it); a member that leaves on
    /// such a remove sends a farewell ack (no secret) for the same purpose. Trade-off: a member removed
    /// while partitioned loses the operations nobody processed in time and everything it
    /// sent after them, messages included; a newcomer it added is never introduced; a
    /// mutual removal whose removes arrive late everywhere removes one side only; and when
    /// both sides of a partition remove each other and each side settles it before they
    /// reconnect, the group forks into two groups with no member in common. Default off
    /// (the paper's rule: every concurrent operation applies).
    pub withhold_late_operations: bool,
    /// The retention period of §5.7, in seconds of the callers' clock (`Context::now`):
    /// - member secrets held for a current member's acknowledgment of an operation
    ///   processed here longer ago than this are erased, with [`Event::SecretsExpired`].
    ///   That member's messages sent after it acknowledges them are then unreadable here
    ///   until its next update or remove re-keys it from a fresh seed;
    /// - a member that left the group here longer ago than this without processing its
    ///   removal (no farewell) is retired, with [`Event::MemberRetired`]: its 2SM session,
    ///   outer and sender ratchets and the member secrets held for it are erased, it no
    ///   longer holds the compaction of the history back (§6.7), and whatever it sent and
    ///   has not arrived yet is refused (cut off).
    ///
    /// Trade-off: a short period frees state and erases keys sooner (forward secrecy
    /// against a later compromise of this device); a long one lets members that are
    /// offline or partitioned for longer come back without losing anything. An operation
    /// of a retired member that arrives later is refused here but processed where the
    /// member was not retired yet, so members' views can differ on it: choose a period
    /// longer than any partition the application expects, and prefer
    /// `withhold_late_operations`, under which such an operation is withheld everywhere
    /// once the removal has settled. `u64::MAX` keeps everything for ever. Default
    /// [`crate::consts::DEFAULT_RETENTION_SECS`] (30 days).
    pub retention_secs: u64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            auto_heal: true,
            coalesce_acks: false,
            withhold_late_operations: false,
            retention_secs: crate::consts::DEFAULT_RETENTION_SECS,
        }
    }
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
    /// A signing key in the Welcome's sender table, or the one the create or add announces,
    /// is not certified by its member's identity key (§7.2, §7.4): a forgery by the adder
    /// (or the creator).
    #[error("the signing key of {member:?} is not certified by its identity key")]
    ForgedSigningKey {
        /// The member whose key is forged.
        member: MemberId,
    },
    /// The Welcome's history log is longer than [`crate::consts::MAX_HISTORY_LEN`]
    /// (checked before it is replayed).
    #[error("the Welcome's history has {len} operations, the maximum is {max}")]
    HistoryTooLong {
        /// Operations in the log.
        len: usize,
        /// [`crate::consts::MAX_HISTORY_LEN`].
        max: usize,
    },
    /// The Welcome's history log introduces more member instances than
    /// [`crate::consts::MAX_GROUP`] (checked before it is replayed).
    #[error("the Welcome's history introduces {introduced} members, the maximum is {max}")]
    TooManyMembers {
        /// Member instances the log introduces, the removed included.
        introduced: usize,
        /// [`crate::consts::MAX_GROUP`].
        max: usize,
    },
}

/// What a Welcome says about itself, read by [`Group::inspect_welcome`] after its
/// signature was checked and before anything costly (§7.4, §9): what the application needs
/// to consent to the invitation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WelcomeSummary {
    /// The group.
    pub gid: GroupId,
    /// The adder's member instance.
    pub adder: MemberId,
    /// The adder's identity key, under which the Welcome's signature verified.
    pub adder_identity: IdentityKey,
    /// Member instances the history introduces (creator, initial members, each add's
    /// target), the removed included: an upper bound on the group's size before this add.
    pub members_introduced: usize,
    /// Removes in the history.
    pub removes: usize,
    /// Operations in the history log (what replaying it costs).
    pub history_len: usize,
}

/// Why a call failed. The group is unchanged, except after a FATAL failure (§5.6) of a
/// local operation that had already committed, which leaves the group
/// [`Status::Corrupted`] (only an internal invariant breaking, or a peer's invalid prekey
/// material, can cause one).
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

/// A group's state as records ([`Group::records`]): the core and one record per sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupRecords {
    /// Everything but the per-sender parts.
    pub core: Zeroizing<Vec<u8>>,
    /// Per sender: its ordering head, sender ratchet and message index.
    pub senders: BTreeMap<MemberId, Zeroizing<Vec<u8>>>,
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
    pub(super) fn of(sender: MemberId, env: &Envelope) -> Self {
        Accepted { sender, seq: env.seq, last_seq: env.last_seq(), hash: env.short_hash(), bytes: env.to_bytes() }
    }
}

impl Output {
    pub(super) fn extend(&mut self, other: Output) {
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
