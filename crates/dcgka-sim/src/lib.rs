//! A deterministic network simulator for `dcgka` groups.
//!
//! [`Sim`] holds N devices (each a [`dcgka_device::Device`]: an identity, its groups, the
//! device rules, envelope logs and sync), a prekey directory, and a network of per-device
//! inboxes. The simulator owns only the network, the adversary and the oracles: broadcast
//! envelopes go to every other device, Welcomes to their recipient; delivery can be step
//! by step (for scripted scenarios), random (reordering), partitioned, duplicated, or
//! lossy with later retransmission; devices that can reach each other sync through the
//! device layer's sync exchange (§7.7). Everything is driven by one seeded CSPRNG, so a
//! run is reproducible from its seed.

#![forbid(unsafe_code)]

pub mod game;
pub mod lean;
pub mod longevity;
pub mod names;
pub mod oracle;
pub mod random;
pub mod stores;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};

use dcgka::crypto::IdentityKey;
use dcgka::events::{DropReason, Event};
use dcgka::group::{Context, Group, GroupConfig, GroupError, Status};
use dcgka::ids::{GroupId, MemberId, SeqNo};
use dcgka::prekeys::{Identity, InMemoryPrekeyDirectory};
use dcgka::wire::EnvelopeKind;
use dcgka_device::transport::Handed;
use dcgka_device::{DeviceError, Env, Outcome, Report};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use crate::stores::{BoxError, PersistentStore, SimStore};

/// A device as the simulator runs it: on a [`SimStore`] (volatile memory unless a test plugs
/// in a persistent store).
pub type Device = dcgka_device::Device<SimStore>;

/// Index of a device in the simulation.
pub type Dev = usize;

/// The simulated clock (Unix seconds) used for prekey validity.
pub const NOW: u64 = 1_800_000_000;

/// One-time prekeys each device publishes at start (and again whenever it runs low).
pub const OPK_BATCH: usize = 64;

/// An envelope or Welcome in flight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Its number in the simulation's transcript.
    pub id: usize,
    /// The sending device.
    pub from: Dev,
    /// What it is.
    pub kind: PacketKind,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// Broadcast envelope or Welcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketKind {
    /// An envelope of the given kind, with the sender's sequence number.
    Envelope(EnvelopeKind, SeqNo),
    /// A Welcome for the receiving device.
    Welcome,
}

/// A record of one application message sent, for the oracles.
#[derive(Clone, Debug)]
pub struct SentMessage {
    /// The transcript packet carrying it.
    pub packet: usize,
    /// The sender device.
    pub from: Dev,
    /// The sender's instance.
    pub sender: MemberId,
    /// The plaintext.
    pub plaintext: Vec<u8>,
    /// `member-view(sender)` when it was sent, as computed at the sender.
    pub view: BTreeSet<MemberId>,
}

/// An adversarial copy of one instance (see [`SimDevice::shadows`]).
#[derive(Clone, Debug)]
pub struct Shadow {
    /// The copied group state, in adversarial mode.
    pub group: Group,
    /// A copy of the device's identity and key store.
    pub identity: Identity,
    /// Every event the copy produced.
    pub events: Vec<Event>,
}

/// One simulated device: a [`dcgka_device::Device`] plus what the simulator keeps about
/// it (its inbox, everything it reported, and the adversary's copies).
#[derive(Clone, Debug)]
pub struct SimDevice {
    /// Display name ("A", "B", ...).
    pub name: String,
    /// The device.
    pub device: Device,
    /// The group the simulation is about at this device (the last one it created or
    /// joined).
    pub gid: Option<GroupId>,
    /// Former instances (removed or corrupted), kept for the security oracles.
    pub retired: Vec<Group>,
    /// Undelivered packets.
    pub inbox: VecDeque<Packet>,
    /// Every event this device's groups reported, in order.
    pub events: Vec<Event>,
    /// Errors the device reported (other than harmless duplicates, echoes and envelopes
    /// of members not known yet).
    pub errors: Vec<String>,
    /// Adversarial shadows, one per instance this device ever held (when
    /// [`Sim::shadows`] is on): copies that receive the same packets but never stop at
    /// their own removal and never erase secrets, i.e. what an attacker holding the
    /// device's state would have. Each has its own copy of the identity's key store
    /// (so it never consumes the real device's one-time prekeys) and keeps its events.
    pub shadows: Vec<Shadow>,
    /// Index into `events` where the current instance's events begin.
    pub instance_start: usize,
}

impl SimDevice {
    /// The live instance of the simulation's group, if any.
    pub fn group(&self) -> Option<&Group> {
        self.gid.as_ref().and_then(|g| self.device.group(g))
    }

