//! A lean in-memory network for benchmarks: [`Group`]s driven directly, nothing else.
//!
//! [`crate::Sim`] drives [`dcgka_device::Device`]s and keeps shadows, logs and oracles;
//! that is what a simulation needs and what a benchmark must not pay for. A [`Network`]
//! holds n + 1 nodes, each an [`Identity`] and at most one [`Group`]: nodes `0..n` are
//! the group's members once [`Network::create`] has run, node n is a spare device for an
//! add ([`Network::newcomer`]). Long runs that add many devices create more with
//! [`Network::add_device`] and drop removed ones with [`Network::retire`]. Delivery is a plain FIFO: each broadcast goes to every
//! other node in the group, each Welcome to its newcomer; broadcasts that reach a node
//! before the create or Welcome that makes it a member wait in its backlog. Removed nodes
//! get nothing more.
//!
//! Every library call made for a node runs inside [`Meter::measure`], so a benchmark can
//! charge its CPU time to the node (`()` measures nothing). Traffic counts every message
//! once: each broadcast once, each Welcome once. Everything is driven by one seeded
//! ChaCha20 generator, so traffic is deterministic per seed. A call's events are checked:
//! anything an honest FIFO network should never cause (a rejected, undecryptable or
//! dropped envelope, an equivocation, a missing bundle, an application message other than
//! [`PAYLOAD`]) is an error.
//!
//! ```
//! use dcgka::group::GroupConfig;
//! use dcgka_sim::lean::Network;
//!
//! let mut net = Network::new(4, 1, GroupConfig::default(), ())?;
//! net.create()?; // the create and three acks, all processed
//! net.reset_costs();
//! net.perform(0, |g, ctx| g.update(ctx))?;
//! net.run_until_quiet()?;
//! assert_eq!(net.traffic().messages, 4); // the update and three acks
//! # Ok::<(), dcgka_sim::lean::LeanError>(())
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use dcgka::events::Event;
use dcgka::group::{Context, Group, GroupConfig, GroupError, Output, Received, Status};
use dcgka::prekeys::{Identity, InMemoryPrekeyDirectory, PrekeyError};
use dcgka::wire::EnvelopeKind;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use crate::{Dev, NOW, OPK_BATCH};

/// The application payload benchmarks send (32 bytes); every application message a node
/// decrypts must be this one.
pub const PAYLOAD: [u8; 32] = [0x5a; 32];

/// Where the CPU cost of each library call goes.
pub trait Meter {
    /// Runs `f`, one library call made for node `node`, and charges its cost to `node`.
    fn measure<T>(&mut self, node: Dev, f: impl FnOnce() -> T) -> T;

    /// Forgets the costs measured so far (called by [`Network::reset_costs`]).
    fn reset(&mut self) {}
}

/// Measures nothing.
impl Meter for () {
    fn measure<T>(&mut self, _node: Dev, f: impl FnOnce() -> T) -> T {
        f()
    }
}

/// Messages sent since the last [`Network::reset_costs`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Bytes of every message, each broadcast and each Welcome counted once.
    pub bytes: u64,
    /// Number of messages.
    pub messages: usize,
    /// Bytes of the Welcomes alone.
    pub welcome_bytes: u64,
    /// (count, bytes) by kind: the envelope kind (`"ack"`, `"update"`, …) or `"welcome"`.
    pub by_kind: BTreeMap<&'static str, (usize, u64)>,
}

impl Traffic {
    fn count(&mut self, kind: &'static str, len: usize) {
        self.bytes += len as u64;
        self.messages += 1;
        let e = self.by_kind.entry(kind).or_default();
        e.0 += 1;
        e.1 += len as u64;
    }
}

/// One device of the network.
#[derive(Clone, Debug)]
pub struct Node {
    identity: Identity,
    group: Option<Group>,
    /// About to join (listed in a create, or sent a Welcome): broadcasts that reach it
    /// before it has joined wait in `backlog`.
    expecting: bool,
    backlog: Vec<Vec<u8>>,
    decrypted: usize,
}

impl Node {
    /// Its identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Its group, once it has created or joined one.
    pub fn group(&self) -> Option<&Group> {
        self.group.as_ref()
    }

