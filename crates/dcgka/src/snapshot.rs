//! State snapshots: one member's complete state in one group as bytes
//! ([`Group::snapshot`](crate::group::Group::snapshot),
//! [`Group::restore`](crate::group::Group::restore)), and a device's identity with its
//! prekey secrets ([`Identity::snapshot`](crate::prekeys::Identity::snapshot),
//! [`Identity::restore`](crate::prekeys::Identity::restore)).
//!
//! The application stores a snapshot **before it transmits anything a call returned**
//! (otherwise a crash could make it reuse a sequence number, a seed or a ratchet key), and
//! restores it after a restart. Live types are not serializable; each layer encodes its own
//! state with the crate's canonical codec ([`crate::codec`]):
//!
//! ```text
//! Snapshot = magic:u8 (0xDC) ‖ version:u8 (5; 2 to 4 are still read)
//!          ‖ members:list<[32]>        every MID the state mentions, in order of first mention
//!          ‖ group                     config, identity key, then the layers below, then the
//!                                      signing secret, sender ratchets, message indices,
//!                                      status, pending duplicate removal, held acks,
//!                                      absent members and since when (§5.7)
//!              dcgka  (γ, §5.1)        me, gid, seq, IK table, H as its compact base and log,
//!                                      next seed, 2SM sessions, member secrets, outer
//!                                      ratchets, heal and resync flags, the operations
//!                                      in flight with who is awaited and who acknowledged,
//!                                      retention starts of held member secrets, stale members
//!              ordering (§7)           sender table, retained hashes and keys (of the
//!                                      operations in flight), horizon, buffered envelopes
//!                                      with their flags, withheld late operations
//! ```
//!
//! Everywhere else a member is a varint index into `members`; a map is a list sorted by
//! key; an envelope is its wire encoding. The encoding is canonical: the decoder accepts
//! only the bytes [`Group::snapshot`](crate::group::Group::snapshot) would produce for the
//! state it decodes (members numbered in order of first mention, every table entry used,
//! sorted maps, minimal varints, no trailing bytes), so `snapshot(restore(b)) = b`.
//! Decoding is total: any input gives a group or a [`SnapshotError`], never a panic.
//!
//! **Rebuilt on restore, not stored**: the SR-DGM indexes of `H` (every table of
//! `History`, by re-applying the operation log, which reproduces an equal
//! history), each buffered envelope's size and the buffer counters, and the group and
//! sender of each sender ratchet (from the enclosing state). **Neither stored nor
//! kept**: member tags (resolved through the IK table, sorted by MID, whose first bytes are
//! the tag), the parts of each 2SM session that the enclosing state determines (group, own
//! and peer MID, peer identity key; a group holds only each session's own state), and the
//! decompressed signing keys, a bounded cache that a restored group starts empty.
//!
//! **Not in a group snapshot**: the device's [`crate::prekeys::Identity`] with its prekey
//! secrets, which is shared by all of the device's groups and has a snapshot of its own
//! (a different magic byte, so neither kind restores as the other):
//!
//! ```text
//! IdentitySnapshot = magic:u8 (0xD1) ‖ version:u8 (1)
//!                  ‖ signing:[32]                     the identity's Ed25519 secret seed
//!                  ‖ next_spk:var ‖ spks:map<id:var, (secret:[32], not_after:var)>
//!                  ‖ next_opk:var ‖ opks:map<id:var, secret:[32]>
//! ```
//!
//! It has no member table; it is canonical and total in the same way, and ids must lie in
//! `1..=next` (the store issues `next + 1` next). A first 2SM message deletes a one-time
//! prekey from the identity, so the identity must be persisted together with the group
//! snapshots of the call that consumed it.
//!
//! **Versions.** The reader accepts the version this library writes for the kind and hands
//! it to every layer (`StateReader::version`). A format change bumps the version
//! of its kind; the reader then accepts the old and the new one, and each layer's
//! `decode_state` branches on `version()` where its own encoding changed, so old snapshots
//! keep loading.
//!
//! Every buffer holding the snapshot's bytes zeroizes itself; the bytes are as secret as
//! the state: an application encrypts them at rest.

