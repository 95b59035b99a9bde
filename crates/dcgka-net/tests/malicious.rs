//! A malicious peer on the network: it publishes garbage, forged, oversized and replayed
//! envelopes on a group's topic and sends garbage and oversized request frames. The nodes
//! reject all of it, strike the peer until they refuse it, and keep chatting undisturbed:
//! every honest message is read exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dcgka_net::behaviour::topic;
use dcgka_net::consts::{MAX_GOSSIP_BYTES, MAX_STRIKES};
use dcgka_net::wire::PROTOCOL;
use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, noise, tcp, yamux};
use support::{Cluster, read, same_members};
use tokio::sync::mpsc;

/// A codec that writes whatever bytes it is given, length prefix included.
#[derive(Clone, Default)]
struct Raw;

impl request_response::Codec for Raw {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<Vec<u8>> {
        let mut v = Vec::new();
        io.read_to_end(&mut v).await?;
        Ok(v)
    }
    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<Vec<u8>> {
        let mut v = Vec::new();
        io.take(1 << 20).read_to_end(&mut v).await?;
        Ok(v)
    }
    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> std::io::Result<()> {
        io.write_all(&req).await?;
        io.close().await
    }
    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        r: Vec<u8>,
    ) -> std::io::Result<()> {
        io.write_all(&r).await?;
        io.close().await
    }
}

#[derive(NetworkBehaviour)]
struct Attacker {
    gossipsub: gossipsub::Behaviour,
    rr: request_response::Behaviour<Raw>,
}

enum Order {
    Publish(Vec<u8>),
    Frame(PeerId, Vec<u8>),
}

/// The attacker's controls: orders in; envelopes seen, peers subscribed, and a note on
/// each new sighting out.
type Controls =
    (mpsc::UnboundedSender<Order>, Arc<Mutex<Vec<Vec<u8>>>>, Arc<Mutex<usize>>, mpsc::UnboundedReceiver<()>);

/// Runs the attacker: dials `peers`, subscribes to `t`, records the envelopes it sees
/// and the peers subscribed, and carries out orders.
fn spawn_attacker(peers: Vec<Multiaddr>, t: IdentTopic) -> Controls {
    let cfg = gossipsub::ConfigBuilder::default()
        .max_transmit_size(2 * MAX_GOSSIP_BYTES)
        .heartbeat_interval(Duration::from_millis(200))
        .build()
        .unwrap();
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|key| Attacker {
            gossipsub: gossipsub::Behaviour::new(MessageAuthenticity::Signed(key.clone()), cfg).unwrap(),
            rr: request_response::Behaviour::with_codec(Raw, [(PROTOCOL, ProtocolSupport::Full)], Default::default()),
        })
        .unwrap()
        .build();
    swarm.behaviour_mut().gossipsub.subscribe(&t).unwrap();
    for p in peers {
        swarm.dial(p).unwrap();
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (note, notes) = mpsc::unbounded_channel();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let subscribed = Arc::new(Mutex::new(0usize));
    let (seen2, sub2) = (seen.clone(), subscribed.clone());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                ev = swarm.select_next_some() => match ev {
                    SwarmEvent::Behaviour(AttackerEvent::Gossipsub(gossipsub::Event::Message { message, .. })) => {
                        seen2.lock().unwrap().push(message.data);
                        let _ = note.send(());
                    }
                    SwarmEvent::Behaviour(AttackerEvent::Gossipsub(gossipsub::Event::Subscribed { .. })) => {
                        *sub2.lock().unwrap() += 1;
                        let _ = note.send(());
                    }
                    _ => {}
                },
                o = rx.recv() => match o {
                    None => break,
                    Some(Order::Publish(b)) => { let _ = swarm.behaviour_mut().gossipsub.publish(t.clone(), b); }
                    Some(Order::Frame(p, b)) => { swarm.behaviour_mut().rr.send_request(&p, b); }
                },
            }
        }
    });
    (tx, seen, subscribed, notes)
}

/// Waits (bounded) on the attacker's notifications until `cond` holds.
async fn attacker_until(notes: &mut mpsc::UnboundedReceiver<()>, what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + support::WAIT;
    while !cond() {
        match tokio::time::timeout_at(deadline, notes.recv()).await {
            Ok(Some(())) => {}
            _ => panic!("timed out waiting for {what}"),
        }
    }
}

