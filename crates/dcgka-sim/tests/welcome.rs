//! The Welcome under attack (§7.4): a history bomb is refused before its history is
//! replayed (signature first, then the bounds on its log), the application sees a checked
//! summary before it consents, and the signing keys a Welcome carries are checked against
//! their members' identity keys.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use dcgka::codec::{Decode, Encode};
use dcgka::consts::{MAX_GROUP, MAX_HISTORY_LEN};
use dcgka::crypto::{SigningSecret, VerifyingKey};
use dcgka::events::{DropReason, Event, RejectReason};
use dcgka::group::{Context, Group, GroupConfig, GroupError, JoinError, Received};
use dcgka::prekeys::Identity;
use dcgka::welcome::{LogOp, SenderEntry, Welcome};
use dcgka::wire::{CertifiedKey, Envelope, EnvelopeKind};
use dcgka_sim::names::{A, B, C, D};
use dcgka_sim::{NOW, PacketKind, Sim};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// A group of A, B and C; A adds D. Returns the simulation (nothing delivered to D yet),
/// D's Welcome and D's identity before it joined.
fn welcome_for_d(seed: u64) -> (Sim, Vec<u8>, Identity) {
    let mut sim = created(5, &[B, C], seed);
    let d_before_join = sim.devices[D].identity().clone();
    let ids = sim.add(A, D).unwrap();
    let welcome =
        ids.iter().map(|i| &sim.transcript[*i]).find(|p| p.kind == PacketKind::Welcome).unwrap().bytes.clone();
    (sim, welcome, d_before_join)
}

/// `join` of `welcome` by `identity`, against the simulation's prekey directory.
fn join(sim: &Sim, identity: &Identity, welcome: &[u8]) -> Result<Group, GroupError> {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let mut id = identity.clone();
    let mut dir = sim.directory.clone();
    let mut ctx = Context { rng: &mut rng, now: NOW, prekeys: &mut dir, identity: &mut id };
    Group::join(&mut ctx, welcome, GroupConfig::default()).map(|(g, _)| g)
}

/// A distinct 32-byte identity key for the `i`-th member a crafted log introduces.
fn fake_ik(i: u64) -> VerifyingKey {
    let mut k = [0x5a; 32];
    k[..8].copy_from_slice(&i.to_le_bytes());
    VerifyingKey(k)
}

/// A create by `creator` with B, then `adds` adds by the creator, no acks.
fn bomb_log(creator: VerifyingKey, adds: u64) -> Vec<LogOp> {
    let mut log = vec![LogOp::Create { creator, members: vec![fake_ik(0)] }];
    log.extend((0..adds).map(|i| LogOp::Add { sender: 0, seq: i + 2, target: fake_ik(i + 1) }));
    log
}

/// The attack of issue 9, item 4: 4,000 adds, and a last operation that makes the history
/// invalid, under the genuine Welcome's (now wrong) signature. The signature is checked
/// first, so the history is never replayed: the old code replayed all of it (seconds and
/// hundreds of MB) and answered `InvalidHistory`.
#[test]
fn welcome_history_bomb_with_a_bad_signature_is_refused_before_replay() {
    let (sim, welcome, d) = welcome_for_d(401);
    let mut w = Welcome::from_bytes(&welcome).unwrap();
    let a_ik = sim.ik(A);
    w.history = bomb_log(a_ik, 4_000);
    // An ack of the acker's own operation: replaying would refuse it.
    w.history.push(LogOp::Ack { sender: 0, seq: 9_999, of_sender: 0, of_seq: 1 });
    let bomb = w.to_bytes();
    assert!(bomb.len() > 140_000, "a bomb of {} bytes", bomb.len());
    assert_eq!(join(&sim, &d, &bomb).err(), Some(GroupError::Dropped(DropReason::BadSignature)));
    assert_eq!(Group::inspect_welcome(&bomb).err(), Some(GroupError::Dropped(DropReason::BadSignature)));
    // The genuine Welcome still works.
    let g = join(&sim, &d, &welcome).unwrap();
    assert_eq!(g.members(), group(&sim, A).members().into_iter().chain([g.me()]).collect());
}

