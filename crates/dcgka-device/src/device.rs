//! The [`Device`]: one identity and all its groups, bytes in, events and bytes out.
//!
//! Every public call runs as one unit: it changes the in-memory state, collects what
//! changed into a [`Commit`], hands that to the [`Storage`], and only then returns the
//! [`Report`] whose [`Transmit`]s the application sends. If the store fails, the call
//! fails with [`DeviceError::Storage`], nothing is returned for transmission, and the
//! device refuses every further call ([`DeviceError::Poisoned`]) until it is reopened from
//! the store, which holds the state of the last committed call.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};

use dcgka::IdentityKey;
use dcgka::codec::{DecodeError, Reader, Writer};
use dcgka::events::{DropReason, Event};
use dcgka::group::{Context, Group, GroupConfig, GroupError, Output, Received, Status, welcome_target};
use dcgka::ids::{GroupId, MemberId};
use dcgka::prekeys::{Identity, OneTimePrekey, PrekeyError, PrekeyProvider, Signed, SignedPrekey};
use dcgka::snapshot::SnapshotError;
use rand_core::CryptoRng;
use zeroize::Zeroizing;

use crate::consts::{MAX_BACKLOG_BYTES, MAX_BACKLOG_ENVELOPES};
use crate::log::{LogEntry, SentWelcome};
use crate::outbox::{Destination, Transmit};
use crate::rules::Slot;
use crate::storage::{Commit, MemoryStore, StateKey, Storage};

/// What every call that may run the protocol needs from the caller: randomness, time and
/// the PKI. The device supplies its own identity.
pub struct Env<'a, R: CryptoRng> {
    /// The CSPRNG.
    pub rng: &'a mut R,
    /// Unix seconds, used only for prekey validity.
    pub now: u64,
    /// Where prekey bundles of other identities come from.
    pub prekeys: &'a mut dyn PrekeyProvider,
}

/// Why a device call failed. Nothing changed, except after [`DeviceError::Storage`].
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The bytes are not a well-formed envelope or Welcome.
    #[error("malformed input: {0}")]
    Malformed(#[from] DecodeError),
    /// This device holds no active instance of the group.
    #[error("no active instance of group {0}")]
    NoActiveGroup(GroupId),
    /// The library refused a call or an input that names no group of this device yet
    /// (a create that fails, a Welcome that cannot be read).
    #[error(transparent)]
    Refused(GroupError),
    /// The group refused the call or the input.
    #[error("group {gid}: {error}")]
    Group {
        /// The group.
        gid: GroupId,
        /// What it said.
        error: GroupError,
    },
    /// Prekeys could not be generated.
    #[error(transparent)]
    Prekey(#[from] PrekeyError),
    /// The store failed to commit: the call's effects are lost and nothing was returned
    /// for transmission. Reopen the device from the store.
    #[error("storage failed: {0}")]
    Storage(Box<dyn std::error::Error + Send + Sync>),
    /// An earlier commit failed; reopen the device from the store.
    #[error("an earlier commit failed: reopen the device from its store")]
    Poisoned,
    /// The stored state cannot be read back.
    #[error("stored {what} is invalid: {error}")]
    Restore {
        /// Which record.
        what: &'static str,
        /// Why.
        error: SnapshotError,
    },
    /// The store holds no identity.
    #[error("the store holds no device")]
    Empty,
}

/// What happened to one received envelope or Welcome (harmless outcomes are not errors).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A group took it (processed now, or buffered until ready).
    Accepted(GroupId),
    /// This device joined the group (from a create or a Welcome).
    Joined(GroupId),
    /// Already processed here.
    Duplicate,
    /// This device's own envelope came back.
    OwnEnvelope,
    /// No group of this device recognises it yet: kept in the backlog, offered again when
    /// the device joins a group.
    Backlogged,
    /// A Welcome held while the device has a live instance of that group (§6.6).
    WelcomePending(GroupId),
    /// A Welcome or create for an instance this device already knows of (§6.6).
    Stale,
    /// A create that does not list this device.
    NotInvited,
    /// Discarded: a forgery or an envelope of a non-member.
    Dropped(DropReason),
}

