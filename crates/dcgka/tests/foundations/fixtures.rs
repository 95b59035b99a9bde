//! Frozen snapshot fixtures (`tests/fixtures/`): one group snapshot of the current format
//! version (4) and one identity snapshot of version 1, committed as binary files, the group
//! snapshots of versions 3 and 2, which still load and are written as version 4, and the
//! group snapshot of version 1, which is refused with a typed error. Each must restore and re-encode
//! byte for byte, so any change of either format — of any layer's encoding — fails here
//! instead of silently orphaning snapshots that applications have stored.
//!
//! The fixtures come from [`scenario`]: three members after create and all acks, one
//! update (acknowledged by everyone) and one message; the group snapshot is Bob's, the
//! identity snapshot Bob's identity after it (one signed prekey more, some one-time
//! prekeys consumed). `the_fixture_scenario_restores` rewrites them when
//! `DCGKA_REGENERATE_FIXTURES=1` is set.

use std::collections::VecDeque;
use std::path::PathBuf;

use dcgka::consts::PREKEY_DEFAULT_VALIDITY;
use dcgka::events::Event;
use dcgka::group::{Context, Group, GroupConfig, Status};
use dcgka::ids::SeqNo;
use dcgka::prekeys::{Identity, InMemoryPrekeyDirectory, SignedPrekeyId};
use dcgka::snapshot::{
    IDENTITY_SNAPSHOT_MAGIC, IDENTITY_SNAPSHOT_VERSION, SNAPSHOT_MAGIC, SNAPSHOT_VERSION, SnapshotError,
};
use rand_chacha::ChaCha20Rng;

use crate::{NOW, rng};

const GROUP_FIXTURE: &str = "group-v5.bin";

/// The group snapshot of format version 4, from before the retention period (§5.7): still
/// read.
const GROUP_FIXTURE_V4: &str = "group-v4.bin";

/// The group snapshot of format version 3, from before the acknowledgment tracker (it kept
/// every processed ack of an update and the hash and key of every processed operation):
/// still read.
const GROUP_FIXTURE_V3: &str = "group-v3.bin";

/// Version-3 snapshots with operations in flight, written by the code before version 4
/// (see [`group_fixture_of_version_3_with_operations_in_flight_migrates`]).
const GROUP_FIXTURE_V3_IN_FLIGHT: &str = "group-v3-in-flight.bin";

/// The group snapshot of format version 2, from before the withholding of late operations:
/// still read.
const GROUP_FIXTURE_V2: &str = "group-v2.bin";

/// The group snapshot of format version 1, from before signing-key certificates.
const GROUP_FIXTURE_V1: &str = "group-v1.bin";
const IDENTITY_FIXTURE: &str = "identity-v1.bin";

/// Bob's identity key in the fixtures.
const BOB_IK_HEX: &str = "b4040f0f3402d3fb9f632c3289c84b768708d59b807ae20daae96c0341d5c538";

/// One-time prekeys each identity publishes in [`scenario`].
const OPKS: usize = 4;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("fixtures").join(name)
}

fn read_fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// Three devices with their identities and (once joined) groups.
struct Devices {
    rng: ChaCha20Rng,
    dir: InMemoryPrekeyDirectory,
    identities: Vec<Identity>,
    groups: Vec<Group>,
}

impl Devices {
    fn ctx(&mut self, d: usize) -> Context<'_, ChaCha20Rng> {
        Context { rng: &mut self.rng, now: NOW, prekeys: &mut self.dir, identity: &mut self.identities[d] }
    }

    /// Delivers every queued envelope to every member but its sender, in order, queueing
    /// whatever processing sends in turn, until nothing is left (causal order throughout).
    fn deliver(&mut self, mut queue: VecDeque<(usize, Vec<u8>)>) -> Vec<Event> {
        let mut events = Vec::new();
        while let Some((from, bytes)) = queue.pop_front() {
            for to in (0..self.groups.len()).filter(|to| *to != from) {
                let mut ctx = Context {
                    rng: &mut self.rng,
                    now: NOW,
                    prekeys: &mut self.dir,
                    identity: &mut self.identities[to],
                };
                let out = self.groups[to].receive(&mut ctx, &bytes).unwrap();
                assert!(out.direct.is_empty());
                queue.extend(out.broadcast.into_iter().map(|b| (to, b)));
                events.extend(out.events);
            }
        }
        events
    }
}

fn sent_by(from: usize, broadcast: Vec<Vec<u8>>) -> VecDeque<(usize, Vec<u8>)> {
    broadcast.into_iter().map(|b| (from, b)).collect()
}