    /// Application messages it decrypted since the last [`Network::reset_costs`].
    pub fn decrypted(&self) -> usize {
        self.decrypted
    }
}

/// A message in flight.
#[derive(Clone, Debug)]
enum Packet {
    /// An envelope for every other node.
    Broadcast { from: Dev, bytes: Vec<u8> },
    /// A Welcome for one node.
    Welcome { to: Dev, bytes: Vec<u8> },
}

/// Why a call on the network failed.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum LeanError {
    /// Publishing a node's prekeys failed.
    Prekeys {
        /// The node.
        node: Dev,
        /// The directory's error.
        error: PrekeyError,
    },
    /// The node does not exist or holds no group.
    NoGroup(Dev),
    /// A library call made for a node failed.
    Call {
        /// The node.
        node: Dev,
        /// The call: `"create"`, `"join"`, `"receive"`, …
        call: &'static str,
        /// The library's error.
        error: GroupError,
    },
    /// A call produced an event an honest FIFO network never causes.
    UnexpectedEvent {
        /// The node.
        node: Dev,
        /// The event.
        event: Box<Event>,
    },
    /// A Welcome names an identity no node has.
    UnknownWelcome,
}

impl fmt::Display for LeanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeanError::Prekeys { node, error } => write!(f, "device {node}: publishing prekeys: {error}"),
            LeanError::NoGroup(node) => write!(f, "device {node} has no group"),
            LeanError::Call { node, call, error } => write!(f, "device {node}: {call} failed: {error}"),
            LeanError::UnexpectedEvent { node, event } => write!(f, "device {node}: unexpected event {event:?}"),
            LeanError::UnknownWelcome => f.write_str("a Welcome for an unknown device"),
        }
    }
}

impl std::error::Error for LeanError {}

/// The name of an envelope kind in [`Traffic::by_kind`].
fn kind_name(kind: Option<EnvelopeKind>) -> &'static str {
    match kind {
        Some(EnvelopeKind::Create) => "create",
        Some(EnvelopeKind::Ack) => "ack",
        Some(EnvelopeKind::Update) => "update",
        Some(EnvelopeKind::Remove) => "remove",
        Some(EnvelopeKind::Add) => "add",
        Some(EnvelopeKind::AddAck) => "add-ack",
        Some(EnvelopeKind::Application) => "application",
        Some(EnvelopeKind::Batch) => "batch",
        None => "unreadable",
    }
}

/// n members, one spare device, a prekey directory and a FIFO of messages in flight.
/// Clone it after a setup to run several operations from the same state.
#[derive(Clone, Debug)]
pub struct Network<M = ()> {
    rng: ChaCha20Rng,
    directory: InMemoryPrekeyDirectory,
    nodes: Vec<Node>,
    /// n: the initial members are nodes `0..n`, node n is the spare device.
    members: usize,
    queue: VecDeque<Packet>,
    traffic: Traffic,
    config: GroupConfig,
    meter: M,
}

impl<M: Meter> Network<M> {
    /// `n` future members and one spare device, every identity's prekeys published
    /// ([`OPK_BATCH`] one-time prekeys each; the spare device n + that many, so every
    /// add-ack finds one). Every group uses `config`.
    pub fn new(n: usize, seed: u64, config: GroupConfig, meter: M) -> Result<Self, LeanError> {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut directory = InMemoryPrekeyDirectory::new();
        let mut nodes = Vec::with_capacity(n + 1);
        for node in 0..=n {
            let mut identity = Identity::generate(&mut rng);
            let opks = if node == n { n + OPK_BATCH } else { OPK_BATCH };
            directory
                .publish_identity(&mut rng, &mut identity, NOW, opks)
                .map_err(|error| LeanError::Prekeys { node, error })?;
            nodes.push(Node { identity, group: None, expecting: false, backlog: Vec::new(), decrypted: 0 });
        }
        Ok(Network {
            rng,
            directory,
            nodes,
            members: n,
            queue: VecDeque::new(),
            traffic: Traffic::default(),
            config,
            meter,
        })
    }

    /// The spare device (node n), not a member until someone adds it.
    pub fn newcomer(&self) -> Dev {
        self.members
    }

