//! # dcgka-mailbox
//!
//! A **mailbox** is a headless node that holds mail for [`dcgka`] devices while they are
//! offline. It is no member of any group and holds no group key. It keeps, in one SQLite
//! file (so a restarted mailbox keeps its mail):
//!
//! 1. the **envelopes** of the groups it is asked to serve ([`Mailbox::serve`],
//!    [`Mailbox::deposit`]), and answers a device's [`SyncRequest`] with what the device
//!    lacks ([`Mailbox::answer_sync`]), paged exactly like a device answers;
//! 2. **direct messages** (Welcomes) addressed to an identity key
//!    ([`Mailbox::hold_direct`]), offered in every answer to that identity until it syncs
//!    as a member of their group;
//! 3. a **stock of prekeys** per identity: its signed prekey and signed one-time prekeys
//!    ([`Mailbox::stock_prekeys`]), each one-time prekey handed out in at most one
//!    [`PrekeyBundle`](dcgka::prekeys::PrekeyBundle) ([`Mailbox::bundle`]), also across
//!    restarts.
//!
//! This crate is sans-IO storage and logic; a network crate wraps it in a node.
//!
//! ## What the mailbox learns
//!
//! Nothing readable. Envelopes and Welcomes are end-to-end encrypted and signed by their
//! senders; the mailbox reads only their routing header ([`dcgka::Group::peek`]: kind,
//! sender tag, sequence numbers, short hash) and verifies nothing in them, since that
//! needs group state. Prekeys are public, and their signatures are verified before they
//! are stocked. So the file needs **no encryption at rest**: everything in it is
//! ciphertext or public. What it does reveal is metadata: which groups, which identity
//! keys, how many envelopes from which member tags, when.
//!
//! A mailbox cannot forge, alter or read mail. It can withhold or drop it, and that is
//! **detectable**: every sender numbers its envelopes from 1 without gaps, so a device
//! that receives `n + 2` but not `n + 1` knows something is missing and asks another
//! peer (devices buffer out-of-order envelopes until the gap is filled).
//!
//! ## Bounds ([`consts`], overridable per mailbox with [`Limits`])
//!
//! | Bound | Default | Beyond it |
//! |---|---|---|
//! | groups served | 1,000 | [`MailboxError::TooManyGroups`] |
//! | envelopes per group | 100,000 | the group's oldest are evicted |
//! | envelope bytes per group | 64 MiB | the group's oldest are evicted |
//! | one envelope or direct message | 16 MiB | [`MailboxError::TooLarge`] |
//! | direct messages per identity | 32 | [`MailboxError::TooManyDirects`] |
//! | direct message bytes per identity | 32 MiB | [`MailboxError::DirectBytesExceeded`] |
//! | one-time prekeys per identity | 1,000 | [`MailboxError::TooManyOneTimePrekeys`] |
//! | identities with mail or prekeys | 10,000 | [`MailboxError::TooManyIdentities`] |
//! | member IDs learned per group | 65,536 | no more are learned (first envelopes are then served again) |
//!
//! **Eviction.** A full group makes room for a new envelope by deleting its *oldest*
//! envelopes (arrival order), counted in [`GroupUsage::evicted`]. A mailbox is a cache for
//! devices that were briefly away, not an archive: recent mail matters most, and a device
//! that missed evicted envelopes sees the gap in the sequence numbers and fetches them
//! from a member device (or learns they are gone), exactly as with a withholding mailbox.
//! Refusing new mail instead would let one flood stop the group's delivery for good.
//!
//! ## Transactions and the file
//!
//! Every mutating call (including [`Mailbox::answer_sync`], which deletes delivered
//! Welcomes and learns member IDs) is one SQLite transaction: on any error nothing
//! changes. Inputs come from the network: no input makes a call panic. The file carries
//! `PRAGMA application_id` ("DCMB") and `PRAGMA user_version` ([`consts::SCHEMA_VERSION`]);
//! a file of another application, a newer version or no SQLite database at all is refused
//! with its own error and left untouched.
//!
//! ## Example
//!
//! ```
//! use dcgka::ids::GroupId;
//! use dcgka_mailbox::{Mailbox, MailboxError};
//!
//! let mut mailbox = Mailbox::open_in_memory()?;
//! let gid = GroupId([7; 32]);
//! assert!(mailbox.serve(gid)?);
//! // Garbage is refused; nothing is stored.
//! assert!(matches!(mailbox.deposit(&gid, b"not an envelope"), Err(MailboxError::Malformed(_))));
//! assert_eq!(mailbox.usage()?.envelopes(), 0);
//! # Ok::<(), MailboxError>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod consts;
mod direct;
mod error;
mod mailbox;
mod prekeys;
mod sync;

pub use dcgka_device::{GroupHeads, SyncRequest, SyncResponse};
pub use error::MailboxError;
pub use mailbox::{Deposit, GroupUsage, IdentityUsage, Limits, Mailbox, MailboxHeads, SenderHead, Usage};
