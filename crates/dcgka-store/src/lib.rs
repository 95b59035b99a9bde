//! # dcgka-store
//!
//! A device store for [`dcgka`] on SQLite: the implementation of the device layer's
//! storage seam ([`dcgka_device::Storage`]) that keeps one device in one file: its
//! identity with the prekey secrets, every group it is in (split into a core record and
//! one record per sender), the device rules' records (instances known, Welcomes held for
//! later, §6.6), the backlog, the envelope log of each group, the Welcomes it sent, the
//! outbox, and the inbox of events for the application. SQLite comes bundled (the
//! `bundled` feature of `rusqlite`): nothing needs to be installed.
//!
//! ```
//! use dcgka::group::GroupConfig;
//! use dcgka::prekeys::Identity;
//! use dcgka_device::Device;
//! use dcgka_store::{StorageKey, Store};
//! # use rand_core::SeedableRng;
//! # let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
//! # let dir = tempfile::tempdir()?;
//! let path = dir.path().join("device.sqlite");
//! let key = StorageKey::generate(&mut rng); // the application keeps it in its key store
//!
//! // A new device: its identity is committed at once.
//! let identity = Identity::generate(&mut rng);
//! let ik = identity.public_key();
//! let device = Device::new(identity, GroupConfig::default(), Store::create(&path, &key)?)?;
//! drop(device); // the process ends, or crashes
//!
//! // Later: the device resumes where its last committed call left it.
//! let device = Device::open(GroupConfig::default(), Store::open(&path, &key)?)?;
//! assert_eq!(device.public_key(), ik);
//! // Events wait in the inbox until the application marks them consumed.
//! let events = device.store().inbox()?;
//! device.store().mark_consumed(&events.iter().map(|e| e.id).collect::<Vec<_>>())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## One call, one transaction
//!
//! Every device call hands its [`dcgka_device::Commit`] to [`Store`], which applies it as
//! one SQLite transaction: state records, log entries, kept Welcomes, outbox items and
//! events commit together or not at all, synced to disk (`synchronous = FULL`), and only
//! then does the device return anything for transmission. [`Store::open`] then resumes
//! exactly where the last committed call left off: a call killed at any point is either
//! fully applied or not at all (the crash test kills a child process with SIGKILL at
//! random points, at least 50 times, and checks it). The store holds the file's lock from
//! open to drop, so a second store on the same file fails with [`StoreError::Locked`]
//! instead of letting two copies of a device sign with one state.
//!
//! The inbox gives every event a number that grows and is never reused; an application
//! that records the numbers it has handled before calling [`Store::mark_consumed`]
//! delivers each event exactly once across crashes.
//!
//! ## The storage key, and what is encrypted
//!
//! The application supplies a 32-byte [`StorageKey`] (from the platform's key store), or
//! a passphrase ([`Store::create_with_passphrase`]) from which Argon2id derives it, with a
//! random 16-byte salt and the parameters stored in the file ([`KdfParams::default`]: RFC
//! 9106's second recommendation, t = 3, p = 4, 64 MiB; a file cannot name more than 1 GiB,
//! 64 passes or 64 lanes). From it and a random per-store ID, HKDF-SHA256 derives the row
//! key and a key check value (stored, to tell a wrong key from a damaged row).
//!
//! **Encrypted** (ChaCha20-Poly1305 under the row key, a fresh random 12-byte nonce per
//! write stored with the value): every value the store keeps: the identity and its prekey
//! secrets, every group record (core and per-sender), the rules records, the backlog, the
//! envelope log entries (position, last sequence number, hash and the envelope), kept
//! Welcomes, outbox items (group, destination and bytes) and inbox events (group and
//! event, decrypted message text included). The associated data of each value names its
//! table and key columns, so a value moved to another row, table or store does not
//! authenticate ([`StoreError::Tampered`]).
//!
//! **Not encrypted**: the key columns: group IDs and member instance IDs (of state rows,
//! log entries and kept Welcomes), sequence numbers of log entries, the record kind, the
//! numbers of outbox items and inbox events; the size of every value; the schema version,
//! the application ID, the store ID, the key check value, and the Argon2id salt and
//! parameters. Someone holding the file learns which groups the device is in, which
//! members sent how many envelopes, and how much it stores, but no key, message or
//! envelope. Rows can be deleted or rolled back to an older version of themselves by
//! someone who can write the file (as the whole file can): the library's own defence is
//! `StateForkSuspected`.
//!
//! ## Forward secrecy on disk
//!
//! A key the library deletes must not survive in the file: `PRAGMA secure_delete = ON`
//! overwrites deleted content (cells and freed pages) with zeros, and the rollback journal
//! runs in `TRUNCATE` mode, truncated to zero bytes at the end of every transaction, so
//! the old page images it holds during a commit are gone once it commits. (`DELETE` mode
//! would not do: under the exclusive lock SQLite keeps the journal file with its header
//! zeroed and the old pages in it, and the tests find them there; WAL would need a
//! checkpoint and truncation after every commit, which costs more syncs.) Temporary
//! files are kept in memory (`temp_store = MEMORY`). The forward-secrecy tests read a
//! row's stored bytes while it holds a message key, member secrets, a 2SM secret key or a
//! one-time prekey, let the protocol delete it, and find no 16-byte window of them in any
//! file of the directory. Below the file system (freed disk blocks, SSD remapping,
//! snapshots, backups) a user-space library cannot erase: use full-disk encryption.
//!
//! ## Errors, never damage
//!
//! [`Store::open`] checks the file before SQLite writes anything: present
//! ([`StoreError::Missing`]), a SQLite file of this application
//! ([`StoreError::Foreign`]), as long as its header says
//! ([`StoreError::Truncated`]), not in use ([`StoreError::Locked`]), a schema version
//! this code reads ([`StoreError::NewerVersion`]), structurally sound with exactly its
//! own tables (`PRAGMA quick_check`; [`StoreError::Corrupt`]), the right key
//! ([`StoreError::WrongKey`]), every row authentic and well formed
//! ([`StoreError::Tampered`], [`StoreError::Corrupt`]). A failing open leaves the file
//! exactly as it was (tested by hashing it). One exception: after a crash in the middle of
//! a commit, SQLite restores the last committed state from the journal on the first read.
//! No file content makes the store panic.
//!
//! ## Versions
//!
//! `PRAGMA user_version` holds the schema version ([`consts::SCHEMA_VERSION`], 1). Files
//! written by version 1 are committed as fixtures (`tests/fixtures/`) and must keep
//! opening; a change of the schema needs a new version and a migration.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod consts;
mod encode;
mod error;
mod key;
mod seal;
mod store;

pub use error::StoreError;
pub use key::{KdfParams, StorageKey};
pub use store::{CommitStats, InboxEvent, Store};
