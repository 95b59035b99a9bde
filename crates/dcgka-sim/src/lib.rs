//! A deterministic network simulator for `dcgka` groups.
//!
//! [`Sim`] holds N devices (each an [`Identity`] plus at most one live [`Group`]
//! instance), a prekey directory, and a network of per-device inboxes. Broadcast
//! envelopes go to every other device; Welcomes go to their recipient. Delivery can be
//! step by step (for scripted scenarios), random (reordering), partitioned, duplicated,
//! or lossy with later retransmission. Everything is driven by one seeded CSPRNG, so a
//! run is reproducible from its seed.

#![forbid(unsafe_code)]

pub mod oracle;
pub mod random;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use dcgka::codec::Decode;
use dcgka::crypto::IdentityKey;
use dcgka::events::Event;
use dcgka::group::{Context, Group, GroupConfig, GroupError, Output, Status};
use dcgka::ids::{MemberId, SeqNo};
use dcgka::prekeys::{Identity, InMemoryPrekeyDirectory};
use dcgka::wire::{Envelope, EnvelopeKind};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

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

/// An adversarial copy of one instance (see [`Device::shadows`]).
#[derive(Clone, Debug)]
pub struct Shadow {
    /// The copied group state, in adversarial mode.
    pub group: Group,
    /// A copy of the device's identity and key store.
    pub identity: Identity,
    /// Every event the copy produced.
    pub events: Vec<Event>,
}

/// One simulated device.
#[derive(Clone, Debug)]
pub struct Device {
    /// Display name ("A", "B", ...).
    pub name: String,
    /// Its identity and key store.
    pub identity: Identity,
    /// Its live group instance, if any.
    pub group: Option<Group>,
    /// Former instances (removed or corrupted), kept for the security oracles.
    pub retired: Vec<Group>,
    /// Undelivered packets.
    pub inbox: VecDeque<Packet>,
    /// Welcomes held while a live instance exists (§6.6).
    pub pending_welcomes: Vec<Packet>,
    /// Every event this device's groups reported, in order.
    pub events: Vec<Event>,
    /// Errors returned by receive (other than harmless duplicates).
    pub errors: Vec<GroupError>,
    /// Adversarial shadows, one per instance this device ever held (when
    /// [`Sim::shadows`] is on): copies that receive the same packets but never stop at
    /// their own removal and never erase secrets, i.e. what an attacker holding the
    /// device's state would have. Each has its own copy of the identity's key store
    /// (so it never consumes the real device's one-time prekeys) and keeps its events.
    pub shadows: Vec<Shadow>,
    /// Every instance any of this device's instances knew of (its own included): a
    /// Welcome for one of them is stale and discarded for good (§6.6).
    pub known_instances: BTreeSet<MemberId>,
    /// Index into `events` where the current instance's events begin.
    pub instance_start: usize,
}

impl Device {
    /// The live group, if any.
    pub fn group(&self) -> Option<&Group> {
        self.group.as_ref()
    }

    /// Whether this device holds a live, active instance.
    pub fn active(&self) -> bool {
        self.group.as_ref().is_some_and(|g| *g.status() == Status::Active)
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
    pub devices: Vec<Device>,
    /// Every packet ever sent, by id.
    pub transcript: Vec<Packet>,
    /// Every application message sent.
    pub messages: Vec<SentMessage>,
    /// Group configuration used by every device.
    pub config: GroupConfig,
    /// Current partition: device → side. Packets cross sides only after `heal`.
    pub partition: Option<Vec<usize>>,
    /// Packets held back by the partition or dropped, per device, for later redelivery.
    pub held: Vec<Vec<Packet>>,
    /// Whether to run adversarial shadows (see [`Device::shadows`]).
    pub shadows: bool,
    /// The instance each Welcome packet creates, by packet id (computed once).
    welcome_targets: BTreeMap<usize, Option<MemberId>>,
}

/// Why a simulated operation failed.
#[derive(Debug)]
pub enum SimError {
    /// The device holds no active group.
    NoGroup(Dev),
    /// The library refused the operation.
    Group(GroupError),
}

impl From<GroupError> for SimError {
    fn from(e: GroupError) -> Self {
        SimError::Group(e)
    }
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
            devices.push(Device {
                name: name_of(i),
                identity,
                group: None,
                retired: Vec::new(),
                inbox: VecDeque::new(),
                pending_welcomes: Vec::new(),
                events: Vec::new(),
                errors: Vec::new(),
                shadows: Vec::new(),
                known_instances: BTreeSet::new(),
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
            partition: None,
            shadows: false,
            welcome_targets: BTreeMap::new(),
        }
    }