    /// A new device, not a member until someone adds it: a fresh identity (from the
    /// network's generator) with its prekeys published, `one_time_prekeys` one-time
    /// prekeys among them (an add-ack that finds none uses the signed prekey). Returns its
    /// node, after every existing one. Broadcasts reach it only once it is added.
    pub fn add_device(&mut self, one_time_prekeys: usize) -> Result<Dev, LeanError> {
        let node = self.nodes.len();
        let mut identity = Identity::generate(&mut self.rng);
        self.directory
            .publish_identity(&mut self.rng, &mut identity, NOW, one_time_prekeys)
            .map_err(|error| LeanError::Prekeys { node, error })?;
        self.nodes.push(Node { identity, group: None, expecting: false, backlog: Vec::new(), decrypted: 0 });
        Ok(node)
    }

    /// Takes node `d`'s group away, with anything it was waiting for: from now on the
    /// device receives nothing (messages it sent that are still in flight are delivered).
    /// A long run retires the devices it removed, so that their states do not pile up.
    pub fn retire(&mut self, d: Dev) -> Option<Group> {
        let node = self.nodes.get_mut(d)?;
        node.expecting = false;
        node.backlog.clear();
        node.group.take()
    }

    /// Node `d`, if it exists.
    pub fn node(&self, d: Dev) -> Option<&Node> {
        self.nodes.get(d)
    }

    /// Every node, the spare device last.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The prekey directory.
    pub fn directory(&self) -> &InMemoryPrekeyDirectory {
        &self.directory
    }

