//! A device node: one [`Device`] on a libp2p swarm, driven by one task.
//!
//! The task owns the device and the swarm. The application talks to it through a
//! [`NodeHandle`] (commands, each answered) and hears from it through [`NodeEvent`]s.
//! Every device call commits to the device's store before anything it produced reaches
//! the network (the device layer's rule), so an envelope is in the store and in the
//! group's log before it is published.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dcgka::IdentityKey;
use dcgka::events::Event;
use dcgka::group::GroupError;
use dcgka::ids::{GroupId, MemberId};
use dcgka::prekeys::{InMemoryPrekeyDirectory, NetworkAttestation, PrekeyBundle, Signed, SignedPrekey};
use dcgka_device::{Device, DeviceError, Env, Handed, Outcome, Report, Transport};
use dcgka_store::Store;
use libp2p::futures::StreamExt;
use libp2p::gossipsub::{self, MessageAcceptance, TopicHash};
use libp2p::identity::Keypair;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, identify};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use tokio::sync::{mpsc, oneshot};

use crate::NetError;
use crate::behaviour::{AGENT_DEVICE, AGENT_MAILBOX, Behaviour, BehaviourEvent, build_swarm, topic};
use crate::consts::{
    DEFAULT_ACK_DELAY, DEFAULT_SYNC_INTERVAL, MAILBOX_PREKEY_STOCK, MAX_BUNDLES_PER_PEER, MAX_STRIKES, MAX_TOPICS,
    PREKEY_VALIDITY_SECS,
};
use crate::invite::{Invitation, hex, short_name};
use crate::wire::{HeldHeads, MAX_DEPOSIT_ITEMS, Request, Response};

/// How a node runs.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Addresses to listen on (e.g. `/ip4/127.0.0.1/tcp/0`).
    pub listen: Vec<Multiaddr>,
    /// Peers to dial, and redial while they are away (with or without `/p2p/<id>`).
    pub peers: Vec<Multiaddr>,
    /// How often the node syncs with every connected peer and redials its peers.
    pub sync_interval: Duration,
    /// How long a group must be quiet before the acks it holds are sent (§12).
    pub ack_delay: Duration,
    /// Gossipsub's heartbeat.
    pub heartbeat: Duration,
    /// Whether events are marked consumed in the store's inbox as soon as they are
    /// handed to the application. Off, the application confirms them with
    /// [`NodeHandle::consumed`] once it has handled them, and events not confirmed before
    /// a crash are handed over again, with the same number, when the node restarts.
    pub auto_consume: bool,
    /// Groups the node runs (their gossip topics), at most [`MAX_TOPICS`]: beyond it a
    /// create fails with [`NetError::TooManyGroups`], and a group joined beyond it is
    /// reported with [`NodeEvent::Error`] and carried by sync alone.
    pub max_groups: usize,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            listen: Vec::new(),
            peers: Vec::new(),
            sync_interval: DEFAULT_SYNC_INTERVAL,
            ack_delay: DEFAULT_ACK_DELAY,
            heartbeat: Duration::from_millis(500),
            auto_consume: true,
            max_groups: MAX_TOPICS,
        }
    }
}

/// A member as the application sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its short name ([`short_name`] of its identity key).
    pub name: String,
    /// Its member instance.
    pub id: MemberId,
    /// Whether it is this device.
    pub me: bool,
}

/// What a node reports to the application.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub enum NodeEvent {
    /// The node listens on this address.
    Listening(Multiaddr),
    /// A connection to a peer opened (the first one).
    Connected(PeerId),
    /// The last connection to a peer closed.
    Disconnected(PeerId),
    /// This device joined a group (it created it, or was added).
    Joined(GroupId),
    /// A decrypted application message.
    Message {
        /// Its number in the store's inbox (the same after a restart).
        id: u64,
        /// The group.
        gid: GroupId,
        /// The sender's short name.
        from: String,
        /// The sender's instance.
        sender: MemberId,
        /// The plaintext.
        text: Vec<u8>,
    },
    /// The group's members changed (someone joined, was added or removed).
    Members {
        /// The group.
        gid: GroupId,
        /// The members now.
        members: Vec<Member>,
    },
    /// This device was removed from a group.
    Removed(GroupId),
    /// A message this device may not read (it was not in the sender's view).
    Undecryptable {
        /// Its number in the store's inbox.
        id: u64,
        /// The group.
        gid: GroupId,
        /// The sender's short name.
        from: String,
    },
    /// Any protocol event of a group, as the library reported it (messages and
    /// undecryptable ones come as [`NodeEvent::Message`] and [`NodeEvent::Undecryptable`]).
    Group {
        /// Its number in the store's inbox.
        id: u64,
        /// The group.
        gid: GroupId,
        /// The event.
        event: Event,
    },
    /// A sync exchange with a peer brought this many items.
    Synced {
        /// The peer.
        peer: PeerId,
        /// Envelopes and Welcomes received.
        items: usize,
    },
    /// A peer sent something invalid (a garbage frame, a forged envelope).
    Misbehaved {
        /// The peer.
        peer: PeerId,
        /// What.
        what: String,
        /// Its strikes so far.
        strikes: u32,
    },
    /// A peer reached [`MAX_STRIKES`] and is refused from now on.
    Banned(PeerId),
    /// A mailbox holds prekeys of this device (it asked the mailbox to stock them, or the
    /// mailbox had enough).
    Stocked {
        /// The mailbox.
        mailbox: PeerId,
        /// One-time prekeys now in its stock.
        one_time_prekeys: usize,
    },
    /// A mailbox kept envelopes of a group (published there, or deposited).
    Stored {
        /// The group.
        gid: GroupId,
        /// How many.
        envelopes: usize,
    },
    /// The prekey bundle of a fellow member arrived, ahead of a first contact with it.
    Bundle {
        /// The member's short name.
        name: String,
    },
    /// Something failed that no command was waiting for.
    Error(String),
}

type Reply<T> = oneshot::Sender<Result<T, NetError>>;

/// A command to the node task.
enum Command {
    Create(Reply<GroupId>),
    Add(GroupId, Box<Invitation>, Reply<()>),
    Remove(GroupId, String, Reply<()>),
    Update(GroupId, Reply<()>),
    Send(GroupId, Vec<u8>, Reply<()>),
    Members(GroupId, Reply<Vec<Member>>),
    MissingBundles(GroupId, Reply<Vec<String>>),
    Groups(Reply<Vec<GroupId>>),
    Invitation(Reply<Invitation>),
    Dial(Multiaddr, Reply<()>),
    Block(PeerId, Reply<()>),
    Unblock(PeerId, Reply<()>),
    Sync(Reply<()>),
    Consumed(Vec<u64>, Reply<()>),
    Shutdown(Reply<()>),
}

