//! A harness for in-process nodes on loopback: each with its own data directory (a real
//! SQLite store). Every node's events flow into one channel, and tests wait on it, with a
//! bounded timeout, until a condition over what the nodes reported holds.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use dcgka::ids::GroupId;
use dcgka_net::{DataDir, Invitation, NodeConfig, NodeEvent, NodeHandle};
use libp2p::{Multiaddr, PeerId};
use tokio::sync::mpsc;

/// The bound on any one wait.
pub const WAIT: Duration = Duration::from_secs(60);

/// What one node has reported so far.
#[derive(Default, Debug)]
pub struct Seen {
    /// Decrypted messages: (group, sender name, text).
    pub messages: Vec<(GroupId, String, String)>,
    /// Groups joined.
    pub joined: Vec<GroupId>,
    /// Latest member names per group.
    pub members: BTreeMap<GroupId, Vec<String>>,
    /// Groups this node was removed from.
    pub removed: Vec<GroupId>,
    /// Peers that misbehaved, and peers banned.
    pub misbehaved: Vec<PeerId>,
    /// What each strike was for.
    pub strikes: Vec<String>,
    pub banned: Vec<PeerId>,
    /// Listening addresses.
    pub listening: Vec<Multiaddr>,
    /// Peers connected now.
    pub peers: BTreeSet<PeerId>,
    /// Mailboxes that hold this device's prekeys.
    pub stocked: BTreeSet<PeerId>,
    /// Errors no command waited for.
    pub errors: Vec<String>,
}

impl Seen {
    fn record(&mut self, e: &NodeEvent) {
        match e {
            NodeEvent::Message { gid, from, text, .. } => {
                self.messages.push((*gid, from.clone(), String::from_utf8_lossy(text).into_owned()));
            }
            NodeEvent::Joined(g) => self.joined.push(*g),
            NodeEvent::Members { gid, members } => {
                self.members.insert(*gid, members.iter().map(|m| m.name.clone()).collect());
            }
            NodeEvent::Removed(g) => self.removed.push(*g),
            NodeEvent::Misbehaved { peer, what, .. } => {
                self.misbehaved.push(*peer);
                self.strikes.push(what.clone());
            }
            NodeEvent::Banned(p) => self.banned.push(*p),
            NodeEvent::Listening(a) => self.listening.push(a.clone()),
            NodeEvent::Stocked { mailbox, .. } => {
                self.stocked.insert(*mailbox);
            }
            NodeEvent::Connected(p) => {
                self.peers.insert(*p);
            }
            NodeEvent::Disconnected(p) => {
                self.peers.remove(p);
            }
            NodeEvent::Error(e) => self.errors.push(e.clone()),
            _ => {}
        }
    }

    /// Texts received in `gid`.
    pub fn texts(&self, gid: &GroupId) -> Vec<String> {
        self.messages.iter().filter(|(g, _, _)| g == gid).map(|(_, _, t)| t.clone()).collect()
    }
}

/// One node under test.
pub struct TestNode {
    pub name: String,
    pub handle: NodeHandle,
    pub dir: Option<tempfile::TempDir>,
    pub addr: Multiaddr,
    pub seen: Seen,
    pub task: Option<tokio::task::JoinHandle<()>>,
    pub running: bool,
}

impl TestNode {
    pub fn peer(&self) -> PeerId {
        self.handle.peer_id()
    }

    pub fn short(&self) -> String {
        self.handle.name()
    }

    pub async fn invitation(&self) -> Invitation {
        self.handle.invitation().await.unwrap()
    }
}

/// Nodes, and the channel all their events come through.
pub struct Cluster {
    pub nodes: Vec<TestNode>,
    tx: mpsc::UnboundedSender<(usize, NodeEvent)>,
    rx: mpsc::UnboundedReceiver<(usize, NodeEvent)>,
}

pub fn config(peers: Vec<Multiaddr>) -> NodeConfig {
    NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        peers,
        sync_interval: Duration::from_millis(500),
        ack_delay: Duration::from_millis(50),
        heartbeat: Duration::from_millis(200),
        auto_consume: true,
        ..NodeConfig::default()
    }
}

impl Cluster {
    pub fn new() -> Cluster {
        let (tx, rx) = mpsc::unbounded_channel();
        Cluster { nodes: Vec::new(), tx, rx }
    }

    /// Starts a node in a fresh directory, dialling `peers`; returns its index.
    pub async fn start(&mut self, name: &str, peers: Vec<Multiaddr>) -> usize {
        let dir = tempfile::tempdir().unwrap();
        let i = self.nodes.len();
        self.launch(i, name, dir, config(peers)).await;
        i
    }

    /// Starts a node in a fresh directory with configuration `cfg`; returns its index.
    pub async fn start_with(&mut self, name: &str, cfg: NodeConfig) -> usize {
        let dir = tempfile::tempdir().unwrap();
        let i = self.nodes.len();
        self.launch(i, name, dir, cfg).await;
        i
    }