/// What a call produced. Transmit everything in `transmit` (it also stays in the outbox
/// until [`Device::mark_sent`]).
#[must_use]
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// What happened to each input, in order (one for `receive`, several for a sync).
    pub outcomes: Vec<Outcome>,
    /// Events, in order.
    pub events: Vec<(GroupId, Event)>,
    /// What to transmit now.
    pub transmit: Vec<Transmit>,
    /// Groups this call joined (the application then syncs them with its peers, §7.7).
    pub joined: Vec<GroupId>,
    /// Secondary failures that did not fail the call: a held Welcome that could not be
    /// used, a backlogged envelope a group refused, an item of a sync answer (with the
    /// group, when one is known).
    pub errors: Vec<(Option<GroupId>, GroupError)>,
}

/// What one call changed, collected for the commit.
#[derive(Default)]
pub(crate) struct Changes {
    touched: BTreeSet<GroupId>,
    log: Vec<(GroupId, LogEntry)>,
    welcomes_kept: Vec<(GroupId, SentWelcome)>,
    welcomes_dropped: Vec<(GroupId, MemberId)>,
    outbox_removed: Vec<u64>,
    backlog: bool,
    identity: bool,
    pub(crate) report: Report,
}

impl Changes {
    /// Records a failure that does not fail the call.
    pub(crate) fn record(&mut self, e: DeviceError) {
        match e {
            DeviceError::Group { gid, error } => self.report.errors.push((Some(gid), error)),
            DeviceError::Refused(error) => self.report.errors.push((None, error)),
            DeviceError::Malformed(d) => self.report.errors.push((None, GroupError::Malformed(d))),
            _ => {}
        }
    }
}

/// One device: its identity, its groups, the device rules, the envelope logs, the
/// backlog and the outbox, over a [`Storage`].
#[derive(Clone, Debug)]
pub struct Device<S: Storage = MemoryStore> {
    identity: Identity,
    config: GroupConfig,
    slots: BTreeMap<GroupId, Slot>,
    backlog: VecDeque<Vec<u8>>,
    /// Hashes of the backlog's envelopes, to recognise one offered again.
    backlog_seen: HashSet<u64>,
    backlog_bytes: usize,
    outbox: Vec<Transmit>,
    next_transmit: u64,
    store: S,
    poisoned: bool,
    /// One-time prekeys held when the identity was last committed: a call that consumed
    /// one must commit the identity.
    committed_opks: usize,
    /// The state records the store holds (identity aside), to write only those that
    /// changed.
    written: BTreeMap<StateKey, Zeroizing<Vec<u8>>>,
    #[cfg(feature = "test-hooks")]
    retired: Vec<(GroupId, Group)>,
    #[cfg(feature = "test-hooks")]
    adversarial: bool,
    #[cfg(feature = "test-hooks")]
    no_compaction: bool,
}

impl<S: Storage> Device<S> {
    /// A new device with `identity`, committed to `store` at once.
    pub fn new(identity: Identity, config: GroupConfig, store: S) -> Result<Self, DeviceError> {
        let mut d = Device {
            identity,
            config,
            slots: BTreeMap::new(),
            backlog: VecDeque::new(),
            backlog_seen: HashSet::new(),
            backlog_bytes: 0,
            outbox: Vec::new(),
            next_transmit: 0,
            store,
            poisoned: false,
            committed_opks: usize::MAX,
            written: BTreeMap::new(),
            #[cfg(feature = "test-hooks")]
            retired: Vec::new(),
            #[cfg(feature = "test-hooks")]
            adversarial: false,
            #[cfg(feature = "test-hooks")]
            no_compaction: false,
        };
        let ch = Changes { identity: true, ..Changes::default() };
        let _ = d.commit(ch)?;
        Ok(d)
    }

