//! Helpers shared by the simulator's test suites: building a group, looking at a device's
//! group and at transcript packets, the oracle and error checks, a CSPRNG that records its
//! draws (to recover a device's signing keys, as a snapshot would), posting a call's output
//! into the simulator, re-signing envelopes, and a record of every observable getter of a
//! group ("change nothing" checks). Devices are named by [`dcgka_sim::names`].

// Each suite uses some of these helpers; the lints come from the including crate's root.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;

use dcgka::codec::{Decode, Encode};
use dcgka::crypto::{SigningSecret, VerifyingKey};
use dcgka::dgm::History;
use dcgka::events::Event;
use dcgka::group::{Context, Group, GroupError, Output, Received, Status};
use dcgka::ids::{Epoch, GroupId, MemberId, MessageIndex, SeqNo};
use dcgka::prekeys::{Identity, InMemoryPrekeyDirectory};
use dcgka::wire::{ControlBody, Envelope, SenderRef};
use dcgka_sim::names::A;
use dcgka_sim::{Dev, NOW, Packet, PacketKind, Sim, oracle};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng, TryCryptoRng, TryRng};

/// `n` devices; A creates the group with `others`, and everything is delivered.
pub(crate) fn created(n: usize, others: &[Dev], seed: u64) -> Sim {
    created_with(n, others, seed, |_| {})
}

/// [`created`], with the simulation's options set by `configure` before the create.
pub(crate) fn created_with(n: usize, others: &[Dev], seed: u64, configure: impl FnOnce(&mut Sim)) -> Sim {
    let mut sim = Sim::new(n, seed);
    configure(&mut sim);
    sim.create(A, others).unwrap();
    sim.deliver_all();
    sim
}

/// Device `d`'s live group.
pub(crate) fn group(sim: &Sim, d: Dev) -> &Group {
    sim.devices[d].group().unwrap()
}

/// The control body of transcript packet `id`.
pub(crate) fn control_body(sim: &Sim, id: usize) -> ControlBody {
    let env = parse(&sim.transcript[id].bytes);
    ControlBody::from_bytes(env.kind, &env.body).unwrap()
}

/// The global oracles and the delivery oracle hold.
pub(crate) fn assert_oracles(sim: &Sim) {
    let v = oracle::global_oracles(sim);
    assert!(v.is_empty(), "global oracles: {v:#?}");
    let v = oracle::delivery_violations(sim);
    assert!(v.is_empty(), "delivery: {v:#?}");
}

/// No device reported an error.
pub(crate) fn assert_no_errors(sim: &Sim) {
    assert!(sim.errors().is_empty(), "errors: {:#?}", sim.errors());
}

/// [`assert_oracles`] and [`assert_no_errors`].
pub(crate) fn assert_clean(sim: &Sim) {
    assert_oracles(sim);
    assert_no_errors(sim);
}

/// No extra check, for the scenario runners that take one.
pub(crate) fn none(_: &Sim) -> Vec<String> {
    Vec::new()
}

/// Every observable getter of a group, for "nothing changed" comparisons.
#[derive(Debug, PartialEq)]
pub(crate) struct Observed {
    pub me: MemberId,
    pub status: Status,
    pub members: BTreeSet<MemberId>,
    pub ever_added: BTreeSet<MemberId>,
    pub views: Vec<(MemberId, BTreeSet<MemberId>)>,
    pub sync: BTreeMap<MemberId, SeqNo>,
    pub pending: usize,
    pub history: History<MemberId>,
    pub seq: SeqNo,
    pub heal_pending: bool,
    pub secrets: Vec<(MemberId, SeqNo, MemberId)>,
    pub epochs: Vec<(MemberId, Option<Epoch>, bool)>,
}

pub(crate) fn observe(g: &Group) -> Observed {
    let ever = g.ever_added();
    Observed {
        me: g.me(),
        status: g.status().clone(),
        members: g.members(),
        views: ever.iter().map(|m| (*m, g.member_view(m))).collect(),
        ever_added: ever.clone(),
        sync: g.sync_state(),
        pending: g.pending(),
        history: g.history().clone(),
        seq: g.seq(),
        heal_pending: g.heal_pending(),
        secrets: g.member_secret_keys(),
        epochs: ever.iter().map(|m| (*m, g.sender_epoch(m), g.has_ratchet_state(m))).collect(),
    }
}