    /// The live instance, mutably, with the identity (a test hook: nothing done through
    /// it is committed to the device's store).
    pub fn group_mut(&mut self) -> Option<(&mut Group, &mut Identity)> {
        let gid = self.gid?;
        self.device.group_mut(&gid)
    }

    /// Test hook: makes `group` this device's live instance, bypassing the device layer.
    pub fn install(&mut self, group: Group) {
        self.gid = Some(group.gid());
        self.instance_start = self.events.len();
        self.device.insert_group(group);
    }

    /// Keeps an ended instance; a removed adversarial copy becomes this device's shadow,
    /// with the events of its instance so far, fed everything the device sees from now on.
    fn retire(&mut self, g: Group, shadows: bool) {
        if shadows && matches!(g.status(), Status::Removed { .. }) {
            let events = self.events[self.instance_start.min(self.events.len())..].to_vec();
            self.shadows.push(Shadow { group: g.clone(), identity: self.device.identity().clone(), events });
        }
        self.retired.push(g);
    }

    /// The device's identity.
    pub fn identity(&self) -> &Identity {
        self.device.identity()
    }

    /// Whether this device holds a live, active instance.
    pub fn active(&self) -> bool {
        self.group().is_some_and(|g| *g.status() == Status::Active)
    }

    /// Welcomes held while a live instance exists (§6.6).
    pub fn pending_welcomes(&self) -> &[Vec<u8>] {
        self.gid.as_ref().map_or(&[], |g| self.device.pending_welcomes(g))
    }

    /// Every instance of the group that this device's instances knew of (§6.6).
    pub fn known_instances(&self) -> BTreeSet<MemberId> {
        self.gid.as_ref().map(|g| self.device.known_instances(g)).unwrap_or_default()
    }

    /// Decrypted plaintexts, in order of receipt.
    pub fn received(&self) -> Vec<(MemberId, Vec<u8>)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Message { sender, plaintext, .. } => Some((*sender, plaintext.clone())),
                _ => None,
            })
            .collect()
    }
}

/// The simulation.
#[derive(Clone, Debug)]
pub struct Sim {
    /// The one CSPRNG that drives everything.
    pub rng: ChaCha20Rng,
    /// Published prekey bundles.
    pub directory: InMemoryPrekeyDirectory,
    /// The devices.
    pub devices: Vec<SimDevice>,
    /// Every packet ever sent, by id.
    pub transcript: Vec<Packet>,
    /// Every application message sent.
    pub messages: Vec<SentMessage>,
    /// Group configuration used by every device.
    pub config: GroupConfig,
    /// The devices' clock (Unix seconds, [`NOW`] unless a test moves it): prekey validity
    /// and the retention period (§5.7) read it.
    pub now: u64,
    /// Current partition: device → side. Packets cross sides only after `heal`.
    pub partition: Option<Vec<usize>>,
    /// Pairs of devices on different sides that can reach each other again (a partition
    /// healing one link at a time, [`Sim::link`]): they sync, but packets held by the
    /// partition stay held until [`Sim::heal`].
    pub links: BTreeSet<(Dev, Dev)>,
    /// Packets held back by the partition or dropped, per device, for later redelivery.
    pub held: Vec<Vec<Packet>>,
    /// Whether to run adversarial shadows (see [`SimDevice::shadows`]).
    pub shadows: bool,
    /// Whether instances compact their membership history (§6.7; on by default). Tests
    /// that read the acks recorded in a history, or run the reference evaluator over it,
    /// turn it off; the differential tests compare runs with and without.
    pub compaction: bool,
    /// Reopen every device from its store before each call it makes (with persistent
    /// stores, [`Sim::use_stores`]): every call then runs on a device read back from disk.
    pub reopen_stores: bool,
    /// The group the simulation is about: the last one created through [`Sim::create`].
    /// Instances of earlier groups (a group that emptied and was replaced) go on living on
    /// the devices, but their events and instances are outside the oracles.
    pub gid: Option<GroupId>,
    /// Transcript ids by a hash of their bytes, to name envelopes that sync brings.
    by_bytes: HashMap<u64, Vec<usize>>,
}

/// Why a simulated operation failed.
#[derive(Debug)]
pub enum SimError {
    /// The device holds no active group.
    NoGroup(Dev),
    /// The library refused the operation.
    Group(GroupError),
    /// The device layer failed otherwise.
    Device(String),
}

impl From<GroupError> for SimError {
    fn from(e: GroupError) -> Self {
        SimError::Group(e)
    }
}

impl From<DeviceError> for SimError {
    fn from(e: DeviceError) -> Self {
        match e {
            DeviceError::Group { error, .. } => SimError::Group(error),
            other => SimError::Device(other.to_string()),
        }
    }
}