    /// Marks the start of a new instance at device `d`; with shadows on, the instance runs
    /// as an adversarial copy, so that at its removal it can become the device's shadow
    /// without any state having been erased.
    fn start_shadow(&mut self, d: Dev) {
        self.devices[d].instance_start = self.devices[d].events.len();
        if self.shadows
            && let Some(g) = self.devices[d].group.as_mut()
        {
            g.set_adversarial(true);
        }
    }

    /// Feeds a broadcast envelope to every adversarial shadow of device `to`.
    fn feed_shadows(&mut self, to: Dev, bytes: &[u8]) {
        if !self.shadows {
            return;
        }
        for sh in &mut self.devices[to].shadows {
            let mut ctx =
                Context { rng: &mut self.rng, now: NOW, prekeys: &mut self.directory, identity: &mut sh.identity };
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
        self.devices[d].identity.public_key()
    }

    /// The live instance of device `d`.
    pub fn mid(&self, d: Dev) -> Option<MemberId> {
        self.devices[d].group.as_ref().map(Group::me)
    }

    /// The device whose live (or retired) instance is `m`.
    pub fn device_of(&self, m: &MemberId) -> Option<Dev> {
        self.devices
            .iter()
            .position(|dv| dv.group.as_ref().is_some_and(|g| g.me() == *m) || dv.retired.iter().any(|g| g.me() == *m))
    }

    /// The name of the device behind `m`, or a short hex form.
    pub fn name_of_member(&self, m: &MemberId) -> String {
        self.device_of(m).map_or_else(|| format!("{m}"), |d| self.devices[d].name.clone())
    }

    /// `members()` at device `d`, as device indices (live instances only).
    pub fn members_at(&self, d: Dev) -> BTreeSet<MemberId> {
        self.devices[d].group.as_ref().map(Group::members).unwrap_or_default()
    }

    fn replenish(&mut self, d: Dev) {
        let ik = self.ik(d);
        if self.directory.remaining_one_time_prekeys(&ik) < OPK_BATCH / 4 {
            let dev = &mut self.devices[d];
            if let Ok(opks) = dev.identity.new_one_time_prekeys(&mut self.rng, OPK_BATCH, NOW + 90 * 24 * 3600) {
                self.directory.publish_one_time_prekeys(opks);
            }
        }
    }

    /// Runs `f` with a [`Context`] for device `d`.
    fn with_ctx<T>(&mut self, d: Dev, f: impl FnOnce(&mut Context<'_, ChaCha20Rng>, &mut Option<Group>) -> T) -> T {
        let dev = &mut self.devices[d];
        let mut ctx =
            Context { rng: &mut self.rng, now: NOW, prekeys: &mut self.directory, identity: &mut dev.identity };
        f(&mut ctx, &mut dev.group)
    }

    /// Sends a call's output: broadcasts to every other device, Welcomes to their target.
    fn post(&mut self, from: Dev, out: Output) -> Vec<usize> {
        let mut ids = Vec::new();
        for bytes in out.broadcast {
            // A batch (coalesced acks) stands for its last item: the operation or message
            // its held acks travel with.
            let last = Envelope::from_bytes(&bytes).ok().and_then(|e| e.items().ok()).and_then(|mut v| v.pop());
            let kind = match last {
                Some(e) => PacketKind::Envelope(e.kind, e.seq),
                None => continue,
            };
            let id = self.transcript.len();
            let p = Packet { id, from, kind, bytes };
            self.transcript.push(p.clone());
            for to in 0..self.devices.len() {
                if to != from {
                    self.enqueue(to, p.clone());
                }
            }
            ids.push(id);
        }
        for (_, ik, bytes) in out.direct {
            let id = self.transcript.len();
            let p = Packet { id, from, kind: PacketKind::Welcome, bytes };
            self.transcript.push(p.clone());
            if let Some(to) = self.devices.iter().position(|dv| dv.identity.public_key() == ik) {
                self.enqueue(to, p);
            }
            ids.push(id);
        }
        self.devices[from].events.extend(out.events);
        ids
    }

    fn enqueue(&mut self, to: Dev, p: Packet) {
        let crosses = self.partition.as_ref().is_some_and(|side| side[to] != side[p.from]);
        if crosses { self.held[to].push(p) } else { self.devices[to].inbox.push_back(p) }
    }

    /// Splits the network: `sides[d]` is device d's side.
    pub fn split(&mut self, sides: Vec<usize>) {
        self.partition = Some(sides);
    }

    /// Heals the partition: held packets are queued (sync delivers them).
    pub fn heal(&mut self) {
        self.partition = None;
        for d in 0..self.devices.len() {
            let held = std::mem::take(&mut self.held[d]);
            self.devices[d].inbox.extend(held);
        }
    }

    /// `create` at device `d` with `others` as initial members.
    pub fn create(&mut self, d: Dev, others: &[Dev]) -> Result<Vec<usize>, SimError> {
        let iks: Vec<IdentityKey> = others.iter().map(|o| self.ik(*o)).collect();
        let config = self.config;
        let out = self.with_ctx(d, |ctx, slot| {
            let (g, out) = Group::create(ctx, &iks, config)?;
            *slot = Some(g);
            Ok::<_, GroupError>(out)
        })?;
        self.start_shadow(d);
        Ok(self.post(d, out))
    }

    fn op(
        &mut self,
        d: Dev,
        f: impl FnOnce(&mut Group, &mut Context<'_, ChaCha20Rng>) -> Result<Output, GroupError>,
    ) -> Result<Vec<usize>, SimError> {
        if !self.devices[d].active() {
            return Err(SimError::NoGroup(d));
        }
        let out = self.with_ctx(d, |ctx, slot| match slot {
            Some(g) => f(g, ctx).map_err(SimError::Group),
            None => Err(SimError::NoGroup(d)),
        })?;
        self.replenish(d);
        Ok(self.post(d, out))
    }

    /// `update` at `d`.
    pub fn update(&mut self, d: Dev) -> Result<Vec<usize>, SimError> {
        self.op(d, |g, ctx| g.update(ctx))
    }

    /// `add` of device `target` (a new instance) by `d`.
    pub fn add(&mut self, d: Dev, target: Dev) -> Result<Vec<usize>, SimError> {
        let ik = self.ik(target);
        self.op(d, |g, ctx| g.add(ctx, ik))
    }

    /// `remove` by `d` of the member instance `m`.
    pub fn remove_member(&mut self, d: Dev, m: MemberId) -> Result<Vec<usize>, SimError> {
        self.op(d, |g, ctx| g.remove(ctx, m))
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
        let ids = self.op(d, |g, ctx| g.send(ctx, &pt))?;
        if let (Some(&id), Some(g)) = (ids.last(), self.devices[d].group.as_ref()) {
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

    /// Delivers packet `p` to device `to` now. Returns whether the device consumed it
    /// (false if it had to be kept for later, e.g. an envelope before the device joined).
    pub fn deliver(&mut self, to: Dev, p: Packet) -> bool {
        let config = self.config;
        match p.kind {
            PacketKind::Welcome => {
                self.record_known_instances(to);
                match self.welcome_target(to, &p) {
                    Some(target) if self.devices[to].known_instances.contains(&target) => return true,
                    Some(_) => {}
                    None => {
                        self.devices[to].errors.push(GroupError::CannotJoin("unreadable Welcome".into()));
                        return true;
                    }
                }
                if self.devices[to].active() {
                    // §6.6: a device never holds two live instances. Keep the Welcome pending
                    // unless the live instance already processed that add.
                    self.devices[to].pending_welcomes.push(p);
                    self.prune_pending_welcomes(to);
                    return true;
                }
                let res = self.with_ctx(to, |ctx, slot| {
                    let (g, out) = Group::join(ctx, &p.bytes, config)?;
                    let old = slot.replace(g);
                    Ok::<_, GroupError>((out, old))
                });
                match res {
                    Ok((out, old)) => {
                        if let Some(o) = old {
                            self.devices[to].retired.push(o);
                        }
                        self.prune_pending_welcomes(to);
                        self.start_shadow(to);
                        self.post(to, out);
                        // Envelopes that arrived before the Welcome are now delivered.
                        self.redeliver_backlog(to);
                        self.sync_on_join(to);
                    }
                    Err(e) => self.devices[to].errors.push(e),
                }
                true
            }
            PacketKind::Envelope(kind, _) => {
                if !self.devices[to].active() {
                    if self.devices[to].group.is_some() {
                        // A terminated or corrupted instance: retire it first.
                        self.after_status_change(to);
                        if self.devices[to].active() {
                            return self.deliver(to, p);
                        }
                    }
                    if kind == EnvelopeKind::Create && self.stale_create(to, &p.bytes) {
                        return true;
                    }
                    if kind == EnvelopeKind::Create {
                        let res = self.with_ctx(to, |ctx, slot| {
                            let (g, out) = Group::from_create(ctx, &p.bytes, config)?;
                            *slot = Some(g);
                            Ok::<_, GroupError>(out)
                        });
                        match res {
                            Ok(out) => {
                                self.start_shadow(to);
                                self.post(to, out);
                                self.redeliver_backlog(to);
                                return true;
                            }
                            Err(GroupError::CannotJoin(_) | GroupError::OwnEnvelope) => return true,
                            Err(e) => {
                                self.devices[to].errors.push(e);
                                return true;
                            }
                        }
                    }
                    // Not (yet) in the group: keep it for when the device joins.
                    self.feed_shadows(to, &p.bytes);
                    self.held[to].push(p);
                    return false;
                }
                self.feed_shadows(to, &p.bytes);
                let res = self.with_ctx(to, |ctx, slot| match slot {
                    Some(g) => g.receive(ctx, &p.bytes),
                    None => Err(GroupError::Internal("no group".into())),
                });
                match res {
                    Ok(out) => {
                        self.post(to, out);
                    }
                    // Duplicates and echoes are harmless; an envelope from a member whose add
                    // has not arrived yet is dropped and comes again through sync (§7.7).
                    Err(
                        GroupError::Dropped(
                            dcgka::events::DropReason::Duplicate | dcgka::events::DropReason::NotAMember,
                        )
                        | GroupError::OwnEnvelope,
                    ) => {}
                    Err(e) => self.devices[to].errors.push(e),
                }
                self.prune_pending_welcomes(to);
                self.after_status_change(to);
                true
            }
        }
    }

    /// The instance a Welcome packet makes its recipient (cached per packet).
    fn welcome_target(&mut self, to: Dev, p: &Packet) -> Option<MemberId> {
        if let Some(t) = self.welcome_targets.get(&p.id) {
            return *t;
        }
        let ik = self.devices[to].identity.public_key();
        let t = dcgka::group::welcome_target(&p.bytes, &ik).ok().map(|(_, t)| t);
        self.welcome_targets.insert(p.id, t);
        t
    }

    /// Whether a create names an instance this device already held (a duplicate create
    /// arriving after that instance ended).
    fn stale_create(&mut self, to: Dev, bytes: &[u8]) -> bool {
        self.record_known_instances(to);
        let Ok(peek) = Group::peek(bytes) else { return true };
        let (Some(gid), dcgka::wire::SenderRef::Identity(creator_ik)) = (peek.gid, peek.sender) else { return true };
        let creator = MemberId::derive(&gid, &creator_ik, dcgka::ids::Origin::Creator);
        let me = MemberId::derive(&gid, &self.ik(to), dcgka::ids::Origin::Operation(creator, SeqNo(1)));
        self.devices[to].known_instances.contains(&me)
    }

    /// Discards, for good, pending Welcomes of instances that the live instance has
    /// already processed the add of (§6.6).
    fn prune_pending_welcomes(&mut self, to: Dev) {
        if self.devices[to].pending_welcomes.is_empty() {
            return;
        }
        self.record_known_instances(to);
        let pending = std::mem::take(&mut self.devices[to].pending_welcomes);
        let mut keep = Vec::with_capacity(pending.len());
        for w in pending {
            if self.welcome_target(to, &w).is_some_and(|t| !self.devices[to].known_instances.contains(&t)) {
                keep.push(w);
            }
        }
        self.devices[to].pending_welcomes = keep;
    }

    /// Moves a terminated instance to `retired`, and joins through a pending Welcome (§6.6).
    fn after_status_change(&mut self, to: Dev) {
        self.record_known_instances(to);
        if self.devices[to].active() || self.devices[to].group.is_none() {
            return;
        }
        if let Some(g) = self.devices[to].group.take() {
            if self.shadows && matches!(g.status(), Status::Removed { .. }) {
                // The adversarial copy keeps all it knew: from now on it is this instance's
                // shadow, fed everything the device sees.
                let dev = &mut self.devices[to];
                let events = dev.events[dev.instance_start.min(dev.events.len())..].to_vec();
                dev.shadows.push(Shadow { group: g.clone(), identity: dev.identity.clone(), events });
            }
            self.devices[to].retired.push(g);
        }
        // Join through the first pending Welcome that works; keep the others pending.
        let mut pending = std::mem::take(&mut self.devices[to].pending_welcomes);
        while !pending.is_empty() && !self.devices[to].active() {
            let w = pending.remove(0);
            self.deliver(to, w);
        }
        self.devices[to].pending_welcomes.extend(pending);
        self.prune_pending_welcomes(to);
    }

    /// Remembers every instance the device's current instance knows of, whatever its
    /// status (a terminated instance still knows which adds it processed).
    fn record_known_instances(&mut self, to: Dev) {
        if let Some(g) = self.devices[to].group.as_ref() {
            let mut known = g.ever_added();
            known.insert(g.me());
            self.devices[to].known_instances.extend(known);
        }
    }

    /// Anti-entropy sync (§7.7) between every pair of devices that can talk: each active
    /// device is offered every envelope of the transcript sent on its side of any
    /// partition that it has not processed yet. Returns whether any device made progress.
    pub fn sync(&mut self) -> bool {
        let mut progress = false;
        for to in 0..self.devices.len() {
            if !self.devices[to].active() {
                continue;
            }
            let before = self.devices[to].group.as_ref().map(Group::sync_state);
            for p in self.envelopes_reaching(to) {
                let Some(g) = self.devices[to].group.as_ref().filter(|g| *g.status() == Status::Active) else { break };
                if Group::peek(&p.bytes).is_ok_and(|peek| g.already_processed(&peek)) {
                    continue;
                }
                self.deliver(to, p);
            }
            let after = self.devices[to].group.as_ref().map(Group::sync_state);
            progress |= before != after;
        }
        progress
    }

    /// Sync on joining (§7.7): a new instance asks its peers for everything above its
    /// horizon. Modelled as re-queueing every envelope sent on its side of any partition
    /// (envelopes from across a partition arrive when it heals); the group drops what it
    /// already has.
    fn sync_on_join(&mut self, to: Dev) {
        // Includes this device's earlier instances' envelopes: for the new instance they
        // are another member's.
        let again = self.envelopes_reaching(to);
        self.devices[to].inbox.extend(again);
    }

    /// Every envelope of the transcript sent on `to`'s side of any partition.
    fn envelopes_reaching(&self, to: Dev) -> Vec<Packet> {
        let side = self.partition.as_ref();
        self.transcript
            .iter()
            .filter(|p| matches!(p.kind, PacketKind::Envelope(..)))
            .filter(|p| side.is_none_or(|s| s[p.from] == s[to]))
            .cloned()
            .collect()
    }

    fn redeliver_backlog(&mut self, to: Dev) {
        let backlog = std::mem::take(&mut self.held[to]);
        let (now, later): (Vec<Packet>, Vec<Packet>) = match &self.partition {
            Some(side) => backlog.into_iter().partition(|p| side[p.from] == side[to]),
            None => (backlog, Vec::new()),
        };
        self.held[to] = later;
        for p in now {
            self.devices[to].inbox.push_back(p);
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
        let Some(g) = self.devices[d].group.as_mut().filter(|g| g.held_acks() > 0) else { return false };
        match g.flush_acks() {
            Ok(out) => {
                let sent = !out.broadcast.is_empty();
                self.post(d, out);
                sent
            }
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
        self.devices
            .iter()
            .filter(|d| !d.errors.is_empty())
            .map(|d| (d.name.clone(), d.errors.iter().map(|e| e.to_string()).collect()))
            .collect()
    }
}

/// "A", "B", …, "Z", "A1", …
pub fn name_of(i: usize) -> String {
    let letter = char::from(b'A' + (i % 26) as u8);
    if i < 26 { letter.to_string() } else { format!("{letter}{}", i / 26) }
}
