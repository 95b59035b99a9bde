//! Contact exchange: an [`Invitation`] is one line a person can copy. It names a device's
//! group identity key, its network identity (a libp2p peer ID, a key of its own, separate
//! from the group identity) and the addresses where it, or a mailbox holding its prekey
//! stock, can be reached to fetch a prekey bundle.
//!
//! Also the names the chat shows: a member is named by [`short_name`], derived from its
//! identity key, and a group by its ID in hex ([`hex`]).

use dcgka::IdentityKey;
use dcgka::codec::{DecodeError, Reader, Writer};
use libp2p::{Multiaddr, PeerId};
use sha2::{Digest, Sha256};

use crate::consts::{MAX_INVITATION_ADDRS, MAX_INVITATION_CHARS};

const PREFIX: &str = "dcgka1-";
const VERSION: u8 = 1;

/// Why an invitation line could not be read.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvitationError {
    /// It does not start with `dcgka1-`.
    #[error("not a dcgka invitation (it starts with {PREFIX})")]
    Prefix,
    /// Longer than [`MAX_INVITATION_CHARS`].
    #[error("invitation of {0} characters, the maximum is {MAX_INVITATION_CHARS}")]
    TooLong(usize),
    /// Not base58.
    #[error("invitation is not base58")]
    Encoding,
    /// Well encoded, but its content is not an invitation.
    #[error("invalid invitation: {0}")]
    Invalid(String),
    /// More than [`MAX_INVITATION_ADDRS`] addresses.
    #[error("invitation lists {0} addresses, the maximum is {MAX_INVITATION_ADDRS}")]
    TooManyAddresses(usize),
}

impl From<DecodeError> for InvitationError {
    fn from(e: DecodeError) -> Self {
        InvitationError::Invalid(e.to_string())
    }
}

/// How to reach a device and fetch one of its prekey bundles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invitation {
    /// The device's group identity key.
    pub identity: IdentityKey,
    /// Its network identity.
    pub peer: PeerId,
    /// Where it listens.
    pub addrs: Vec<Multiaddr>,
    /// Mailboxes that hold its direct messages and prekey stock while it is away.
    pub mailboxes: Vec<(PeerId, Multiaddr)>,
}

impl Invitation {
    /// The one-line form: `dcgka1-` and the base58 of the encoding.
    pub fn encode(&self) -> String {
        let mut w = Writer::new();
        w.u8(VERSION);
        w.raw(&self.identity.0);
        w.opaque(&self.peer.to_bytes());
        w.list(&self.addrs, |w, a| w.opaque(&a.to_vec()));
        w.list(&self.mailboxes, |w, (p, a)| {
            w.opaque(&p.to_bytes());
            w.opaque(&a.to_vec());
        });
        format!("{PREFIX}{}", bs58::encode(w.into_bytes()).into_string())
    }

    /// Reads a line made by [`Invitation::encode`] (surrounding white space is ignored).
    pub fn decode(line: &str) -> Result<Invitation, InvitationError> {
        let line = line.trim();
        if line.len() > MAX_INVITATION_CHARS {
            return Err(InvitationError::TooLong(line.len()));
        }
        let body = line.strip_prefix(PREFIX).ok_or(InvitationError::Prefix)?;
        let bytes = bs58::decode(body).into_vec().map_err(|_| InvitationError::Encoding)?;
        let mut r = Reader::new(&bytes)?;
        if r.u8()? != VERSION {
            return Err(InvitationError::Invalid("unknown version".into()));
        }
        let identity = dcgka::VerifyingKey(r.array()?);
        let peer = PeerId::from_bytes(r.opaque()?).map_err(|e| InvitationError::Invalid(e.to_string()))?;
        let addr = |b: &[u8]| Multiaddr::try_from(b.to_vec()).map_err(|_| DecodeError::InvalidField("address"));
        let addrs = r.list(1, |r| addr(r.opaque()?))?;
        let mailboxes = r.list(2, |r| {
            let p = PeerId::from_bytes(r.opaque()?).map_err(|_| DecodeError::InvalidField("mailbox peer id"))?;
            Ok((p, addr(r.opaque()?)?))
        })?;
        r.finish()?;
        if addrs.len() + mailboxes.len() > MAX_INVITATION_ADDRS {
            return Err(InvitationError::TooManyAddresses(addrs.len() + mailboxes.len()));
        }
        Ok(Invitation { identity, peer, addrs, mailboxes })
    }

    /// The invited device's short name.
    pub fn name(&self) -> String {
        short_name(&self.identity)
    }
}

/// A short, stable name for the device holding `identity`: eight hex digits of a hash
/// of the key (collisions are possible in large directories; the chat refuses an
/// ambiguous name).
pub fn short_name(identity: &IdentityKey) -> String {
    let h = Sha256::new().chain_update(b"dcgka short name").chain_update(identity.0).finalize();
    hex(&h[..4])
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn sample() -> Invitation {
        Invitation {
            identity: dcgka::VerifyingKey([7; 32]),
            peer: PeerId::random(),
            addrs: vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
            mailboxes: vec![(PeerId::random(), "/ip4/127.0.0.1/tcp/4002".parse().unwrap())],
        }
    }

    #[test]
    fn an_invitation_survives_its_line() {
        let i = sample();
        let line = i.encode();
        assert!(line.starts_with("dcgka1-") && !line.contains(char::is_whitespace));
        assert_eq!(Invitation::decode(&format!("  {line}\n")).unwrap(), i);
    }

    #[test]
    fn bad_lines_give_their_own_errors() {
        let line = sample().encode();
        assert_eq!(Invitation::decode("hello"), Err(InvitationError::Prefix));
        assert_eq!(Invitation::decode("dcgka1-0OIl"), Err(InvitationError::Encoding));
        assert!(matches!(Invitation::decode(&line[..line.len() - 3]), Err(InvitationError::Invalid(_))));
        let long = format!("dcgka1-{}", "1".repeat(MAX_INVITATION_CHARS));
        assert!(matches!(Invitation::decode(&long), Err(InvitationError::TooLong(_))));
        let mut many = sample();
        many.addrs = vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap(); MAX_INVITATION_ADDRS];
        assert!(matches!(Invitation::decode(&many.encode()), Err(InvitationError::TooManyAddresses(17))));
    }

    #[test]
    fn short_names_are_stable_and_short() {
        let a = short_name(&dcgka::VerifyingKey([1; 32]));
        assert_eq!(a, short_name(&dcgka::VerifyingKey([1; 32])));
        assert_eq!(a.len(), 8);
        assert_ne!(a, short_name(&dcgka::VerifyingKey([2; 32])));
    }
}