/// The same bomb signed by its author (any identity can sign a Welcome as the adder of
/// its own history) is refused by its bound before replay: it introduces more than
/// `MAX_GROUP` members.
#[test]
fn welcome_introducing_more_than_max_group_members_is_refused() {
    let (sim, welcome, d) = welcome_for_d(402);
    let attacker = Identity::generate(&mut ChaCha20Rng::seed_from_u64(99));
    let mut w = Welcome::from_bytes(&welcome).unwrap();
    w.adder = 0;
    w.history = bomb_log(attacker.public_key(), 4_000);
    w.sign(attacker.signing_key());
    let bomb = w.to_bytes();
    let refused = GroupError::CannotJoin(JoinError::TooManyMembers { introduced: 4_002, max: MAX_GROUP });
    assert_eq!(Group::inspect_welcome(&bomb).err(), Some(refused.clone()));
    assert_eq!(join(&sim, &d, &bomb).err(), Some(refused));
    // At the bound the log passes this check (and fails later on its missing sender
    // table, having been replayed): the bound is exactly MAX_GROUP.
    w.history = bomb_log(attacker.public_key(), MAX_GROUP as u64 - 2);
    w.sign(attacker.signing_key());
    let at_bound = w.to_bytes();
    assert_eq!(Group::inspect_welcome(&at_bound).unwrap().members_introduced, MAX_GROUP);
    assert!(matches!(
        join(&sim, &d, &at_bound).err(),
        Some(GroupError::CannotJoin(JoinError::InvalidHistory(_) | JoinError::NotForMe))
    ));
    assert!(join(&sim, &d, &welcome).is_ok(), "honest Welcomes still get through");
}

/// Flood of `MAX_HISTORY_LEN`: a log one operation longer is refused with its own error
/// before replay; one of exactly that length passes the bound.
#[test]
fn welcome_history_longer_than_max_history_len_is_refused() {
    let (sim, welcome, d) = welcome_for_d(403);
    let attacker = Identity::generate(&mut ChaCha20Rng::seed_from_u64(98));
    let mut w = Welcome::from_bytes(&welcome).unwrap();
    w.adder = 0;
    let log = |len: usize| {
        let mut log = vec![LogOp::Create { creator: attacker.public_key(), members: vec![fake_ik(0)] }];
        log.extend((1..len as u64).map(|i| LogOp::Ack { sender: 1, seq: i, of_sender: 0, of_seq: 1 }));
        log
    };
    w.history = log(MAX_HISTORY_LEN + 1);
    w.sign(attacker.signing_key());
    let flood = w.to_bytes();
    let refused = GroupError::CannotJoin(JoinError::HistoryTooLong { len: MAX_HISTORY_LEN + 1, max: MAX_HISTORY_LEN });
    assert_eq!(Group::inspect_welcome(&flood).err(), Some(refused.clone()));
    assert_eq!(join(&sim, &d, &flood).err(), Some(refused));
    w.history = log(MAX_HISTORY_LEN);
    w.sign(attacker.signing_key());
    let summary = Group::inspect_welcome(&w.to_bytes()).unwrap();
    assert_eq!(summary.history_len, MAX_HISTORY_LEN);
    // Replayed, it is refused for what it is: a second ack of the create.
    assert!(matches!(join(&sim, &d, &w.to_bytes()).err(), Some(GroupError::CannotJoin(JoinError::InvalidHistory(_)))));
    assert!(join(&sim, &d, &welcome).is_ok(), "honest Welcomes still get through");
}

/// The consent step (§9): `inspect_welcome` shows the adder, its identity and the size of
/// what the Welcome would replay, checked, before anything is replayed.
#[test]
fn inspect_welcome_shows_the_adder_and_the_group_size_before_join() {
    let (sim, welcome, d) = welcome_for_d(404);
    let s = Group::inspect_welcome(&welcome).unwrap();
    assert_eq!(s.gid, group(&sim, A).gid());
    assert_eq!(s.adder, group(&sim, A).me());
    assert_eq!(s.adder_identity, sim.ik(A));
    assert_eq!(s.members_introduced, 3);
    assert_eq!(s.removes, 0);
    // A compacts before the Welcome (§6.7): the folded create, one base entry per member
    // and the tail.
    assert_eq!(s.history_len, 5, "the compact base of A, B and C");
    let g = join(&sim, &d, &welcome).unwrap();
    assert_eq!(g.members().len(), 4);
    // A Welcome altered anywhere is refused by the same check.
    let mut v = welcome.clone();
    let last = v.len() - 1;
    v[last] ^= 1;
    assert_eq!(Group::inspect_welcome(&v).err(), Some(GroupError::Dropped(DropReason::BadSignature)));
}

