//! Many peers on one address: sixteen nodes on 127.0.0.1, all dialling one hub, with
//! periodic sync off (an hour). Gossip alone must carry the group: gossipsub's default IP
//! colocation penalty would graylist every peer of the hub past ten on one address, and
//! the group would then hear nothing until a sync; and with gossipsub's default gossip
//! factor, a leaf outside the hub's mesh could miss a message for good (2 runs in 10).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::time::Duration;

use dcgka_net::{DataDir, Multiaddr, NodeConfig, NodeEvent};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(60);
const NODES: usize = 16;

#[tokio::test]
async fn a_hub_with_fifteen_peers_on_one_address_gossips() {
    let dirs: Vec<tempfile::TempDir> = (0..NODES).map(|_| tempfile::tempdir().unwrap()).collect();
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, NodeEvent)>();
    let mut handles = Vec::new();
    let mut tasks = Vec::new();
    let mut hub: Option<Multiaddr> = None;
    for (i, dir) in dirs.iter().enumerate() {
        let data = DataDir::new(dir.path()).unwrap();
        let config = NodeConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            peers: hub.iter().cloned().collect(),
            sync_interval: Duration::from_secs(3600),
            ack_delay: Duration::from_millis(50),
            heartbeat: Duration::from_millis(200),
            ..NodeConfig::default()
        };
        let (handle, mut events, task) =
            dcgka_net::spawn(data.device().unwrap(), data.network_key().unwrap(), config).unwrap();
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                if tx.send((i, e)).is_err() {
                    break;
                }
            }
        });
        if i == 0 {
            let addr = loop {
                match tokio::time::timeout(WAIT, rx.recv()).await.unwrap() {
                    Some((0, NodeEvent::Listening(a))) => break a,
                    Some(_) => {}
                    None => panic!("no events"),
                }
            };
            hub = Some(format!("{addr}/p2p/{}", handle.peer_id()).parse().unwrap());
        }
        handles.push(handle);
        tasks.push(task);
    }

    // The hub makes the group and adds everyone.
    let gid = handles[0].create().await.unwrap();
    for i in 1..NODES {
        let inv = handles[i].invitation().await.unwrap();
        handles[0].add(gid, inv).await.unwrap();
        loop {
            match tokio::time::timeout(WAIT, rx.recv()).await.expect("a join") {
                Some((j, NodeEvent::Joined(g))) if j == i && g == gid => break,
                Some(_) => {}
                None => panic!("no events"),
            }
        }
    }

    // Several leaves write; every other node reads each message, by gossip through the hub.
    // A leaf outside the hub's mesh hears of a message only through the hub's IHAVE
    // gossip, so this checks that no subscriber is left out of it.
    let writers = [5, 9, 13, 14, 15];
    for &w in &writers {
        handles[w].send(gid, format!("hello crowd from {w}").as_bytes()).await.unwrap();
    }
    let mut read: BTreeSet<(usize, usize)> = BTreeSet::new();
    let expected = writers.len() * (NODES - 1);
    let deadline = tokio::time::Instant::now() + WAIT;
    while read.len() < expected {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((j, NodeEvent::Message { gid: g, text, .. }))) if g == gid => {
                let text = String::from_utf8(text).unwrap();
                let w: usize = text.strip_prefix("hello crowd from ").unwrap().parse().unwrap();
                assert_ne!(j, w, "node {j} read its own message");
                assert!(read.insert((w, j)), "node {j} read the message of {w} twice");
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("no events"),
            Err(_) => {
                let missing: Vec<(usize, usize)> = writers
                    .iter()
                    .flat_map(|&w| (0..NODES).filter(move |&j| j != w).map(move |j| (w, j)))
                    .filter(|p| !read.contains(p))
                    .collect();
                panic!("{} of {expected} reads happened; (writer, reader) missing: {missing:?}", read.len())
            }
        }
    }

    for h in &handles {
        h.shutdown().await.unwrap();
    }
    for t in tasks {
        t.await.unwrap();
    }
}