use core::ops::{Deref, DerefMut};
use std::collections::{BTreeMap, BTreeSet};

use zeroize::Zeroizing;

use crate::codec::{DecodeError, Reader, Writer};
use crate::consts::MAX_SNAPSHOT_SIZE;
use crate::crypto::{KEY_LEN, Secret32};
use crate::ids::MemberId;

/// The first byte of every group snapshot.
pub const SNAPSHOT_MAGIC: u8 = 0xDC;

/// The group snapshot format version this library writes. Every change of the format gets
/// a new version. Version 5 adds the retention period of §5.7 (the configured period, when
/// each operation whose member secrets are held was processed, the members whose ratchet
/// was lost to it, and since when each absent member has been absent; an older snapshot's
/// held secrets start their period at the first check). Version 4 stores the membership history compacted (its compact base,
/// remaining operations and departed members, §6.7) and keeps acknowledgment bookkeeping
/// only for operations in flight
/// (the DCGKA's ack tracker in place of the set of every processed ack of an update, and the
/// ordering layer's retained hashes and keys pruned to what is in flight); versions 2 and 3
/// still load, their retained operations turned into tracker entries. Version 3 added the
/// withholding of late operations (a configuration flag and the withheld operations, §7.5);
/// version 2 added signing-key certificates and the recent hashes of §7.6
/// ([`MIN_SNAPSHOT_VERSION`]); version 1 came before any persistent store and is refused
/// with [`SnapshotError::UnsupportedVersion`].
pub const SNAPSHOT_VERSION: u8 = 5;

/// The oldest group snapshot format version this library reads.
pub const MIN_SNAPSHOT_VERSION: u8 = 2;

/// The first byte of every identity snapshot
/// ([`Identity::snapshot`](crate::prekeys::Identity::snapshot)); not [`SNAPSHOT_MAGIC`],
/// so that a group snapshot never restores as an identity nor the other way round.
pub const IDENTITY_SNAPSHOT_MAGIC: u8 = 0xD1;

/// The identity snapshot format version this library writes (and the only one it reads so
/// far); versioned independently of [`SNAPSHOT_VERSION`].
pub const IDENTITY_SNAPSHOT_VERSION: u8 = 1;

/// The first byte of one sender's record of a group ([`crate::group::Group::records`]).
pub const SENDER_RECORD_MAGIC: u8 = 0xDD;

/// What a snapshot holds; its header (magic and version) depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SnapshotKind {
    /// One member's state in one group: [`SNAPSHOT_MAGIC`], [`SNAPSHOT_VERSION`], and a
    /// member table after the header.
    Group,
    /// A device's identity and key store: [`IDENTITY_SNAPSHOT_MAGIC`],
    /// [`IDENTITY_SNAPSHOT_VERSION`], no member table.
    Identity,
    /// One sender's part of a group's state (its ordering head, sender ratchet and message
    /// index): [`SENDER_RECORD_MAGIC`], [`SNAPSHOT_VERSION`], a member table.
    Sender,
}

impl SnapshotKind {
    /// The first byte.
    const fn magic(self) -> u8 {
        match self {
            SnapshotKind::Group => SNAPSHOT_MAGIC,
            SnapshotKind::Identity => IDENTITY_SNAPSHOT_MAGIC,
            SnapshotKind::Sender => SENDER_RECORD_MAGIC,
        }
    }

    /// The version written (the newest one read).
    const fn version(self) -> u8 {
        match self {
            SnapshotKind::Group | SnapshotKind::Sender => SNAPSHOT_VERSION,
            SnapshotKind::Identity => IDENTITY_SNAPSHOT_VERSION,
        }
    }