/// Issue 9, item 9: a dishonest adder (A) forges B's signing key in D's Welcome, to pass
/// its own envelopes off as B's to D. Each key carries a certificate by its member's
/// identity key, which D checks: a substituted key, a key the adder certified itself, and a
/// key stripped of its certificate are all refused with `ForgedSigningKey` naming B. (The
/// old code loaded the sender table as given.)
#[test]
fn forged_signing_key_in_a_welcome_is_refused() {
    let (sim, welcome, d) = welcome_for_d(405);
    let (gid, b) = (group(&sim, A).gid(), group(&sim, B).me());
    let w = Welcome::from_bytes(&welcome).unwrap();
    let i = w
        .senders
        .iter()
        .position(|s| s.signing_key.is_some_and(|k| k.verify(&sim.ik(B), &gid, &b).is_ok()))
        .expect("B's entry carries a key certified by B's identity key");
    let a_identity = sim.devices[A].identity().signing_key().clone();
    let forger = SigningSecret::generate(&mut ChaCha20Rng::seed_from_u64(3)).verifying_key();
    let forge = |f: &dyn Fn(&mut SenderEntry)| {
        let mut w = w.clone();
        f(&mut w.senders[i]);
        w.sign(&a_identity);
        w.to_bytes()
    };
    let refused = Some(GroupError::CannotJoin(JoinError::ForgedSigningKey { member: b }));
    let substituted = forge(&|s| {
        if let Some(k) = s.signing_key.as_mut() {
            k.key = forger;
        }
    });
    assert_eq!(join(&sim, &d, &substituted).err(), refused);
    let self_certified = forge(&|s| {
        let seq = s.signing_key.map(|k| k.seq).unwrap();
        s.signing_key = Some(CertifiedKey::issue(&a_identity, &gid, &b, seq, forger));
    });
    assert_eq!(join(&sim, &d, &self_certified).err(), refused);
    let stripped = forge(&|s| s.signing_key = None);
    assert_eq!(join(&sim, &d, &stripped).err(), refused);
    // A genuine certificate for a sequence number past the horizon is refused too.
    let beyond = forge(&|s| s.hwm = 0);
    assert_eq!(join(&sim, &d, &beyond).err(), refused);
    // The genuine Welcome works, and D accepts B's genuine envelopes.
    let mut sim = sim;
    sim.deliver_all();
    let m = *sim.send(B, b"from B").unwrap().last().unwrap();
    sim.deliver_all();
    assert!(sim.decrypted(D, m));
}

/// Issue 9, item 9: receivers check the certificate on every rotation. A (whose current
/// signing key an attacker holding A's state knows) sends an update whose new key is
/// certified by the signing key instead of A's identity key. B rejects it, names A, does
/// not adopt the key and cuts A off; C, which received the genuine update, is unaffected.
#[test]
fn update_with_an_invalid_key_certificate_is_rejected_and_blamed() {
    let (mut sim, k1) = created_recorded(4, &[B, C], 406, 4061);
    let ids = sim.update(A).unwrap();
    let genuine = parse(&envelope_bytes(&sim, ids[0]));
    assert_eq!(genuine.kind, EnvelopeKind::Update);
    let (gid, a) = (group(&sim, A).gid(), group(&sim, A).me());
    let nk = SigningSecret::generate(&mut ChaCha20Rng::seed_from_u64(4)).verifying_key();
    let bad = CertifiedKey::issue(&k1, &gid, &a, genuine.seq, nk).cert;
    let forged = Envelope::seal(
        EnvelopeKind::Update,
        &gid,
        genuine.seq,
        &a,
        None,
        Some(nk),
        Some(bad),
        genuine.body.clone(),
        &k1,
    )
    .to_bytes();
    let out = recv(&mut sim, B, &forged).unwrap();
    assert_eq!(
        out.events,
        [Event::Rejected { sender: a, seq: genuine.seq, reason: RejectReason::InvalidKeyCertificate }]
    );
    assert!(out.broadcast.is_empty(), "no ack of the rejected update");
    // The genuine update is now a duplicate at B; A's later envelopes are rejected as cut off.
    assert_eq!(outcome(&recv(&mut sim, B, &genuine.to_bytes())), Ok(Received::Duplicate));
    sim.deliver_all();
    let m = *sim.send(A, b"after").unwrap().last().unwrap();
    sim.deliver_all();
    assert!(sim.decrypted(C, m), "C processed the genuine update");
    assert!(!sim.decrypted(B, m), "B cut A off");
}
