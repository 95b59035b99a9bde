//! # dcgka
//!
//! A sans-IO implementation of decentralized continuous group key agreement after
//! Weidner, Kleppmann, Hugenroth and Beresford, "Key Agreement for Decentralized Secure
//! Group Messaging with Strong Security Guarantees" (ACM CCS 2021), as specified in the
//! project's `PROTOCOL.md`.
//!
//! The crate performs no I/O: it reads no clock, opens no socket and uses no global RNG.
//! Every operation takes a caller-supplied CSPRNG (`&mut impl rand_core::CryptoRng`) and,
//! where prekey validity matters, the current Unix time.
//!
//! ## Layers (one module each, named after the paper's concepts)
//!
//! | Module | Spec | What it owns |
//! |---|---|---|
//! | [`crypto`] | §2 | Primitives behind project types; every KDF label |
//! | [`ids`] | §2.2 | Group IDs, member (instance) IDs and tags, sequence numbers, epochs |
//! | [`codec`] | §0 | Canonical varint encoding, total decoding |
//! | [`prekeys`] | §3 | Identities, signed and one-time prekeys, the PKI trait |
//! | [`two_party`] | §4 | 2SM, the two-party channel carrying seeds and ratchet states |
//! | [`ratchet`] | §8 | The per-sender forward-secure message ratchet |
//! | [`wire`] | §5.2, §7.1 | Envelopes and control-message bodies |
//!
//! ## Example: a first 2SM message through a prekey bundle
//!
//! ```
//! use dcgka::ids::{GroupId, MemberId, Origin, SeqNo};
//! use dcgka::prekeys::{Identity, InMemoryPrekeyDirectory};
//! use dcgka::two_party::TwoPartySession;
//! # use rand_core::SeedableRng;
//! # let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
//! let now = 1_800_000_000; // Unix seconds, supplied by the caller
//! let mut alice = Identity::generate(&mut rng);
//! let mut bob = Identity::generate(&mut rng);
//! let mut directory = InMemoryPrekeyDirectory::new();
//! directory.publish_identity(&mut rng, &mut bob, now, 10)?;
//!
//! let gid = GroupId([7; 32]);
//! let a = MemberId::derive(&gid, &alice.public_key(), Origin::Creator);
//! let b = MemberId::derive(&gid, &bob.public_key(), Origin::Operation(a, SeqNo(1)));
//! let mut to_bob = TwoPartySession::new(gid, a, b, bob.public_key());
//! let mut from_alice = TwoPartySession::new(gid, b, a, alice.public_key());
//!
//! // Bob may be offline: the first message is sealed to his published prekeys.
//! let ct = to_bob.send(&mut rng, &mut directory, now, b"a seed")?;
//! let pt = from_alice.receive(bob.key_store_mut(), &ct)?;
//! assert_eq!(&pt[..], b"a seed");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod codec;
pub mod consts;
pub mod crypto;
pub mod dcgka;
pub mod dgm;
pub mod events;
pub mod group;
pub mod ids;
pub mod ordering;
pub mod prekeys;
pub mod ratchet;
pub mod two_party;
pub mod welcome;
pub mod wire;