/// A group state detached from the simulation (a snapshot), with its identity.
#[derive(Clone)]
pub(crate) struct Detached {
    pub group: Group,
    pub identity: Identity,
}

impl Detached {
    pub(crate) fn of(sim: &Sim, d: Dev) -> Self {
        Detached { group: sim.devices[d].group().cloned().unwrap(), identity: sim.devices[d].identity().clone() }
    }

    /// `receive` with a CSPRNG seeded by `seed`, so two equal states give equal bytes.
    pub(crate) fn recv(
        &mut self,
        dir: &mut InMemoryPrekeyDirectory,
        seed: u64,
        bytes: &[u8],
    ) -> Result<Output, GroupError> {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut ctx = Context { rng: &mut rng, now: NOW, prekeys: dir, identity: &mut self.identity };
        self.group.receive(&mut ctx, bytes)
    }
}

/// What became of a received envelope: [`Output::received`] (harmless outcomes such as a
/// duplicate are not errors), or the error.
pub(crate) fn outcome(r: &Result<Output, GroupError>) -> Result<Received, GroupError> {
    match r {
        Ok(o) => Ok(o.received.clone().unwrap_or(Received::Processed)),
        Err(e) => Err(e.clone()),
    }
}

/// Whether a received envelope was taken (processed or buffered), as opposed to refused
/// with an error or dropped as a duplicate, an echo or a forgery.
pub(crate) fn taken(r: &Result<Output, GroupError>) -> bool {
    matches!(outcome(r), Ok(Received::Processed | Received::Buffered))
}

/// `receive` at device `d`'s live group, without posting the output.
pub(crate) fn recv(sim: &mut Sim, d: Dev, bytes: &[u8]) -> Result<Output, GroupError> {
    let (g, identity) = sim.devices[d].group_mut().unwrap();
    let mut ctx = Context { rng: &mut sim.rng, now: NOW, prekeys: &mut sim.directory, identity };
    g.receive(&mut ctx, bytes)
}

/// Delivers everything except to the devices in `skip` (which stay "offline").
pub(crate) fn deliver_all_except(sim: &mut Sim, skip: &[Dev]) {
    loop {
        let mut progress = false;
        for d in 0..sim.devices.len() {
            if skip.contains(&d) {
                continue;
            }
            while sim.deliver_next(d) {
                progress = true;
            }
        }
        if !progress {
            break;
        }
    }
}

/// Transcript packets that are envelopes, with their bytes.
pub(crate) fn envelope_bytes(sim: &Sim, id: usize) -> Vec<u8> {
    sim.transcript[id].bytes.clone()
}

/// The index of an application message, as reported by a device that decrypted it.
pub(crate) fn index_at(sim: &Sim, d: Dev, id: usize) -> MessageIndex {
    let PacketKind::Envelope(_, seq) = sim.transcript[id].kind else { panic!("not an envelope") };
    let from = sim.transcript[id].from;
    let sender = sim.devices[from].group().map(Group::me).or_else(|| sim.devices[from].retired.last().map(Group::me));
    sim.devices[d]
        .events
        .iter()
        .find_map(|e| match e {
            Event::Message { sender: s, seq: q, index, .. } if Some(*s) == sender && *q == seq => Some(*index),
            _ => None,
        })
        .unwrap_or_else(|| panic!("device {d} did not decrypt packet {id}"))
}

/// A CSPRNG that logs every 32-byte draw. Ed25519 signing keys are 32-byte draws, so a test
/// can recover the signing keys a device generated: what an adversary holding a snapshot
/// of that device's state would know.
pub(crate) struct Recorder {
    pub inner: ChaCha20Rng,
    pub draws: Vec<[u8; 32]>,
}