    /// Traffic since the last [`Network::reset_costs`].
    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }

    /// The meter.
    pub fn meter(&self) -> &M {
        &self.meter
    }

    /// Forgets traffic, decrypted-message counts and the meter's costs.
    pub fn reset_costs(&mut self) {
        self.traffic = Traffic::default();
        for node in &mut self.nodes {
            node.decrypted = 0;
        }
        self.meter.reset();
    }

    /// Node 0 creates the group with nodes 1..n; delivery runs until quiet, so every
    /// member has processed the create and every ack.
    pub fn create(&mut self) -> Result<(), LeanError> {
        let n = self.members.max(1);
        let others: Vec<_> = self.nodes[1..n].iter().map(|d| d.identity.public_key()).collect();
        for node in &mut self.nodes[1..n] {
            node.expecting = true;
        }
        let config = self.config;
        let out = self.measured(0, |ctx, slot| {
            let (g, out) = Group::create(ctx, &others, config)?;
            *slot = Some(g);
            Ok::<_, GroupError>(out)
        });
        let out = out.map_err(|error| LeanError::Call { node: 0, call: "create", error })?;
        self.post(0, out)?;
        self.run_until_quiet()
    }

    /// Runs `f` on node `d`'s group, measured, and returns its result. Its output, if it
    /// has one, is not sent (see [`Network::perform`]).
    pub fn call<T>(
        &mut self,
        d: Dev,
        f: impl FnOnce(&mut Group, &mut Context<'_, ChaCha20Rng>) -> Result<T, GroupError>,
    ) -> Result<T, LeanError> {
        if self.nodes.get(d).and_then(|node| node.group.as_ref()).is_none() {
            return Err(LeanError::NoGroup(d));
        }
        let res = self.measured(d, |ctx, slot| match slot {
            Some(g) => f(g, ctx),
            None => Err(GroupError::Internal("no group")),
        });
        res.map_err(|error| LeanError::Call { node: d, call: "call", error })
    }

    /// Runs `f` on node `d`'s group, measured, and sends its output (delivered by
    /// [`Network::run_until_quiet`]).
    pub fn perform(
        &mut self,
        d: Dev,
        f: impl FnOnce(&mut Group, &mut Context<'_, ChaCha20Rng>) -> Result<Output, GroupError>,
    ) -> Result<(), LeanError> {
        let out = self.call(d, f)?;
        self.post(d, out)
    }

    /// Delivers until no message is in flight.
    pub fn run_until_quiet(&mut self) -> Result<(), LeanError> {
        while let Some(p) = self.queue.pop_front() {
            match p {
                Packet::Broadcast { from, bytes } => {
                    for to in 0..self.nodes.len() {
                        if to != from {
                            self.deliver(to, &bytes)?;
                        }
                    }
                }
                Packet::Welcome { to, bytes } => {
                    let config = self.config;
                    let out = self.measured(to, |ctx, slot| {
                        let (g, out) = Group::join(ctx, &bytes, config)?;
                        *slot = Some(g);
                        Ok::<_, GroupError>(out)
                    });
                    let out = out.map_err(|error| LeanError::Call { node: to, call: "join", error })?;
                    self.nodes[to].expecting = false;
                    self.post(to, out)?;
                    for b in std::mem::take(&mut self.nodes[to].backlog) {
                        self.deliver(to, &b)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Runs `f` for node `d` with its context and group slot, charged to `d`.
    fn measured<T>(&mut self, d: Dev, f: impl FnOnce(&mut Context<'_, ChaCha20Rng>, &mut Option<Group>) -> T) -> T {
        let Network { rng, directory, nodes, meter, .. } = self;
        let node = &mut nodes[d];
        let mut ctx = Context { rng, now: NOW, prekeys: directory, identity: &mut node.identity };
        let slot = &mut node.group;
        meter.measure(d, || f(&mut ctx, slot))
    }

    /// Checks a call's events and queues its messages.
    fn post(&mut self, from: Dev, out: Output) -> Result<(), LeanError> {
        for e in out.events {
            match e {
                Event::Message { ref plaintext, .. } if plaintext[..] == PAYLOAD[..] => self.nodes[from].decrypted += 1,
                Event::Rejected { .. }
                | Event::Undecryptable { .. }
                | Event::Dropped { .. }
                | Event::Equivocation { .. }
                | Event::GroupStateCorrupted { .. }
                | Event::PrekeyBundleNeeded { .. }
                | Event::Message { .. } => return Err(LeanError::UnexpectedEvent { node: from, event: Box::new(e) }),
                _ => {}
            }
        }
        for bytes in out.broadcast {
            self.traffic.count(kind_name(Group::peek(&bytes).ok().map(|p| p.kind)), bytes.len());
            self.queue.push_back(Packet::Broadcast { from, bytes });
        }
        for w in out.direct {
            let bytes = w.bytes;
            let to = self
                .nodes
                .iter()
                .position(|d| d.identity.public_key() == w.identity)
                .ok_or(LeanError::UnknownWelcome)?;
            self.traffic.welcome_bytes += bytes.len() as u64;
            self.traffic.count("welcome", bytes.len());
            self.nodes[to].expecting = true;
            self.queue.push_back(Packet::Welcome { to, bytes });
        }
        Ok(())
    }

    /// Delivers one broadcast envelope to node `to`.
    fn deliver(&mut self, to: Dev, bytes: &[u8]) -> Result<(), LeanError> {
        let node = &mut self.nodes[to];
        match node.group.as_ref().map(|g| *g.status() == Status::Active) {
            None if node.expecting => {
                if !Group::peek(bytes).is_ok_and(|p| p.kind == EnvelopeKind::Create) {
                    node.backlog.push(bytes.to_vec());
                    return Ok(());
                }
                let config = self.config;
                let out = self.measured(to, |ctx, slot| {
                    let (g, out) = Group::from_create(ctx, bytes, config)?;
                    *slot = Some(g);
                    Ok::<_, GroupError>(out)
                });
                let out = out.map_err(|error| LeanError::Call { node: to, call: "joining from the create", error })?;
                self.nodes[to].expecting = false;
                self.post(to, out)
            }
            // Not in the group, or removed: broadcasts do not reach it.
            None | Some(false) => Ok(()),
            Some(true) => {
                let res = self.measured(to, |ctx, slot| match slot {
                    Some(g) => g.receive(ctx, bytes),
                    None => Err(GroupError::Internal("no group")),
                });
                match res {
                    // The add envelope reaches its newcomer a second time after the Welcome.
                    Ok(out) if matches!(out.received, Some(Received::Duplicate | Received::OwnEnvelope)) => Ok(()),
                    Ok(Output { received: Some(Received::Dropped(reason)), .. }) => {
                        Err(LeanError::Call { node: to, call: "receive", error: GroupError::Dropped(reason) })
                    }
                    Ok(out) => self.post(to, out),
                    Err(error) => Err(LeanError::Call { node: to, call: "receive", error }),
                }
            }
        }
    }
}
