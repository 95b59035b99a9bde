//! Criterion benchmarks of one member's share of a group operation at n = 32: the
//! initiator's `update` call, a recipient processing that update (and sending its ack),
//! a member processing another member's ack of it, and sending and receiving a 32-byte
//! application message; and with coalesced acks, a recipient processing the update
//! (holding its ack) and a member processing another's batch `[ack, message]`.
//!
//! The group is set up once on [`dcgka_sim::lean`]'s in-memory network (every ack
//! processed); every measured call runs on a fresh clone of the member's state (cloning is
//! not measured).
//!
//! Run with `cargo bench -p dcgka-cli --bench operations`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use dcgka::group::{Context, Group, GroupConfig, Output};
use dcgka::prekeys::{Identity, InMemoryPrekeyDirectory};
use dcgka_sim::NOW;
use dcgka_sim::lean::{Network, PAYLOAD};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const N: usize = 32;

/// A group of `N` members, created by member 0, with every ack processed.
fn setup(config: GroupConfig) -> Network {
    let mut net = Network::new(N, 32, config, ()).unwrap();
    net.create().unwrap();
    net
}

/// A copy of member `d`'s state: its group, its identity and the prekey directory.
fn state_of(net: &Network, d: usize) -> (Group, Identity, InMemoryPrekeyDirectory) {
    let node = net.node(d).unwrap();
    (node.group().unwrap().clone(), node.identity().clone(), net.directory().clone())
}

/// Benchmarks `f` on fresh copies of member `d`'s state.
fn bench_call(
    c: &mut Criterion,
    name: &str,
    net: &Network,
    d: usize,
    rng: &mut ChaCha20Rng,
    f: impl Fn(&mut Group, &mut Context<'_, ChaCha20Rng>) -> Output,
) {
    c.bench_function(name, |b| {
        b.iter_batched(
            || state_of(net, d),
            |(mut g, mut id, mut dir)| {
                let mut ctx = Context { rng: &mut *rng, now: NOW, prekeys: &mut dir, identity: &mut id };
                f(&mut g, &mut ctx)
            },
            BatchSize::SmallInput,
        )
    });
}

/// The one envelope member `d`'s call broadcasts (its output is not delivered).
fn envelope(out: Output) -> Vec<u8> {
    let [bytes]: [Vec<u8>; 1] = out.broadcast.try_into().unwrap();
    bytes
}

fn operations(c: &mut Criterion) {
    let mut net = setup(GroupConfig::default());
    let rng = &mut ChaCha20Rng::seed_from_u64(1);

    // The initiator's update call: N - 1 2SM sends and one signature.
    bench_call(c, "n=32/update: initiator's call", &net, 0, rng, |g, ctx| g.update(ctx).unwrap());

    let update = envelope(net.call(0, |g, ctx| g.update(ctx)).unwrap());
    // A recipient processes the update: verify, 2SM receive, N - 1 member secrets, its ack.
    bench_call(c, "n=32/update: recipient processes it", &net, 1, rng, |g, ctx| {
        let out = g.receive(ctx, &update).unwrap();
        assert_eq!(out.broadcast.len(), 1, "one ack");
        out
    });

    // Member 2's ack of the update, as member 1 sees it after processing the update.
    let ack = envelope(net.call(2, |g, ctx| g.receive(ctx, &update)).unwrap());
    let _ = net.call(1, |g, ctx| g.receive(ctx, &update)).unwrap();
    bench_call(c, "n=32/update: a member processes another's ack", &net, 1, rng, |g, ctx| {
        g.receive(ctx, &ack).unwrap()
    });

    // Application messages (32-byte payload) in a freshly set-up group: send at member 0,
    // receive at member 1.
    let mut net = setup(GroupConfig::default());
    bench_call(c, "n=32/message: send 32 B", &net, 0, rng, |g, ctx| g.send(ctx, &PAYLOAD).unwrap());
    let msg = envelope(net.call(0, |g, ctx| g.send(ctx, &PAYLOAD)).unwrap());
    bench_call(c, "n=32/message: receive 32 B", &net, 1, rng, |g, ctx| g.receive(ctx, &msg).unwrap());
}

/// Coalesced acks: the update's recipients hold their acks; member 2's next message
/// carries its ack in one batch under one signature.
fn coalesced(c: &mut Criterion) {
    let mut net = setup(GroupConfig { coalesce_acks: true, ..GroupConfig::default() });
    let rng = &mut ChaCha20Rng::seed_from_u64(2);
    let update = envelope(net.call(0, |g, ctx| g.update(ctx)).unwrap());
    bench_call(c, "n=32/update, coalesced: recipient processes it (ack held)", &net, 1, rng, |g, ctx| {
        let out = g.receive(ctx, &update).unwrap();
        assert!(out.broadcast.is_empty() && g.held_acks() == 1, "the ack is held");
        out
    });
    for d in [1, 2] {
        assert!(net.call(d, |g, ctx| g.receive(ctx, &update)).unwrap().broadcast.is_empty());
    }
    let batch = envelope(net.call(2, |g, ctx| g.send(ctx, &PAYLOAD)).unwrap());
    bench_call(
        c,
        "n=32/update, coalesced: a member processes another's ack and message batch",
        &net,
        1,
        rng,
        |g, ctx| g.receive(ctx, &batch).unwrap(),
    );
}

criterion_group!(benches, operations, coalesced);
criterion_main!(benches);