/// The deterministic scenario behind the fixtures: Alice (0) creates a group with Bob (1)
/// and Carol (2), both join and every ack is delivered; Bob updates and everyone
/// acknowledges; Carol sends one message. Then Bob issues a second signed prekey. Returns
/// Bob's group and identity.
fn scenario() -> (Group, Identity) {
    let mut rng = rng(0xF1C7);
    let mut dir = InMemoryPrekeyDirectory::new();
    let mut identities: Vec<Identity> = (0..3).map(|_| Identity::generate(&mut rng)).collect();
    for identity in &mut identities {
        dir.publish_identity(&mut rng, identity, NOW, OPKS).unwrap();
    }
    let iks: Vec<_> = identities.iter().map(Identity::public_key).collect();
    let mut d = Devices { rng, dir, identities, groups: Vec::new() };
    let config = GroupConfig::default();

    let (alice, out) = Group::create(&mut d.ctx(0), &iks[1..], config).unwrap();
    d.groups.push(alice);
    let create = out.broadcast[0].clone();
    let mut queue = sent_by(0, out.broadcast[1..].to_vec());
    for i in 1..3 {
        let (g, out) = Group::from_create(&mut d.ctx(i), &create, config).unwrap();
        d.groups.push(g);
        queue.extend(sent_by(i, out.broadcast));
    }
    d.deliver(queue);

    let mut bob = d.groups.remove(1);
    let out = bob.update(&mut d.ctx(1)).unwrap();
    d.groups.insert(1, bob);
    d.deliver(sent_by(1, out.broadcast));

    let mut carol = d.groups.remove(2);
    let out = carol.send(&mut d.ctx(2), b"fixture message").unwrap();
    d.groups.push(carol);
    let events = d.deliver(sent_by(2, out.broadcast));
    let received =
        events.iter().filter(|e| matches!(e, Event::Message { plaintext, .. } if plaintext == b"fixture message"));
    assert_eq!(received.count(), 2);

    let mut bob_identity = d.identities.swap_remove(1);
    let _ = bob_identity.new_signed_prekey(&mut d.rng, NOW, NOW + PREKEY_DEFAULT_VALIDITY);
    (d.groups.swap_remove(1), bob_identity)
}

/// The scenario's snapshots restore and re-encode. With `DCGKA_REGENERATE_FIXTURES=1` it
/// also rewrites both fixtures: do that only on an intentional format change
/// (`DCGKA_REGENERATE_FIXTURES=1 cargo test -p dcgka --test foundations the_fixture_scenario`). A change that
/// bumps a format version writes new files for the new version (rename the constants
/// above) and keeps the old ones, which must then still restore.
///
/// The fixtures need not be reproducible by this function: they stay frozen even when the
/// protocol's use of randomness changes; only their format is tested.
#[test]
fn the_fixture_scenario_restores() {
    let (group, identity) = scenario();
    assert_eq!(Group::restore(&group.snapshot()).unwrap().snapshot(), group.snapshot());
    assert_eq!(Identity::restore(&identity.snapshot()).unwrap().snapshot(), identity.snapshot());
    if std::env::var_os("DCGKA_REGENERATE_FIXTURES").is_none_or(|v| v != "1") {
        return;
    }
    std::fs::create_dir_all(fixture_path("")).unwrap();
    std::fs::write(fixture_path(GROUP_FIXTURE), &group.snapshot()[..]).unwrap();
    std::fs::write(fixture_path(IDENTITY_FIXTURE), &identity.snapshot()[..]).unwrap();
}

#[test]
fn group_fixture_restores_and_re_encodes_byte_for_byte() {
    let bytes = read_fixture(GROUP_FIXTURE);
    assert_eq!(bytes[..2], [SNAPSHOT_MAGIC, SNAPSHOT_VERSION]);
    let g = Group::restore(&bytes).unwrap();
    assert_eq!(&g.snapshot()[..], &bytes[..], "the group snapshot format changed");
    assert_eq!(g.members().len(), 3);
    assert_eq!(g.ever_added().len(), 3);
    assert_eq!(*g.status(), Status::Active);
    assert_eq!(hex(&g.identity_of(&g.me()).unwrap().0), BOB_IK_HEX);
    assert!(g.members().iter().all(|m| g.has_ratchet_state(m)));
    // Bob's control messages: his ack of the create and his update.
    assert_eq!(g.seq(), SeqNo(2));
    let sync = g.sync_state();
    assert_eq!((sync.len(), sync.get(&g.me())), (3, Some(&SeqNo(2))));
}

