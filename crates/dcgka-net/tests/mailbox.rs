//! A device that was offline for everything, its own addition included, comes back and
//! catches up from a mailbox alone: no other member is online.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::{Cluster, read, same_members};

#[tokio::test]
async fn an_offline_device_catches_up_from_a_mailbox_with_no_member_online() {
    let mut c = Cluster::new();
    let (mailbox, m_addr, _m_dir) = c.start_mailbox(vec![]).await;

    // D comes online once, long enough to stock prekeys at the mailbox and hand out its
    // invitation (which names the mailbox), then goes away.
    let d = c.start("D", vec![m_addr.clone()]).await;
    c.until("D's prekeys stocked at the mailbox", |c| c.nodes[d].seen.stocked.contains(&mailbox.peer_id())).await;
    let inv_d = c.nodes[d].invitation().await;
    assert_eq!(inv_d.mailboxes.len(), 1, "the invitation names the mailbox");
    c.stop(d).await;

    // A and B, online with the mailbox, make the group and add D while it is away: its
    // bundle comes from the mailbox's stock, its Welcome waits there.
    let a = c.start("A", vec![m_addr.clone()]).await;
    let b = c.start("B", vec![m_addr.clone(), c.nodes[a].addr.clone()]).await;
    c.until("A and B see the mailbox", |c| [a, b].iter().all(|i| c.nodes[*i].seen.peers.contains(&mailbox.peer_id())))
        .await;
    let gid = c.nodes[a].handle.create().await.unwrap();
    c.nodes[a].handle.send(gid, b"before B").await.unwrap();
    let inv_b = c.nodes[b].invitation().await;
    c.nodes[a].handle.add(gid, inv_b).await.unwrap();
    c.until("B joined", |c| same_members(c, &[a, b], &gid, 2)).await;
    c.nodes[a].handle.send(gid, b"before D").await.unwrap();
    c.until("B read it", |c| read(c, b, &gid, "before D")).await;
    c.nodes[a].handle.add(gid, inv_d).await.unwrap();
    c.until("three members at A and B", |c| same_members(c, &[a, b], &gid, 3)).await;
    let after = ["after D 1", "after D 2", "after D 3"];
    c.nodes[a].handle.send(gid, after[0].as_bytes()).await.unwrap();
    c.nodes[b].handle.send(gid, after[1].as_bytes()).await.unwrap();
    c.nodes[b].handle.update(gid).await.unwrap();
    c.nodes[a].handle.send(gid, after[2].as_bytes()).await.unwrap();
    c.until("A and B read each other", |c| {
        read(c, b, &gid, after[0]) && read(c, a, &gid, after[1]) && read(c, b, &gid, after[2])
    })
    .await;
    // The mailbox got everything by gossip along with B (it serves the group since A
    // created it), and what it missed A and B deposited when they connected.
    c.stop(a).await;
    c.stop(b).await;

    // D comes back, dials only the mailbox, joins from the held Welcome and reads
    // everything sent after its addition.
    c.restart(d, vec![m_addr.clone()]).await;
    c.until("D joined and read everything after its addition", |c| {
        c.nodes[d].seen.joined.contains(&gid) && after.iter().all(|t| read(c, d, &gid, t))
    })
    .await;
    assert!(!read(&c, d, &gid, "before B") && !read(&c, d, &gid, "before D"));
    let names = c.nodes[d].seen.members.get(&gid).cloned().unwrap_or_default();
    assert_eq!(names.len(), 3, "{names:?}");
    c.stop(d).await;
    mailbox.shutdown().await.unwrap();
}
