//! Typed identifiers: identities, membership instances, groups, sequence numbers,
//! epochs and message indices (§2.2, §5.1, §8).
//!
//! Each is a distinct type so that, for example, a sequence number cannot be passed
//! where a ratchet index belongs.

use core::fmt;

use crate::crypto::{self, Hash32, labels};

/// Writes the first bytes of an identifier as hex, enough to tell members apart in logs.
fn short_hex(f: &mut fmt::Formatter<'_>, name: &str, bytes: &[u8]) -> fmt::Result {
    write!(f, "{name}(")?;
    for b in bytes.iter().take(6) {
        write!(f, "{b:02x}")?;
    }
    write!(f, "…)")
}

macro_rules! byte_id {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                short_hex(f, stringify!($name), &self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for b in self.0.iter().take(4) {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }
    };
}

byte_id!(
    /// A 32-byte group ID, chosen at random by the creator (§2.1).
    GroupId,
    32
);

byte_id!(
    /// A membership instance ID (MID, §2.2): one person's device in one group, introduced
    /// by one operation. Re-adding a person creates a new `MemberId`.
    MemberId,
    32
);

byte_id!(
    /// The 16-byte on-wire reference to a member the receiver already knows (§0): the
    /// first 16 bytes of its [`MemberId`].
    MemberTag,
    16
);

/// The operation that introduced a membership instance (§2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The group's creator.
    Creator,
    /// An initial member of the create `(sender, seq)`, or the target of the add `(sender, seq)`.
    Operation(MemberId, SeqNo),
}

impl MemberId {
    /// `MID = SHA-256(info("member-id","") ‖ gid ‖ IK ‖ origin)` (§2.2).
    pub fn derive(gid: &GroupId, ik: &crate::crypto::IdentityKey, origin: Origin) -> Self {
        let (prefix, seq) = match origin {
            Origin::Creator => ([0u8; 32], 0),
            Origin::Operation(sender, q) => (sender.0, q.0),
        };
        let Hash32(h) = crypto::hash(labels::MEMBER_ID, &[&gid.0, ik.as_bytes(), &prefix, &seq.to_be_bytes()]);
        MemberId(h)
    }

    /// This member's 16-byte wire tag.
    pub fn tag(&self) -> MemberTag {
        let mut t = [0u8; 16];
        t.copy_from_slice(&self.0[..16]);
        MemberTag(t)
    }
}

macro_rules! counter {
    ($(#[$doc:meta])* $name:ident, $ty:ty) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub $ty);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

counter!(
    /// A sender's envelope sequence number in one group, counting control and application
    /// envelopes alike from 1 with no gaps (§7.3).
    SeqNo,
    u64
);

counter!(
    /// A sender ratchet epoch: the sequence number of the sender's control message that
    /// produced the update secret (§5.1).
    Epoch,
    u64
);

counter!(
    /// The index of an application message within its sender's epoch (§8).
    MessageIndex,
    u32
);