    /// The oldest version read.
    const fn min_version(self) -> u8 {
        match self {
            SnapshotKind::Group | SnapshotKind::Sender => MIN_SNAPSHOT_VERSION,
            SnapshotKind::Identity => IDENTITY_SNAPSHOT_VERSION,
        }
    }

    /// Whether a member table follows the header.
    const fn has_member_table(self) -> bool {
        matches!(self, SnapshotKind::Group | SnapshotKind::Sender)
    }
}

/// Why bytes could not be restored as a group or an identity. Nothing is created in any
/// case.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The first byte is not the magic of the kind being restored ([`SNAPSHOT_MAGIC`] for
    /// a group, [`IDENTITY_SNAPSHOT_MAGIC`] for an identity): these bytes are not a
    /// snapshot of that kind.
    #[error("not a snapshot of this kind: first byte {found:#04x}, expected {expected:#04x}")]
    NotASnapshot {
        /// The byte found.
        found: u8,
        /// The magic of the kind being restored.
        expected: u8,
    },
    /// A snapshot format version this library cannot read.
    #[error("unsupported snapshot version {found}; this library reads version {supported}")]
    UnsupportedVersion {
        /// The version found.
        found: u8,
        /// The version this library reads for that kind ([`SNAPSHOT_VERSION`] or
        /// [`IDENTITY_SNAPSHOT_VERSION`]).
        supported: u8,
    },
    /// The bytes are not a well-formed snapshot (truncated, trailing bytes, a non-minimal
    /// varint, an unknown tag, an unsorted map, an oversized input...).
    #[error("malformed snapshot: {0}")]
    Malformed(#[from] DecodeError),
    /// A member reference that is neither an already numbered member nor the next entry of
    /// the member table.
    #[error("member reference {index} out of order: at most {max} expected here")]
    BadMemberRef {
        /// The index found.
        index: u64,
        /// The largest index allowed at that point.
        max: u64,
    },
    /// The membership history's operation log does not replay.
    #[error("membership history does not replay: {0}")]
    History(String),
    /// Fields contradict each other (for example a 2SM session with a member of unknown
    /// identity).
    #[error("inconsistent snapshot: {0}")]
    Inconsistent(&'static str),
}

/// Most list items [`StateReader::items`] allocates room for before decoding them.
const PREALLOCATE_ITEMS: usize = 1024;

/// Encodes a state snapshot: a secret [`Writer`] for the body plus the member table.
/// Dereferences to the writer for plain values.
pub(crate) struct StateWriter {
    kind: SnapshotKind,
    w: Writer,
    index: BTreeMap<MemberId, u64>,
    table: Vec<MemberId>,
}

impl Deref for StateWriter {
    type Target = Writer;
    fn deref(&self) -> &Writer {
        &self.w
    }
}

impl DerefMut for StateWriter {
    fn deref_mut(&mut self) -> &mut Writer {
        &mut self.w
    }
}

impl StateWriter {
    /// A writer for a group snapshot.
    pub(crate) fn new() -> Self {
        Self::of_kind(SnapshotKind::Group)
    }

    /// A writer for a snapshot of `kind`.
    pub(crate) fn of_kind(kind: SnapshotKind) -> Self {
        StateWriter { kind, w: Writer::secret(), index: BTreeMap::new(), table: Vec::new() }
    }

    /// A member, as its index in the member table (numbered on first mention). Only a
    /// kind with a member table mentions members.
    pub(crate) fn member(&mut self, id: &MemberId) {
        debug_assert!(self.kind.has_member_table(), "a member in a snapshot without a member table");
        let next = self.table.len() as u64;
        let i = *self.index.entry(*id).or_insert(next);
        if i == next {
            self.table.push(*id);
        }
        self.w.var(i);
    }

    /// A 32-byte secret.
    pub(crate) fn secret(&mut self, s: &Secret32) {
        self.w.raw(s.expose());
    }

    /// A boolean, as an `opt` flag (0 or 1).
    pub(crate) fn flag(&mut self, b: bool) {
        self.w.u8(u8::from(b));
    }

    /// `list<T>`: the count, then each item.
    pub(crate) fn items<T>(&mut self, items: impl ExactSizeIterator<Item = T>, mut f: impl FnMut(&mut Self, T)) {
        self.w.var(items.len() as u64);
        for it in items {
            f(self, it);
        }
    }

    /// A map as a list of entries in key order.
    pub(crate) fn map<K, V>(&mut self, m: &BTreeMap<K, V>, mut f: impl FnMut(&mut Self, &K, &V)) {
        self.items(m.iter(), |w, (k, v)| f(w, k, v));
    }

    /// The complete snapshot: header, member table (if the kind has one), body.
    pub(crate) fn finish(self) -> Zeroizing<Vec<u8>> {
        let mut out = Writer::secret();
        out.u8(self.kind.magic());
        out.u8(self.kind.version());
        if self.kind.has_member_table() {
            out.list(&self.table, |w, m| w.raw(&m.0));
        }
        out.raw(self.w.as_slice());
        out.into_zeroizing()
    }
}

/// Decodes a state snapshot; dereferences to the [`Reader`] for plain values.
pub(crate) struct StateReader<'a> {
    r: Reader<'a>,
    /// The format version read from the header.
    version: u8,
    table: Vec<MemberId>,
    /// Members numbered so far: a reference is below this, or exactly this (the next one).
    next: usize,
}

