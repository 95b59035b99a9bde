//! Five nodes in one process, on loopback, each with its own SQLite store: they create a
//! group, chat, add and remove, and every device decrypts exactly what it should.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::{Cluster, same_members};

/// Whether every node in `who` has exactly these texts from group `gid`, each once.
fn has_exactly(c: &Cluster, who: &[usize], gid: &dcgka::ids::GroupId, texts: &[&str]) -> bool {
    who.iter().all(|i| {
        let mut got = c.nodes[*i].seen.texts(gid);
        got.sort();
        let mut want: Vec<String> = texts.iter().map(|s| s.to_string()).collect();
        want.sort();
        got == want
    })
}

#[tokio::test]
async fn five_nodes_create_chat_add_and_remove() {
    let mut c = Cluster::new();
    let mut addrs = Vec::new();
    for name in ["A", "B", "C", "D", "E"] {
        let i = c.start(name, addrs.clone()).await;
        addrs.push(c.nodes[i].addr.clone());
    }
    let (a, b, cc, d, e) = (0, 1, 2, 3, 4);

    // A creates the group and adds B, C and D from their invitations.
    let gid = c.nodes[a].handle.create().await.unwrap();
    for i in [b, cc, d] {
        let inv = c.nodes[i].invitation().await;
        c.nodes[a].handle.add(gid, inv).await.unwrap();
    }
    c.until("B, C and D joined and agree on four members", |c| {
        [b, cc, d].iter().all(|i| c.nodes[*i].seen.joined.contains(&gid)) && same_members(c, &[a, b, cc, d], &gid, 4)
    })
    .await;

    // Everyone writes; everyone else reads it, once.
    for i in [a, b, cc, d] {
        let text = format!("hello from {}", c.nodes[i].name);
        c.nodes[i].handle.send(gid, text.as_bytes()).await.unwrap();
    }
    let all = ["hello from A", "hello from B", "hello from C", "hello from D"];
    c.until("every message read by every other member", |c| {
        [a, b, cc, d].iter().all(|i| {
            let mine = format!("hello from {}", c.nodes[*i].name);
            let want: Vec<&str> = all.iter().copied().filter(|t| *t != mine).collect();
            has_exactly(c, &[*i], &gid, &want)
        })
    })
    .await;

    // B adds E; C removes D.
    let inv = c.nodes[e].invitation().await;
    c.nodes[b].handle.add(gid, inv).await.unwrap();
    c.until("E joined, five members everywhere", |c| {
        c.nodes[e].seen.joined.contains(&gid) && same_members(c, &[a, b, cc, d, e], &gid, 5)
    })
    .await;
    let d_name = c.nodes[d].short();
    c.nodes[cc].handle.remove(gid, &d_name).await.unwrap();
    c.until("D removed, four members at the others", |c| {
        c.nodes[d].seen.removed.contains(&gid) && same_members(c, &[a, b, cc, e], &gid, 4)
    })
    .await;
    assert!(!c.nodes[a].seen.members[&gid].contains(&d_name));

    // E writes after D's removal: A, B and C read it, D does not.
    c.nodes[e].handle.send(gid, b"welcome E, bye D").await.unwrap();
    c.nodes[a].handle.send(gid, b"last word").await.unwrap();
    c.until("the last messages read by the members", |c| {
        [a, b, cc].iter().all(|i| c.nodes[*i].seen.texts(&gid).contains(&"welcome E, bye D".to_string()))
            && [b, cc, e].iter().all(|i| c.nodes[*i].seen.texts(&gid).contains(&"last word".to_string()))
    })
    .await;
    // One more sync round everywhere, then D has read nothing after its removal.
    for n in &c.nodes {
        n.handle.sync().await.unwrap();
    }
    c.nodes[b].handle.send(gid, b"marker").await.unwrap();
    c.until("marker read", |c| [a, cc, e].iter().all(|i| c.nodes[*i].seen.texts(&gid).contains(&"marker".to_string())))
        .await;
    let d_texts = c.nodes[d].seen.texts(&gid);
    assert!(!d_texts.iter().any(|t| t == "welcome E, bye D" || t == "last word" || t == "marker"), "{d_texts:?}");
    // E joined after the first round: it read none of it, and every message arrived once.
    assert!(c.nodes[e].seen.texts(&gid).iter().all(|t| !t.starts_with("hello")));
    for i in [a, b, cc, e] {
        let texts = c.nodes[i].seen.texts(&gid);
        let mut dedup = texts.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), texts.len(), "{}: a message delivered twice: {texts:?}", c.nodes[i].name);
    }
    for i in 0..5 {
        c.stop(i).await;
    }
}

/// The groups a node runs are bounded: beyond its maximum it creates none, and a group it
/// joins beyond it has no gossip topic but is carried by sync.
#[tokio::test]
async fn a_node_beyond_its_maximum_of_groups_creates_none_and_syncs_the_ones_it_joins() {
    let mut c = Cluster::new();
    let a = c.start_with("A", dcgka_net::NodeConfig { max_groups: 2, ..support::config(Vec::new()) }).await;
    let b = c.start("B", vec![c.nodes[a].addr.clone()]).await;
    let first = c.nodes[a].handle.create().await.unwrap();
    c.nodes[a].handle.create().await.unwrap();
    let third = c.nodes[a].handle.create().await;
    assert!(matches!(third, Err(dcgka_net::NetError::TooManyGroups(2))), "{third:?}");
    assert_eq!(c.nodes[a].handle.groups().await.unwrap().len(), 2);
    assert!(c.nodes[a].handle.groups().await.unwrap().contains(&first));

    // B adds A to a third group: A joins, has no topic for it, and reads it by sync.
    let gid = c.nodes[b].handle.create().await.unwrap();
    let inv = c.nodes[a].invitation().await;
    c.nodes[b].handle.add(gid, inv).await.unwrap();
    c.until("A joined the third group", |c| same_members(c, &[a, b], &gid, 2)).await;
    assert!(c.nodes[a].seen.errors.iter().any(|e| e.contains("carried by sync alone")), "{:?}", c.nodes[a].seen.errors);
    c.nodes[b].handle.send(gid, b"by sync").await.unwrap();
    c.until("A read B's message by sync", |c| c.nodes[a].seen.texts(&gid) == ["by sync"]).await;
    assert_eq!(c.nodes[a].handle.groups().await.unwrap().len(), 3);
    for i in [a, b] {
        c.stop(i).await;
    }
}
