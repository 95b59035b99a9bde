//! State snapshots (`Group::snapshot` / `Group::restore`): a restored group equals the
//! original in every observable getter, its snapshot is byte for byte the original one
//! (canonical), and it behaves identically afterwards: two copies of one member, the
//! original and the restored one, fed the same envelopes with the same CSPRNG seeds, give
//! the same outputs, events and decryptions. Decoding is total: random bytes, truncations
//! and corruptions of real snapshots give an error or, if accepted, a canonical snapshot.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{created, created_with, deliver_all_except, group, observe};
use dcgka::events::Event;
use dcgka::group::{Context, Group, GroupError, Output, Status};
use dcgka::prekeys::{Identity, InMemoryPrekeyDirectory};
use dcgka::snapshot::{SNAPSHOT_MAGIC, SNAPSHOT_VERSION, SnapshotError};
use dcgka_sim::names::{A, B, C, D, E};
use dcgka_sim::{Dev, NOW, PacketKind, Sim};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

// ------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------

/// Round trip: `restore(snapshot(g))` equals `g` in every getter, and its snapshot is
/// byte for byte the same. Returns the restored group.
fn round_trip(g: &Group) -> Group {
    let bytes = g.snapshot();
    assert_eq!(bytes[0], SNAPSHOT_MAGIC);
    assert_eq!(bytes[1], SNAPSHOT_VERSION);
    assert_eq!(g.state_size(), bytes.len());
    // The same state as records (a core and one record per sender) restores to the same
    // group, and its records are canonical.
    let records = g.records();
    let from_records = Group::restore_records(&records.core, records.senders.iter().map(|(id, b)| (*id, &b[..])))
        .unwrap_or_else(|e| panic!("restore from records failed: {e}"));
    assert_eq!(from_records.snapshot(), bytes, "records and snapshot disagree");
    assert_eq!(from_records.records(), records);
    let mut r = Group::restore(&bytes).unwrap_or_else(|e| panic!("restore failed: {e}"));
    // The adversarial flag is a test hook outside the format: an adversarial copy is made
    // one again after its restore.
    r.set_adversarial(g.is_adversarial());
    assert_eq!(observe(&r), observe(g));
    // `observe` compares the complete membership history (`History: PartialEq` covers every
    // index), so replaying the operation log rebuilt it exactly.
    assert_eq!(r.history(), g.history());
    assert_eq!(r.gid(), g.gid());
    assert_eq!(r.held_acks(), g.held_acks());
    assert_eq!(r.member_secret_count(), g.member_secret_count());
    for m in g.ever_added() {
        assert_eq!(r.identity_of(&m), g.identity_of(&m));
        assert!(r.same_ratchet_state(g, &m), "outer ratchet state of {m:?}");
        assert_eq!(r.sender_epoch(&m), g.sender_epoch(&m));
    }
    assert_eq!(&r.snapshot()[..], &bytes[..], "a restored group's snapshot is the original snapshot");
    r
}

/// Every group the simulation holds: live, retired and adversarial shadows.
fn all_groups(sim: &Sim) -> Vec<&Group> {
    let mut out = Vec::new();
    for dev in &sim.devices {
        out.extend(dev.group());
        out.extend(dev.retired.iter());
        out.extend(dev.shadows.iter().map(|s| &s.group));
    }
    out
}

/// One copy of a member: its group, identity (key store) and its own prekey directory.
#[derive(Clone)]
struct Replica {
    group: Group,
    identity: Identity,
    directory: InMemoryPrekeyDirectory,
}