impl<'a> Deref for StateReader<'a> {
    type Target = Reader<'a>;
    fn deref(&self) -> &Reader<'a> {
        &self.r
    }
}

impl DerefMut for StateReader<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.r
    }
}

impl<'a> StateReader<'a> {
    /// Opens a group snapshot: checks the size, magic and version, and reads the member
    /// table.
    pub(crate) fn open(bytes: &'a [u8]) -> Result<Self, SnapshotError> {
        Self::open_kind(bytes, SnapshotKind::Group)
    }

    /// Opens a snapshot of `kind`: checks the size, magic and version, and reads the member
    /// table if the kind has one (otherwise every member reference is refused).
    pub(crate) fn open_kind(bytes: &'a [u8], kind: SnapshotKind) -> Result<Self, SnapshotError> {
        let mut r = Reader::with_max_size(bytes, MAX_SNAPSHOT_SIZE)?;
        let magic = r.u8()?;
        if magic != kind.magic() {
            return Err(SnapshotError::NotASnapshot { found: magic, expected: kind.magic() });
        }
        let version = r.u8()?;
        if version > kind.version() || version < kind.min_version() {
            return Err(SnapshotError::UnsupportedVersion { found: version, supported: kind.version() });
        }
        let mut sr = StateReader { r, version, table: Vec::new(), next: 0 };
        if !kind.has_member_table() {
            return Ok(sr);
        }
        let table = sr.items(KEY_LEN, |r| Ok(MemberId(r.array()?)))?;
        if table.iter().collect::<BTreeSet<_>>().len() != table.len() {
            return Err(SnapshotError::Inconsistent("the member table lists a member twice"));
        }
        sr.table = table;
        Ok(sr)
    }

    /// The format version in the snapshot's header, for the layers' `decode_state`.
    ///
    /// [`open_kind`](Self::open_kind) accepts every version from the kind's oldest supported
    /// one to the current one (group snapshots and sender records: 2 to 4); each layer
    /// whose encoding changed branches on this value, so old snapshots keep loading (and
    /// the frozen fixtures in the tests keep passing).
    pub(crate) fn version(&self) -> u8 {
        self.version
    }

    /// A member reference (see [`StateWriter::member`]).
    pub(crate) fn member(&mut self) -> Result<MemberId, SnapshotError> {
        let i = self.r.var()?;
        let max = self.next.min(self.table.len().saturating_sub(1));
        let id = usize::try_from(i)
            .ok()
            .filter(|i| *i <= max)
            .and_then(|i| self.table.get(i))
            .copied()
            .ok_or(SnapshotError::BadMemberRef { index: i, max: max as u64 })?;
        if i == self.next as u64 {
            self.next += 1;
        }
        Ok(id)
    }