    /// Reopens the device committed to `store`, exactly as the last committed call left it.
    pub fn open(config: GroupConfig, store: S) -> Result<Self, DeviceError> {
        let stored = store.load().map_err(|e| DeviceError::Storage(Box::new(e)))?;
        let restore = |what, e| DeviceError::Restore { what, error: e };
        let id_bytes = stored.state.get(&StateKey::Identity).ok_or(DeviceError::Empty)?;
        let identity = Identity::restore(id_bytes).map_err(|e| restore("identity", e))?;
        let mut slots: BTreeMap<GroupId, Slot> = BTreeMap::new();
        let mut backlog = VecDeque::new();
        let mut parts: BTreeMap<GroupId, GroupParts<'_>> = BTreeMap::new();
        for (key, bytes) in &stored.state {
            match key {
                StateKey::Group(gid) => parts.entry(*gid).or_default().0 = Some(bytes),
                StateKey::Sender(gid, id) => parts.entry(*gid).or_default().1.push((*id, bytes)),
                StateKey::Rules(gid) => {
                    slots.entry(*gid).or_default().decode_rules(bytes).map_err(|e| restore("rules", e.into()))?;
                }
                StateKey::Backlog => backlog = decode_backlog(bytes).map_err(|e| restore("backlog", e.into()))?,
                _ => {}
            }
        }
        for (gid, (core, senders)) in parts {
            let core = core.ok_or(DeviceError::Restore {
                what: "group",
                error: SnapshotError::Inconsistent("sender records without a core record"),
            })?;
            let g = Group::restore_records(core, senders).map_err(|e| restore("group", e))?;
            slots.entry(gid).or_default().live = Some(g);
        }
        let written =
            stored.state.iter().filter(|(k, _)| **k != StateKey::Identity).map(|(k, v)| (*k, v.clone())).collect();
        for (gid, entry) in stored.log {
            slots.entry(gid).or_default().log.restore(entry);
        }
        for (gid, w) in stored.welcomes {
            slots.entry(gid).or_default().log.add_welcome(w);
        }
        let next_transmit = stored.outbox.iter().map(|t| t.id + 1).max().unwrap_or(0);
        let committed_opks = identity.key_store().one_time_prekey_count();
        let backlog_seen = backlog.iter().map(|b| bytes_hash(b)).collect();
        let backlog_bytes = backlog.iter().map(Vec::len).sum();
        Ok(Device {
            identity,
            config,
            slots,
            backlog,
            backlog_seen,
            backlog_bytes,
            outbox: stored.outbox,
            next_transmit,
            store,
            poisoned: false,
            committed_opks,
            written,
            #[cfg(feature = "test-hooks")]
            retired: Vec::new(),
            #[cfg(feature = "test-hooks")]
            adversarial: false,
            #[cfg(feature = "test-hooks")]
            no_compaction: false,
        })
    }

    // --------------------------------------------------------------------------------
    // Queries
    // --------------------------------------------------------------------------------

    pub(crate) fn slots(&self) -> &BTreeMap<GroupId, Slot> {
        &self.slots
    }

    /// The device's identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The identity public key.
    pub fn public_key(&self) -> IdentityKey {
        self.identity.public_key()
    }

    /// The group configuration used for every group this device creates or joins.
    pub fn config(&self) -> GroupConfig {
        self.config
    }