impl Replica {
    fn ctx_call<T>(&mut self, seed: u64, f: impl FnOnce(&mut Group, &mut Context<'_, ChaCha20Rng>) -> T) -> T {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut ctx = Context { rng: &mut rng, now: NOW, prekeys: &mut self.directory, identity: &mut self.identity };
        f(&mut self.group, &mut ctx)
    }
}

/// The original and the restored copy of device `d`'s group (`retired` picks the last
/// retired instance instead of the live one).
fn copies_of(sim: &Sim, d: Dev, retired: bool) -> (Replica, Replica) {
    let dev = &sim.devices[d];
    let g = if retired { dev.retired.last().unwrap() } else { dev.group().unwrap() };
    let original = Replica { group: g.clone(), identity: dev.identity().clone(), directory: sim.directory.clone() };
    let restored = Replica { group: round_trip(g), ..original.clone() };
    (original, restored)
}

/// The broadcast envelopes of the transcript from `start` on, not sent by `d`.
fn envelopes_after(sim: &Sim, start: usize, d: Dev) -> Vec<Vec<u8>> {
    sim.transcript[start..]
        .iter()
        .filter(|p| p.from != d && matches!(p.kind, PacketKind::Envelope(..)))
        .map(|p| p.bytes.clone())
        .collect()
}

/// What the continuation produced: the number of application messages decrypted.
struct Continued {
    decrypted: usize,
}

/// Feeds both copies the same envelopes, then has both update, send and flush, each call
/// with the same seed for both; every result must be equal, and so must the final
/// snapshots. Returns how many messages the copies decrypted.
fn continue_both(a: &mut Replica, b: &mut Replica, envelopes: &[Vec<u8>]) -> Continued {
    let mut decrypted = 0;
    for (i, bytes) in envelopes.iter().enumerate() {
        let seed = 1000 + i as u64;
        let ra = a.ctx_call(seed, |g, ctx| g.receive(ctx, bytes));
        let rb = b.ctx_call(seed, |g, ctx| g.receive(ctx, bytes));
        assert_eq!(ra, rb, "envelope {i}");
        if let Ok(out) = &ra {
            decrypted += out.events.iter().filter(|e| matches!(e, Event::Message { .. })).count();
        }
        assert_eq!(observe(&a.group), observe(&b.group), "after envelope {i}");
    }
    type Call = fn(&mut Group, &mut Context<'_, ChaCha20Rng>) -> Result<Output, GroupError>;
    let calls: [(&str, Call); 4] = [
        ("process_pending", |g, ctx| g.process_pending(ctx)),
        ("update", |g, ctx| g.update(ctx)),
        ("send", |g, ctx| g.send(ctx, b"after the restore")),
        ("flush_acks", |g, _| g.flush_acks()),
    ];
    for (k, (name, call)) in calls.iter().enumerate() {
        let seed = 5000 + k as u64;
        let ra = a.ctx_call(seed, call);
        let rb = b.ctx_call(seed, call);
        assert_eq!(ra, rb, "{name}");
    }
    assert_eq!(&a.group.snapshot()[..], &b.group.snapshot()[..], "final states");
    Continued { decrypted }
}

/// Checks that some restores of corrupted versions of `bytes` fail cleanly, and that
/// every accepted one is canonical (re-snapshots to the same bytes).
fn assert_canonical_if_accepted(bytes: &[u8]) {
    if let Ok(g) = Group::restore(bytes) {
        assert_eq!(&g.snapshot()[..], bytes, "an accepted snapshot must be canonical");
    }
}

// ------------------------------------------------------------------------------------
// Round trips and continuation, per kind of member
// ------------------------------------------------------------------------------------

#[test]
fn creator_before_and_after_the_acks() {
    let mut sim = Sim::new(4, 1);
    sim.create(A, &[B, C, D]).unwrap();
    // Right after create: no ack has arrived, every member secret is still held.
    assert_eq!(group(&sim, A).member_secret_count(), 3);
    let (mut orig, mut restored) = copies_of(&sim, A, false);
    let start = 0;
    sim.deliver_all();
    for g in all_groups(&sim) {
        round_trip(g);
    }
    sim.send(B, b"from B").unwrap();
    sim.update(C).unwrap();
    sim.send(D, b"from D").unwrap();
    sim.deliver_all();
    let env = envelopes_after(&sim, start, A);
    let c = continue_both(&mut orig, &mut restored, &env);
    assert_eq!(c.decrypted, 2, "the copies read B's and D's messages");
    // The acks arrived: only the secrets of the copies' own closing update are held.
    assert_eq!(orig.group.member_secret_keys().iter().filter(|k| k.1.0 == 1).count(), 0);
}

#[test]
fn initial_member_straight_after_joining_from_the_create() {
    let mut sim = Sim::new(4, 2);
    let create = sim.create(A, &[B, C, D]).unwrap()[0];
    assert!(sim.deliver_id(B, create));
    let (mut orig, mut restored) = copies_of(&sim, B, false);
    let start = sim.transcript.len();
    sim.deliver_all();
    sim.send(A, b"hello").unwrap();
    sim.remove(C, D).unwrap();
    sim.send(C, b"after the remove").unwrap();
    sim.deliver_all();
    // Everything after B's ack, the other initial members' acks first.
    let c = continue_both(&mut orig, &mut restored, &envelopes_after(&sim, start, B));
    assert_eq!(c.decrypted, 2);
    assert_eq!(orig.group.members().len(), 3, "D was removed");
}

#[test]
fn newcomer_joined_by_welcome_has_the_same_history_after_restore() {
    let mut sim = created(5, &[B, C, D], 3);
    let d_mid = sim.mid(D).unwrap();
    sim.remove(B, D).unwrap();
    sim.update(C).unwrap();
    sim.deliver_all();
    let ids = sim.add(A, E).unwrap();
    let welcome = *ids.iter().find(|i| sim.transcript[**i].kind == PacketKind::Welcome).unwrap();
    assert!(sim.deliver_id(E, welcome));
    // The newcomer's history came from the Welcome (A compacted it first, §6.7: D, removed
    // and departed, is forgotten) plus the add: rebuilding it from the snapshot's base and
    // log must give exactly that history.
    let g = group(&sim, E);
    assert!(g.history().is_compacted());
    assert!(!g.ever_added().contains(&d_mid));
    assert_eq!(g.members().len(), 4);
    let (mut orig, mut restored) = copies_of(&sim, E, false);
    let start = sim.transcript.len();
    sim.deliver_all();
    sim.send(B, b"welcome, E").unwrap();
    sim.update(A).unwrap();
    sim.send(C, b"hi E").unwrap();
    sim.deliver_all();
    for g in all_groups(&sim) {
        round_trip(g);
    }
    let c = continue_both(&mut orig, &mut restored, &envelopes_after(&sim, start, E));
    assert_eq!(c.decrypted, 2);
}

#[test]
fn member_with_buffered_envelopes() {
    let mut sim = created(4, &[B, C, D], 4);
    let first = sim.send(A, b"one").unwrap()[0];
    let upd = sim.update(B).unwrap()[0];
    let second = sim.send(A, b"two").unwrap()[0];
    let third = sim.send(A, b"three").unwrap()[0];
    // C gets A's later envelopes first: they wait for A's first message.
    assert!(sim.deliver_id(C, third));
    assert!(sim.deliver_id(C, second));
    assert_eq!(group(&sim, C).pending(), 2, "two envelopes of A buffered at C");
    let (mut orig, mut restored) = copies_of(&sim, C, false);
    assert_eq!(restored.group.pending(), 2);
    let env: Vec<Vec<u8>> = [first, upd].iter().map(|i| sim.transcript[*i].bytes.clone()).collect();
    let start = sim.transcript.len();
    sim.deliver_all();
    let mut all = env;
    all.extend(envelopes_after(&sim, start, C));
    let c = continue_both(&mut orig, &mut restored, &all);
    assert_eq!(c.decrypted, 3, "the buffered messages are released in order");
    assert_eq!(orig.group.pending(), 0);
}

#[test]
fn member_holding_coalesced_acks() {
    let mut sim = created_with(5, &[B, C, D], 5, |sim| sim.config.coalesce_acks = true);
    let start = sim.transcript.len();
    sim.update(A).unwrap();
    sim.add(C, E).unwrap();
    sim.deliver_queued();
    let b = group(&sim, B);
    assert_eq!(b.held_acks(), 2, "B holds its ack of the update and its add-ack");
    let (mut orig, mut restored) = copies_of(&sim, B, false);
    assert_eq!(restored.group.held_acks(), 2);
    sim.send(D, b"from D").unwrap();
    sim.deliver_queued();
    // The copies process the same envelopes, then their send carries the held acks in one
    // batch: equal bytes from both.
    let env = envelopes_after(&sim, start, B);
    let c = continue_both(&mut orig, &mut restored, &env);
    assert_eq!(c.decrypted, 1);
    assert_eq!(orig.group.held_acks(), 0);
}

#[test]
fn removed_member_and_its_adversarial_shadow() {
    let mut sim = created_with(4, &[B, C, D], 6, |sim| sim.shadows = true);
    sim.remove(A, D).unwrap();
    sim.deliver_all();
    let retired = sim.devices[D].retired.last().unwrap();
    assert!(matches!(retired.status(), Status::Removed { .. }));
    let (mut orig, mut restored) = copies_of(&sim, D, true);
    // The shadow is the same instance run as an adversarial copy: it keeps its secrets, and
    // the restored copy, made adversarial again by `round_trip`, behaves identically (the
    // continuation below shows it: it keeps processing after its removal).
    let shadow = &sim.devices[D].shadows.last().unwrap().group;
    let mut sh_orig = Replica {
        group: shadow.clone(),
        identity: sim.devices[D].identity().clone(),
        directory: sim.directory.clone(),
    };
    let mut sh_restored = Replica { group: round_trip(shadow), ..sh_orig.clone() };
    let start = sim.transcript.len();
    sim.send(B, b"after D's removal").unwrap();
    sim.update(C).unwrap();
    sim.deliver_all();
    let env = envelopes_after(&sim, start, D);
    // The removed member refuses everything, identically.
    let c = continue_both(&mut orig, &mut restored, &env);
    assert_eq!(c.decrypted, 0);
    let c = continue_both(&mut sh_orig, &mut sh_restored, &env);
    assert_eq!(c.decrypted, 0, "B's message was sent outside the shadow's view");
}

#[test]
fn random_walks_round_trip_at_every_step() {
    for seed in 0..4u64 {
        let mut sim = Sim::new(6, 100 + seed);
        sim.shadows = seed % 2 == 0;
        sim.config.coalesce_acks = seed % 2 == 1;
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        sim.create(A, &[B, C, D]).unwrap();
        let mut copies: Vec<(Dev, Replica, Replica, usize)> = Vec::new();
        for step in 0..40 {
            let d = (rng.next_u32() % 6) as usize;
            let t = (rng.next_u32() % 6) as usize;
            let _ = match rng.next_u32() % 6 {
                0 => sim.update(d),
                1 => sim.send(d, format!("message {step}").as_bytes()),
                2 if d != t && sim.mid(t).is_none() => sim.add(d, t),
                3 if d != t && sim.mid(t).is_some() => sim.remove(d, t),
                _ => Ok(Vec::new()),
            };
            // Partial delivery leaves envelopes buffered and acks held.
            for _ in 0..(rng.next_u32() % 8) {
                let to = (rng.next_u32() % 6) as usize;
                sim.deliver_next(to);
            }
            for g in all_groups(&sim) {
                round_trip(g);
            }
            if step % 10 == 5 && sim.devices[d].active() {
                let (o, r) = copies_of(&sim, d, false);
                copies.push((d, o, r, sim.transcript.len()));
            }
        }
        sim.deliver_all();
        for g in all_groups(&sim) {
            round_trip(g);
        }
        for (d, mut o, mut r, start) in copies {
            // Everything the copies may not have processed yet, then everything later.
            let mut env = envelopes_after(&sim, 0, d);
            env.extend(envelopes_after(&sim, start, d));
            continue_both(&mut o, &mut r, &env);
        }
    }
}

// ------------------------------------------------------------------------------------
// Total, canonical decoding
// ------------------------------------------------------------------------------------

/// A state with a bit of everything: buffered envelopes, held acks, a removed member,
/// member secrets, skipped message keys.
fn rich_snapshot() -> Vec<u8> {
    let mut sim = created_with(5, &[B, C, D], 7, |sim| sim.config.coalesce_acks = true);
    sim.remove(A, D).unwrap();
    sim.add(B, E).unwrap();
    sim.deliver_all();
    // B updates and gets none of the acks: it keeps the member secrets.
    sim.update(B).unwrap();
    deliver_all_except(&mut sim, &[B]);
    let u = sim.update(C).unwrap()[0];
    sim.send(A, b"one").unwrap();
    let m2 = *sim.send(A, b"two").unwrap().last().unwrap();
    // C's update (with C's ack of B's update) reaches B, and A's second message before
    // its first: B holds an ack and buffers an envelope.
    assert!(sim.deliver_id(B, u));
    assert!(sim.deliver_id(B, m2));
    let g = group(&sim, B);
    assert_eq!((g.held_acks(), g.pending()), (1, 1));
    assert!(g.member_secret_count() > 0);
    round_trip(g).snapshot().to_vec()
}

#[test]
fn truncations_and_bit_flips_are_errors_or_canonical() {
    let bytes = rich_snapshot();
    assert!(Group::restore(&bytes).is_ok());
    for len in 0..bytes.len() {
        assert!(Group::restore(&bytes[..len]).is_err(), "a truncation to {len} bytes was accepted");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(Group::restore(&longer), Err(SnapshotError::Malformed(_))));
    let mut accepted = 0;
    for bit in 0..bytes.len() * 8 {
        let mut b = bytes.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        if Group::restore(&b).is_ok() {
            accepted += 1;
        }
        assert_canonical_if_accepted(&b);
    }
    // Flips inside secrets and keys are undetectable without authentication; flips in the
    // structure are not.
    assert!(accepted > 0 && accepted < bytes.len() * 8, "{accepted} flips accepted");
}

#[test]
fn header_errors_are_typed() {
    let bytes = rich_snapshot();
    assert!(matches!(Group::restore(&[]), Err(SnapshotError::Malformed(_))));
    let mut b = bytes.clone();
    b[0] = 0x11;
    assert_eq!(Group::restore(&b).err(), Some(SnapshotError::NotASnapshot { found: 0x11, expected: SNAPSHOT_MAGIC }));
    let mut b = bytes.clone();
    b[1] = SNAPSHOT_VERSION + 1;
    assert_eq!(
        Group::restore(&b).err(),
        Some(SnapshotError::UnsupportedVersion { found: SNAPSHOT_VERSION + 1, supported: SNAPSHOT_VERSION })
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..512), header: bool) {
        if header && bytes.len() >= 2 {
            bytes[0] = SNAPSHOT_MAGIC;
            bytes[1] = SNAPSHOT_VERSION;
        }
        assert_canonical_if_accepted(&bytes);
    }

    #[test]
    fn corrupted_snapshots_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
        truncate: bool,
    ) {
        let mut bytes = RICH.with(|r| r.clone());
        for (i, v) in edits {
            let k = i.index(bytes.len());
            bytes[k] = v;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        assert_canonical_if_accepted(&bytes);
    }
}

thread_local! {
    static RICH: Vec<u8> = rich_snapshot();
}