    /// Starts a mailbox node in a fresh directory; returns its index (its handle is a
    /// placeholder device handle: use `mailbox` to stop it).
    pub async fn start_mailbox(
        &mut self,
        peers: Vec<Multiaddr>,
    ) -> (dcgka_net::MailboxHandle, Multiaddr, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path()).unwrap();
        let (handle, mut events, _task) =
            dcgka_net::spawn_mailbox(data.mailbox().unwrap(), data.network_key().unwrap(), config(peers)).unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        let addr = loop {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(NodeEvent::Listening(a))) => break a,
                Ok(Some(_)) => {}
                _ => panic!("the mailbox did not listen"),
            }
        };
        let tx = self.tx.clone();
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                if tx.send((usize::MAX, e)).is_err() {
                    break;
                }
            }
        });
        let addr = addr.with(libp2p::multiaddr::Protocol::P2p(handle.peer_id()));
        (handle, addr, dir)
    }

    /// Starts node `i` (new, or again in its directory after a shutdown).
    async fn launch(&mut self, i: usize, name: &str, dir: tempfile::TempDir, cfg: NodeConfig) {
        let data = DataDir::new(dir.path()).unwrap();
        let device = data.device().unwrap();
        let key = data.network_key().unwrap();
        let (handle, mut events, task) = dcgka_net::spawn(device, key, cfg).unwrap();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                if tx.send((i, e)).is_err() {
                    break;
                }
            }
        });
        let node = TestNode {
            name: name.to_string(),
            handle,
            dir: Some(dir),
            addr: Multiaddr::empty(),
            seen: Seen::default(),
            task: Some(task),
            running: true,
        };
        if i == self.nodes.len() {
            self.nodes.push(node);
        } else {
            let old = std::mem::replace(&mut self.nodes[i], node);
            self.nodes[i].seen = old.seen;
            self.nodes[i].seen.listening.clear();
            self.nodes[i].seen.peers.clear();
        }
        self.until(&format!("{name} listening"), |c| !c.nodes[i].seen.listening.is_empty()).await;
        let a = self.nodes[i].seen.listening[0].clone();
        self.nodes[i].addr = a.with(libp2p::multiaddr::Protocol::P2p(self.nodes[i].peer()));
    }

    /// Stops node `i` cleanly (its directory is kept).
    pub async fn stop(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.handle.shutdown().await.unwrap();
        if let Some(t) = n.task.take() {
            t.await.unwrap();
        }
        n.running = false;
    }

    /// Starts node `i` again from its directory, dialling `peers`.
    pub async fn restart(&mut self, i: usize, peers: Vec<Multiaddr>) {
        let dir = self.nodes[i].dir.take().unwrap();
        let name = self.nodes[i].name.clone();
        self.launch(i, &name, dir, config(peers)).await;
    }

    /// Waits for events until `cond` holds (bounded by [`WAIT`]).
    pub async fn until(&mut self, what: &str, mut cond: impl FnMut(&Cluster) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            while let Ok((i, e)) = self.rx.try_recv() {
                if let Some(n) = self.nodes.get_mut(i) {
                    n.seen.record(&e);
                }
            }
            if cond(self) {
                return;
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some((i, e))) => {
                    if let Some(n) = self.nodes.get_mut(i) {
                        n.seen.record(&e);
                    }
                }
                Ok(None) => panic!("event channel closed waiting for {what}"),
                Err(_) => {
                    let state: Vec<String> = self
                        .nodes
                        .iter()
                        .map(|n| {
                            format!(
                                "{}: {} messages, members {:?}, strikes {:?}, {} bans",
                                n.name,
                                n.seen.messages.len(),
                                n.seen.members,
                                n.seen.strikes,
                                n.seen.banned.len()
                            )
                        })
                        .collect();
                    panic!("timed out waiting for {what}: {state:#?}");
                }
            }
        }
    }
}

impl Cluster {
    /// Waits (on events, bounded by [`WAIT`]) until every node in `who` holds the bundles
    /// of its fellow members of `gid` that it needs for a first contact, so that it can
    /// update, remove and add while they are unreachable.
    pub async fn until_bundles(&mut self, who: &[usize], gid: &GroupId) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let mut missing = Vec::new();
            for i in who {
                let m = self.nodes[*i].handle.missing_bundles(*gid).await.unwrap();
                if !m.is_empty() {
                    missing.push((self.nodes[*i].name.clone(), m));
                }
            }
            if missing.is_empty() {
                return;
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some((i, e))) => {
                    if let Some(n) = self.nodes.get_mut(i) {
                        n.seen.record(&e);
                    }
                }
                _ => panic!("timed out waiting for bundles: {missing:?} still missing"),
            }
        }
    }
}

/// Whether every node in `who` lists exactly `n` members of `gid`, the same ones.
pub fn same_members(c: &Cluster, who: &[usize], gid: &GroupId, n: usize) -> bool {
    let first = c.nodes[who[0]].seen.members.get(gid);
    first.is_some_and(|m| m.len() == n) && who.iter().all(|i| c.nodes[*i].seen.members.get(gid) == first)
}

/// Whether node `i` has read `text` in `gid`.
pub fn read(c: &Cluster, i: usize, gid: &GroupId, text: &str) -> bool {
    c.nodes[i].seen.messages.iter().any(|(g, _, t)| g == gid && t == text)
}
