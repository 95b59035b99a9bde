//! Flood tests of the device layer's limits (`dcgka_device::consts`): each floods a
//! limit, checks its own error (or the documented eviction), checks that what the device
//! holds stays within the bound, and that honest traffic still gets through afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use dcgka::consts::MAX_PLAINTEXT_SIZE;
use dcgka::ids::{GroupId, MemberId, SeqNo};
use dcgka_device::consts::{
    MAX_BACKLOG_BYTES, MAX_BACKLOG_ENVELOPES, MAX_SYNC_BUFFERED, MAX_SYNC_GROUPS, MAX_SYNC_RESPONSE_BYTES,
    MAX_SYNC_RESPONSE_ITEMS, MAX_SYNC_SENDERS,
};
use dcgka_device::{Device, GroupHeads, MemoryStore, Outcome, StateKey, Storage, SyncError, SyncRequest, SyncResponse};
use support::{NOW, Net};

/// The `i`-th of a sorted run of distinct 32-byte values.
fn nth(i: usize) -> [u8; 32] {
    let mut v = [0u8; 32];
    v[..8].copy_from_slice(&(i as u64).to_be_bytes());
    v
}

/// `to` syncs from `from` until nothing more comes; returns the size of each response.
fn sync_all(net: &mut Net, to: usize, from: usize) -> Vec<SyncResponse> {
    let mut seen = Vec::new();
    loop {
        let req = SyncRequest::from_bytes(&net.devs[to].sync_request().to_bytes()).unwrap();
        let resp = SyncResponse::from_bytes(&net.devs[from].answer_sync(&req).to_bytes()).unwrap();
        if resp.is_empty() {
            return seen;
        }
        net.run(to, |d, env| d.apply_sync(env, &resp));
        net.pump();
        let more = resp.more;
        seen.push(resp);
        if !more {
            return seen;
        }
    }
}

/// A group of A and C in which C missed `n` messages of `size` bytes from A.
fn missed(n: usize, size: usize, seed: u64) -> (Net, GroupId) {
    let mut net = Net::group(2, seed);
    let gid = net.gid(0);
    for i in 0..n {
        let mut pt = vec![0u8; size];
        pt[..8].copy_from_slice(&(i as u64).to_be_bytes());
        net.run(0, |d, env| d.send(env, &gid, &pt));
    }
    net.queue.clear();
    (net, gid)
}

#[test]
fn sync_request_bounds_refuse_floods_and_honest_requests_are_answered() {
    let (mut net, gid) = missed(1, 8, 21);
    let honest = net.devs[1].sync_request();
    let group = |heads: usize, buffered: usize| GroupHeads {
        gid,
        heads: (0..heads).map(|i| (MemberId(nth(i)), SeqNo(1))).collect(),
        buffered: (0..buffered).map(|i| (MemberId(nth(i)), SeqNo(2), [0; 16])).collect(),
    };
    let known = |n: usize| (1..=n).map(|i| GroupId(nth(i))).collect::<Vec<_>>();
    let with = |groups, known| SyncRequest { identity: honest.identity, groups, known };
    // Each bound holds at its value and refuses one more, with its own error.
    let cases = [
        (
            with(vec![], known(MAX_SYNC_GROUPS)),
            with(vec![], known(MAX_SYNC_GROUPS + 1)),
            SyncError::TooManyGroups(MAX_SYNC_GROUPS + 1),
        ),
        (
            with(vec![group(MAX_SYNC_SENDERS, 0)], vec![]),
            with(vec![group(MAX_SYNC_SENDERS + 1, 0)], vec![]),
            SyncError::TooManySenders(MAX_SYNC_SENDERS + 1),
        ),
        (
            with(vec![group(1, MAX_SYNC_BUFFERED)], vec![]),
            with(vec![group(1, MAX_SYNC_BUFFERED + 1)], vec![]),
            SyncError::TooManyBuffered(MAX_SYNC_BUFFERED + 1),
        ),
    ];
    let before = net.devs[0].store().load().unwrap().state;
    for (at, over, error) in cases {
        assert_eq!(SyncRequest::from_bytes(&at.to_bytes()).unwrap(), at);
        assert_eq!(SyncRequest::from_bytes(&over.to_bytes()).unwrap_err(), error);
        assert_eq!(over.check().unwrap_err(), error);
        // A request at the bound is answered within the response bounds.
        let resp = net.devs[0].answer_sync(&at);
        assert!(resp.len() <= MAX_SYNC_RESPONSE_ITEMS);
    }
    // Answering changes nothing the responder holds.
    assert_eq!(net.devs[0].store().load().unwrap().state, before);
    // The honest request still brings C what it missed.
    let got = sync_all(&mut net, 1, 0);
    assert_eq!(got.iter().map(SyncResponse::len).sum::<usize>(), 1);
    assert_eq!(net.plaintexts(1).len(), 1);
}