#[test]
fn group_fixture_of_version_2_loads_and_is_written_as_the_current_version() {
    let old = read_fixture(GROUP_FIXTURE_V2);
    assert_eq!(old[..2], [SNAPSHOT_MAGIC, 2]);
    let g = Group::restore(&old).unwrap();
    assert!(!g.config().withhold_late_operations, "version 2 had no withholding");
    let new = g.snapshot();
    assert_eq!(new[..2], [SNAPSHOT_MAGIC, SNAPSHOT_VERSION]);
    // The same state: the current fixture was written from the same scenario.
    assert_eq!(&new[..], &read_fixture(GROUP_FIXTURE)[..]);
    assert_eq!(Group::restore(&new).unwrap().snapshot(), new);
}

#[test]
fn group_fixture_of_version_3_loads_and_is_written_as_the_current_version() {
    let old = read_fixture(GROUP_FIXTURE_V3);
    assert_eq!(old[..2], [SNAPSHOT_MAGIC, 3]);
    let g = Group::restore(&old).unwrap();
    // Everything in the scenario was acknowledged by everyone: the create and Bob's update
    // were retained for good in version 3, and nothing is in flight after loading.
    assert_eq!(g.in_flight(), 0);
    assert_eq!(g.retained_counts(), (0, 0));
    let new = g.snapshot();
    assert_eq!(new[..2], [SNAPSHOT_MAGIC, SNAPSHOT_VERSION]);
    assert!(new.len() < old.len(), "version 4 keeps less: {} vs {} bytes", new.len(), old.len());
    // The same state as the scenario written by this version: the migration rebuilt what
    // processing would have kept.
    assert_eq!(&new[..], &read_fixture(GROUP_FIXTURE)[..]);
    assert_eq!(Group::restore(&new).unwrap().snapshot(), new);
}

#[test]
fn group_fixture_of_version_4_loads_with_the_default_retention() {
    let old = read_fixture(GROUP_FIXTURE_V4);
    assert_eq!(old[..2], [SNAPSHOT_MAGIC, 4]);
    let g = Group::restore(&old).unwrap();
    assert_eq!(g.config().retention_secs, dcgka::consts::DEFAULT_RETENTION_SECS);
    // Nothing is held for anyone in the scenario, and nobody is absent.
    assert_eq!(g.next_expiry(), None);
    let new = g.snapshot();
    assert_eq!(new[..2], [SNAPSHOT_MAGIC, SNAPSHOT_VERSION]);
    assert_eq!(&new[..], &read_fixture(GROUP_FIXTURE)[..]);
}

/// The blobs of a fixture file: `count:u32 ‖ (len:u32 ‖ bytes)*`, big-endian.
fn blobs(file: &[u8]) -> Vec<&[u8]> {
    let word = |at: usize| u32::from_be_bytes(file[at..at + 4].try_into().unwrap()) as usize;
    let (count, mut at) = (word(0), 4);
    let mut out = Vec::new();
    for _ in 0..count {
        let len = word(at);
        out.push(&file[at + 4..at + 4 + len]);
        at += 4 + len;
    }
    assert_eq!(at, file.len());
    out
}

