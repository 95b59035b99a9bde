//! # dcgka
//!
//! A sans-IO implementation of decentralized continuous group key agreement after
//! Weidner, Kleppmann, Hugenroth and Beresford, "Key Agreement for Decentralized Secure
//! Group Messaging with Strong Security Guarantees" (ACM CCS 2021). The wire format and
//! processing rules are documented in the repository's `docs/protocol.md`; section
//! numbers (§) in this crate refer to it.
//!
//! The crate performs no I/O: it reads no clock, opens no socket and uses no global RNG.
//! Every operation takes a caller-supplied CSPRNG (`&mut impl rand_core::CryptoRng`) and,
//! where prekey validity matters, the current Unix time.
//!
//! ## Layers (one module each, named after the paper's concepts)
//!
//! | Module | Spec | What it owns |
//! |---|---|---|
//! | `crypto`* | §2 | Primitives behind project types; every KDF label |
//! | [`ids`] | §2.2 | Group IDs, member (instance) IDs and tags, sequence numbers, epochs |
//! | [`codec`] | §0 | Canonical varint encoding, total decoding |
//! | [`prekeys`] | §3 | Identities, signed and one-time prekeys, the PKI trait |
//! | `two_party`* | §4 | 2SM, the two-party channel carrying seeds and ratchet states |
//! | `dgm`* | §6 | SR-DGM: strong-remove membership, `member-view`, the reference evaluator |
//! | `dcgka`* | §5 | The state γ: `create`, `update`, `remove`, `add`, `process-*`, the outer ratchet |
//! | `ordering`* | §7 | ACB: per-sender FIFO, ack-after-acked, signing keys, the bounded buffer |
//! | `welcome`* | §7.4 | The Welcome and its compact history log |
//! | `ratchet`* | §8 | The per-sender message ratchet (FS-AEAD) |
//! | `wire`* | §5.2, §7.1 | Envelopes and control-message bodies |
//! | [`group`] | §9 | The application-facing [`group::Group`]: bytes in, events and bytes out |
//! | [`events`] | §9 | Events and the reasons for rejected, dropped or undecryptable envelopes |
//! | [`snapshot`] | — | The versioned, canonical state snapshot of one member's group state |
//! | [`consts`] | — | Every limit, each with its own error variant |
//!
//! \* A low-level layer, public only with the `internals` feature (see Features below).
//!
//! The application API is re-exported at the crate root: [`Group`], [`GroupConfig`],
//! [`Context`], [`Output`], [`Received`], [`Event`], [`Identity`], the identifiers and
//! the errors.
//!
//! ## Example: a two-member group
//!
//! ```
//! use dcgka::events::Event;
//! use dcgka::group::{Context, Group, GroupConfig};
//! use dcgka::prekeys::{Identity, InMemoryPrekeyDirectory};
//! # use rand_core::SeedableRng;
//! # let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
//! let now = 1_800_000_000; // Unix seconds, supplied by the caller
//! let mut directory = InMemoryPrekeyDirectory::new(); // the PKI: any PrekeyProvider
//! let mut alice = Identity::generate(&mut rng);
//! let mut bob = Identity::generate(&mut rng);
//! directory.publish_identity(&mut rng, &mut alice, now, 10)?;
//! directory.publish_identity(&mut rng, &mut bob, now, 10)?;
//! let bob_ik = bob.public_key();
//!
//! // Alice creates the group; the create envelope is broadcast.
//! let mut ctx = Context { rng: &mut rng, now, prekeys: &mut directory, identity: &mut alice };
//! let (mut at_alice, out) = Group::create(&mut ctx, &[bob_ik], GroupConfig::default())?;
//!
//! // Bob joins from it (after the application's consent) and acknowledges.
//! let mut ctx = Context { rng: &mut rng, now, prekeys: &mut directory, identity: &mut bob };
//! let (mut at_bob, bob_out) = Group::from_create(&mut ctx, &out.broadcast[0], GroupConfig::default())?;
//! let mut ctx = Context { rng: &mut rng, now, prekeys: &mut directory, identity: &mut alice };
//! at_alice.receive(&mut ctx, &bob_out.broadcast[0])?;
//! assert_eq!(at_alice.members(), at_bob.members());
//!
//! // Application messages: one envelope each.
//! let sent = at_alice.send(&mut ctx, b"hello bob")?;
//! let mut ctx = Context { rng: &mut rng, now, prekeys: &mut directory, identity: &mut bob };
//! let got = at_bob.receive(&mut ctx, &sent.broadcast[0])?;
//! assert!(matches!(&got.events[0], Event::Message { plaintext, .. } if plaintext == b"hello bob"));
//!
//! // Bob's state as bytes (persist them before sending anything), and back.
//! let saved = at_bob.snapshot();
//! let at_bob = Group::restore(&saved)?;
//! assert_eq!(at_bob.members(), at_alice.members());
//! assert_eq!(at_bob.snapshot(), saved);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The caller persists the group state ([`group::Group::snapshot`], restored with
//! [`group::Group::restore`]) before transmitting anything a call returned,
//! broadcasts `broadcast`, delivers each Welcome in `direct` to its recipient, and feeds
//! every received byte string to `receive`; duplicates, garbage and out-of-order envelopes
//! are harmless. A newcomer first reads a Welcome with [`group::Group::inspect_welcome`],
//! which checks its signature and bounds without replaying anything and names the adder
//! and the group's size, and calls [`group::Group::join`] only if it consents.
//!
//! ## Coalesced acknowledgments
//!
//! With [`group::GroupConfig::coalesce_acks`], a member holds the acks that processing
//! produces and sends them with its next envelope as one *batch* under one signature
//! (spec §12, CCS §8.1): each recipient then verifies one signature per member and
//! message instead of one per ack. The application calls [`group::Group::flush_acks`]
//! when it has had nothing to send for a while (a timer), so that others learn the acks;
//! until they do, they keep the member secrets those acks would let them delete.