/// The application's side of a running node. Cloning it gives another handle to the
/// same node.
#[derive(Clone, Debug)]
pub struct NodeHandle {
    cmds: mpsc::UnboundedSender<Command>,
    peer_id: PeerId,
    identity: IdentityKey,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

impl NodeHandle {
    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, NetError> {
        let (tx, rx) = oneshot::channel();
        self.cmds.send(make(tx)).map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)?
    }

    /// The node's network identity.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The device's group identity key.
    pub fn identity(&self) -> IdentityKey {
        self.identity
    }

    /// The device's short name.
    pub fn name(&self) -> String {
        short_name(&self.identity)
    }

    /// Creates a group with this device as its only member.
    pub async fn create(&self) -> Result<GroupId, NetError> {
        self.ask(Command::Create).await
    }

    /// Adds the device of `invitation` to `gid`: fetches one of its prekey bundles (from
    /// it, else from its mailboxes), then adds it; its Welcome follows.
    pub async fn add(&self, gid: GroupId, invitation: Invitation) -> Result<(), NetError> {
        self.ask(|r| Command::Add(gid, Box::new(invitation), r)).await
    }

    /// Removes the member named `name` (its short name) from `gid`.
    pub async fn remove(&self, gid: GroupId, name: &str) -> Result<(), NetError> {
        self.ask(|r| Command::Remove(gid, name.to_string(), r)).await
    }

    /// A PCS update in `gid`.
    pub async fn update(&self, gid: GroupId) -> Result<(), NetError> {
        self.ask(|r| Command::Update(gid, r)).await
    }

    /// Sends an application message to `gid`.
    pub async fn send(&self, gid: GroupId, text: &[u8]) -> Result<(), NetError> {
        self.ask(|r| Command::Send(gid, text.to_vec(), r)).await
    }

    /// The members of `gid`.
    pub async fn members(&self, gid: GroupId) -> Result<Vec<Member>, NetError> {
        self.ask(|r| Command::Members(gid, r)).await
    }

    /// The short names of the members of `gid` to whom this device's next two-party
    /// message is a first contact and whose prekey bundle it does not hold yet: an update,
    /// remove or add in `gid` fails with [`NetError::NoBundle`] while one of them is
    /// unreachable. The node fetches these whenever they are connected.
    pub async fn missing_bundles(&self, gid: GroupId) -> Result<Vec<String>, NetError> {
        self.ask(|r| Command::MissingBundles(gid, r)).await
    }

    /// The groups in which this device has a live instance.
    pub async fn groups(&self) -> Result<Vec<GroupId>, NetError> {
        self.ask(Command::Groups).await
    }

    /// The group whose ID in hex starts with `prefix` (unique).
    pub async fn resolve(&self, prefix: &str) -> Result<GroupId, NetError> {
        let prefix = prefix.to_ascii_lowercase();
        let found: Vec<GroupId> =
            self.groups().await?.into_iter().filter(|g| hex(g.as_bytes()).starts_with(&prefix)).collect();
        match found.as_slice() {
            [g] => Ok(*g),
            [] => Err(NetError::UnknownGroup(prefix)),
            _ => Err(NetError::AmbiguousGroup(prefix)),
        }
    }

    /// This device's invitation: its identity key, its addresses and its mailboxes.
    pub async fn invitation(&self) -> Result<Invitation, NetError> {
        self.ask(Command::Invitation).await
    }

    /// Dials an address (it is not redialled).
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NetError> {
        self.ask(|r| Command::Dial(addr, r)).await
    }

    /// Closes every connection to `peer` and refuses new ones (a partition, in tests).
    pub async fn block(&self, peer: PeerId) -> Result<(), NetError> {
        self.ask(|r| Command::Block(peer, r)).await
    }

    /// Lets `peer` connect again, and dials it.
    pub async fn unblock(&self, peer: PeerId) -> Result<(), NetError> {
        self.ask(|r| Command::Unblock(peer, r)).await
    }

    /// Syncs with every connected peer now.
    pub async fn sync(&self) -> Result<(), NetError> {
        self.ask(Command::Sync).await
    }

    /// Marks inbox events handled (with [`NodeConfig::auto_consume`] off).
    pub async fn consumed(&self, ids: Vec<u64>) -> Result<(), NetError> {
        self.ask(|r| Command::Consumed(ids, r)).await
    }

    /// Stops the node: connections close, the store is left as the last call committed it.
    pub async fn shutdown(&self) -> Result<(), NetError> {
        self.ask(Command::Shutdown).await
    }
}

/// What the node knows of a connected peer.
#[derive(Clone, Debug, Default)]
struct PeerInfo {
    identity: Option<IdentityKey>,
    mailbox: bool,
    listen: Vec<Multiaddr>,
}

/// An add waiting for a prekey bundle: the sources left to try.
struct PendingAdd {
    gid: GroupId,
    identity: IdentityKey,
    sources: Vec<(PeerId, Vec<Multiaddr>)>,
    reply: Reply<()>,
}

/// What an outbound request was for.
enum Outbound {
    Sync(PeerId),
    Direct(Vec<u64>),
    Bundle(u64),
    Serve(PeerId),
    Stock(PeerId, usize),
    /// A bundle fetched ahead of a first contact with a fellow member.
    Prefetch(IdentityKey),
    Other,
}

/// Unix seconds.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A fresh CSPRNG seeded from the operating system.
pub(crate) fn os_rng() -> Result<ChaCha20Rng, NetError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| NetError::Engine(format!("no randomness: {e}")))?;
    Ok(ChaCha20Rng::from_seed(seed))
}

/// The node task's state.
struct Node {
    swarm: Swarm<Behaviour>,
    device: Device<Store>,
    rng: ChaCha20Rng,
    config: NodeConfig,
    /// The last inbox event handed to the application.
    delivered: Option<u64>,
    events: mpsc::UnboundedSender<NodeEvent>,
    /// Bundles fetched from peers, used by the next device call that needs them.
    prekeys: InMemoryPrekeyDirectory,
    /// This device's identity's signature over its peer ID, for mailboxes.
    attestation: NetworkAttestation,
    /// This device's current signed prekey (made at start).
    spk: Signed<SignedPrekey>,
    peers: BTreeMap<PeerId, PeerInfo>,
    /// Where to find the device holding an identity (from identify and invitations).
    whereabouts: BTreeMap<IdentityKey, (PeerId, Vec<Multiaddr>)>,
    /// Mailboxes known (connected or not), with their addresses.
    mailboxes: BTreeMap<PeerId, Vec<Multiaddr>>,
    topics: BTreeMap<TopicHash, GroupId>,
    outbound: BTreeMap<OutboundRequestId, Outbound>,
    /// Peers with a sync in flight, and whether another is wanted after it.
    syncing: BTreeMap<PeerId, bool>,
    /// Outbox items with a delivery in flight.
    direct_in_flight: BTreeSet<u64>,
    adds: BTreeMap<u64, PendingAdd>,
    next_add: u64,
    /// Fellow members whose bundles are being fetched ahead of a first contact.
    prefetching: BTreeSet<IdentityKey>,
    /// Turns through the peers asked for bundles of members that are not connected.
    prefetch_round: usize,
    strikes: Strikes,
    bundles_given: BTreeMap<PeerId, u32>,
    ack_due: Option<tokio::time::Instant>,
    listening: Vec<Multiaddr>,
}

