//! A mailbox node: a [`Mailbox`] (`dcgka-mailbox`) on a libp2p swarm. It holds no group
//! key. Devices ask it to serve their groups ([`Request::Serve`]): it subscribes to their
//! topics and keeps every envelope published there, takes what devices deposit, answers
//! sync requests from what it holds, keeps Welcomes for offline devices and hands out
//! their stocked prekeys, each one-time prekey at most once.
//!
//! Anyone may ask a mailbox to serve a group or deposit envelopes: what it keeps is
//! bounded per group and per identity (the mailbox crate's limits), it checks that an
//! envelope decodes before keeping it, and peers that send garbage are struck and, after
//! [`MAX_STRIKES`](crate::consts::MAX_STRIKES), refused.

use dcgka::ids::GroupId;
use dcgka_mailbox::{Deposit, Mailbox, MailboxError};
use libp2p::futures::StreamExt;
use libp2p::gossipsub::{self, MessageAcceptance, TopicHash};
use libp2p::identity::Keypair;
use libp2p::request_response::{self, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::{PeerId, Swarm};
use std::collections::BTreeMap;
use tokio::sync::{mpsc, oneshot};

use crate::NetError;
use crate::behaviour::{AGENT_MAILBOX, Behaviour, BehaviourEvent, build_swarm, topic};
use crate::node::{NodeConfig, NodeEvent, Strikes, peer_of, unix_now};
use crate::wire::{HeldHeads, Request, Response};

/// The application's side of a running mailbox.
#[derive(Clone, Debug)]
pub struct MailboxHandle {
    stop: mpsc::UnboundedSender<oneshot::Sender<()>>,
    peer_id: PeerId,
}

impl MailboxHandle {
    /// The mailbox's network identity.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Stops the mailbox (its file keeps what it holds).
    pub async fn shutdown(&self) -> Result<(), NetError> {
        let (tx, rx) = oneshot::channel();
        self.stop.send(tx).map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)
    }
}

struct MailboxNode {
    swarm: Swarm<Behaviour>,
    mailbox: Mailbox,
    config: NodeConfig,
    events: mpsc::UnboundedSender<NodeEvent>,
    topics: BTreeMap<TopicHash, GroupId>,
    strikes: Strikes,
    connected: BTreeMap<PeerId, Vec<libp2p::Multiaddr>>,
    /// Connected peers that proved which identity they speak for (by a signature of that
    /// identity over their peer ID, in their serve request).
    attested: BTreeMap<PeerId, dcgka::IdentityKey>,
}

