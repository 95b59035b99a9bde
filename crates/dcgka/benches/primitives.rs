//! Criterion benchmarks of the primitives every group operation is made of: Ed25519
//! sign and verify, X25519 key generation, HPKE seal and open, 2SM send and receive
//! (first contact and steady state), and the application ratchet's encrypt and decrypt.
//!
//! Run with `cargo bench -p dcgka --bench primitives`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use dcgka::crypto::{SigningSecret, X25519Secret, hpke_open, hpke_seal};
use dcgka::ids::{Epoch, GroupId, MemberId, MessageIndex, Origin, SeqNo};
use dcgka::prekeys::{Identity, InMemoryPrekeyDirectory};
use dcgka::ratchet::SenderRatchet;
use dcgka::two_party::TwoPartySession;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const NOW: u64 = 1_800_000_000;

fn signatures(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let sk = SigningSecret::generate(&mut rng);
    let vk = sk.verifying_key();
    // An ack-sized signed message: header, acknowledged operation, hash.
    let msg = [0x42u8; 54];
    let sig = sk.sign("bench", &[&msg]);
    c.bench_function("ed25519/sign", |b| b.iter(|| sk.sign("bench", &[black_box(&msg)])));
    c.bench_function("ed25519/verify", |b| b.iter(|| vk.verify("bench", &[black_box(&msg)], black_box(&sig)).unwrap()));
}

fn x25519_hpke(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    c.bench_function("x25519/keygen", |b| b.iter(|| X25519Secret::generate(&mut rng).public_key()));
    let sk = X25519Secret::generate(&mut rng);
    let pk = sk.public_key();
    // A 2SM plaintext carrying a 32-byte seed: payload, key for the receiver, new public key, index.
    let pt = [7u8; 98];
    c.bench_function("hpke/seal", |b| b.iter(|| hpke_seal(&mut rng, &pk, b"info", b"aad", black_box(&pt)).unwrap()));
    let (enc, ct) = hpke_seal(&mut rng, &pk, b"info", b"aad", &pt).unwrap();
    c.bench_function("hpke/open", |b| b.iter(|| hpke_open(&sk, &enc, b"info", b"aad", black_box(&ct)).unwrap()));
}

/// Alice and Bob with published prekeys and fresh 2SM sessions with each other.
fn two_party_setup() -> (ChaCha20Rng, InMemoryPrekeyDirectory, Identity, TwoPartySession, TwoPartySession) {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let mut alice = Identity::generate(&mut rng);
    let mut bob = Identity::generate(&mut rng);
    let mut directory = InMemoryPrekeyDirectory::new();
    directory.publish_identity(&mut rng, &mut alice, NOW, 10).unwrap();
    directory.publish_identity(&mut rng, &mut bob, NOW, 10).unwrap();
    let gid = GroupId([9; 32]);
    let a = MemberId::derive(&gid, &alice.public_key(), Origin::Creator);
    let b = MemberId::derive(&gid, &bob.public_key(), Origin::Operation(a, SeqNo(1)));
    let to_bob = TwoPartySession::new(gid, a, b, bob.public_key());
    let from_alice = TwoPartySession::new(gid, b, a, alice.public_key());
    (rng, directory, bob, to_bob, from_alice)
}

fn two_party(c: &mut Criterion) {
    let seed = [0x33u8; 32];
    let (mut rng, mut directory, mut bob, mut to_bob, mut from_alice) = two_party_setup();

    // First contact: the bundle is fetched and verified, and the ciphertext is sealed to it.
    c.bench_function("2sm/send first contact", |b| {
        b.iter_batched(
            || (to_bob.clone(), directory.clone()),
            |(mut s, mut d)| s.send(&mut rng, &mut d, NOW, &seed).unwrap(),
            BatchSize::SmallInput,
        )
    });
    let first = to_bob.send(&mut rng, &mut directory, NOW, &seed).unwrap();
    c.bench_function("2sm/receive first contact", |b| {
        b.iter_batched(
            || (from_alice.clone(), bob.key_store().clone()),
            |(mut s, mut k)| s.receive(&mut k, &first).unwrap(),
            BatchSize::SmallInput,
        )
    });
    from_alice.receive(bob.key_store_mut(), &first).unwrap();

    // Steady state: Bob answers once, then Alice sends to the key Bob gave her.
    let reply = from_alice.send(&mut rng, &mut directory, NOW, &seed).unwrap();
    let mut alice_keys = Identity::generate(&mut rng);
    to_bob.receive(alice_keys.key_store_mut(), &reply).unwrap();
    c.bench_function("2sm/send", |b| {
        b.iter_batched(
            || to_bob.clone(),
            |mut s| s.send(&mut rng, &mut directory, NOW, &seed).unwrap(),
            BatchSize::SmallInput,
        )
    });
    c.bench_function("2sm/receive", |b| {
        b.iter_batched(
            || {
                let mut s = to_bob.clone();
                let ct = s.send(&mut rng, &mut directory, NOW, &seed).unwrap();
                (from_alice.clone(), bob.key_store().clone(), ct)
            },
            |(mut s, mut k, ct)| s.receive(&mut k, &ct).unwrap(),
            BatchSize::SmallInput,
        )
    });
}

fn ratchet(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let gid = GroupId([1; 32]);
    let sender = MemberId::derive(&gid, &Identity::generate(&mut rng).public_key(), Origin::Creator);
    let secret = || dcgka::crypto::Secret32::from_bytes([5; 32]);
    let tx = SenderRatchet::new(gid, sender, Epoch(1), secret()).unwrap();
    let rx = tx.clone();
    let pt = [0x5au8; 32];
    c.bench_function("ratchet/encrypt 32 B", |b| {
        b.iter_batched(|| tx.clone(), |mut r| r.encrypt(SeqNo(2), black_box(&pt)).unwrap(), BatchSize::SmallInput)
    });
    let (i, ct) = tx.clone().encrypt(SeqNo(2), &pt).unwrap();
    assert_eq!(i, MessageIndex(0));
    c.bench_function("ratchet/decrypt 32 B", |b| {
        b.iter_batched(
            || rx.clone(),
            |mut r| r.decrypt(Epoch(1), i, SeqNo(2), black_box(&ct)).unwrap(),
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, signatures, x25519_hpke, two_party, ratchet);
criterion_main!(benches);