#[tokio::test]
async fn garbage_forged_oversized_and_replayed_frames_are_rejected_and_the_sender_refused() {
    let mut c = Cluster::new();
    let mut addrs = Vec::new();
    for name in ["A", "B", "C"] {
        let i = c.start(name, addrs.clone()).await;
        addrs.push(c.nodes[i].addr.clone());
    }
    let gid = c.nodes[0].handle.create().await.unwrap();
    for i in [1, 2] {
        let inv = c.nodes[i].invitation().await;
        c.nodes[0].handle.add(gid, inv).await.unwrap();
    }
    c.until("three members", |c| same_members(c, &[0, 1, 2], &gid, 3)).await;

    let (attack, seen, subscribed, mut notes) = spawn_attacker(addrs.clone(), topic(&gid));
    let x = {
        // The attacker's peer ID: the one peer the nodes see that is no node.
        let nodes: Vec<PeerId> = c.nodes.iter().map(|n| n.peer()).collect();
        c.until("the attacker connected to every node", |c| {
            c.nodes.iter().all(|n| n.seen.peers.iter().any(|p| !nodes.contains(p)))
        })
        .await;
        *c.nodes[0].seen.peers.iter().find(|p| !nodes.contains(p)).unwrap()
    };
    attacker_until(&mut notes, "the attacker sees the nodes' subscriptions", || *subscribed.lock().unwrap() >= 3).await;

    // An honest message the attacker records, to replay it.
    c.nodes[0].handle.send(gid, b"honest 1").await.unwrap();
    c.until("honest 1 read", |c| read(c, 1, &gid, "honest 1") && read(c, 2, &gid, "honest 1")).await;
    attacker_until(&mut notes, "the attacker saw it", || !seen.lock().unwrap().is_empty()).await;
    let genuine = seen.lock().unwrap().last().cloned().unwrap();

    // A forged second version of an envelope the nodes have processed: its last body byte
    // (before the 64-byte signature) changed, so its hash differs from the one they
    // retained for that sequence number and its signature fails. It is a forgery, not a
    // duplicate: the two nodes that received it strike the attacker for it. (Its sender
    // makes nothing of it: an envelope under its own tag that its own key does not
    // verify is an echo.)
    let mut second = genuine.clone();
    let at = second.len() - 65;
    second[at] ^= 1;
    attack.send(Order::Publish(second)).unwrap();
    c.until("two nodes struck the attacker for the forged second version", |c| {
        c.nodes.iter().filter(|n| n.seen.strikes.iter().any(|w| w == "envelope dropped: BadSignature")).count() >= 2
    })
    .await;

    // Forged: genuine envelopes of known members moved to the next sequence number of
    // their sender (byte 2 is the sequence number's varint: `version ‖ kind ‖ seq ‖
    // sender tag`), so that the nodes verify them at once, and their signatures fail.
    let forged: Vec<Vec<u8>> = {
        let seen = seen.lock().unwrap();
        let mut last: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = Default::default();
        for e in seen.iter().filter(|e| e.len() > 19 && e[1] != 1 && (2..120).contains(&e[2])) {
            let tag = e[3..19].to_vec();
            if last.get(&tag).is_none_or(|l| l[2] <= e[2]) {
                last.insert(tag, e.clone());
            }
        }
        last.into_values()
            .map(|mut f| {
                f[2] += 1;
                f
            })
            .collect()
    };
    assert!(!forged.is_empty());
    for f in forged {
        attack.send(Order::Publish(f)).unwrap();
    }
    // Garbage, an oversized envelope, and the replay.
    attack.send(Order::Publish(b"\x00garbage that decodes as nothing".to_vec())).unwrap();
    attack.send(Order::Publish(vec![7u8; MAX_GOSSIP_BYTES + 1024])).unwrap();
    attack.send(Order::Publish(genuine.clone())).unwrap();
    // Request frames: garbage under a valid length, and a length over the bound.
    for (i, n) in c.nodes.iter().enumerate() {
        let _ = i;
        attack.send(Order::Frame(n.peer(), [&5u32.to_be_bytes()[..], b"\xffjunk"].concat())).unwrap();
        attack.send(Order::Frame(n.peer(), u32::MAX.to_be_bytes().to_vec())).unwrap();
    }
    c.until("the nodes struck the attacker for its envelopes and its frames", |c| {
        // A forgery is checked where it is its sender's next envelope (a node does not
        // check one that claims to be its own, or one beyond a gap, until it is due).
        c.nodes.iter().any(|n| n.seen.strikes.iter().any(|w| w == "envelope dropped: BadSignature"))
            && c.nodes.iter().all(|n| {
                let s = &n.seen.strikes;
                s.iter().any(|w| w.starts_with("malformed envelope")) // the garbage
                    && s.iter().any(|w| w.contains("frame of")) // the oversized frame
                    && s.iter().any(|w| w.contains("unknown request")) // the garbage frame
            })
    })
    .await;
    // More garbage until every node refuses the attacker.
    for k in 0..(2 * MAX_STRIKES) {
        attack.send(Order::Publish(format!("\x01more garbage {k}").into_bytes())).unwrap();
        for n in &c.nodes {
            attack.send(Order::Frame(n.peer(), [&3u32.to_be_bytes()[..], &[0xee, 0xee, k as u8]].concat())).unwrap();
        }
    }
    c.until("every node banned the attacker", |c| c.nodes.iter().all(|n| n.seen.banned.contains(&x))).await;
    c.until("the attacker is disconnected everywhere", |c| c.nodes.iter().all(|n| !n.seen.peers.contains(&x))).await;

    // The nodes carry on: every honest message read exactly once, the replay included.
    c.nodes[1].handle.send(gid, b"honest 2").await.unwrap();
    c.nodes[2].handle.send(gid, b"honest 3").await.unwrap();
    c.until("honest 2 and 3 read", |c| {
        read(c, 0, &gid, "honest 2")
            && read(c, 2, &gid, "honest 2")
            && read(c, 0, &gid, "honest 3")
            && read(c, 1, &gid, "honest 3")
    })
    .await;
    for (i, n) in c.nodes.iter().enumerate() {
        let texts = n.seen.texts(&gid);
        let mut expected: Vec<&str> =
            ["honest 1", "honest 2", "honest 3"].into_iter().filter(|t| !t.ends_with(&(i + 1).to_string())).collect();
        expected.sort();
        let mut got: Vec<&str> = texts.iter().map(String::as_str).collect();
        got.sort();
        assert_eq!(got, expected, "{}", n.name);
    }
    for i in 0..3 {
        c.stop(i).await;
    }
}