/// Starts a node for `device` with network key `key` on the current tokio runtime.
/// Returns its handle, its events and the task (which ends at [`NodeHandle::shutdown`] or
/// when every handle is dropped).
pub fn spawn(
    device: Device<Store>,
    key: Keypair,
    config: NodeConfig,
) -> Result<(NodeHandle, mpsc::UnboundedReceiver<NodeEvent>, tokio::task::JoinHandle<()>), NetError> {
    let mut device = device;
    let mut rng = os_rng()?;
    let now = unix_now();
    let spk = device.new_signed_prekey(&mut rng, now, now.saturating_add(PREKEY_VALIDITY_SECS))?;
    let identity = device.public_key();
    let agent = format!("{AGENT_DEVICE}{}", hex(&identity.0));
    let peer_id = key.public().to_peer_id();
    let attestation = device.identity().attest_network_key(&peer_id.to_bytes());
    let mut swarm = build_swarm(key, agent, config.heartbeat)?;
    for addr in &config.listen {
        swarm.listen_on(addr.clone()).map_err(|e| NetError::Listen(format!("{addr}: {e}")))?;
    }
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let mut node = Node {
        swarm,
        device,
        rng,
        config,
        delivered: None,
        events: ev_tx,
        prekeys: InMemoryPrekeyDirectory::new(),
        attestation,
        spk,
        peers: BTreeMap::new(),
        whereabouts: BTreeMap::new(),
        mailboxes: BTreeMap::new(),
        topics: BTreeMap::new(),
        outbound: BTreeMap::new(),
        syncing: BTreeMap::new(),
        direct_in_flight: BTreeSet::new(),
        adds: BTreeMap::new(),
        next_add: 0,
        prefetching: BTreeSet::new(),
        prefetch_round: 0,
        strikes: Strikes::default(),
        bundles_given: BTreeMap::new(),
        ack_due: None,
        listening: Vec::new(),
    };
    let gids: Vec<GroupId> = node.device.groups().map(|(g, _)| *g).collect();
    for gid in gids {
        node.subscribe(gid);
    }
    for addr in node.config.peers.clone() {
        node.dial(addr);
    }
    let task = tokio::spawn(node.run(cmd_rx));
    Ok((NodeHandle { cmds: cmd_tx, peer_id, identity }, ev_rx, task))
}

/// The network as the device sees it ([`Transport`]): envelopes are published on their
/// group's topic, Welcomes go to their target's node and to the known mailboxes.
struct Link<'a> {
    swarm: &'a mut Swarm<Behaviour>,
    whereabouts: &'a BTreeMap<IdentityKey, (PeerId, Vec<Multiaddr>)>,
    mailboxes: &'a BTreeMap<PeerId, Vec<Multiaddr>>,
    outbound: &'a mut BTreeMap<OutboundRequestId, Outbound>,
    in_flight: &'a mut BTreeSet<u64>,
    /// Whether a publication found no subscribed peer (sync then carries it).
    unpublished: bool,
}

impl Transport for Link<'_> {
    type Error = std::convert::Infallible;

    fn broadcast(&mut self, gid: &GroupId, envelope: &[u8]) -> Result<Handed, Self::Error> {
        // The envelope is in the store and the group's log already: peers that miss this
        // publication (none subscribed yet, a partition, too large for gossip) get it by
        // sync, so it counts as sent either way.
        match self.swarm.behaviour_mut().gossipsub.publish(topic(gid), envelope.to_vec()) {
            Ok(_) | Err(gossipsub::PublishError::Duplicate) => {}
            Err(e) => {
                tracing::debug!("publish in {gid}: {e}; left to sync");
                self.unpublished = true;
            }
        }
        Ok(Handed::Sent)
    }

    fn direct(&mut self, id: u64, to: &IdentityKey, gid: &GroupId, bytes: &[u8]) -> Result<Handed, Self::Error> {
        if self.in_flight.contains(&id) {
            return Ok(Handed::Later);
        }
        let req = Request::Direct { to: *to, gid: *gid, bytes: bytes.to_vec() };
        let mut targets: Vec<(PeerId, Vec<Multiaddr>)> = self.mailboxes.iter().map(|(p, a)| (*p, a.clone())).collect();
        if let Some((peer, addrs)) = self.whereabouts.get(to) {
            targets.push((*peer, addrs.clone()));
        }
        for (peer, addrs) in targets {
            let rid = self.swarm.behaviour_mut().rr.send_request_with_addresses(&peer, req.clone(), addrs);
            self.outbound.insert(rid, Outbound::Direct(vec![id]));
            self.in_flight.insert(id);
        }
        // Delivered when the target or a mailbox confirms; until then it stays in the
        // outbox and is offered again on the next tick.
        Ok(Handed::Later)
    }
}