    /// Changes the configuration of groups created or joined from now on.
    pub fn set_config(&mut self, config: GroupConfig) {
        self.config = config;
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The live instance of a group, if any.
    pub fn group(&self, gid: &GroupId) -> Option<&Group> {
        self.slots.get(gid).and_then(|s| s.live.as_ref())
    }

    /// Every group with a live instance.
    pub fn groups(&self) -> impl Iterator<Item = (&GroupId, &Group)> {
        self.slots.iter().filter_map(|(gid, s)| s.live.as_ref().map(|g| (gid, g)))
    }

    /// The envelope log of a group this device holds or held.
    pub fn log(&self, gid: &GroupId) -> Option<&crate::log::EnvelopeLog> {
        self.slots.get(gid).map(|s| &s.log)
    }

    /// Welcomes held for later in a group (§6.6).
    pub fn pending_welcomes(&self, gid: &GroupId) -> &[Vec<u8>] {
        self.slots.get(gid).map_or(&[], |s| &s.pending)
    }

    /// Every instance of a group this device knows of (§6.6).
    pub fn known_instances(&self, gid: &GroupId) -> BTreeSet<MemberId> {
        self.slots.get(gid).map(|s| s.known.clone()).unwrap_or_default()
    }

    /// Envelopes waiting for a group to recognise them.
    pub fn backlog_len(&self) -> usize {
        self.backlog.len()
    }

    /// What is produced and not yet confirmed as sent.
    pub fn outbox(&self) -> &[Transmit] {
        &self.outbox
    }

    // --------------------------------------------------------------------------------
    // Local operations
    // --------------------------------------------------------------------------------

    /// Creates a group with the holders of `others` as the other initial members.
    pub fn create<R: CryptoRng>(
        &mut self,
        env: &mut Env<'_, R>,
        others: &[IdentityKey],
    ) -> Result<(GroupId, Report), DeviceError> {
        self.check_usable()?;
        let config = self.config;
        let mut ctx = ctx(env, &mut self.identity);
        let (g, out) = Group::create(&mut ctx, others, config).map_err(DeviceError::Refused)?;
        let gid = g.gid();
        let mut ch = Changes::default();
        let g = self.instance(g);
        let slot = self.slots.entry(gid).or_default();
        slot.live = Some(g);
        self.absorb(gid, out, &mut ch);
        self.finish_call(env, ch).map(|r| (gid, r))
    }

    /// A PCS update in a group.
    pub fn update<R: CryptoRng>(&mut self, env: &mut Env<'_, R>, gid: &GroupId) -> Result<Report, DeviceError> {
        self.operate(env, gid, |g, ctx| g.update(ctx))
    }

    /// Adds the holder of `identity` to a group; its Welcome is in the report.
    pub fn add<R: CryptoRng>(
        &mut self,
        env: &mut Env<'_, R>,
        gid: &GroupId,
        identity: IdentityKey,
    ) -> Result<Report, DeviceError> {
        self.operate(env, gid, |g, ctx| g.add(ctx, identity))
    }

    /// Removes a member instance from a group.
    pub fn remove<R: CryptoRng>(
        &mut self,
        env: &mut Env<'_, R>,
        gid: &GroupId,
        member: MemberId,
    ) -> Result<Report, DeviceError> {
        self.operate(env, gid, |g, ctx| g.remove(ctx, member))
    }

    /// Sends an application message to a group.
    pub fn send<R: CryptoRng>(
        &mut self,
        env: &mut Env<'_, R>,
        gid: &GroupId,
        plaintext: &[u8],
    ) -> Result<Report, DeviceError> {
        self.operate(env, gid, |g, ctx| g.send(ctx, plaintext))
    }

    /// Sends the acks a group holds (coalescing, [`GroupConfig::coalesce_acks`]).
    pub fn flush_acks<R: CryptoRng>(&mut self, env: &mut Env<'_, R>, gid: &GroupId) -> Result<Report, DeviceError> {
        self.operate(env, gid, |g, _| g.flush_acks())
    }

    /// Applies a group's retention period at `env.now` ([`Group::collect_garbage`], spec
    /// §5.7): erases what is kept for members that have been slow or away for longer, and
    /// reports it as events. Receiving does this too; call it from a timer
    /// ([`Group::next_expiry`] says when) so that a quiet group erases it in time.
    pub fn collect_garbage<R: CryptoRng>(
        &mut self,
        env: &mut Env<'_, R>,
        gid: &GroupId,
    ) -> Result<Report, DeviceError> {
        self.operate(env, gid, |g, ctx| g.collect_garbage(ctx.now))
    }

    /// Retries a group's buffered envelopes (after a missing prekey bundle was supplied).
    pub fn process_pending<R: CryptoRng>(
        &mut self,
        env: &mut Env<'_, R>,
        gid: &GroupId,
    ) -> Result<Report, DeviceError> {
        self.operate(env, gid, |g, ctx| g.process_pending(ctx))
    }

    /// Generates `count` one-time prekeys expiring at `not_after` and commits the identity;
    /// the application publishes the returned prekeys.
    pub fn new_one_time_prekeys<R: CryptoRng>(
        &mut self,
        rng: &mut R,
        count: usize,
        not_after: u64,
    ) -> Result<Vec<Signed<OneTimePrekey>>, DeviceError> {
        self.check_usable()?;
        let opks = self.identity.new_one_time_prekeys(rng, count, not_after)?;
        let _ = self.commit(Changes { identity: true, ..Changes::default() })?;
        Ok(opks)
    }

    /// Generates a signed prekey valid over `[not_before, not_after]` and commits the
    /// identity; the application publishes the returned prekey in place of the previous one
    /// (whose secret the identity keeps for its grace period, §3).
    pub fn new_signed_prekey<R: CryptoRng>(
        &mut self,
        rng: &mut R,
        not_before: u64,
        not_after: u64,
    ) -> Result<Signed<SignedPrekey>, DeviceError> {
        self.check_usable()?;
        let spk = self.identity.new_signed_prekey(rng, not_before, not_after);
        let _ = self.commit(Changes { identity: true, ..Changes::default() })?;
        Ok(spk)
    }

    /// Confirms that the transport sent these outbox items.
    pub fn mark_sent(&mut self, ids: &[u64]) -> Result<(), DeviceError> {
        self.check_usable()?;
        let before = self.outbox.len();
        self.outbox.retain(|t| !ids.contains(&t.id));
        if self.outbox.len() != before {
            let _ = self.commit(Changes { outbox_removed: ids.to_vec(), ..Changes::default() })?;
        }
        Ok(())
    }

    fn operate<R: CryptoRng>(
        &mut self,
        env: &mut Env<'_, R>,
        gid: &GroupId,
        f: impl FnOnce(&mut Group, &mut Context<'_, R>) -> Result<Output, GroupError>,
    ) -> Result<Report, DeviceError> {
        self.check_usable()?;
        let gid = *gid;
        let Some(g) = self.slots.get_mut(&gid).and_then(|s| s.live.as_mut()).filter(|g| *g.status() == Status::Active)
        else {
            return Err(DeviceError::NoActiveGroup(gid));
        };
        let mut ctx = ctx(env, &mut self.identity);
        let out = f(g, &mut ctx).map_err(|error| DeviceError::Group { gid, error })?;
        let mut ch = Changes::default();
        self.absorb(gid, out, &mut ch);
        self.finish_call(env, ch)
    }

    // --------------------------------------------------------------------------------
    // Receiving
    // --------------------------------------------------------------------------------

    /// Takes one broadcast envelope: routed to the group that recognises it, a create
    /// joins its group (§6.6 permitting), anything unrecognised waits in the backlog.
    pub fn receive<R: CryptoRng>(&mut self, env: &mut Env<'_, R>, bytes: &[u8]) -> Result<Report, DeviceError> {
        self.check_usable()?;
        let mut ch = Changes::default();
        let outcome = self.receive_envelope(env, bytes, &mut ch)?;
        ch.report.outcomes.push(outcome);
        self.finish_call(env, ch)
    }

    /// Takes one Welcome addressed to this device (§7.4, §6.6).
    pub fn receive_welcome<R: CryptoRng>(&mut self, env: &mut Env<'_, R>, bytes: &[u8]) -> Result<Report, DeviceError> {
        self.check_usable()?;
        let mut ch = Changes::default();
        let outcome = self.receive_welcome_inner(env, bytes, &mut ch)?;
        ch.report.outcomes.push(outcome);
        self.finish_call(env, ch)
    }

    pub(crate) fn receive_envelope<R: CryptoRng>(
        &mut self,
        env: &mut Env<'_, R>,
        bytes: &[u8],
        ch: &mut Changes,
    ) -> Result<Outcome, DeviceError> {
        let peek = Group::peek(bytes).map_err(|e| match e {
            GroupError::Malformed(d) => DeviceError::Malformed(d),
            other => DeviceError::Refused(other),
        })?;
        let routed = match peek.gid {
            Some(gid) if peek.kind == dcgka::EnvelopeKind::Create => match self.slots.get(&gid) {
                Some(s) if s.active().is_some() => Some(gid),
                Some(s) if s.create_is_stale() => return Ok(Outcome::Stale),
                _ => return self.join_from_create(env, gid, bytes, ch),
            },
            _ => self.slots.iter().find(|(_, s)| s.active().is_some_and(|g| g.recognises(&peek))).map(|(g, _)| *g),
        };
        let Some(gid) = routed else {
            self.push_backlog(bytes, ch);
            return Ok(Outcome::Backlogged);
        };
        let Some(g) = self.slots.get_mut(&gid).and_then(|s| s.live.as_mut()) else {
            return Err(DeviceError::NoActiveGroup(gid));
        };
        let mut ctx = ctx(env, &mut self.identity);
        let out = g.receive(&mut ctx, bytes).map_err(|error| DeviceError::Group { gid, error })?;
        let outcome = match &out.received {
            Some(Received::Duplicate) => Outcome::Duplicate,
            Some(Received::OwnEnvelope) => Outcome::OwnEnvelope,
            Some(Received::Dropped(r)) => Outcome::Dropped(r.clone()),
            _ => Outcome::Accepted(gid),
        };
        let nothing = out.events.is_empty() && out.broadcast.is_empty() && out.accepted.is_empty();
        if !(nothing && outcome != Outcome::Accepted(gid)) {
            self.absorb(gid, out, ch);
        }
        Ok(outcome)
    }

    fn join_from_create<R: CryptoRng>(
        &mut self,
        env: &mut Env<'_, R>,
        gid: GroupId,
        bytes: &[u8],
        ch: &mut Changes,
    ) -> Result<Outcome, DeviceError> {
        let config = self.config;
        let mut ctx = ctx(env, &mut self.identity);
        match Group::from_create(&mut ctx, bytes, config) {
            Ok((g, out)) => {
                let g = self.instance(g);
                self.slots.entry(gid).or_default().live = Some(g);
                self.absorb(gid, out, ch);
                self.joined(env, gid, ch);
                Ok(Outcome::Joined(gid))
            }
            Err(GroupError::CannotJoin(_)) => Ok(Outcome::NotInvited),
            Err(GroupError::OwnEnvelope) => Ok(Outcome::OwnEnvelope),
            Err(GroupError::Dropped(r)) => Ok(Outcome::Dropped(r)),
            Err(error) => Err(DeviceError::Group { gid, error }),
        }
    }

    pub(crate) fn receive_welcome_inner<R: CryptoRng>(
        &mut self,
        env: &mut Env<'_, R>,
        bytes: &[u8],
        ch: &mut Changes,
    ) -> Result<Outcome, DeviceError> {
        let (gid, target) = match welcome_target(bytes, &self.identity.public_key()) {
            Ok(t) => t,
            Err(GroupError::Malformed(e)) => return Err(DeviceError::Malformed(e)),
            Err(error) => return Err(DeviceError::Refused(error)),
        };
        let slot = self.slots.entry(gid).or_default();
        slot.learn_instances();
        if slot.welcome_is_stale(&target) {
            return Ok(Outcome::Stale);
        }
        if slot.active().is_some() {
            if !slot.pending.iter().any(|p| p == bytes) {
                slot.pending.push(bytes.to_vec());
                ch.touched.insert(gid);
            }
            return Ok(Outcome::WelcomePending(gid));
        }
        let config = self.config;
        let mut ctx = ctx(env, &mut self.identity);
        match Group::join(&mut ctx, bytes, config) {
            Ok((g, out)) => {
                #[cfg(feature = "test-hooks")]
                let g = {
                    let mut g = g;
                    g.set_adversarial(self.adversarial);
                    g.set_compaction(!self.no_compaction);
                    g
                };
                if let Some(old) = slot.live.replace(g) {
                    self.retire(gid, old);
                }
                self.absorb(gid, out, ch);
                self.joined(env, gid, ch);
                Ok(Outcome::Joined(gid))
            }
            Err(error) => Err(DeviceError::Group { gid, error }),
        }
    }

    /// After joining: the backlog is offered again.
    fn joined<R: CryptoRng>(&mut self, env: &mut Env<'_, R>, gid: GroupId, ch: &mut Changes) {
        ch.touched.insert(gid);
        ch.report.joined.push(gid);
        if let Some(s) = self.slots.get_mut(&gid) {
            s.learn_instances();
        }
        let backlog = std::mem::take(&mut self.backlog);
        self.backlog_seen.clear();
        self.backlog_bytes = 0;
        if backlog.is_empty() {
            return;
        }
        ch.backlog = true;
        for bytes in backlog {
            match self.receive_envelope(env, &bytes, ch) {
                Ok(_) => {}
                Err(e) => ch.record(e),
            }
        }
    }

    fn push_backlog(&mut self, bytes: &[u8], ch: &mut Changes) {
        if !self.backlog_seen.insert(bytes_hash(bytes)) {
            return;
        }
        self.backlog.push_back(bytes.to_vec());
        self.backlog_bytes += bytes.len();
        while self.backlog.len() > MAX_BACKLOG_ENVELOPES || self.backlog_bytes > MAX_BACKLOG_BYTES {
            let Some(old) = self.backlog.pop_front() else { break };
            self.backlog_bytes -= old.len();
            self.backlog_seen.remove(&bytes_hash(&old));
        }
        ch.backlog = true;
    }

    // --------------------------------------------------------------------------------
    // Bookkeeping
    // --------------------------------------------------------------------------------

    pub(crate) fn check_usable(&self) -> Result<(), DeviceError> {
        if self.poisoned { Err(DeviceError::Poisoned) } else { Ok(()) }
    }

    /// Takes a group call's output: logs what was accepted and sent, queues transmissions.
    fn absorb(&mut self, gid: GroupId, out: Output, ch: &mut Changes) {
        ch.touched.insert(gid);
        let Some(slot) = self.slots.get_mut(&gid) else { return };
        let me = slot.live.as_ref().map(Group::me);
        for a in out.accepted {
            if let Some(entry) = slot.log.append(a.sender, a.seq, a.last_seq, a.hash, a.bytes) {
                ch.log.push((gid, entry));
            }
        }
        for bytes in out.broadcast {
            if let (Some(me), Ok(p)) = (me, Group::peek(&bytes))
                && let Some(entry) = slot.log.append(me, p.seq, p.last_seq, p.hash, bytes.clone())
            {
                ch.log.push((gid, entry));
            }
            ch.report.transmit.push(Transmit { id: 0, gid, to: Destination::Group, bytes });
        }
        for w in out.direct {
            let kept = SentWelcome { target: w.member, identity: w.identity, bytes: w.bytes.clone() };
            slot.log.add_welcome(kept.clone());
            ch.welcomes_kept.push((gid, kept));
            ch.report.transmit.push(Transmit { id: 0, gid, to: Destination::Identity(w.identity), bytes: w.bytes });
        }
        ch.report.events.extend(out.events.into_iter().map(|e| (gid, e)));
    }

    /// A new instance (the test hook may make it an adversarial copy).
    fn instance(&self, g: Group) -> Group {
        #[cfg(feature = "test-hooks")]
        let g = {
            let mut g = g;
            g.set_adversarial(self.adversarial);
            g.set_compaction(!self.no_compaction);
            g
        };
        g
    }

    fn retire(&mut self, gid: GroupId, old: Group) {
        #[cfg(feature = "test-hooks")]
        self.retired.push((gid, old));
        #[cfg(not(feature = "test-hooks"))]
        let _ = (gid, old);
    }

    /// Applies the device rules to every group the call touched, then commits.
    pub(crate) fn finish_call<R: CryptoRng>(
        &mut self,
        env: &mut Env<'_, R>,
        mut ch: Changes,
    ) -> Result<Report, DeviceError> {
        let mut done = BTreeSet::new();
        while let Some(gid) = ch.touched.iter().find(|g| !done.contains(*g)).copied() {
            done.insert(gid);
            self.settle(env, gid, &mut ch);
        }
        self.commit(ch)
    }

    /// §6.6 for one group: learn instances, retire an ended instance and join through a
    /// held Welcome, discard stale held Welcomes, and stop re-offering Welcomes whose
    /// target joined or left.
    fn settle<R: CryptoRng>(&mut self, env: &mut Env<'_, R>, gid: GroupId, ch: &mut Changes) {
        let Some(slot) = self.slots.get_mut(&gid) else { return };
        slot.learn_instances();
        if slot.live.as_ref().is_some_and(|g| *g.status() != Status::Active) {
            if let Some(old) = slot.live.take() {
                self.retire(gid, old);
            }
            // Join through the first held Welcome that works; keep the others.
            loop {
                let Some(slot) = self.slots.get_mut(&gid) else { return };
                if slot.active().is_some() || slot.pending.is_empty() {
                    break;
                }
                let w = slot.pending.remove(0);
                match self.receive_welcome_inner(env, &w, ch) {
                    Ok(_) => {}
                    Err(e) => ch.record(e),
                }
            }
        }
        let my_ik = self.identity.public_key();
        let Some(slot) = self.slots.get_mut(&gid) else { return };
        slot.learn_instances();
        let known = &slot.known;
        slot.pending.retain(|w| welcome_target(w, &my_ik).is_ok_and(|(_, t)| !known.contains(&t)));
        if let Some(g) = slot.live.as_ref() {
            let heads = g.sync_state();
            let ever = g.ever_added();
            let members = g.members();
            let gone = slot.log.retire_welcomes(|w| {
                heads.get(&w.target).is_some_and(|h| h.0 >= 1)
                    || (ever.contains(&w.target) && !members.contains(&w.target))
            });
            ch.welcomes_dropped.extend(gone.into_iter().map(|t| (gid, t)));
        }
    }

    /// Numbers the transmissions, commits everything the call changed, and returns the report.
    fn commit(&mut self, mut ch: Changes) -> Result<Report, DeviceError> {
        let mut c = Commit::default();
        let opks = self.identity.key_store().one_time_prekey_count();
        let mut written = Vec::new();
        if self.store.keeps_state() {
            if ch.identity || opks != self.committed_opks {
                c.state.push((StateKey::Identity, Some(self.identity.snapshot())));
            }
            for gid in &ch.touched {
                let Some(slot) = self.slots.get(gid) else { continue };
                let mut fresh: BTreeMap<StateKey, Zeroizing<Vec<u8>>> = BTreeMap::new();
                if let Some(g) = &slot.live {
                    let records = g.records();
                    fresh.insert(StateKey::Group(*gid), records.core);
                    fresh.extend(records.senders.into_iter().map(|(id, r)| (StateKey::Sender(*gid, id), r)));
                }
                fresh.insert(StateKey::Rules(*gid), Zeroizing::new(slot.encode_rules()));
                let of_group = |k: &StateKey| matches!(k, StateKey::Group(g) | StateKey::Sender(g, _) | StateKey::Rules(g) if g == gid);
                for k in self.written.keys().filter(|k| of_group(k) && !fresh.contains_key(k)) {
                    c.state.push((*k, None));
                    written.push((*k, None));
                }
                for (k, v) in fresh {
                    if self.written.get(&k) != Some(&v) {
                        c.state.push((k, Some(v.clone())));
                        written.push((k, Some(v)));
                    }
                }
            }
            if ch.backlog {
                let v = Zeroizing::new(encode_backlog(&self.backlog));
                c.state.push((StateKey::Backlog, Some(v.clone())));
                written.push((StateKey::Backlog, Some(v)));
            }
        }
        for t in &mut ch.report.transmit {
            t.id = self.next_transmit;
            self.next_transmit += 1;
        }
        c.log = std::mem::take(&mut ch.log);
        c.welcomes_kept = std::mem::take(&mut ch.welcomes_kept);
        c.welcomes_dropped = std::mem::take(&mut ch.welcomes_dropped);
        c.outbox_added = ch.report.transmit.clone();
        c.outbox_removed = std::mem::take(&mut ch.outbox_removed);
        c.events = ch.report.events.clone();
        if !c.is_empty()
            && let Err(e) = self.store.commit(&c)
        {
            self.poisoned = true;
            return Err(DeviceError::Storage(Box::new(e)));
        }
        self.committed_opks = opks;
        for (k, v) in written {
            match v {
                Some(v) => self.written.insert(k, v),
                None => self.written.remove(&k),
            };
        }
        self.outbox.extend(c.outbox_added);
        Ok(ch.report)
    }
}

#[cfg(feature = "test-hooks")]
impl<S: Storage> Device<S> {
    /// Test hook: the instances retired since the last call of this function.
    pub fn take_retired(&mut self) -> Vec<(GroupId, Group)> {
        std::mem::take(&mut self.retired)
    }

    /// Test hook: the live instance of a group and the identity, mutably, bypassing the
    /// store (nothing done through it is committed).
    pub fn group_mut(&mut self, gid: &GroupId) -> Option<(&mut Group, &mut Identity)> {
        let g = self.slots.get_mut(gid)?.live.as_mut()?;
        Some((g, &mut self.identity))
    }

    /// Test hook: run every instance created or joined from now on as an adversarial copy
    /// ([`Group::set_adversarial`]), for the simulator's shadows.
    pub fn set_adversarial_instances(&mut self, on: bool) {
        self.adversarial = on;
    }

    /// Test hook: whether instances created or joined from now on compact their membership
    /// history (on by default; see `Group::set_compaction`).
    pub fn set_compaction_instances(&mut self, on: bool) {
        self.no_compaction = !on;
    }

    /// Test hook: makes `group` the live instance of its group, bypassing the rules, the
    /// log and the store (for tests that run the library directly with their own RNG).
    pub fn insert_group(&mut self, group: Group) {
        let slot = self.slots.entry(group.gid()).or_default();
        slot.live = Some(group);
        slot.learn_instances();
    }

    /// Test hook: the identity, mutably, bypassing the store.
    pub fn identity_mut(&mut self) -> &mut Identity {
        &mut self.identity
    }
}

fn ctx<'a, R: CryptoRng>(env: &'a mut Env<'_, R>, identity: &'a mut Identity) -> Context<'a, R> {
    Context { rng: &mut *env.rng, now: env.now, prekeys: &mut *env.prekeys, identity }
}

/// A group's stored records while reopening: the core record and the sender records.
type GroupParts<'a> = (Option<&'a [u8]>, Vec<(MemberId, &'a [u8])>);

/// A hash of an envelope, to recognise it in the backlog (a collision at worst evicts one
/// envelope early; sync brings it again).
fn bytes_hash(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// The backlog record: `list<opaque>`.
pub(crate) fn encode_backlog(backlog: &VecDeque<Vec<u8>>) -> Vec<u8> {
    let mut w = Writer::new();
    let v: Vec<&Vec<u8>> = backlog.iter().collect();
    w.list(&v, |w, b| w.opaque(b));
    w.into_bytes()
}

fn decode_backlog(bytes: &[u8]) -> Result<VecDeque<Vec<u8>>, DecodeError> {
    let mut r = Reader::new(bytes)?;
    let v = r.list(1, |r| Ok(r.opaque()?.to_vec()))?;
    r.finish()?;
    Ok(v.into())
}
