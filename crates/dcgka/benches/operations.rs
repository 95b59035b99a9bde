//! Criterion benchmarks of one member's share of a group operation at n = 32: the
//! initiator's `update` call, a recipient processing that update (and sending its ack),
//! a member processing another member's ack of it, and sending and receiving a 32-byte
//! application message; and with coalesced acks, a recipient processing the update
//! (holding its ack) and a member processing another's batch `[ack, message]`.
//!
//! The group is set up once through the public API with an in-memory FIFO network; every
//! measured call runs on a fresh clone of the member's state (cloning is not measured).
//!
//! Run with `cargo bench -p dcgka --bench operations`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use dcgka::group::{Context, Group, GroupConfig, GroupError};
use dcgka::prekeys::{Identity, InMemoryPrekeyDirectory};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const NOW: u64 = 1_800_000_000;
const N: usize = 32;

/// A group of `N` members, created by member 0, with every ack processed.
struct Setup {
    rng: ChaCha20Rng,
    directory: InMemoryPrekeyDirectory,
    ids: Vec<Identity>,
    groups: Vec<Group>,
}

impl Setup {
    fn new() -> Setup {
        Setup::with(GroupConfig::default())
    }

    fn with(config: GroupConfig) -> Setup {
        let mut rng = ChaCha20Rng::seed_from_u64(32);
        let mut directory = InMemoryPrekeyDirectory::new();
        let mut ids: Vec<Identity> = (0..N).map(|_| Identity::generate(&mut rng)).collect();
        for id in &mut ids {
            directory.publish_identity(&mut rng, id, NOW, 64).unwrap();
        }
        let others: Vec<_> = ids[1..].iter().map(Identity::public_key).collect();
        let mut ctx = Context { rng: &mut rng, now: NOW, prekeys: &mut directory, identity: &mut ids[0] };
        let (g0, out) = Group::create(&mut ctx, &others, config).unwrap();
        let mut groups = vec![g0];
        let mut queue: VecDeque<(usize, Vec<u8>)> = VecDeque::new();
        let create = out.broadcast[0].clone();
        for (i, id) in ids.iter_mut().enumerate().skip(1) {
            let mut ctx = Context { rng: &mut rng, now: NOW, prekeys: &mut directory, identity: id };
            let (g, out) = Group::from_create(&mut ctx, &create, config).unwrap();
            groups.push(g);
            queue.extend(out.broadcast.into_iter().map(|b| (i, b)));
        }
        let mut s = Setup { rng, directory, ids, groups };
        s.deliver(queue);
        s
    }

    /// FIFO delivery of broadcasts (and the replies they cause) until quiet.
    fn deliver(&mut self, mut queue: VecDeque<(usize, Vec<u8>)>) {
        while let Some((from, bytes)) = queue.pop_front() {
            for to in (0..N).filter(|t| *t != from) {
                let out = self.receive(to, &bytes).unwrap();
                queue.extend(out.into_iter().map(|b| (to, b)));
            }
        }
    }

    fn receive(&mut self, to: usize, bytes: &[u8]) -> Result<Vec<Vec<u8>>, GroupError> {
        let mut ctx =
            Context { rng: &mut self.rng, now: NOW, prekeys: &mut self.directory, identity: &mut self.ids[to] };
        Ok(self.groups[to].receive(&mut ctx, bytes)?.broadcast)
    }
}