#[test]
fn sync_responses_hold_at_most_max_sync_response_items() {
    let n = MAX_SYNC_RESPONSE_ITEMS + 50;
    let (mut net, _) = missed(n, 8, 22);
    let got = sync_all(&mut net, 1, 0);
    assert_eq!(got.iter().map(SyncResponse::len).collect::<Vec<_>>(), vec![MAX_SYNC_RESPONSE_ITEMS, 50]);
    assert!(got[0].more && !got[1].more);
    // Everything arrived, in order.
    let pts = net.plaintexts(1);
    assert_eq!(pts.len(), n);
    assert!(pts.iter().enumerate().all(|(i, p)| p[..8] == (i as u64).to_be_bytes()));
    // A response over the bound is refused when decoded.
    let flood = SyncResponse { envelopes: vec![vec![1]; MAX_SYNC_RESPONSE_ITEMS + 1], welcomes: vec![], more: false };
    assert_eq!(
        SyncResponse::from_bytes(&flood.to_bytes()).unwrap_err(),
        SyncError::TooManyItems(MAX_SYNC_RESPONSE_ITEMS + 1)
    );
    let at = SyncResponse { envelopes: vec![vec![1]; MAX_SYNC_RESPONSE_ITEMS], welcomes: vec![], more: false };
    assert_eq!(SyncResponse::from_bytes(&at.to_bytes()).unwrap(), at);
}

#[test]
fn sync_responses_hold_at_most_max_sync_response_bytes() {
    let n = 6;
    let (mut net, _) = missed(n, MAX_PLAINTEXT_SIZE, 23);
    let got = sync_all(&mut net, 1, 0);
    assert!(got.len() >= 2, "more than one exchange");
    for resp in &got {
        let bytes: usize = resp.envelopes.iter().map(Vec::len).sum();
        assert!(bytes <= MAX_SYNC_RESPONSE_BYTES, "{bytes}");
    }
    assert_eq!(got.iter().map(SyncResponse::len).sum::<usize>(), n);
    assert_eq!(net.plaintexts(1).len(), n);
    // Several items over the bound are refused when decoded; one large item is not.
    let big = vec![0u8; MAX_SYNC_RESPONSE_BYTES / 2 + 1];
    let flood = SyncResponse { envelopes: vec![big.clone(), big.clone()], welcomes: vec![], more: true };
    assert_eq!(SyncResponse::from_bytes(&flood.to_bytes()).unwrap_err(), SyncError::TooManyBytes(2 * big.len()));
    let single = SyncResponse { envelopes: vec![vec![0u8; MAX_SYNC_RESPONSE_BYTES + 1]], welcomes: vec![], more: true };
    assert_eq!(SyncResponse::from_bytes(&single.to_bytes()).unwrap(), single);
}

/// The backlog record's size in the device's store.
fn stored_backlog(d: &Device) -> usize {
    d.store().load().unwrap().state.get(&StateKey::Backlog).map_or(0, |v| v.len())
}

#[test]
fn the_backlog_stays_within_both_bounds_and_the_device_joins_afterwards() {
    let mut net = Net::group(2, 24);
    let gid = net.gid(0);
    let small = net.call(0, |d, env| d.send(env, &gid, b"small")).transmit[0].bytes.clone();
    let big = net.call(0, |d, env| d.send(env, &gid, &vec![1u8; MAX_PLAINTEXT_SIZE])).transmit[0].bytes.clone();
    net.pump();
    // A third device in no group: every distinct envelope goes to its backlog.
    let mut id = dcgka::prekeys::Identity::generate(&mut net.rng);
    net.dir.publish_identity(&mut net.rng, &mut id, NOW, 4).unwrap();
    net.devs.push(Device::new(id, dcgka::group::GroupConfig::default(), MemoryStore::new()).unwrap());
    net.events.push(Vec::new());
    let variant = |bytes: &[u8], i: usize| {
        let mut e = bytes.to_vec();
        let n = e.len();
        e[n - 70..n - 66].copy_from_slice(&(i as u32).to_be_bytes());
        e
    };
    // MAX_BACKLOG_ENVELOPES: the oldest is evicted, the count stays at the bound.
    for i in 0..MAX_BACKLOG_ENVELOPES + 20 {
        let r = net.call(2, |d, env| d.receive(env, &variant(&small, i)));
        assert_eq!(r.outcomes, vec![Outcome::Backlogged]);
        assert!(net.devs[2].backlog_len() <= MAX_BACKLOG_ENVELOPES);
    }
    assert_eq!(net.devs[2].backlog_len(), MAX_BACKLOG_ENVELOPES);
    // MAX_BACKLOG_BYTES: envelopes of a megabyte each; the bytes stay under the bound.
    let per = big.len();
    for i in 0..MAX_BACKLOG_BYTES / per + 4 {
        let r = net.call(2, |d, env| d.receive(env, &variant(&big, i)));
        assert_eq!(r.outcomes, vec![Outcome::Backlogged]);
        // The stored record (a list of length-prefixed envelopes) stays within the bound.
        assert!(stored_backlog(&net.devs[2]) <= MAX_BACKLOG_BYTES + 4 * MAX_BACKLOG_ENVELOPES + 8);
    }
    assert_eq!(net.devs[2].backlog_len(), MAX_BACKLOG_BYTES / per, "only the newest big envelopes are kept");
    // Honest traffic: A adds the device, which joins and reads the group.
    let ik = net.devs[2].public_key();
    net.run(0, |d, env| d.add(env, &gid, ik));
    net.pump();
    assert_eq!(net.members(2), net.members(0));
    net.run(1, |d, env| d.send(env, &gid, b"after the flood"));
    net.pump();
    assert_eq!(net.plaintexts(2), vec![b"after the flood".to_vec()]);
    assert_eq!(net.devs[2].backlog_len(), 0);
}