impl Recorder {
    pub(crate) fn new(seed: u64) -> Self {
        Recorder { inner: ChaCha20Rng::seed_from_u64(seed), draws: Vec::new() }
    }
}

impl TryRng for Recorder {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(self.inner.next_u32())
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.inner.next_u64())
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.inner.fill_bytes(dst);
        if let Ok(a) = <[u8; 32]>::try_from(&*dst) {
            self.draws.push(a);
        }
        Ok(())
    }
}

impl TryCryptoRng for Recorder {}

/// The signing secret among `draws` whose public half is `vk`.
pub(crate) fn signing_key_for(draws: &[[u8; 32]], vk: &VerifyingKey) -> SigningSecret {
    draws
        .iter()
        .map(SigningSecret::from_bytes)
        .find(|k| k.verifying_key() == *vk)
        .expect("the signing key was drawn from the recorder")
}

/// Posts a call's output as the simulator would (broadcast to all others, Welcomes to
/// their recipient). Returns the transcript ids.
pub(crate) fn inject(sim: &mut Sim, from: Dev, out: Output) -> Vec<usize> {
    let mut ids = Vec::new();
    for bytes in out.broadcast {
        let p = Group::peek(&bytes).unwrap();
        let id = sim.transcript.len();
        let pk = Packet { id, from, kind: PacketKind::Envelope(p.kind, p.seq), bytes };
        sim.transcript.push(pk.clone());
        for to in 0..sim.devices.len() {
            if to != from {
                sim.devices[to].inbox.push_back(pk.clone());
            }
        }
        ids.push(id);
    }
    for w in out.direct {
        let id = sim.transcript.len();
        let pk = Packet { id, from, kind: PacketKind::Welcome, bytes: w.bytes };
        sim.transcript.push(pk.clone());
        let to = sim.devices.iter().position(|dv| dv.identity().public_key() == w.identity).unwrap();
        sim.devices[to].inbox.push_back(pk);
        ids.push(id);
    }
    sim.devices[from].events.extend(out.events);
    ids
}

/// `create` at `d` with a recording CSPRNG (and the simulation's group configuration).
pub(crate) fn create_recorded(sim: &mut Sim, d: Dev, others: &[Dev], seed: u64) -> (Vec<usize>, Vec<[u8; 32]>) {
    let iks: Vec<_> = others.iter().map(|o| sim.ik(*o)).collect();
    let mut rec = Recorder::new(seed);
    let mut identity = sim.devices[d].identity().clone();
    let mut ctx = Context { rng: &mut rec, now: NOW, prekeys: &mut sim.directory, identity: &mut identity };
    let (g, out) = Group::create(&mut ctx, &iks, sim.config).unwrap();
    sim.devices[d].install(g);
    let ids = inject(sim, d, out);
    (ids, rec.draws)
}

/// [`created`], with A's create made under a recording CSPRNG seeded by `rng_seed` (see
/// [`create_recorded`]). Returns the simulation and the signing key that A's create
/// announces, as an adversary holding a snapshot of A would know it.
pub(crate) fn created_recorded(n: usize, others: &[Dev], seed: u64, rng_seed: u64) -> (Sim, SigningSecret) {
    let mut sim = Sim::new(n, seed);
    let (ids, draws) = create_recorded(&mut sim, A, others, rng_seed);
    sim.deliver_all();
    let key = signing_key_for(&draws, &parse(&envelope_bytes(&sim, ids[0])).new_signing_key.unwrap());
    (sim, key)
}

pub(crate) fn parse(bytes: &[u8]) -> Envelope {
    Envelope::from_bytes(bytes).unwrap()
}

/// Re-signs `env` (unchanged otherwise) as `sender` under `key`.
pub(crate) fn resign(env: &Envelope, gid: &GroupId, sender: &MemberId, key: &SigningSecret) -> Vec<u8> {
    let first = match env.sender {
        SenderRef::Identity(ik) => Some(ik),
        SenderRef::Tag(_) => None,
    };
    Envelope::seal(env.kind, gid, env.seq, sender, first, env.new_signing_key, env.key_cert, env.body.clone(), key)
        .to_bytes()
}