impl Node {
    async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<Command>) {
        // Events committed but not confirmed before the last stop are handed over again.
        self.deliver_inbox();
        let mut tick = tokio::time::interval(self.config.sync_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let ack_due = self.ack_due;
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm(ev),
                cmd = cmds.recv() => match cmd {
                    None => break,
                    Some(Command::Shutdown(reply)) => {
                        let _ = reply.send(Ok(()));
                        break;
                    }
                    Some(cmd) => self.on_command(cmd),
                },
                _ = tick.tick() => self.on_tick(),
                () = sleep_until(ack_due), if ack_due.is_some() => {
                    self.ack_due = None;
                    self.flush_acks();
                }
            }
        }
        tracing::info!("node {} stops", self.swarm.local_peer_id());
    }

    fn emit(&self, e: NodeEvent) {
        let _ = self.events.send(e);
    }

    fn subscribe(&mut self, gid: GroupId) {
        let t = topic(&gid);
        if !self.topics.contains_key(&t.hash()) && self.topics.len() >= self.config.max_groups.min(MAX_TOPICS) {
            self.emit(NodeEvent::Error(format!(
                "group {gid} is beyond this node's {} groups: it is carried by sync alone",
                self.topics.len()
            )));
            return;
        }
        self.topics.insert(t.hash(), gid);
        if let Err(e) = self.swarm.behaviour_mut().gossipsub.subscribe(&t) {
            self.emit(NodeEvent::Error(format!("cannot subscribe to group {gid}: {e}")));
        }
    }

    fn dial(&mut self, addr: Multiaddr) {
        if let Err(e) = self.swarm.dial(addr.clone()) {
            tracing::debug!("dial {addr}: {e}");
        }
    }

    // ------------------------------------------------------------------------------
    // Device calls
    // ------------------------------------------------------------------------------

    /// Runs one device call with the node's randomness, clock and fetched bundles.
    fn call<T>(
        &mut self,
        f: impl FnOnce(&mut Device<Store>, &mut Env<'_, ChaCha20Rng>) -> Result<T, DeviceError>,
    ) -> Result<T, DeviceError> {
        let mut env = Env { rng: &mut self.rng, now: unix_now(), prekeys: &mut self.prekeys };
        f(&mut self.device, &mut env)
    }

    /// Takes a call's report: events to the application, new groups subscribed and
    /// synced, the outbox sent, held acks scheduled.
    fn after(&mut self, report: Report) {
        let mut membership = BTreeSet::new();
        let mut needed = Vec::new();
        for (gid, e) in report.events {
            match &e {
                Event::Joined { .. } => {
                    self.emit(NodeEvent::Joined(gid));
                    membership.insert(gid);
                }
                Event::MemberAdded { .. } | Event::MembersRemoved { .. } | Event::AddCancelled { .. } => {
                    membership.insert(gid);
                }
                Event::RemovedFromGroup { .. } => self.emit(NodeEvent::Removed(gid)),
                Event::PrekeyBundleNeeded { identity } => needed.push((gid, *identity)),
                _ => {}
            }
        }
        self.deliver_inbox();
        for gid in &report.joined {
            self.subscribe(*gid);
        }
        let changed = !membership.is_empty();
        for gid in membership {
            if let Ok(members) = self.members(&gid) {
                self.emit(NodeEvent::Members { gid, members });
            }
        }
        if changed {
            self.prefetch_bundles();
        }
        for (gid, e) in report.errors {
            tracing::debug!("group {gid:?}: {e}");
        }
        for (_, ik) in needed {
            self.fetch_bundle_for_pending(ik);
        }
        if !report.joined.is_empty() {
            self.serve_at_mailboxes();
            self.sync_all();
        }
        self.flush();
        if self.device.config().coalesce_acks && self.device.groups().any(|(_, g)| g.held_acks() > 0) {
            self.ack_due = Some(tokio::time::Instant::now() + self.config.ack_delay);
        }
    }

    /// Offers the outbox to the network.
    fn flush(&mut self) {
        let mut link = Link {
            swarm: &mut self.swarm,
            whereabouts: &self.whereabouts,
            mailboxes: &self.mailboxes,
            outbound: &mut self.outbound,
            in_flight: &mut self.direct_in_flight,
            unpublished: false,
        };
        let r = self.device.flush_outbox(&mut link);
        let unpublished = link.unpublished;
        if let Err(e) = r {
            self.emit(NodeEvent::Error(format!("outbox: {e}")));
        }
        if unpublished {
            self.sync_all();
        }
    }

    /// Hands the application the inbox events it has not had yet, in order.
    fn deliver_inbox(&mut self) {
        let events = match self.device.store().inbox_after(self.delivered) {
            Ok(e) => e,
            Err(e) => {
                self.emit(NodeEvent::Error(format!("inbox: {e}")));
                return;
            }
        };
        let mut ids = Vec::with_capacity(events.len());
        for ev in events {
            let (id, gid) = (ev.id, ev.gid);
            self.delivered = Some(id);
            ids.push(id);
            match ev.event {
                Event::Message { sender, plaintext, .. } => {
                    let from = self.name_of(&gid, &sender);
                    self.emit(NodeEvent::Message { id, gid, from, sender, text: plaintext });
                }
                Event::Undecryptable { sender, .. } => {
                    let from = self.name_of(&gid, &sender);
                    self.emit(NodeEvent::Undecryptable { id, gid, from });
                }
                event => self.emit(NodeEvent::Group { id, gid, event }),
            }
        }
        if self.config.auto_consume
            && !ids.is_empty()
            && let Err(e) = self.device.store().mark_consumed(&ids)
        {
            self.emit(NodeEvent::Error(format!("inbox: {e}")));
        }
    }

    fn flush_acks(&mut self) {
        let gids: Vec<GroupId> = self.device.groups().filter(|(_, g)| g.held_acks() > 0).map(|(g, _)| *g).collect();
        for gid in gids {
            match self.call(|d, env| d.flush_acks(env, &gid)) {
                Ok(r) => self.after(r),
                Err(e) => self.emit(NodeEvent::Error(format!("flush acks in {gid}: {e}"))),
            }
        }
    }

    fn name_of(&self, gid: &GroupId, m: &MemberId) -> String {
        self.device.group(gid).and_then(|g| g.identity_of(m)).map_or_else(|| format!("{m}"), |ik| short_name(&ik))
    }

    fn members(&self, gid: &GroupId) -> Result<Vec<Member>, NetError> {
        let g = self.device.group(gid).ok_or_else(|| NetError::UnknownGroup(hex(gid.as_bytes())))?;
        let me = g.me();
        let mut out: Vec<Member> =
            g.members().iter().map(|m| Member { name: self.name_of(gid, m), id: *m, me: *m == me }).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    // ------------------------------------------------------------------------------
    // Commands
    // ------------------------------------------------------------------------------

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Create(reply) => {
                let max = self.config.max_groups.min(MAX_TOPICS);
                if self.device.groups().count() >= max {
                    let _ = reply.send(Err(NetError::TooManyGroups(max)));
                    return;
                }
                let r = self.call(|d, env| d.create(env, &[]));
                let _ = reply.send(match r {
                    Ok((gid, report)) => {
                        // The report's `Joined` event tells the application.
                        self.subscribe(gid);
                        self.after(report);
                        self.serve_at_mailboxes();
                        Ok(gid)
                    }
                    Err(e) => Err(e.into()),
                });
            }
            Command::Add(gid, inv, reply) => self.start_add(gid, *inv, reply),
            Command::Remove(gid, name, reply) => {
                let r = self.remove(gid, &name);
                let _ = reply.send(r);
            }
            Command::Update(gid, reply) => {
                let r = self.call(|d, env| d.update(env, &gid)).map(|rep| self.after(rep));
                let r = r.map_err(|e| self.op_error(e));
                let _ = reply.send(r);
            }
            Command::Send(gid, text, reply) => {
                // With a heal pending, the send updates first, and may need bundles.
                let r = self.call(|d, env| d.send(env, &gid, &text)).map(|rep| self.after(rep));
                let r = r.map_err(|e| self.op_error(e));
                let _ = reply.send(r);
            }
            Command::Members(gid, reply) => {
                let _ = reply.send(self.members(&gid));
            }
            Command::MissingBundles(gid, reply) => {
                let me = self.device.public_key();
                let r = match self.device.group(&gid) {
                    Some(g) => Ok(g
                        .first_contacts()
                        .into_iter()
                        .filter(|ik| *ik != me && !self.prekeys.has_signed_prekey(ik))
                        .map(|ik| short_name(&ik))
                        .collect()),
                    None => Err(NetError::UnknownGroup(hex(gid.as_bytes()))),
                };
                let _ = reply.send(r);
            }
            Command::Groups(reply) => {
                let _ = reply.send(Ok(self.device.groups().map(|(g, _)| *g).collect()));
            }
            Command::Invitation(reply) => {
                let addrs = self.public_addrs();
                let mailboxes = self
                    .mailboxes
                    .iter()
                    .filter_map(|(p, a)| a.first().map(|a| (*p, a.clone())))
                    .take(crate::consts::MAX_INVITATION_ADDRS / 2)
                    .collect();
                let _ = reply.send(Ok(Invitation {
                    identity: self.device.public_key(),
                    peer: *self.swarm.local_peer_id(),
                    addrs,
                    mailboxes,
                }));
            }
            Command::Dial(addr, reply) => {
                let r = self.swarm.dial(addr.clone()).map_err(|e| NetError::Dial(format!("{addr}: {e}")));
                let _ = reply.send(r);
            }
            Command::Block(peer, reply) => {
                self.swarm.behaviour_mut().blocked.block_peer(peer);
                let _ = reply.send(Ok(()));
            }
            Command::Unblock(peer, reply) => {
                self.swarm.behaviour_mut().blocked.unblock_peer(peer);
                let addrs = self.addresses_of(&peer);
                for a in addrs {
                    self.dial(a);
                }
                let _ = reply.send(Ok(()));
            }
            Command::Consumed(ids, reply) => {
                let r = self.device.store().mark_consumed(&ids).map_err(NetError::from);
                let _ = reply.send(r);
            }
            Command::Sync(reply) => {
                self.sync_all();
                let _ = reply.send(Ok(()));
            }
            Command::Shutdown(reply) => {
                let _ = reply.send(Ok(()));
            }
        }
    }

    /// Addresses to put in an invitation: the listening ones, without unspecified ones.
    fn public_addrs(&self) -> Vec<Multiaddr> {
        let mut out: Vec<Multiaddr> = self
            .listening
            .iter()
            .filter(|a| {
                !a.iter().any(|p| {
                    matches!(p, libp2p::multiaddr::Protocol::Ip4(ip) if ip.is_unspecified())
                        || matches!(p, libp2p::multiaddr::Protocol::Ip6(ip) if ip.is_unspecified())
                })
            })
            .cloned()
            .collect();
        out.truncate(crate::consts::MAX_INVITATION_ADDRS / 2);
        out
    }

    fn addresses_of(&self, peer: &PeerId) -> Vec<Multiaddr> {
        let mut out: Vec<Multiaddr> = self.peers.get(peer).map(|p| p.listen.clone()).unwrap_or_default();
        out.extend(self.mailboxes.get(peer).cloned().unwrap_or_default());
        out.extend(self.whereabouts.values().filter(|(p, _)| p == peer).flat_map(|(_, a)| a.clone()));
        out.extend(self.config.peers.iter().filter(|a| peer_of(a) == Some(*peer)).cloned());
        out.sort();
        out.dedup();
        out
    }

    fn remove(&mut self, gid: GroupId, name: &str) -> Result<(), NetError> {
        let members = self.members(&gid)?;
        let matching: Vec<&Member> = members.iter().filter(|m| m.name == name || format!("{}", m.id) == name).collect();
        let target = match matching.as_slice() {
            [m] => m.id,
            [] => return Err(NetError::UnknownMember(name.to_string())),
            _ => return Err(NetError::AmbiguousMember(name.to_string())),
        };
        let report = self.call(|d, env| d.remove(env, &gid, target)).map_err(|e| self.op_error(e))?;
        self.after(report);
        Ok(())
    }

    fn start_add(&mut self, gid: GroupId, inv: Invitation, reply: Reply<()>) {
        if self.device.group(&gid).is_none() {
            let _ = reply.send(Err(NetError::UnknownGroup(hex(gid.as_bytes()))));
            return;
        }
        // What the invitation says of where the device and its mailboxes are.
        self.whereabouts.insert(inv.identity, (inv.peer, inv.addrs.clone()));
        for (p, a) in &inv.mailboxes {
            self.mailboxes.entry(*p).or_default().push(a.clone());
        }
        let mut sources = vec![(inv.peer, inv.addrs.clone())];
        sources.extend(inv.mailboxes.iter().map(|(p, a)| (*p, vec![a.clone()])));
        sources.reverse(); // popped from the end: the device itself first
        let id = self.next_add;
        self.next_add += 1;
        self.adds.insert(id, PendingAdd { gid, identity: inv.identity, sources, reply });
        self.try_next_source(id);
    }

    /// Asks the next source of a pending add for a bundle, or fails the add.
    fn try_next_source(&mut self, id: u64) {
        let Some(add) = self.adds.get_mut(&id) else { return };
        match add.sources.pop() {
            Some((peer, addrs)) => {
                let req = Request::Bundle { of: add.identity };
                let rid = self.swarm.behaviour_mut().rr.send_request_with_addresses(&peer, req, addrs);
                self.outbound.insert(rid, Outbound::Bundle(id));
            }
            None => {
                if let Some(add) = self.adds.remove(&id) {
                    let _ = add.reply.send(Err(NetError::NoBundle(short_name(&add.identity))));
                }
            }
        }
    }

    fn bundle_arrived(&mut self, id: u64, bundle: Option<PrekeyBundle>) {
        let Some(add) = self.adds.get(&id) else { return };
        let (gid, ik) = (add.gid, add.identity);
        let usable = bundle.filter(|b| b.verify(&ik, unix_now()).is_ok());
        let Some(b) = usable else {
            self.try_next_source(id);
            return;
        };
        self.prekeys.publish_signed_prekey(b.signed_prekey);
        if let Some(opk) = b.one_time_prekey {
            self.prekeys.publish_one_time_prekeys(vec![opk]);
        }
        let Some(add) = self.adds.remove(&id) else { return };
        let r = self.call(|d, env| d.add(env, &gid, ik));
        let _ = add.reply.send(match r {
            Ok(report) => {
                self.after(report);
                Ok(())
            }
            Err(e) => Err(self.op_error(e)),
        });
    }

    /// The error of a failed update, remove or add: one for want of a fellow member's
    /// bundle says whose, and starts fetching it.
    fn op_error(&mut self, e: DeviceError) -> NetError {
        let missing = match &e {
            DeviceError::Group { error: GroupError::MissingPrekeyBundle(ik), .. } => Some(*ik),
            _ => None,
        };
        match missing {
            Some(ik) => {
                self.prefetch_bundles();
                NetError::NoBundle(short_name(&ik))
            }
            None => e.into(),
        }
    }

    /// A group stopped for want of a bundle: ask where the identity may be found, then
    /// retry the group's pending envelopes.
    fn fetch_bundle_for_pending(&mut self, ik: IdentityKey) {
        let mut sources: Vec<(PeerId, Vec<Multiaddr>)> = self.mailboxes.iter().map(|(p, a)| (*p, a.clone())).collect();
        if let Some((p, a)) = self.whereabouts.get(&ik) {
            sources.push((*p, a.clone()));
        }
        for (peer, addrs) in sources {
            let rid =
                self.swarm.behaviour_mut().rr.send_request_with_addresses(&peer, Request::Bundle { of: ik }, addrs);
            self.outbound.insert(rid, Outbound::Other);
        }
    }

    /// Fetches, from the devices themselves while they are connected (or else from a
    /// connected mailbox), the bundles of fellow members to whom this device's next
    /// two-party message is a first contact, so that an update, remove or add made later,
    /// perhaps while they are unreachable, does not stop for want of them.
    fn prefetch_bundles(&mut self) {
        let me = self.device.public_key();
        let mut wanted = BTreeSet::new();
        for (_, g) in self.device.groups() {
            wanted.extend(g.first_contacts());
        }
        wanted.remove(&me);
        // Connected mailboxes first, then connected devices (which pass on the signed
        // prekeys they hold); each round asks the next one.
        let mut others: Vec<PeerId> = self.mailboxes.keys().filter(|p| self.peers.contains_key(p)).copied().collect();
        others.extend(self.peers.iter().filter(|(_, i)| i.identity.is_some()).map(|(p, _)| *p));
        self.prefetch_round = self.prefetch_round.wrapping_add(1);
        for ik in wanted {
            if self.prekeys.has_signed_prekey(&ik) || self.prefetching.contains(&ik) {
                continue;
            }
            if self.prefetching.len() >= crate::consts::MAX_PREFETCHES {
                break;
            }
            let device = self.peers.iter().find(|(_, i)| i.identity == Some(ik)).map(|(p, _)| *p);
            let other = (!others.is_empty()).then(|| others[self.prefetch_round % others.len()]);
            let Some(peer) = device.or(other) else { continue };
            let rid = self.swarm.behaviour_mut().rr.send_request(&peer, Request::Bundle { of: ik });
            self.outbound.insert(rid, Outbound::Prefetch(ik));
            self.prefetching.insert(ik);
        }
    }

    // ------------------------------------------------------------------------------
    // Sync
    // ------------------------------------------------------------------------------

    fn want_sync(&mut self, peer: PeerId) {
        if let Some(again) = self.syncing.get_mut(&peer) {
            *again = true;
            return;
        }
        let req = self.device.sync_request();
        let rid = self.swarm.behaviour_mut().rr.send_request(&peer, Request::Sync(req));
        self.outbound.insert(rid, Outbound::Sync(peer));
        self.syncing.insert(peer, false);
    }

    fn sync_all(&mut self) {
        let peers: Vec<PeerId> = self.peers.keys().copied().collect();
        for p in peers {
            self.want_sync(p);
        }
    }

    /// Asks every connected mailbox to serve this device's groups.
    fn serve_at_mailboxes(&mut self) {
        let boxes: Vec<PeerId> = self.peers.iter().filter(|(_, i)| i.mailbox).map(|(p, _)| *p).collect();
        for p in boxes {
            self.serve_at(p);
        }
    }

    fn serve_at(&mut self, peer: PeerId) {
        let gids: Vec<GroupId> = self.device.groups().map(|(g, _)| *g).collect();
        let req = Request::Serve { gids, identity: self.device.public_key(), attestation: self.attestation };
        let rid = self.swarm.behaviour_mut().rr.send_request(&peer, req);
        self.outbound.insert(rid, Outbound::Serve(peer));
    }

    /// A mailbox said what it holds: deposit what it lacks, top up the prekey stock.
    fn mailbox_heads(&mut self, peer: PeerId, groups: Vec<HeldHeads>, stock: u64) {
        for held in groups {
            let Some(log) = self.device.log(&held.gid) else { continue };
            let tags: BTreeMap<[u8; 16], (u64, u64)> = held.tags.iter().map(|(t, lo, hi)| (*t, (*lo, *hi))).collect();
            let firsts: BTreeSet<[u8; 16]> = held.firsts.iter().copied().collect();
            let mut missing: Vec<(u64, Vec<u8>)> = Vec::new();
            for sender in log.senders() {
                let (lowest, head) = tags.get(&sender.tag().0).copied().unwrap_or((1, 0));
                for e in log.after(sender, 0) {
                    let first = dcgka::group::Group::peek(&e.bytes)
                        .is_ok_and(|p| matches!(p.sender, dcgka::SenderRef::Identity(_)));
                    let held = if first { firsts.contains(&e.hash) } else { lowest <= e.seq.0 && e.last_seq.0 <= head };
                    if !held {
                        missing.push((e.pos, e.bytes.clone()));
                    }
                }
            }
            missing.sort_by_key(|(pos, _)| *pos);
            for chunk in missing.chunks(MAX_DEPOSIT_ITEMS.min(256)) {
                let envelopes = chunk.iter().map(|(_, b)| b.clone()).collect();
                let rid =
                    self.swarm.behaviour_mut().rr.send_request(&peer, Request::Deposit { gid: held.gid, envelopes });
                self.outbound.insert(rid, Outbound::Other);
            }
        }
        if stock < (MAILBOX_PREKEY_STOCK / 2) as u64 {
            let now = unix_now();
            let n = MAILBOX_PREKEY_STOCK - usize::try_from(stock).unwrap_or(0);
            match self.device.new_one_time_prekeys(&mut self.rng, n, now.saturating_add(PREKEY_VALIDITY_SECS)) {
                Ok(opks) => {
                    let total = opks.len() + usize::try_from(stock).unwrap_or(0);
                    let req = Request::Stock { spk: self.spk.clone(), opks };
                    let rid = self.swarm.behaviour_mut().rr.send_request(&peer, req);
                    self.outbound.insert(rid, Outbound::Stock(peer, total));
                }
                Err(e) => self.emit(NodeEvent::Error(format!("prekeys for the mailbox: {e}"))),
            }
        } else {
            let one_time_prekeys = usize::try_from(stock).unwrap_or(usize::MAX);
            self.emit(NodeEvent::Stocked { mailbox: peer, one_time_prekeys });
        }
    }

    // ------------------------------------------------------------------------------
    // The network
    // ------------------------------------------------------------------------------

    fn on_tick(&mut self) {
        // Redial the configured peers that are away.
        for addr in self.config.peers.clone() {
            let connected = match peer_of(&addr) {
                Some(p) => self.peers.contains_key(&p),
                None => self.peers.values().any(|i| i.listen.contains(&addr)),
            };
            if !connected {
                self.dial(addr);
            }
        }
        self.sync_all();
        self.flush();
        self.prefetch_bundles();
        // Retention (§5.7): erase what is kept for members away too long.
        let gids: Vec<GroupId> = self.device.groups().map(|(g, _)| *g).collect();
        for gid in gids {
            if self.device.group(&gid).and_then(|g| g.next_expiry()).is_some_and(|t| t <= unix_now()) {
                match self.call(|d, env| d.collect_garbage(env, &gid)) {
                    Ok(r) => self.after(r),
                    Err(e) => self.emit(NodeEvent::Error(format!("retention in {gid}: {e}"))),
                }
            }
        }
    }

    fn strike(&mut self, peer: PeerId, what: String) {
        for e in self.strikes.strike(&mut self.swarm, peer, what) {
            self.emit(e);
        }
    }

    fn on_swarm(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                self.listening.push(address.clone());
                self.emit(NodeEvent::Listening(address));
            }
            SwarmEvent::ConnectionEstablished { peer_id, endpoint, num_established, .. } => {
                let info = self.peers.entry(peer_id).or_default();
                if endpoint.is_dialer() {
                    let a = endpoint.get_remote_address().clone();
                    if !info.listen.contains(&a) {
                        info.listen.push(a);
                    }
                }
                if num_established.get() == 1 {
                    self.emit(NodeEvent::Connected(peer_id));
                    self.want_sync(peer_id);
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                self.peers.remove(&peer_id);
                self.syncing.remove(&peer_id);
                self.emit(NodeEvent::Disconnected(peer_id));
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                self.identified(peer_id, info);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => self.on_gossip(propagation_source, message_id, message),
            SwarmEvent::Behaviour(BehaviourEvent::Rr(ev)) => self.on_rr(ev),
            _ => {}
        }
    }

    fn identified(&mut self, peer: PeerId, info: identify::Info) {
        let entry = self.peers.entry(peer).or_default();
        for a in info.listen_addrs {
            if !entry.listen.contains(&a) {
                entry.listen.push(a);
            }
        }
        let listen = entry.listen.clone();
        if info.agent_version == AGENT_MAILBOX {
            let was = entry.mailbox;
            entry.mailbox = true;
            self.mailboxes.insert(peer, listen);
            if !was {
                self.serve_at(peer);
                self.flush();
            }
        } else if let Some(ik) = info.agent_version.strip_prefix(AGENT_DEVICE).and_then(crate::datadir::parse_hex_key) {
            entry.identity = Some(ik);
            self.whereabouts.insert(ik, (peer, listen));
            // Welcomes waiting for this device can go now, and its bundle be fetched
            // while it is here.
            self.flush();
            self.prefetch_bundles();
        }
    }

    fn on_gossip(&mut self, source: PeerId, id: gossipsub::MessageId, msg: gossipsub::Message) {
        let acceptance = if !self.topics.contains_key(&msg.topic) {
            MessageAcceptance::Ignore
        } else {
            match self.call(|d, env| d.receive(env, &msg.data)) {
                Ok(report) => {
                    let a = match report.outcomes.first() {
                        Some(Outcome::Dropped(reason)) => {
                            self.strike(source, format!("envelope dropped: {reason:?}"));
                            MessageAcceptance::Reject
                        }
                        Some(Outcome::Accepted(_) | Outcome::Joined(_)) => MessageAcceptance::Accept,
                        // Held already (by sync, or sent here): not forwarded, since this
                        // node cannot tell a forged copy of an old sequence number (whose
                        // hash the group forgot) from the genuine one without verifying it
                        // again; the peers that lack it get it by sync. A forged copy of a
                        // recent one is `Dropped(BadSignature)` above.
                        _ => MessageAcceptance::Ignore,
                    };
                    let gaps = self.device.groups().any(|(_, g)| g.pending() > 0);
                    self.after(report);
                    if gaps {
                        // Unmet dependencies: ask the peer that forwarded it for what is missing.
                        self.want_sync(source);
                    }
                    a
                }
                Err(DeviceError::Malformed(e)) => {
                    self.strike(source, format!("malformed envelope: {e}"));
                    MessageAcceptance::Reject
                }
                Err(e @ (DeviceError::Storage(_) | DeviceError::Poisoned)) => {
                    self.emit(NodeEvent::Error(format!("store: {e}")));
                    MessageAcceptance::Ignore
                }
                Err(e) => {
                    tracing::debug!("envelope from {source}: {e}");
                    MessageAcceptance::Ignore
                }
            }
        };
        self.swarm.behaviour_mut().gossipsub.report_message_validation_result(&id, &source, acceptance);
    }

    fn on_rr(&mut self, ev: request_response::Event<Request, Response>) {
        match ev {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { request, channel, .. } => self.on_request(peer, request, channel),
                request_response::Message::Response { request_id, response } => {
                    self.on_response(peer, request_id, response);
                }
            },
            request_response::Event::OutboundFailure { peer, request_id, error, .. } => {
                tracing::debug!("request to {peer} failed: {error}");
                match self.outbound.remove(&request_id) {
                    Some(Outbound::Sync(p)) => {
                        self.syncing.remove(&p);
                    }
                    Some(Outbound::Direct(ids)) => {
                        for id in ids {
                            self.direct_in_flight.remove(&id);
                        }
                    }
                    Some(Outbound::Bundle(id)) => self.try_next_source(id),
                    Some(Outbound::Prefetch(ik)) => {
                        self.prefetching.remove(&ik);
                    }
                    _ => {}
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!("request from {peer} failed: {error}");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn respond(&mut self, channel: ResponseChannel<Response>, resp: Response) {
        // A response is lost if the connection closes right after: the requester then
        // retries (sync on its next tick, a Welcome stays in its outbox).
        let _ = self.swarm.behaviour_mut().rr.send_response(channel, resp);
    }

    fn on_request(&mut self, peer: PeerId, request: Request, channel: ResponseChannel<Response>) {
        let resp = match request {
            Request::Sync(req) => Response::Sync(self.device.answer_sync(&req)),
            Request::Direct { to, bytes, .. } if to == self.device.public_key() => {
                match self.call(|d, env| d.receive_welcome(env, &bytes)) {
                    Ok(report) => {
                        self.after(report);
                        Response::Done
                    }
                    Err(DeviceError::Malformed(e)) => {
                        self.strike(peer, format!("malformed Welcome: {e}"));
                        Response::Refused("malformed".into())
                    }
                    Err(e) => Response::Refused(e.to_string()),
                }
            }
            Request::Direct { .. } => Response::Refused("not for this device".into()),
            Request::Bundle { of } if of == self.device.public_key() => {
                Response::Bundle(Some(Box::new(self.hand_out(peer))))
            }
            // A fellow member's signed prekey fetched earlier is passed on (signed by its
            // owner, so the asker checks it): members that never meet still find each
            // other's bundles. One-time prekeys are never passed on.
            Request::Bundle { of } => Response::Bundle(
                self.prekeys
                    .signed_prekey(&of)
                    .map(|spk| Box::new(PrekeyBundle { signed_prekey: spk.clone(), one_time_prekey: None })),
            ),
            Request::Serve { .. } | Request::Deposit { .. } | Request::Stock { .. } => {
                Response::Refused("not a mailbox".into())
            }
            Request::Invalid(why) => {
                self.strike(peer, format!("invalid request: {why}"));
                Response::Refused("invalid request".into())
            }
        };
        self.respond(channel, resp);
    }

    /// A bundle of this device: the signed prekey and a fresh one-time prekey (at most
    /// [`MAX_BUNDLES_PER_PEER`] per peer and run, then the signed prekey alone).
    fn hand_out(&mut self, peer: PeerId) -> PrekeyBundle {
        let given = self.bundles_given.entry(peer).or_insert(0);
        *given += 1;
        let opk = if *given <= MAX_BUNDLES_PER_PEER {
            let not_after = unix_now().saturating_add(PREKEY_VALIDITY_SECS);
            self.device.new_one_time_prekeys(&mut self.rng, 1, not_after).ok().and_then(|mut v| v.pop())
        } else {
            None
        };
        PrekeyBundle { signed_prekey: self.spk.clone(), one_time_prekey: opk }
    }

    fn on_response(&mut self, peer: PeerId, rid: OutboundRequestId, resp: Response) {
        let what = self.outbound.remove(&rid);
        match (what, resp) {
            (Some(Outbound::Sync(p)), Response::Sync(page)) => {
                let again = self.syncing.remove(&p).unwrap_or(false);
                let items = page.len();
                let more = page.more;
                if items > 0 {
                    match self.call(|d, env| d.apply_sync(env, &page)) {
                        Ok(report) => self.after(report),
                        Err(e) => self.emit(NodeEvent::Error(format!("sync from {peer}: {e}"))),
                    }
                    self.emit(NodeEvent::Synced { peer, items });
                }
                if more || again {
                    self.want_sync(p);
                }
            }
            (Some(Outbound::Sync(p)), _) => {
                self.syncing.remove(&p);
            }
            (Some(Outbound::Direct(ids)), Response::Done) => {
                for id in &ids {
                    self.direct_in_flight.remove(id);
                }
                let still: Vec<u64> =
                    ids.into_iter().filter(|id| self.device.outbox().iter().any(|t| t.id == *id)).collect();
                if !still.is_empty()
                    && let Err(e) = self.device.mark_sent(&still)
                {
                    self.emit(NodeEvent::Error(format!("outbox: {e}")));
                }
            }
            (Some(Outbound::Direct(ids)), _) => {
                for id in ids {
                    self.direct_in_flight.remove(&id);
                }
            }
            (Some(Outbound::Bundle(id)), Response::Bundle(b)) => self.bundle_arrived(id, b.map(|b| *b)),
            (Some(Outbound::Bundle(id)), _) => self.try_next_source(id),
            (Some(Outbound::Serve(p)), Response::Heads { groups, stock }) => self.mailbox_heads(p, groups, stock),
            (Some(Outbound::Stock(mailbox, one_time_prekeys)), Response::Done) => {
                self.emit(NodeEvent::Stocked { mailbox, one_time_prekeys });
            }
            (Some(Outbound::Prefetch(ik)), Response::Bundle(Some(b))) => {
                self.prefetching.remove(&ik);
                if b.signed_prekey.value.ik == ik && b.verify(&ik, unix_now()).is_ok() {
                    self.prekeys.publish_signed_prekey(b.signed_prekey);
                    if let Some(o) = b.one_time_prekey {
                        self.prekeys.publish_one_time_prekeys(vec![o]);
                    }
                    self.emit(NodeEvent::Bundle { name: short_name(&ik) });
                } else {
                    self.strike(peer, "a bundle that is not the one asked for".into());
                }
            }
            (Some(Outbound::Prefetch(ik)), _) => {
                self.prefetching.remove(&ik);
            }
            (Some(Outbound::Other), Response::Bundle(Some(b))) => {
                // A bundle for a group that stopped for want of it.
                let ik = b.signed_prekey.value.ik;
                if b.verify(&ik, unix_now()).is_ok() {
                    self.prekeys.publish_signed_prekey(b.signed_prekey);
                    if let Some(o) = b.one_time_prekey {
                        self.prekeys.publish_one_time_prekeys(vec![o]);
                    }
                    let gids: Vec<GroupId> = self.device.groups().map(|(g, _)| *g).collect();
                    for gid in gids {
                        if let Ok(r) = self.call(|d, env| d.process_pending(env, &gid)) {
                            self.after(r);
                        }
                    }
                }
            }
            (_, Response::Refused(why)) => tracing::debug!("{peer} refused: {why}"),
            _ => {}
        }
    }
}

/// Strikes against misbehaving peers: each one scores the peer down in gossipsub; at
/// [`MAX_STRIKES`] the peer is blacklisted and its connections refused.
#[derive(Debug, Default)]
pub(crate) struct Strikes {
    counts: BTreeMap<PeerId, u32>,
}

impl Strikes {
    /// Strikes `peer` for `what`; returns the events to report.
    pub(crate) fn strike(&mut self, swarm: &mut Swarm<Behaviour>, peer: PeerId, what: String) -> Vec<NodeEvent> {
        let count = self.counts.entry(peer).or_insert(0);
        *count = count.saturating_add(1);
        let strikes = *count;
        tracing::info!("peer {peer} misbehaved ({strikes}): {what}");
        let b = swarm.behaviour_mut();
        b.gossipsub.set_application_score(&peer, -f64::from(strikes) * 10.0);
        let mut out = vec![NodeEvent::Misbehaved { peer, what, strikes }];
        if strikes == MAX_STRIKES {
            b.gossipsub.blacklist_peer(&peer);
            b.blocked.block_peer(peer);
            out.push(NodeEvent::Banned(peer));
        }
        out
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The peer ID at the end of an address, if any.
pub(crate) fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::P2p(id) => Some(id),
        _ => None,
    })
}
