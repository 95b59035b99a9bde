//! What the group API reports to the application (§9): events and the reasons behind
//! rejected, dropped or undecryptable envelopes.

use std::collections::BTreeSet;

use crate::codec::DecodeError;
use crate::crypto::IdentityKey;
use crate::ids::{Epoch, GroupId, MemberId, MessageIndex, SeqNo};
use crate::ratchet::RatchetError;

/// Why an authentic envelope was rejected (its sequence number is consumed, nothing else
/// changes; §5.6).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    /// V1: a create that is not the sender's first message, lists its sender, or is too large.
    #[error("invalid create: {0}")]
    InvalidCreate(&'static str),
    /// V1: a create whose members, the creator included, would exceed
    /// [`crate::consts::MAX_GROUP`].
    #[error("a group of {count} members exceeds the maximum of {max}")]
    TooManyMembers {
        /// Members the create would make, the creator included.
        count: usize,
        /// [`crate::consts::MAX_GROUP`].
        max: usize,
    },
    /// V2: an add of someone the sender already has, or whose MID or tag is not fresh.
    #[error("invalid add: {0}")]
    InvalidAdd(&'static str),
    /// V3: a remove of oneself or of someone not in the sender's view.
    #[error("invalid remove: {0}")]
    InvalidRemove(&'static str),
    /// V4: an ack of something not acknowledgeable, of the wrong type, twice, or by its sender.
    #[error("invalid ack: {0}")]
    InvalidAck(&'static str),
    /// V4 (b): the acknowledged envelope's hash differs from the one processed here. No longer
    /// produced: such an ack is processed and blames the acknowledged sender instead
    /// ([`Event::Equivocation`] with [`EquivocationEvidence::Ack`], §7.6).
    #[error("ack references a different version of the acknowledged envelope")]
    HashMismatch,
    /// V4 (d): an ack of an operation that every member had acknowledged here, so that it
    /// is no longer in flight (docs/protocol.md §5.6): a second ack of a create, add or
    /// remove (`H` shows the first), or an ack of an update by a current member, which
    /// acknowledged it before or inherited it from its adder. (Such an ack of an update
    /// cannot be told apart from an ack of an ack or application message, which it may
    /// also be.)
    #[error("acknowledges an operation every member has acknowledged")]
    AcknowledgedByAll,
    /// V4 (e), §7.5: the envelope provably follows its sender's own removal.
    #[error("sender acknowledged something after its own removal")]
    FollowsOwnRemoval,
    /// V5: the seed block's recipient set differs from the sender's view as computed here.
    #[error("seed block recipients differ from the sender's view")]
    RecipientsMismatch,
    /// V6: the body is malformed, or names a member this group does not know.
    #[error("malformed body: {0}")]
    Malformed(MalformedBody),
    /// The envelope announces a new signing key whose certificate does not verify under the
    /// sender's identity key (§7.2). The key is not adopted and the sender is cut off.
    #[error("the new signing key's certificate does not verify")]
    InvalidKeyCertificate,
    /// The sender was cut off earlier (§7.5): everything it sends is rejected.
    #[error("sender is cut off")]
    CutOff,
    /// An application message that is authentic but fails to decrypt (replay, tampering by
    /// the sender, too far ahead).
    #[error("application message: {0}")]
    Application(RatchetError),
}

/// Why a body is malformed (§5.6 V6).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MalformedBody {
    /// It does not decode as a body of its kind.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The membership history refuses the operation it carries (SR-DGM, §6).
    #[error("the membership history refuses it: {0}")]
    History(&'static str),
    /// It is inconsistent in another way.
    #[error("{0}")]
    Invalid(&'static str),
}

/// Why an envelope was discarded without consuming anything.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    /// Its signature does not verify under the sender's current signing key: a forgery,
    /// tampering, or an envelope of another group.
    #[error("signature does not verify")]
    BadSignature,
    /// A first envelope from someone no processed create or add names.
    #[error("sender is not a member of this group")]
    NotAMember,
    /// Already processed (a duplicate or a replay).
    #[error("duplicate of an already processed envelope")]
    Duplicate,
}

/// Which ciphertext of an authenticated envelope failed to decrypt for this member (§5.6):
/// its sender signed it, so the sender is provably its author.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misbehaviour {
    /// The seed-block ciphertext addressed to me in a create, update or remove.
    BadSeedCiphertext,
    /// The member secret forwarded to me in an ack.
    BadForward,
    /// The ratchet state sent to me, the newcomer, in an add-ack.
    BadRatchetCiphertext,
}

/// What shows that a sender signed two versions of one sequence number (§7.6). Every
/// envelope is in its wire encoding and verifies under the key the sender had for that
/// sequence number, so a third party holding the group's public keys can check it.
#[non_exhaustive]
#[derive(Clone, PartialEq, Eq)]
pub enum EquivocationEvidence {
    /// Both versions, as this member received them: it held both at once.
    Envelopes {
        /// The version processed here.
        first: Vec<u8>,
        /// The other one.
        second: Vec<u8>,
    },
    /// The version processed here is known only by its short hash (§7.1) and the other
    /// version arrived later.
    Processed {
        /// The short hash of the version processed here.
        processed: [u8; 16],
        /// The other version.
        other: Vec<u8>,
    },
    /// Only a member's acknowledgment of another version was seen: the acker's signed
    /// envelope, which names the other version's short hash. It proves what the acker
    /// claims, not that the sender signed it; the acker is not blamed either way.
    Ack {
        /// Who acknowledged the other version.
        acker: MemberId,
        /// The acknowledgment, in its wire encoding (for an item of a batch, the item).
        ack: Vec<u8>,
        /// The short hash of the version processed here.
        processed: [u8; 16],
        /// The short hash the acknowledgment names.
        acked: [u8; 16],
    },
}

impl core::fmt::Debug for EquivocationEvidence {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Envelopes are public ciphertext, but long: show their sizes only.
        match self {
            Self::Envelopes { first, second } => {
                write!(f, "Envelopes {{ first: {} bytes, second: {} bytes }}", first.len(), second.len())
            }
            Self::Processed { processed, other } => {
                write!(f, "Processed {{ processed: {processed:02x?}, other: {} bytes }}", other.len())
            }
            Self::Ack { acker, ack, processed, acked } => write!(
                f,
                "Ack {{ acker: {acker:?}, ack: {} bytes, processed: {processed:02x?}, acked: {acked:02x?} }}",
                ack.len()
            ),
        }
    }
}

/// Something the application should know about. Events never contain key material.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// This device joined the group.
    Joined {
        /// The group.
        gid: GroupId,
        /// The creator or adder.
        by: MemberId,
    },
    /// A member was added.
    MemberAdded {
        /// The adder.
        by: MemberId,
        /// The new member.
        id: MemberId,
        /// Its identity key.
        identity: IdentityKey,
    },
    /// An add that a concurrent removal cancelled: the target never becomes a member.
    AddCancelled {
        /// The adder.
        by: MemberId,
        /// The cancelled member.
        id: MemberId,
    },
    /// Members left the group (named and cascaded removals).
    MembersRemoved {
        /// The remover.
        by: MemberId,
        /// Who left.
        ids: BTreeSet<MemberId>,
    },
    /// A member performed a PCS update.
    Updated {
        /// Who.
        by: MemberId,
    },
    /// A decrypted application message.
    Message {
        /// Its sender.
        sender: MemberId,
        /// The sender's sequence number.
        seq: SeqNo,
        /// The sender's epoch.
        epoch: Epoch,
        /// The index within the epoch.
        index: MessageIndex,
        /// The plaintext.
        plaintext: Vec<u8>,
        /// Whether the sender is no longer a member here (it sent this concurrently with
        /// its removal).
        sender_removed: bool,
    },
    /// An authentic application message this member was never entitled to read (it was not
    /// in the sender's view at that epoch).
    Undecryptable {
        /// Its sender.
        sender: MemberId,
        /// The sender's sequence number.
        seq: SeqNo,
        /// Why.
        reason: RatchetError,
    },
    /// An authentic but invalid envelope (§5.6 REJECT).
    Rejected {
        /// Its sender.
        sender: MemberId,
        /// Its sequence number.
        seq: SeqNo,
        /// Why.
        reason: RejectReason,
    },
    /// A buffered envelope was discarded when it became ready.
    Dropped {
        /// The sender it claimed.
        sender: MemberId,
        /// Its sequence number.
        seq: SeqNo,
        /// Why.
        reason: DropReason,
    },
    /// The sender signed two different envelopes with one sequence number (§7.6). Honest
    /// members are not blamed for it; the application should remove the sender (the group
    /// does not cut it off by itself, since members learn of it at different times).
    Equivocation {
        /// The equivocating sender.
        sender: MemberId,
        /// The sequence number used twice.
        seq: SeqNo,
        /// What shows it.
        evidence: EquivocationEvidence,
    },
    /// An envelope of my own, authentic under my current signing key, carries a sequence
    /// number beyond my own (§7.3): another copy of this state sent it, because the state
    /// was cloned or restored from an older snapshot. The group then becomes `Corrupted`
    /// (a `GroupStateCorrupted` event follows); recovery is to be removed and added again.
    StateForkSuspected {
        /// My own sequence number in this state (the last one I used).
        mine: SeqNo,
        /// The sequence number the envelope reached (the last one of a batch).
        seen: SeqNo,
    },
    /// Another instance of this device's own identity was added; this device removes it (§6.6).
    DuplicateInstance {
        /// The surplus instance.
        id: MemberId,
    },
    /// This member was removed; its group secrets are erased.
    RemovedFromGroup {
        /// The remover.
        by: MemberId,
    },
    /// Local state can no longer stay consistent; the group is unusable (§5.6 FATAL).
    GroupStateCorrupted {
        /// What happened.
        reason: String,
    },
    /// The next send or add first performs an update (with `auto_heal`): after a concurrent
    /// or missed removal (§5.8), or after another member acknowledged another version of an
    /// equivocated update or remove than mine, so that both camps can derive my ratchet
    /// again (§7.6).
    HealPending,
    /// Processing stopped because a first contact needs this identity's prekey bundle: put
    /// one in the provider and call `process_pending`.
    PrekeyBundleNeeded {
        /// Whose bundle.
        identity: IdentityKey,
    },
    /// An authenticated member sent this member a ciphertext that does not decrypt (§5.6
    /// FATAL, item "one bad ciphertext"): this member's state can no longer follow the group,
    /// so a [`Event::GroupStateCorrupted`] follows. The sender signed the envelope, so it is
    /// provably the sender's doing (or its device's). Recovery (docs/protocol.md §5.6): the
    /// application removes `sender` through another member and re-adds this device, which
    /// joins as a new instance.
    Misbehaviour {
        /// The member that signed the envelope.
        sender: MemberId,
        /// Its sequence number.
        seq: SeqNo,
        /// What was wrong.
        kind: Misbehaviour,
        /// The evidence: the envelope's wire bytes as received and verified under `sender`'s
        /// signing key. For an item of a batch (§12) these are the item's bytes, which carry
        /// no signature of their own; `batch` then names the signed batch.
        envelope: Vec<u8>,
        /// For an item of a batch: the batch's short hash, under which the device's envelope
        /// log keeps the signed batch.
        batch: Option<[u8; 16]>,
    },
    /// A membership operation (update, remove or add) of a member whose removal every
    /// current member here had already seen (§7.5): it is concurrent with that removal, so
    /// it is processed like any other (strong removal) and has taken effect, but it comes
    /// late, typically from a member that was offline or ignores its removal. A local
    /// observation for the application (which may re-add a member it removed); members
    /// that had not yet seen the removal everywhere do not report it.
    LateOperation {
        /// The removed member that sent it.
        sender: MemberId,
        /// Its sequence number.
        seq: SeqNo,
        /// The member whose removal of `sender` everyone had seen.
        remover: MemberId,
        /// That removal's sequence number.
        removal: SeqNo,
    },
    /// With [`GroupConfig::withhold_late_operations`](crate::group::GroupConfig): an
    /// update, remove or add of `sender`, whose removal every current member here has seen,
    /// is withheld (§7.5). It is processed only if some other member turns out to have
    /// processed it (its acknowledgment arrives), and then as any other; otherwise never,
    /// and nothing `sender` sends after it is processed either. Reported once per
    /// operation (a restored snapshot remembers it).
    LateOperationWithheld {
        /// The removed member that sent it.
        sender: MemberId,
        /// Its sequence number.
        seq: SeqNo,
    },
    /// The retention period ([`GroupConfig::retention_secs`](crate::group::GroupConfig))
    /// ran out on member secrets held for `member`'s acknowledgments (§5.7), and they are
    /// erased: what `member` sends after it acknowledges those operations is unreadable
    /// here ([`Event::Undecryptable`]) until its next update or remove re-keys it. Its
    /// earlier messages, and everything other members send, stay readable.
    SecretsExpired {
        /// The current member that has not acknowledged in time.
        member: MemberId,
        /// How many member secrets were erased.
        erased: usize,
    },
    /// `member` left the group here longer ago than the retention period and never
    /// acknowledged its removal: it is retired (§5.7). What was kept so that its messages
    /// concurrent with its removal stay readable (its 2SM session, ratchets and member
    /// secrets) is erased, and whatever it sent that has not arrived yet will be refused.
    MemberRetired {
        /// The retired member.
        member: MemberId,
    },
}