    /// A 32-byte secret.
    pub(crate) fn secret(&mut self) -> Result<Secret32, SnapshotError> {
        Ok(Secret32::from_bytes(self.r.array()?))
    }

    /// A boolean flag.
    pub(crate) fn flag(&mut self) -> Result<bool, SnapshotError> {
        Ok(self.r.flag()?)
    }

    /// `list<T>` of items of at least `min_item_len` bytes each; the count is checked
    /// against what the input can hold before anything is allocated.
    pub(crate) fn items<T>(
        &mut self,
        min_item_len: usize,
        mut f: impl FnMut(&mut Self) -> Result<T, SnapshotError>,
    ) -> Result<Vec<T>, SnapshotError> {
        let count = self.r.var()?;
        let fits = self.r.remaining() / min_item_len.max(1);
        if count > fits as u64 {
            return Err(DecodeError::ListTooLong { count, max: fits }.into());
        }
        // Items may be far larger in memory than on the wire: preallocate little, so that
        // memory grows only with what actually decodes.
        let mut out = Vec::with_capacity((count as usize).min(PREALLOCATE_ITEMS));
        for _ in 0..count {
            out.push(f(self)?);
        }
        Ok(out)
    }

    /// A map written by [`StateWriter::map`]: keys must be strictly ascending.
    pub(crate) fn map<K: Ord, V>(
        &mut self,
        min_item_len: usize,
        f: impl FnMut(&mut Self) -> Result<(K, V), SnapshotError>,
    ) -> Result<BTreeMap<K, V>, SnapshotError> {
        let entries = self.items(min_item_len, f)?;
        if !entries.windows(2).all(|w| w[0].0 < w[1].0) {
            return Err(DecodeError::NotCanonicalSet.into());
        }
        Ok(entries.into_iter().collect())
    }