//! ## Features
//!
//! - `internals`: makes the low-level layers public (`crypto`, `two_party`, `dcgka`,
//!   `dgm`, `ordering`, `ratchet`, `welcome`, `wire`), for the test suites, the
//!   known-answer vectors and the simulator. An application needs none of them: the
//!   crate root re-exports the application API.
//! - `test-hooks`: the adversarial copy of a group and oracle-only getters, for the
//!   simulator's oracles. Never enable it in an application.
//! - `cross-checks`: expensive internal consistency checks (also run by unit tests).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod codec;
pub mod consts;
pub mod events;
pub mod group;
pub mod ids;
pub mod prekeys;
pub mod snapshot;

/// Declares a low-level layer: public with the `internals` feature, private otherwise.
macro_rules! layer {
    ($($(#[$m:meta])* $name:ident),* $(,)?) => {$(
        $(#[$m])*
        #[cfg(feature = "internals")]
        pub mod $name;
        $(#[$m])*
        #[cfg(not(feature = "internals"))]
        #[allow(dead_code, unreachable_pub, unused_imports)]
        mod $name;
    )*};
}

layer!(crypto, dcgka, dgm, ordering, ratchet, two_party, welcome, wire);

pub use crate::codec::DecodeError;
pub use crate::crypto::{CryptoError, IdentityKey, VerifyingKey};
pub use crate::events::{DropReason, EquivocationEvidence, Event, MalformedBody, Misbehaviour, RejectReason};
pub use crate::group::{
    Accepted, Context, Group, GroupConfig, GroupError, GroupRecords, JoinError, Output, Peek, Received, Status,
    WelcomeMessage, WelcomeSummary, welcome_target,
};
pub use crate::ids::{Epoch, GroupId, MemberId, MemberTag, MessageIndex, SeqNo};
pub use crate::ordering::BufferError;
pub use crate::prekeys::{Identity, InMemoryPrekeyDirectory, PrekeyBundle, PrekeyError, PrekeyProvider};
pub use crate::ratchet::RatchetError;
pub use crate::snapshot::SnapshotError;
pub use crate::wire::{EnvelopeKind, SenderRef};
