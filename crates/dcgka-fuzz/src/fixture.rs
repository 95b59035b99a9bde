//! The fixture every stateful target starts from: a real group history, built once per
//! process with the simulator from a fixed seed, so that every run of a target sees the
//! same starting state and a committed input means the same thing tomorrow.
//!
//! A, B and C form a group and exchange messages; that moment is the *checkpoint*, whose
//! states the targets start from. After it, with B offline, A sends, C updates, A adds D
//! (a Welcome), D sends, A removes C and sends again: those packets are the genuine input
//! the seeds replay.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use dcgka::group::{Context, Group, GroupConfig};
use dcgka::ids::MemberId;
use dcgka::prekeys::{Identity, InMemoryPrekeyDirectory};
use dcgka_device::SyncRequest;
use dcgka_sim::Device;
use dcgka_sim::{NOW, Packet, PacketKind, Sim};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// The fixture's devices.
const A: usize = 0;
const B: usize = 1;
const C: usize = 2;
const D: usize = 3;

/// What the targets start from.
pub(crate) struct Fixture {
    /// The prekey directory at the checkpoint.
    pub(crate) directory: InMemoryPrekeyDirectory,
    /// A's group and identity at the checkpoint (the insider whose key signs).
    pub(crate) a: Group,
    /// A's identity at the checkpoint.
    pub(crate) a_identity: Identity,
    /// B's group at the checkpoint (the member that receives).
    pub(crate) b: Group,
    /// B's identity at the checkpoint.
    pub(crate) b_identity: Identity,
    /// B's device at the checkpoint.
    pub(crate) b_device: Device,
    /// Every packet sent after the checkpoint, in transcript order.
    pub(crate) after: Vec<Packet>,
    /// The Welcome that added D.
    pub(crate) welcome: Vec<u8>,
    /// D's identity before it joined.
    pub(crate) newcomer: Identity,
    /// The members D sees right after joining from the Welcome.
    pub(crate) joined_members: BTreeSet<MemberId>,
    /// Every plaintext any device sent.
    pub(crate) plaintexts: BTreeSet<Vec<u8>>,
    /// Every instance ever in the group.
    pub(crate) known: BTreeSet<MemberId>,
    /// Group snapshots (at the checkpoint and at the end, every device).
    pub(crate) snapshots: Vec<Vec<u8>>,
    /// Sender records `(core, member, record)` of every device's group at the end.
    pub(crate) records: Vec<(Vec<u8>, MemberId, Vec<u8>)>,
    /// Identity snapshots of every device at the end.
    pub(crate) identities: Vec<Vec<u8>>,
    /// B's sync request at the checkpoint.
    pub(crate) sync_request: Vec<u8>,
    /// A's answer to it at the end.
    pub(crate) sync_response: Vec<u8>,
}

impl Fixture {
    /// A fresh RNG for one target run (deterministic, so that a finding replays).
    pub(crate) fn rng() -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(0xf022)
    }
}

/// The fixture, built on first use.
pub(crate) fn get() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(build)
}

/// Builds the fixture. A failure here is a bug in the library or the simulator, not a
/// finding about fuzzer input, so it stops the process.
#[allow(clippy::expect_used)]
fn build() -> Fixture {
    let mut sim = Sim::new(4, 0x5eed_f022);
    sim.create(A, &[B, C]).expect("create");
    sim.deliver_all();
    sim.send(A, b"before the checkpoint, from A").expect("send");
    sim.send(B, b"before the checkpoint, from B").expect("send");
    sim.deliver_all();

    let group = |sim: &Sim, d: usize| sim.devices[d].group().cloned().expect("a live group");
    let a = group(&sim, A);
    let b = group(&sim, B);
    let a_identity = sim.devices[A].device.identity().clone();
    let b_identity = sim.devices[B].device.identity().clone();
    let b_device = sim.devices[B].device.clone();
    let directory = sim.directory.clone();
    let newcomer = sim.devices[D].device.identity().clone();
    let sync_request = b_device.sync_request().to_bytes();
    let mut snapshots = vec![a.snapshot().to_vec(), b.snapshot().to_vec()];
    let mark = sim.transcript.len();

    // B is offline from the checkpoint on, so it sends nothing after it: the targets
    // continue B's checkpoint state, and an envelope B sent later would rightly be taken
    // for a fork of that state (§7.3).
    sim.split(vec![0, 1, 0, 0]);
    sim.send(A, b"after the checkpoint, from A").expect("send");
    sim.update(C).expect("update");
    sim.deliver_all();
    sim.add(A, D).expect("add");
    sim.deliver_all();
    sim.send(D, b"hello from the newcomer").expect("send");
    sim.remove(A, C).expect("remove");
    sim.deliver_all();
    sim.send(A, b"after the removal, from A").expect("send");
    sim.deliver_all();

    let after: Vec<Packet> = sim.transcript[mark..].to_vec();
    let welcome = after.iter().find(|p| p.kind == PacketKind::Welcome).expect("a Welcome").bytes.clone();
    let mut rng = Fixture::rng();
    let joined_members = {
        let (mut dir, mut id) = (directory.clone(), newcomer.clone());
        let mut ctx = Context { rng: &mut rng, now: NOW, prekeys: &mut dir, identity: &mut id };
        let (g, _) = Group::join(&mut ctx, &welcome, GroupConfig::default()).expect("the genuine Welcome joins");
        g.members()
    };
    let req = SyncRequest::from_bytes(&sync_request).expect("a request decodes");
    let sync_response = sim.devices[A].device.answer_sync(&req).to_bytes();

    let mut known = BTreeSet::new();
    let mut records = Vec::new();
    let mut identities = Vec::new();
    for dev in &sim.devices {
        identities.push(dev.device.identity().snapshot().to_vec());
        for g in dev.group().into_iter().chain(&dev.retired) {
            known.extend(g.ever_added());
            snapshots.push(g.snapshot().to_vec());
            let r = g.records();
            for (m, rec) in &r.senders {
                records.push((r.core.to_vec(), *m, rec.to_vec()));
            }
        }
    }
    let plaintexts = sim.messages.iter().map(|m| m.plaintext.clone()).collect();
    Fixture {
        directory,
        a,
        a_identity,
        b,
        b_identity,
        b_device,
        after,
        welcome,
        newcomer,
        joined_members,
        plaintexts,
        known,
        snapshots,
        records,
        identities,
        sync_request,
        sync_response,
    }
}