    /// Fails unless every byte was read and every member-table entry was referenced.
    pub(crate) fn finish(self) -> Result<(), SnapshotError> {
        self.r.finish()?;
        if self.next != self.table.len() {
            return Err(SnapshotError::Inconsistent("the member table lists a member the state never mentions"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const X: MemberId = MemberId([1; 32]);
    const Y: MemberId = MemberId([2; 32]);

    fn snapshot(table: &[MemberId], body: &[u8]) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(SNAPSHOT_MAGIC);
        w.u8(SNAPSHOT_VERSION);
        w.list(table, |w, m| w.raw(&m.0));
        w.raw(body);
        w.into_bytes()
    }

    #[test]
    fn members_are_numbered_in_order_of_first_mention() {
        let mut w = StateWriter::new();
        w.member(&Y);
        w.member(&X);
        w.member(&Y);
        let bytes = w.finish();
        assert_eq!(&bytes[..], &snapshot(&[Y, X], &[0, 1, 0])[..]);
        let mut r = StateReader::open(&bytes).unwrap();
        assert_eq!(r.version(), SNAPSHOT_VERSION);
        assert_eq!([r.member().unwrap(), r.member().unwrap(), r.member().unwrap()], [Y, X, Y]);
        r.finish().unwrap();
    }

    #[test]
    fn out_of_order_repeated_and_unused_members_are_refused() {
        let bytes = snapshot(&[X, Y], &[1, 0]);
        let mut r = StateReader::open(&bytes).unwrap();
        assert_eq!(r.member().err(), Some(SnapshotError::BadMemberRef { index: 1, max: 0 }));
        let bytes = snapshot(&[X, Y], &[0, 2]);
        let mut r = StateReader::open(&bytes).unwrap();
        assert_eq!(r.member().unwrap(), X);
        assert_eq!(r.member().err(), Some(SnapshotError::BadMemberRef { index: 2, max: 1 }));
        let bytes = snapshot(&[X, X], &[0, 1]);
        assert!(matches!(StateReader::open(&bytes), Err(SnapshotError::Inconsistent(_))));
        let bytes = snapshot(&[X, Y], &[0]);
        let mut r = StateReader::open(&bytes).unwrap();
        assert_eq!(r.member().unwrap(), X);
        assert!(matches!(r.finish(), Err(SnapshotError::Inconsistent(_))));
        let bytes = snapshot(&[], &[0]);
        let mut r = StateReader::open(&bytes).unwrap();
        assert_eq!(r.member().err(), Some(SnapshotError::BadMemberRef { index: 0, max: 0 }));
    }

    #[test]
    fn the_identity_kind_has_its_own_header_and_no_member_table() {
        assert_ne!(IDENTITY_SNAPSHOT_MAGIC, SNAPSHOT_MAGIC);
        let mut w = StateWriter::of_kind(SnapshotKind::Identity);
        w.var(5);
        let bytes = w.finish();
        assert_eq!(&bytes[..], &[IDENTITY_SNAPSHOT_MAGIC, IDENTITY_SNAPSHOT_VERSION, 5]);
        let mut r = StateReader::open_kind(&bytes, SnapshotKind::Identity).unwrap();
        assert_eq!(r.version(), IDENTITY_SNAPSHOT_VERSION);
        assert_eq!(r.var().unwrap(), 5);
        r.finish().unwrap();
        // Neither kind opens as the other.
        assert_eq!(
            StateReader::open(&bytes).err(),
            Some(SnapshotError::NotASnapshot { found: IDENTITY_SNAPSHOT_MAGIC, expected: SNAPSHOT_MAGIC })
        );
        let group = snapshot(&[], &[]);
        assert_eq!(
            StateReader::open_kind(&group, SnapshotKind::Identity).err(),
            Some(SnapshotError::NotASnapshot { found: SNAPSHOT_MAGIC, expected: IDENTITY_SNAPSHOT_MAGIC })
        );
        // Without a member table, no member reference decodes.
        let bytes = [IDENTITY_SNAPSHOT_MAGIC, IDENTITY_SNAPSHOT_VERSION, 0];
        let mut r = StateReader::open_kind(&bytes, SnapshotKind::Identity).unwrap();
        assert_eq!(r.member().err(), Some(SnapshotError::BadMemberRef { index: 0, max: 0 }));
    }

    #[test]
    fn maps_must_be_strictly_ascending() {
        let entry = |r: &mut StateReader<'_>| Ok((r.var()?, ()));
        for (body, ok) in [(&[2, 1, 2][..], true), (&[2, 2, 1], false), (&[2, 1, 1], false), (&[0], true)] {
            let bytes = snapshot(&[], body);
            let mut r = StateReader::open(&bytes).unwrap();
            let m = r.map(1, entry);
            assert_eq!(m.is_ok(), ok, "{body:?}");
            if !ok {
                assert_eq!(m.err(), Some(SnapshotError::Malformed(DecodeError::NotCanonicalSet)));
            }
        }
        // A count larger than the input can hold allocates nothing.
        let bytes = snapshot(&[], &[0xff, 0xff, 0x03, 1]);
        let mut r = StateReader::open(&bytes).unwrap();
        assert!(matches!(r.map(1, entry), Err(SnapshotError::Malformed(DecodeError::ListTooLong { .. }))));
    }

    #[test]
    fn the_writer_holds_secrets_and_redacts_them() {
        let mut w = StateWriter::new();
        let s = Secret32::from_bytes([0xab; 32]);
        for _ in 0..40 {
            w.secret(&s);
        }
        assert_eq!(w.len(), 40 * 32);
        let debug = format!("{:?}", &*w);
        assert!(debug.contains("redacted") && !debug.contains("171"), "{debug}");
        let bytes = w.finish();
        assert_eq!(bytes.len(), 2 + 1 + 40 * 32);
        assert!(bytes[3..].iter().all(|b| *b == 0xab));
    }
}