/// `group-v3-in-flight.bin`, written by the code before version 4: A created the group with
/// B, C and D, and every ack was delivered; then D went offline; A updated (U1, acknowledged
/// by B and C); B added E; C updated (U2, acknowledged by A, B and E). The file holds A's
/// group and identity snapshots, D's, and the envelopes D missed, in order.
///
/// Loading A's snapshot builds the entries version 3 did not have: U1 awaits D and E (E's
/// adder B had acknowledged U1 before the add, so E's Welcome covers it, but version 3 did
/// not record when B acknowledged, and the migration must not refuse an ack that could be
/// E's first), the add awaits D (`H` knows who has seen it), U2 awaits D; the create
/// completed. D then catches up and acknowledges everything, and A accepts every ack: only
/// U1 is left, waiting for E, until A removes E.
#[test]
fn group_fixture_of_version_3_with_operations_in_flight_migrates() {
    use dcgka::dgm::Op;
    use std::collections::BTreeSet;

    let file = read_fixture(GROUP_FIXTURE_V3_IN_FLIGHT);
    let blobs = blobs(&file);
    assert_eq!(blobs[0][..2], [SNAPSHOT_MAGIC, 3]);
    let mut a = Group::restore(blobs[0]).unwrap();
    let mut a_identity = Identity::restore(blobs[1]).unwrap();
    let mut d = Group::restore(blobs[2]).unwrap();
    let mut d_identity = Identity::restore(blobs[3]).unwrap();
    let missed = &blobs[4..];

    let (a_mid, d_mid) = (a.me(), d.me());
    let (mut b_mid, mut e_mid, mut add_seq, mut initial) = (None, None, 0, Vec::new());
    for op in a.history().ops() {
        match op {
            Op::Create { members, .. } => initial.clone_from(members),
            Op::Add { sender, seq, target } => (b_mid, e_mid, add_seq) = (Some(*sender), Some(*target), *seq),
            _ => {}
        }
    }
    let (b_mid, e_mid) = (b_mid.unwrap(), e_mid.unwrap());
    let c_mid = *initial.iter().find(|m| **m != b_mid && **m != d_mid).unwrap();
    let set = |ms: &[dcgka::ids::MemberId]| ms.iter().copied().collect::<BTreeSet<_>>();
    let (u1, u2) = (SeqNo(2), SeqNo(4));

    assert_eq!(a.in_flight(), 3);
    assert_eq!(a.retained_counts().0, 3);
    assert_eq!(a.awaited_acks(&a_mid, u1), Some(set(&[d_mid, e_mid])));
    assert_eq!(a.awaited_acks(&b_mid, SeqNo(add_seq)), Some(set(&[d_mid])));
    assert_eq!(a.awaited_acks(&c_mid, u2), Some(set(&[d_mid])));
    assert_eq!(d.in_flight(), 0, "D had seen everyone acknowledge the create");

    // D catches up; A takes D's acks.
    let mut rng = crate::rng(0x1F12);
    let mut dir = InMemoryPrekeyDirectory::new();
    let mut sent = Vec::new();
    for env in missed {
        let mut ctx = Context { rng: &mut rng, now: NOW, prekeys: &mut dir, identity: &mut d_identity };
        let out = d.receive(&mut ctx, env).unwrap();
        assert!(out.events.iter().all(|e| !matches!(e, Event::Rejected { .. })), "{:?}", out.events);
        sent.extend(out.broadcast);
    }
    assert_eq!(d.members(), set(&[a_mid, b_mid, c_mid, d_mid, e_mid]));
    for env in &sent {
        let mut ctx = Context { rng: &mut rng, now: NOW, prekeys: &mut dir, identity: &mut a_identity };
        let out = a.receive(&mut ctx, env).unwrap();
        assert!(out.events.iter().all(|e| !matches!(e, Event::Rejected { .. })), "{:?}", out.events);
    }
    assert_eq!(a.in_flight(), 1);
    assert_eq!(a.awaited_acks(&a_mid, u1), Some(set(&[e_mid])));
    assert!(!a.retains(&c_mid, u2) && !a.retains(&b_mid, SeqNo(add_seq)));

    // E leaves: U1 completes; the remove itself is in flight.
    let mut ctx = Context { rng: &mut rng, now: NOW, prekeys: &mut dir, identity: &mut a_identity };
    let out = a.remove(&mut ctx, e_mid).unwrap();
    assert!(out.events.iter().any(|e| matches!(e, Event::MembersRemoved { ids, .. } if ids.contains(&e_mid))));
    assert_eq!(a.awaited_acks(&a_mid, u1), None);
    assert!(!a.retains(&a_mid, u1));
    assert_eq!(a.in_flight(), 1);
    assert_eq!(a.awaited_acks(&a_mid, a.seq()), Some(set(&[b_mid, c_mid, d_mid])));
}

#[test]
fn group_fixture_of_version_1_is_refused_with_its_version() {
    let bytes = read_fixture(GROUP_FIXTURE_V1);
    assert_eq!(bytes[..2], [SNAPSHOT_MAGIC, 1]);
    let err = Group::restore(&bytes).err().unwrap();
    assert_eq!(err, SnapshotError::UnsupportedVersion { found: 1, supported: SNAPSHOT_VERSION });
}

#[test]
fn identity_fixture_restores_and_re_encodes_byte_for_byte() {
    let bytes = read_fixture(IDENTITY_FIXTURE);
    assert_eq!(bytes[..2], [IDENTITY_SNAPSHOT_MAGIC, IDENTITY_SNAPSHOT_VERSION]);
    let identity = Identity::restore(&bytes).unwrap();
    assert_eq!(&identity.snapshot()[..], &bytes[..], "the identity snapshot format changed");
    assert_eq!(hex(&identity.public_key().0), BOB_IK_HEX);
    let store = identity.key_store();
    assert!(store.spk(SignedPrekeyId(1)).is_ok() && store.spk(SignedPrekeyId(2)).is_ok());
    assert!(store.spk(SignedPrekeyId(3)).is_err());
    assert_eq!(store.one_time_prekey_count(), OPKS - 1, "joining consumed one of Bob's one-time prekeys");
}

#[test]
fn the_fixtures_are_one_device() {
    // Neither fixture restores as the other kind, and they belong to the same device.
    let group = read_fixture(GROUP_FIXTURE);
    let identity = read_fixture(IDENTITY_FIXTURE);
    assert!(Identity::restore(&group).is_err());
    assert!(Group::restore(&identity).is_err());
    let g = Group::restore(&group).unwrap();
    let id = Identity::restore(&identity).unwrap();
    assert_eq!(g.identity_of(&g.me()), Some(id.public_key()));
}