fn operations(c: &mut Criterion) {
    let mut s = Setup::new();
    let mut rng = ChaCha20Rng::seed_from_u64(1);

    // The initiator's update call: N - 1 2SM sends and one signature.
    c.bench_function("n=32/update: initiator's call", |b| {
        b.iter_batched(
            || (s.groups[0].clone(), s.ids[0].clone(), s.directory.clone()),
            |(mut g, mut id, mut dir)| {
                let mut ctx = Context { rng: &mut rng, now: NOW, prekeys: &mut dir, identity: &mut id };
                g.update(&mut ctx).unwrap()
            },
            BatchSize::SmallInput,
        )
    });

    let update = {
        let mut ctx = Context { rng: &mut s.rng, now: NOW, prekeys: &mut s.directory, identity: &mut s.ids[0] };
        s.groups[0].update(&mut ctx).unwrap().broadcast.pop().unwrap()
    };
    // A recipient processes the update: verify, 2SM receive, N - 1 member secrets, its ack.
    c.bench_function("n=32/update: recipient processes it", |b| {
        b.iter_batched(
            || (s.groups[1].clone(), s.ids[1].clone(), s.directory.clone()),
            |(mut g, mut id, mut dir)| {
                let mut ctx = Context { rng: &mut rng, now: NOW, prekeys: &mut dir, identity: &mut id };
                let out = g.receive(&mut ctx, &update).unwrap();
                assert_eq!(out.broadcast.len(), 1, "one ack");
                out
            },
            BatchSize::SmallInput,
        )
    });

    // Member 2's ack of the update, as member 1 sees it after processing the update.
    let ack = s.receive(2, &update).unwrap().pop().unwrap();
    s.receive(1, &update).unwrap();
    c.bench_function("n=32/update: a member processes another's ack", |b| {
        b.iter_batched(
            || (s.groups[1].clone(), s.ids[1].clone(), s.directory.clone()),
            |(mut g, mut id, mut dir)| {
                let mut ctx = Context { rng: &mut rng, now: NOW, prekeys: &mut dir, identity: &mut id };
                g.receive(&mut ctx, &ack).unwrap()
            },
            BatchSize::SmallInput,
        )
    });

    // Application messages (32-byte payload) in a freshly set-up group: send at member 0,
    // receive at member 1.
    let mut s = Setup::new();
    let payload = [0x5au8; 32];
    c.bench_function("n=32/message: send 32 B", |b| {
        b.iter_batched(
            || (s.groups[0].clone(), s.ids[0].clone(), s.directory.clone()),
            |(mut g, mut id, mut dir)| {
                let mut ctx = Context { rng: &mut rng, now: NOW, prekeys: &mut dir, identity: &mut id };
                g.send(&mut ctx, &payload).unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    let msg = {
        let mut ctx = Context { rng: &mut s.rng, now: NOW, prekeys: &mut s.directory, identity: &mut s.ids[0] };
        s.groups[0].send(&mut ctx, &payload).unwrap().broadcast.pop().unwrap()
    };
    c.bench_function("n=32/message: receive 32 B", |b| {
        b.iter_batched(
            || (s.groups[1].clone(), s.ids[1].clone(), s.directory.clone()),
            |(mut g, mut id, mut dir)| {
                let mut ctx = Context { rng: &mut rng, now: NOW, prekeys: &mut dir, identity: &mut id };
                g.receive(&mut ctx, &msg).unwrap()
            },
            BatchSize::SmallInput,
        )
    });
}

/// Coalesced acks: the update's recipients hold their acks; member 2's next message
/// carries its ack in one batch under one signature.
fn coalesced(c: &mut Criterion) {
    let mut s = Setup::with(GroupConfig { coalesce_acks: true, ..GroupConfig::default() });
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let update = {
        let mut ctx = Context { rng: &mut s.rng, now: NOW, prekeys: &mut s.directory, identity: &mut s.ids[0] };
        s.groups[0].update(&mut ctx).unwrap().broadcast.pop().unwrap()
    };
    c.bench_function("n=32/update, coalesced: recipient processes it (ack held)", |b| {
        b.iter_batched(
            || (s.groups[1].clone(), s.ids[1].clone(), s.directory.clone()),
            |(mut g, mut id, mut dir)| {
                let mut ctx = Context { rng: &mut rng, now: NOW, prekeys: &mut dir, identity: &mut id };
                let out = g.receive(&mut ctx, &update).unwrap();
                assert!(out.broadcast.is_empty() && g.held_acks() == 1, "the ack is held");
                out
            },
            BatchSize::SmallInput,
        )
    });
    assert!(s.receive(1, &update).unwrap().is_empty());
    assert!(s.receive(2, &update).unwrap().is_empty());
    let batch = {
        let mut ctx = Context { rng: &mut s.rng, now: NOW, prekeys: &mut s.directory, identity: &mut s.ids[2] };
        s.groups[2].send(&mut ctx, &[0x5a; 32]).unwrap().broadcast.pop().unwrap()
    };
    c.bench_function("n=32/update, coalesced: a member processes another's ack and message batch", |b| {
        b.iter_batched(
            || (s.groups[1].clone(), s.ids[1].clone(), s.directory.clone()),
            |(mut g, mut id, mut dir)| {
                let mut ctx = Context { rng: &mut rng, now: NOW, prekeys: &mut dir, identity: &mut id };
                g.receive(&mut ctx, &batch).unwrap()
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, operations, coalesced);
criterion_main!(benches);