/// Starts a mailbox node on the current tokio runtime. Its events are those of
/// [`NodeEvent`] that concern the network (listening, connections, misbehaving peers,
/// errors) and [`NodeEvent::Stored`].
pub fn spawn_mailbox(
    mailbox: Mailbox,
    key: Keypair,
    config: NodeConfig,
) -> Result<(MailboxHandle, mpsc::UnboundedReceiver<NodeEvent>, tokio::task::JoinHandle<()>), NetError> {
    let peer_id = key.public().to_peer_id();
    let mut swarm = build_swarm(key, AGENT_MAILBOX.to_string(), config.heartbeat)?;
    for addr in &config.listen {
        swarm.listen_on(addr.clone()).map_err(|e| NetError::Listen(format!("{addr}: {e}")))?;
    }
    let (stop_tx, stop_rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let mut node = MailboxNode {
        swarm,
        mailbox,
        config,
        events: ev_tx,
        topics: BTreeMap::new(),
        strikes: Strikes::default(),
        connected: BTreeMap::new(),
        attested: BTreeMap::new(),
    };
    match node.mailbox.served() {
        Ok(gids) => {
            for gid in gids {
                node.subscribe(gid);
            }
        }
        Err(e) => return Err(NetError::Mailbox(e)),
    }
    for addr in node.config.peers.clone() {
        let _ = node.swarm.dial(addr);
    }
    let task = tokio::spawn(node.run(stop_rx));
    Ok((MailboxHandle { stop: stop_tx, peer_id }, ev_rx, task))
}

impl MailboxNode {
    async fn run(mut self, mut stop: mpsc::UnboundedReceiver<oneshot::Sender<()>>) {
        let mut tick = tokio::time::interval(self.config.sync_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm(ev),
                s = stop.recv() => {
                    if let Some(done) = s {
                        let _ = done.send(());
                    }
                    break;
                }
                _ = tick.tick() => self.redial(),
            }
        }
    }

    fn emit(&self, e: NodeEvent) {
        let _ = self.events.send(e);
    }

    fn subscribe(&mut self, gid: GroupId) {
        let t = topic(&gid);
        self.topics.insert(t.hash(), gid);
        if let Err(e) = self.swarm.behaviour_mut().gossipsub.subscribe(&t) {
            self.emit(NodeEvent::Error(format!("cannot subscribe to a served group: {e}")));
        }
    }

    fn redial(&mut self) {
        for addr in self.config.peers.clone() {
            let connected = match peer_of(&addr) {
                Some(p) => self.connected.contains_key(&p),
                None => self.connected.values().any(|a| a.contains(&addr)),
            };
            if !connected {
                let _ = self.swarm.dial(addr);
            }
        }
    }

    fn strike(&mut self, peer: PeerId, what: String) {
        let events = self.strikes.strike(&mut self.swarm, peer, what);
        for e in events {
            self.emit(e);
        }
    }

    fn on_swarm(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => self.emit(NodeEvent::Listening(address)),
            SwarmEvent::ConnectionEstablished { peer_id, endpoint, num_established, .. } => {
                let addrs = self.connected.entry(peer_id).or_default();
                if endpoint.is_dialer() {
                    addrs.push(endpoint.get_remote_address().clone());
                }
                if num_established.get() == 1 {
                    self.emit(NodeEvent::Connected(peer_id));
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                self.connected.remove(&peer_id);
                self.attested.remove(&peer_id);
                self.emit(NodeEvent::Disconnected(peer_id));
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                let acceptance = match self.topics.get(&message.topic).copied() {
                    None => MessageAcceptance::Ignore,
                    Some(gid) => match self.mailbox.deposit(&gid, &message.data) {
                        Ok(d) => {
                            if matches!(d, Deposit::Stored { .. }) {
                                self.emit(NodeEvent::Stored { gid, envelopes: 1 });
                            }
                            MessageAcceptance::Accept
                        }
                        Err(MailboxError::Malformed(e)) => {
                            self.strike(propagation_source, format!("malformed envelope: {e}"));
                            MessageAcceptance::Reject
                        }
                        Err(e) => {
                            tracing::debug!("deposit from {propagation_source}: {e}");
                            MessageAcceptance::Ignore
                        }
                    },
                };
                self.swarm.behaviour_mut().gossipsub.report_message_validation_result(
                    &message_id,
                    &propagation_source,
                    acceptance,
                );
            }
            SwarmEvent::Behaviour(BehaviourEvent::Rr(request_response::Event::Message {
                peer,
                message: request_response::Message::Request { request, channel, .. },
                ..
            })) => self.on_request(peer, request, channel),
            _ => {}
        }
    }

    fn on_request(&mut self, peer: PeerId, request: Request, channel: ResponseChannel<Response>) {
        let now = unix_now();
        let resp = match request {
            // Only a peer that proved it speaks for the request's identity may have that
            // identity's Welcomes deleted.
            Request::Sync(req) => match if self.attested.get(&peer) == Some(&req.identity) {
                self.mailbox.answer_sync(&req)
            } else {
                self.mailbox.answer_sync_guest(&req)
            } {
                Ok(page) => Response::Sync(page),
                Err(e) => Response::Refused(e.to_string()),
            },
            Request::Direct { to, gid, bytes } => match self.mailbox.hold_direct(&to, &gid, &bytes) {
                Ok(()) => Response::Done,
                Err(MailboxError::Malformed(e)) => {
                    self.strike(peer, format!("malformed Welcome: {e}"));
                    Response::Refused("malformed".into())
                }
                Err(e) => Response::Refused(e.to_string()),
            },
            Request::Bundle { of } => match self.mailbox.bundle(&of, now) {
                Ok(b) => Response::Bundle(b.map(Box::new)),
                Err(e) => Response::Refused(e.to_string()),
            },
            Request::Serve { gids, identity, attestation } => {
                if attestation.verify(&identity, &peer.to_bytes()).is_ok() {
                    self.attested.insert(peer, identity);
                    self.serve(gids, &identity)
                } else {
                    self.strike(peer, "a serve request with a false attestation".into());
                    Response::Refused("attestation".into())
                }
            }
            Request::Deposit { gid, envelopes } => {
                let mut stored = 0;
                let mut refused = None;
                for e in &envelopes {
                    match self.mailbox.deposit(&gid, e) {
                        Ok(Deposit::Stored { .. }) => stored += 1,
                        Ok(_) => {}
                        Err(MailboxError::Malformed(err)) => {
                            self.strike(peer, format!("malformed envelope: {err}"));
                            refused = Some("malformed".to_string());
                            break;
                        }
                        Err(err) => {
                            refused = Some(err.to_string());
                            break;
                        }
                    }
                }
                if stored > 0 {
                    self.emit(NodeEvent::Stored { gid, envelopes: stored });
                }
                refused.map_or(Response::Done, Response::Refused)
            }
            Request::Stock { spk, opks } => match self.mailbox.stock_prekeys(spk, opks, now) {
                Ok(_) => Response::Done,
                Err(e) => Response::Refused(e.to_string()),
            },
            Request::Invalid(why) => {
                self.strike(peer, format!("invalid request: {why}"));
                Response::Refused("invalid request".into())
            }
        };
        let _ = self.swarm.behaviour_mut().rr.send_response(channel, resp);
    }

    /// Serves `gids` and says what is held of each and of `identity`'s prekey stock.
    fn serve(&mut self, gids: Vec<GroupId>, identity: &dcgka::IdentityKey) -> Response {
        let mut groups = Vec::new();
        for gid in gids {
            match self.mailbox.serve(gid) {
                Ok(true) => self.subscribe(gid),
                Ok(false) => {}
                Err(e) => return Response::Refused(e.to_string()),
            }
            match self.mailbox.heads(&gid) {
                Ok(h) => groups.push(HeldHeads {
                    gid,
                    tags: h.senders.iter().map(|s| (s.tag.0, s.lowest.0, s.head.0)).collect(),
                    firsts: h.first_envelopes,
                }),
                Err(e) => return Response::Refused(e.to_string()),
            }
        }
        let stock = self
            .mailbox
            .usage()
            .ok()
            .and_then(|u| u.identity(identity).map(|i| i.one_time_prekeys as u64))
            .unwrap_or(0);
        Response::Heads { groups, stock }
    }
}
