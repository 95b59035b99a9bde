//! Partition and heal over real libp2p connections: the network splits (nodes block each
//! other), both sides add, remove and chat, and after healing every device converges and
//! has decrypted what the simulator's oracles say it must: every message, by every final
//! member that was in the sender's view when it was sent.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeSet;

use support::{Cluster, read, same_members};

#[tokio::test]
async fn both_sides_of_a_partition_add_remove_chat_and_converge() {
    let mut c = Cluster::new();
    let mut addrs = Vec::new();
    for name in ["A", "B", "C", "D", "E"] {
        let i = c.start(name, addrs.clone()).await;
        addrs.push(c.nodes[i].addr.clone());
    }
    let (a, b, cc, d, e) = (0, 1, 2, 3, 4);
    let gid = c.nodes[a].handle.create().await.unwrap();
    for i in [b, cc, d, e] {
        let inv = c.nodes[i].invitation().await;
        c.nodes[a].handle.add(gid, inv).await.unwrap();
    }
    c.until("five members everywhere", |c| same_members(c, &[a, b, cc, d, e], &gid, 5)).await;

    // Every device holds what it needs to write to every other on its own.
    c.until_bundles(&[a, b, cc, d, e], &gid).await;

    // Split {A, B, C} | {D, E}.
    let (left, right) = ([a, b, cc], [d, e]);
    for x in left {
        for y in right {
            let (px, py) = (c.nodes[x].peer(), c.nodes[y].peer());
            c.nodes[x].handle.block(py).await.unwrap();
            c.nodes[y].handle.block(px).await.unwrap();
        }
    }
    c.until("the sides disconnected", |c| {
        left.iter().all(|x| right.iter().all(|y| !c.nodes[*x].seen.peers.contains(&c.nodes[*y].peer())))
    })
    .await;

    // Left: F joins through A; A and F write; B updates.
    let f = c.start("F", vec![c.nodes[a].addr.clone()]).await;
    let inv = c.nodes[f].invitation().await;
    c.nodes[a].handle.add(gid, inv).await.unwrap();
    c.until("F joined on the left", |c| same_members(c, &[a, b, cc, f], &gid, 6)).await;
    c.nodes[b].handle.update(gid).await.unwrap();
    c.nodes[a].handle.send(gid, b"left: from A").await.unwrap();
    c.nodes[f].handle.send(gid, b"left: from F").await.unwrap();

    // Right: G joins through D; D removes E; G and D write.
    let g = c.start("G", vec![c.nodes[d].addr.clone()]).await;
    let inv = c.nodes[g].invitation().await;
    c.nodes[d].handle.add(gid, inv).await.unwrap();
    c.until("G joined on the right", |c| same_members(c, &[d, e, g], &gid, 6)).await;
    let e_name = c.nodes[e].short();
    c.nodes[d].handle.remove(gid, &e_name).await.unwrap();
    c.until("E removed on the right", |c| c.nodes[e].seen.removed.contains(&gid) && same_members(c, &[d, g], &gid, 5))
        .await;
    c.nodes[g].handle.send(gid, b"right: from G").await.unwrap();
    c.nodes[d].handle.send(gid, b"right: from D").await.unwrap();
    c.until("each side read its own side", |c| {
        [b, cc, f].iter().all(|i| read(c, *i, &gid, "left: from A"))
            && [a, b, cc].iter().all(|i| read(c, *i, &gid, "left: from F"))
            && read(c, d, &gid, "right: from G")
            && read(c, g, &gid, "right: from D")
    })
    .await;
    // Nothing crossed the partition.
    assert!(!read(&c, a, &gid, "right: from D") && !read(&c, d, &gid, "left: from A"));

    // Heal.
    for x in left {
        for y in right {
            let (px, py) = (c.nodes[x].peer(), c.nodes[y].peer());
            c.nodes[x].handle.unblock(py).await.unwrap();
            c.nodes[y].handle.unblock(px).await.unwrap();
        }
    }
    let finals = [a, b, cc, d, f, g];
    c.until("everyone agrees on six members after the heal", |c| same_members(c, &finals, &gid, 6)).await;
    // Every message, by every final member in the sender's view when it was sent (E is
    // no final member; F and G were not in each other's view).
    let must: [(&str, &[usize]); 4] = [
        ("left: from A", &[b, cc, d, f]),
        ("left: from F", &[a, b, cc, d]),
        ("right: from G", &[a, b, cc, d]),
        ("right: from D", &[a, b, cc, g]),
    ];
    c.until("every partition message read where it must be", |c| {
        must.iter().all(|(t, who)| who.iter().all(|i| read(c, *i, &gid, t)))
    })
    .await;
    // Members that never met (F and G) find each other's bundles through the others.
    c.until_bundles(&finals, &gid).await;
    // After the heal everyone writes once and everyone else reads it.
    for i in finals {
        let t = format!("healed: {}", c.nodes[i].name);
        c.nodes[i].handle.send(gid, t.as_bytes()).await.unwrap();
    }
    c.until("every post-heal message read by every other member", |c| {
        finals.iter().all(|i| {
            finals.iter().filter(|j| *j != i).all(|j| read(c, *i, &gid, &format!("healed: {}", c.nodes[*j].name)))
        })
    })
    .await;
    // The removed E read nothing sent after its removal, and every message arrived once.
    for t in ["right: from G", "right: from D"] {
        assert!(!read(&c, e, &gid, t), "E read {t:?} after its removal");
    }
    assert!(finals.iter().all(|j| !read(&c, e, &gid, &format!("healed: {}", c.nodes[*j].name))));
    for i in finals {
        let texts: Vec<&String> =
            c.nodes[i].seen.messages.iter().filter(|(g, _, _)| *g == gid).map(|(_, _, t)| t).collect();
        let set: BTreeSet<&String> = texts.iter().copied().collect();
        assert_eq!(set.len(), texts.len(), "{}: a message delivered twice", c.nodes[i].name);
    }
    for i in 0..c.nodes.len() {
        c.stop(i).await;
    }
}