/// What sync can change about one group at a device (see [`Sim::sync_pair`]).
type Fingerprint = (GroupId, MemberId, Status, BTreeMap<MemberId, SeqNo>, usize);

fn bytes_key(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

impl Sim {
    /// `n` devices named A, B, C, … with prekeys published, from `seed`.
    pub fn new(n: usize, seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut directory = InMemoryPrekeyDirectory::new();
        let mut devices = Vec::with_capacity(n);
        for i in 0..n {
            let mut identity = Identity::generate(&mut rng);
            // Publishing cannot fail for a fresh identity and a batch below the store limit.
            let _ = directory.publish_identity(&mut rng, &mut identity, NOW, OPK_BATCH);
            // The in-memory store never fails.
            let Ok(device) = Device::new(identity, GroupConfig::default(), SimStore::volatile()) else {
                continue;
            };
            devices.push(SimDevice {
                name: name_of(i),
                device,
                gid: None,
                retired: Vec::new(),
                inbox: VecDeque::new(),
                events: Vec::new(),
                errors: Vec::new(),
                shadows: Vec::new(),
                instance_start: 0,
            });
        }
        Sim {
            rng,
            directory,
            held: vec![Vec::new(); n],
            devices,
            transcript: Vec::new(),
            messages: Vec::new(),
            config: GroupConfig::default(),
            now: NOW,
            partition: None,
            links: BTreeSet::new(),
            shadows: false,
            compaction: true,
            reopen_stores: false,
            gid: None,
            by_bytes: HashMap::new(),
        }
    }

    /// Puts every device on a persistent store made by `make`, before any group exists:
    /// each device starts afresh on its store with the same identity. With
    /// [`Sim::reopen_stores`] set as well, every call runs on a device reopened from its
    /// store. Test hooks that reach a group around the device layer
    /// ([`SimDevice::group_mut`], [`SimDevice::install`]) are not persisted.
    pub fn use_stores(
        &mut self,
        mut make: impl FnMut(Dev) -> Result<Box<dyn PersistentStore>, BoxError>,
    ) -> Result<(), SimError> {
        for d in 0..self.devices.len() {
            if self.devices[d].device.groups().next().is_some() {
                return Err(SimError::Device(format!("device {d} already holds a group")));
            }
            let identity = self.devices[d].device.identity().clone();
            let store = make(d).map_err(|e| SimError::Device(e.to_string()))?;
            self.devices[d].device = Device::new(identity, self.config, SimStore::persistent(store))?;
        }
        Ok(())
    }

    /// Puts devices already on persistent stores into the simulation (the demo resuming
    /// from its files), each in the first group it holds.
    pub fn resume(&mut self, devices: Vec<(String, Device)>) {
        self.held = vec![Vec::new(); devices.len()];
        self.devices = devices
            .into_iter()
            .map(|(name, device)| {
                let gid = device.groups().next().map(|(g, _)| *g);
                (name, gid, device)
            })
            .map(|(name, gid, device)| SimDevice {
                name,
                gid,
                device,
                retired: Vec::new(),
                inbox: VecDeque::new(),
                events: Vec::new(),
                errors: Vec::new(),
                shadows: Vec::new(),
                instance_start: 0,
            })
            .collect();
        self.gid = self.devices.iter().find_map(|d| d.gid);
    }

    /// With [`Sim::reopen_stores`]: closes device `d`'s persistent store and reopens the
    /// device from it. A failure is recorded as the device's error (the device keeps
    /// running on a closed store, so its next commit fails too).
    fn reopen(&mut self, d: Dev) {
        if !self.reopen_stores {
            return;
        }
        let Some(store) = self.devices[d].device.store().take() else { return };
        let reopened = store
            .reopen()
            .map_err(|e| e.to_string())
            .and_then(|s| Device::open(self.config, SimStore::persistent(s)).map_err(|e| e.to_string()));
        match reopened {
            Ok(mut device) => {
                // The test hooks' settings live in memory only.
                let gids: Vec<GroupId> = device.groups().map(|(g, _)| *g).collect();
                for gid in gids {
                    if let Some((g, _)) = device.group_mut(&gid) {
                        g.set_adversarial(self.shadows);
                        g.set_compaction(self.compaction);
                    }
                }
                self.devices[d].device = device;
            }
            Err(e) => self.devices[d].errors.push(format!("reopening the store failed: {e}")),
        }
    }

    /// Runs a device call with the simulation's randomness, clock and directory; the
    /// device runs new instances as adversarial copies when shadows are on, so that at
    /// a removal the instance can become the device's shadow without any state having
    /// been erased.
    fn call<T>(
        &mut self,
        d: Dev,
        f: impl FnOnce(&mut Device, &mut Env<'_, ChaCha20Rng>) -> Result<T, DeviceError>,
    ) -> Result<T, DeviceError> {
        self.reopen(d);
        let dev = &mut self.devices[d].device;
        dev.set_config(self.config);
        dev.set_adversarial_instances(self.shadows);
        dev.set_compaction_instances(self.compaction);
        let mut env = Env { rng: &mut self.rng, now: self.now, prekeys: &mut self.directory };
        f(dev, &mut env)
    }

    /// Feeds a broadcast envelope to every adversarial shadow of device `to`.
    fn feed_shadows(&mut self, to: Dev, bytes: &[u8]) {
        if !self.shadows {
            return;
        }
        for sh in &mut self.devices[to].shadows {
            let mut ctx =
                Context { rng: &mut self.rng, now: self.now, prekeys: &mut self.directory, identity: &mut sh.identity };
            if let Ok(out) = sh.group.receive(&mut ctx, bytes) {
                sh.events.extend(out.events);
            }
        }
    }

    /// Feeds every broadcast envelope of the transcript to every shadow (the adversary sees
    /// the full transcript), processing until quiet.
    pub fn feed_transcript_to_shadows(&mut self) {
        let envelopes: Vec<(Dev, Vec<u8>)> = self
            .transcript
            .iter()
            .filter(|p| matches!(p.kind, PacketKind::Envelope(..)))
            .map(|p| (p.from, p.bytes.clone()))
            .collect();
        for d in 0..self.devices.len() {
            for (from, bytes) in &envelopes {
                if *from != d {
                    self.feed_shadows(d, bytes);
                }
            }
        }
    }

    /// The identity key of a device.
    pub fn ik(&self, d: Dev) -> IdentityKey {
        self.devices[d].device.public_key()
    }

    /// The live instance of device `d`.
    pub fn mid(&self, d: Dev) -> Option<MemberId> {
        self.devices[d].group().map(Group::me)
    }

    /// The device whose live (or retired) instance is `m`.
    pub fn device_of(&self, m: &MemberId) -> Option<Dev> {
        self.devices
            .iter()
            .position(|dv| dv.group().is_some_and(|g| g.me() == *m) || dv.retired.iter().any(|g| g.me() == *m))
    }

    /// The name of the device behind `m`, or a short hex form.
    pub fn name_of_member(&self, m: &MemberId) -> String {
        self.device_of(m).map_or_else(|| format!("{m}"), |d| self.devices[d].name.clone())
    }

    /// `members()` at device `d`, as device indices (live instances only).
    pub fn members_at(&self, d: Dev) -> BTreeSet<MemberId> {
        self.devices[d].group().map(Group::members).unwrap_or_default()
    }

    /// Moves the clock on by `secs`. Every device then publishes a fresh signed prekey,
    /// the directory drops expired one-time prekeys and the pools are refilled, as
    /// devices that stay online would do, so that bundles stay valid.
    pub fn advance_clock(&mut self, secs: u64) {
        self.now = self.now.saturating_add(secs);
        let not_after = self.now.saturating_add(dcgka::consts::PREKEY_DEFAULT_VALIDITY);
        for d in 0..self.devices.len() {
            if let Ok(spk) = self.devices[d].device.new_signed_prekey(&mut self.rng, self.now, not_after) {
                self.directory.publish_signed_prekey(spk);
            }
        }
        self.directory.drop_expired(self.now);
        for d in 0..self.devices.len() {
            self.replenish(d);
        }
    }

    fn replenish(&mut self, d: Dev) {
        let ik = self.ik(d);
        if self.directory.remaining_one_time_prekeys(&ik) < OPK_BATCH / 4 {
            self.reopen(d);
            let dev = &mut self.devices[d].device;
            if let Ok(opks) = dev.new_one_time_prekeys(&mut self.rng, OPK_BATCH, self.now + 90 * 24 * 3600) {
                self.directory.publish_one_time_prekeys(opks);
            }
        }
    }

    /// Takes a device call's report: transmits its output (broadcasts to every other
    /// device, Welcomes to their target), records events and errors, turns retired
    /// instances into shadows, and starts the sync of a group the device just joined.
    fn absorb(&mut self, from: Dev, report: Report) -> Vec<usize> {
        // The simulated network is one implementation of the device layer's transport seam.
        let mut link = SimLink { sim: self, from, ids: Vec::new() };
        let sent = dcgka_device::transport::dispatch(&mut link, &report.transmit).sent;
        let ids = link.ids;
        // Retired instances are kept in the device's memory only: take them before a reopen.
        let retired_now = self.devices[from].device.take_retired();
        if !sent.is_empty() {
            self.reopen(from);
            // A store failure is recorded when the next call fails.
            let _ = self.devices[from].device.mark_sent(&sent);
        }
        // Events are attributed to instances in order: a join starts an instance, and the
        // instance that a removal or corruption ends is retired at that point (one call may
        // join, process a backlog and be removed).
        let shadows = self.shadows;
        let current = self.gid;
        let is_current = |gid: &GroupId| current.is_none_or(|c| c == *gid);
        let dev = &mut self.devices[from];
        let (mine, others): (Vec<_>, Vec<_>) = retired_now.into_iter().partition(|(g, _)| is_current(g));
        // Instances of a replaced group are kept for `device_of`, outside the oracles.
        dev.retired.extend(others.into_iter().map(|(_, g)| g));
        let mut retired: VecDeque<Group> = mine.into_iter().map(|(_, g)| g).collect();
        for (gid, e) in report.events {
            if !is_current(&gid) {
                continue;
            }
            let ends = matches!(e, Event::RemovedFromGroup { .. } | Event::GroupStateCorrupted { .. });
            if matches!(e, Event::Joined { .. }) {
                dev.gid = Some(gid);
                dev.instance_start = dev.events.len();
            }
            dev.events.push(e);
            if ends && let Some(g) = retired.pop_front() {
                dev.retire(g, shadows);
            }
        }
        for g in retired {
            dev.retire(g, shadows);
        }
        for (_, e) in report.errors {
            dev.errors.push(e.to_string());
        }
        for o in &report.outcomes {
            if let Outcome::Dropped(r) = o
                && *r != DropReason::NotAMember
            {
                dev.errors.push(GroupError::Dropped(r.clone()).to_string());
            }
        }
        if report.joined.iter().any(is_current) {
            self.sync_on_join(from);
        }
        ids
    }

    /// Adds a packet to the transcript (or finds it there) and returns its id.
    fn record(&mut self, from: Dev, kind: PacketKind, bytes: Vec<u8>) -> usize {
        let key = bytes_key(&bytes);
        let id = self.transcript.len();
        self.by_bytes.entry(key).or_default().push(id);
        self.transcript.push(Packet { id, from, kind, bytes });
        id
    }

    /// The transcript packet with these bytes, if any.
    fn packet_of(&self, bytes: &[u8]) -> Option<Packet> {
        let ids = self.by_bytes.get(&bytes_key(bytes))?;
        ids.iter().map(|i| &self.transcript[*i]).find(|p| p.bytes == bytes).cloned()
    }

    fn enqueue(&mut self, to: Dev, p: Packet) {
        let crosses = !self.reachable(to, p.from);
        if crosses { self.held[to].push(p) } else { self.devices[to].inbox.push_back(p) }
    }

    /// Whether `a` and `b` can reach each other now.
    pub fn reachable(&self, a: Dev, b: Dev) -> bool {
        self.partition.as_ref().is_none_or(|side| side[a] == side[b]) || self.links.contains(&(a.min(b), a.max(b)))
    }

    /// Lets `a` and `b` reach each other across the partition, from now until the next
    /// [`Sim::split`] or [`Sim::heal`].
    pub fn link(&mut self, a: Dev, b: Dev) {
        self.links.insert((a.min(b), a.max(b)));
    }

    /// Cuts a link made by [`Sim::link`] (the device goes offline again for that peer).
    pub fn unlink(&mut self, a: Dev, b: Dev) {
        self.links.remove(&(a.min(b), a.max(b)));
    }

    /// Splits the network: `sides[d]` is device d's side.
    pub fn split(&mut self, sides: Vec<usize>) {
        self.partition = Some(sides);
        self.links.clear();
    }

    /// Heals the partition: held packets are queued (sync delivers them).
    pub fn heal(&mut self) {
        self.partition = None;
        self.links.clear();
        for d in 0..self.devices.len() {
            let held = std::mem::take(&mut self.held[d]);
            self.devices[d].inbox.extend(held);
        }
    }

    /// `create` at device `d` with `others` as initial members.
    pub fn create(&mut self, d: Dev, others: &[Dev]) -> Result<Vec<usize>, SimError> {
        let iks: Vec<IdentityKey> = others.iter().map(|o| self.ik(*o)).collect();
        let (gid, report) = self.call(d, |dev, env| dev.create(env, &iks))?;
        self.gid = Some(gid);
        for dev in &mut self.devices {
            dev.gid = Some(gid);
        }
        let dev = &mut self.devices[d];
        dev.instance_start = dev.events.len();
        Ok(self.absorb(d, report))
    }

    fn op(
        &mut self,
        d: Dev,
        f: impl FnOnce(&mut Device, &mut Env<'_, ChaCha20Rng>, &GroupId) -> Result<Report, DeviceError>,
    ) -> Result<Vec<usize>, SimError> {
        let Some(gid) = self.devices[d].gid.filter(|_| self.devices[d].active()) else {
            return Err(SimError::NoGroup(d));
        };
        let report = self.call(d, |dev, env| f(dev, env, &gid))?;
        let ids = self.absorb(d, report);
        self.replenish(d);
        Ok(ids)
    }

    /// Applies the retention period at `d` at the simulation's clock
    /// ([`dcgka_device::Device::collect_garbage`]).
    pub fn collect_garbage(&mut self, d: Dev) -> Result<Vec<usize>, SimError> {
        self.op(d, |dev, env, gid| dev.collect_garbage(env, gid))
    }

    /// `update` at `d`.
    pub fn update(&mut self, d: Dev) -> Result<Vec<usize>, SimError> {
        self.op(d, |dev, env, gid| dev.update(env, gid))
    }

    /// `add` of device `target` (a new instance) by `d`.
    pub fn add(&mut self, d: Dev, target: Dev) -> Result<Vec<usize>, SimError> {
        let ik = self.ik(target);
        self.op(d, |dev, env, gid| dev.add(env, gid, ik))
    }

    /// `remove` by `d` of the member instance `m`.
    pub fn remove_member(&mut self, d: Dev, m: MemberId) -> Result<Vec<usize>, SimError> {
        self.op(d, |dev, env, gid| dev.remove(env, gid, m))
    }

    /// `remove` by `d` of device `target`'s live instance.
    pub fn remove(&mut self, d: Dev, target: Dev) -> Result<Vec<usize>, SimError> {
        let m = self.mid(target).ok_or(SimError::NoGroup(target))?;
        self.remove_member(d, m)
    }

    /// `send` at `d`; records the message for the oracles. Returns the transcript ids
    /// (a heal update may precede the message).
    pub fn send(&mut self, d: Dev, plaintext: &[u8]) -> Result<Vec<usize>, SimError> {
        let pt = plaintext.to_vec();
        let ids = self.op(d, |dev, env, gid| dev.send(env, gid, &pt))?;
        if let (Some(&id), Some(g)) = (ids.last(), self.devices[d].group()) {
            self.messages.push(SentMessage {
                packet: id,
                from: d,
                sender: g.me(),
                plaintext: plaintext.to_vec(),
                view: g.members(),
            });
        }
        Ok(ids)
    }

    /// Delivers packet `p` to device `to` now. Returns whether a group took it (false if
    /// the device keeps it in its backlog, e.g. an envelope before the device joined).
    pub fn deliver(&mut self, to: Dev, p: Packet) -> bool {
        let welcome = p.kind == PacketKind::Welcome;
        if !welcome {
            self.feed_shadows(to, &p.bytes);
        }
        let res = self
            .call(to, |dev, env| if welcome { dev.receive_welcome(env, &p.bytes) } else { dev.receive(env, &p.bytes) });
        match res {
            Ok(report) => {
                let taken = !report.outcomes.contains(&Outcome::Backlogged);
                self.absorb(to, report);
                taken
            }
            Err(e) => {
                self.devices[to].errors.push(e.to_string());
                true
            }
        }
    }

    /// Anti-entropy sync (§7.7) between every pair of devices that can reach each other:
    /// each device sends its sync request to each reachable peer and takes the answer,
    /// which holds only what the peer's own envelope log has. Returns whether any device
    /// made progress.
    pub fn sync(&mut self) -> bool {
        let mut progress = false;
        for to in 0..self.devices.len() {
            let before = self.fingerprint(to);
            for from in 0..self.devices.len() {
                if from != to && self.reachable(from, to) {
                    self.exchange(to, from);
                }
            }
            progress |= self.fingerprint(to) != before;
        }
        progress
    }

    /// One sync exchange: `to` asks `from` and takes the answer (repeated while the
    /// answer is cut short). Returns whether `to` made progress.
    pub fn sync_pair(&mut self, to: Dev, from: Dev) -> bool {
        let before = self.fingerprint(to);
        self.exchange(to, from);
        self.fingerprint(to) != before
    }

    fn exchange(&mut self, to: Dev, from: Dev) {
        for _ in 0..64 {
            let req = self.devices[to].device.sync_request();
            let resp = self.devices[from].device.answer_sync(&req);
            if resp.is_empty() {
                break;
            }
            for p in self.sync_packets(from, &resp) {
                self.deliver(to, p);
            }
            if !resp.more {
                break;
            }
        }
    }

    /// The transcript packets of a sync answer (Welcomes first).
    fn sync_packets(&mut self, from: Dev, resp: &dcgka_device::SyncResponse) -> Vec<Packet> {
        let mut v = Vec::new();
        for w in &resp.welcomes {
            v.push(match self.packet_of(w) {
                Some(p) => p,
                None => {
                    let id = self.record(from, PacketKind::Welcome, w.clone());
                    self.transcript[id].clone()
                }
            });
        }
        for e in &resp.envelopes {
            if let Some(p) = self.packet_of(e) {
                v.push(p);
            }
        }
        v
    }

    /// What sync can change at a device: each group's instance, sender heads and held
    /// Welcomes.
    fn fingerprint(&self, d: Dev) -> Vec<Fingerprint> {
        let dev = &self.devices[d].device;
        dev.groups()
            .map(|(gid, g)| (*gid, g.me(), g.status().clone(), g.sync_state(), dev.pending_welcomes(gid).len()))
            .collect()
    }

    /// Sync on joining (§7.7): a new instance asks every peer it can reach for what it
    /// lacks; the answers are queued in its inbox (envelopes from across a partition come
    /// when it heals).
    fn sync_on_join(&mut self, to: Dev) {
        let req = self.devices[to].device.sync_request();
        let mut queued = BTreeSet::new();
        for from in 0..self.devices.len() {
            if from == to || !self.reachable(from, to) {
                continue;
            }
            let resp = self.devices[from].device.answer_sync(&req);
            for p in self.sync_packets(from, &resp) {
                if queued.insert(p.id) {
                    self.devices[to].inbox.push_back(p);
                }
            }
        }
    }

    /// Delivers the oldest queued packet to `to`. Returns false if its inbox is empty.
    pub fn deliver_next(&mut self, to: Dev) -> bool {
        match self.devices[to].inbox.pop_front() {
            Some(p) => {
                self.deliver(to, p);
                true
            }
            None => false,
        }
    }

    /// Delivers the queued packet with transcript id `id` to `to`, if queued there.
    pub fn deliver_id(&mut self, to: Dev, id: usize) -> bool {
        match self.devices[to].inbox.iter().position(|p| p.id == id) {
            Some(k) => {
                if let Some(p) = self.devices[to].inbox.remove(k) {
                    self.deliver(to, p);
                }
                true
            }
            None => false,
        }
    }

    /// Delivers everything, in FIFO order per inbox, round-robin, until quiet; with
    /// coalesced acks, every device then sends what it holds, and delivery goes on.
    pub fn deliver_all(&mut self) {
        loop {
            if !self.deliver_queued() && !self.flush_all() {
                break;
            }
        }
    }

    /// Delivers everything queued, in FIFO order per inbox, round-robin, until quiet,
    /// without making anyone send held acks. Returns whether anything was delivered.
    pub fn deliver_queued(&mut self) -> bool {
        let mut any = false;
        loop {
            let mut progress = false;
            for d in 0..self.devices.len() {
                while self.deliver_next(d) {
                    progress = true;
                }
            }
            if !progress {
                return any;
            }
            any = true;
        }
    }

    /// With coalesced acks: every active device sends the acks it holds (the timer of a
    /// real application). Returns whether anything was sent.
    pub fn flush_all(&mut self) -> bool {
        let mut any = false;
        for d in 0..self.devices.len() {
            any |= self.flush(d);
        }
        any
    }

    /// Device `d` sends the acks it holds. Returns whether anything was sent.
    pub fn flush(&mut self, d: Dev) -> bool {
        if !self.devices[d].group().is_some_and(|g| g.held_acks() > 0 && *g.status() == Status::Active) {
            return false;
        }
        let Some(gid) = self.devices[d].gid else { return false };
        match self.call(d, |dev, env| dev.flush_acks(env, &gid)) {
            Ok(report) => !self.absorb(d, report).is_empty(),
            Err(_) => false,
        }
    }

    /// Delivers every queued packet in a random order until quiet, duplicating each with
    /// probability `dup` (percent) and dropping it for later retransmission with
    /// probability `drop` (percent); dropped packets are retransmitted once the rest is
    /// quiet.
    pub fn deliver_random(&mut self, dup: u32, drop: u32) {
        loop {
            let queued: Vec<Dev> = (0..self.devices.len()).filter(|d| !self.devices[*d].inbox.is_empty()).collect();
            if queued.is_empty() {
                // Retransmit what was dropped (and anything held without a partition).
                let mut any = false;
                if self.partition.is_none() {
                    for d in 0..self.devices.len() {
                        // A device that holds no group takes only what can make it join.
                        let joined = self.devices[d].active();
                        let held = std::mem::take(&mut self.held[d]);
                        let (now, later): (Vec<Packet>, Vec<Packet>) = held.into_iter().partition(|p| {
                            joined
                                || matches!(p.kind, PacketKind::Welcome | PacketKind::Envelope(EnvelopeKind::Create, _))
                        });
                        any |= !now.is_empty();
                        self.devices[d].inbox.extend(now);
                        self.held[d] = later;
                    }
                }
                if !any && !self.sync() && !self.flush_all() {
                    break;
                }
                continue;
            }
            let to = queued[(self.rng.next_u32() as usize) % queued.len()];
            let len = self.devices[to].inbox.len();
            let k = (self.rng.next_u32() as usize) % len;
            let Some(p) = self.devices[to].inbox.remove(k) else { continue };
            if self.rng.next_u32() % 100 < drop && p.kind != PacketKind::Welcome {
                self.held[to].push(p);
                continue;
            }
            if self.rng.next_u32() % 100 < dup {
                self.devices[to].inbox.push_back(p.clone());
            }
            self.deliver(to, p);
        }
    }

    /// The last packet sent by `d` (its latest envelope or Welcome).
    pub fn last_from(&self, d: Dev) -> Option<usize> {
        self.transcript.iter().rev().find(|p| p.from == d).map(|p| p.id)
    }

    /// Every event of a device matching `f`.
    pub fn events_at(&self, d: Dev, f: impl Fn(&Event) -> bool) -> Vec<Event> {
        self.devices[d].events.iter().filter(|e| f(e)).cloned().collect()
    }

    /// Whether device `d` decrypted the application message carried by transcript packet `id`.
    pub fn decrypted(&self, d: Dev, id: usize) -> bool {
        let Some(m) = self.messages.iter().find(|m| m.packet == id) else { return false };
        let Some(p) = self.transcript.get(id) else { return false };
        let PacketKind::Envelope(_, seq) = p.kind else { return false };
        self.devices[d].events.iter().any(|e| {
            matches!(e, Event::Message { sender, seq: s, plaintext, .. } if *sender == m.sender && *s == seq && *plaintext == m.plaintext)
        })
    }

    /// Names of the members at device `d`.
    pub fn member_names(&self, d: Dev) -> BTreeSet<String> {
        self.members_at(d).iter().map(|m| self.name_of_member(m)).collect()
    }

    /// Errors recorded at any device (other than duplicates).
    pub fn errors(&self) -> BTreeMap<String, Vec<String>> {
        self.devices.iter().filter(|d| !d.errors.is_empty()).map(|d| (d.name.clone(), d.errors.clone())).collect()
    }
}

/// "A", "B", …, "Z", "A1", …
pub fn name_of(i: usize) -> String {
    let letter = char::from(b'A' + (i % 26) as u8);
    if i < 26 { letter.to_string() } else { format!("{letter}{}", i / 26) }
}

/// A device's side of the simulated network ([`dcgka_device::transport::Transport`]):
/// records each packet in the transcript and queues it for its recipients (held at a
/// partition).
struct SimLink<'s> {
    sim: &'s mut Sim,
    from: Dev,
    /// Transcript ids of the packets sent.
    ids: Vec<usize>,
}

impl dcgka_device::transport::Transport for SimLink<'_> {
    type Error = std::convert::Infallible;

    fn broadcast(&mut self, _gid: &GroupId, envelope: &[u8]) -> Result<Handed, Self::Error> {
        // A batch (coalesced acks) stands for its last item: the operation or message its
        // held acks travel with. Bytes that are no envelope are not sent (and not retried).
        let Ok(p) = Group::peek(envelope) else { return Ok(Handed::Sent) };
        let id = self.sim.record(self.from, PacketKind::Envelope(p.last_kind, p.last_seq), envelope.to_vec());
        let packet = self.sim.transcript[id].clone();
        for to in (0..self.sim.devices.len()).filter(|to| *to != self.from) {
            self.sim.enqueue(to, packet.clone());
        }
        self.ids.push(id);
        Ok(Handed::Sent)
    }

    fn direct(&mut self, _id: u64, to: &IdentityKey, _gid: &GroupId, bytes: &[u8]) -> Result<Handed, Self::Error> {
        let id = self.sim.record(self.from, PacketKind::Welcome, bytes.to_vec());
        let packet = self.sim.transcript[id].clone();
        if let Some(d) = self.sim.devices.iter().position(|dv| dv.device.public_key() == *to) {
            self.sim.enqueue(d, packet);
        }
        self.ids.push(id);
        Ok(Handed::Sent)
    }
}
