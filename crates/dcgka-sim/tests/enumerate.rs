//! Exhaustive enumeration of delivery orders for the concurrent scenarios of spec §10
//! (S2, S3, S4, S5, S6, S7, S8, the concurrent part of S11) and the rows of the §6.5
//! conflict table.
//!
//! Each scenario scripts its setup and its concurrent operations, then a depth-first
//! search explores **every** processing order the ordering layer (ACB, §7.3) can produce,
//! to quiescence. At every leaf it checks that every device ends with the expected
//! membership (or status), that the global oracles and the delivery oracle hold, that
//! no device reported an error, and that a message sent by every member after full
//! delivery is read by exactly the final members.
//!
//! # The reduction, and why it is still exhaustive
//!
//! A transport may deliver any packet to any device at any time. What a device does
//! with a packet, though, is fixed by its ordering layer: an envelope is *processed*
//! only when it is ready (§7.3: the next sequence number of its sender, and, for an ack,
//! after the acknowledged operation); otherwise it is buffered, and processed the moment
//! it becomes ready. Delivering a non-ready envelope changes nothing but the buffer.
//! So every transport order produces a *processing* order in which each device
//! processes envelopes one at a time, each ready when processed; and conversely every
//! such processing order arises from some transport order (deliver each envelope just
//! when it is ready). The search therefore enumerates processing orders:
//!
//! 1. **Only ready envelopes are branched on.** Per device and per sender at most one
//!    envelope is ready (the next in FIFO), so per-sender FIFO delivery is built in;
//!    acks are offered only once the acknowledged operation has been processed. Stale
//!    envelopes (below a newcomer's horizon, or already processed) are never branched
//!    on: the layer drops them without any effect. Welcomes are always ready (they are
//!    direct messages). After every step the search checks that the device buffered
//!    nothing, i.e. that its readiness test agreed with the library's.
//! 2. **Devices without a live instance** (not yet joined, or terminated) are offered
//!    only Welcomes: the simulator holds other envelopes for them and re-queues them when
//!    they join, which is the same as delivering them afterwards.
//! 3. **Non-emitting packets are delivered lazily, in batches.** Acks, add-acks and
//!    application messages never make the receiver send anything (they are not
//!    acknowledged; the search asserts this at every step), and two of them from
//!    different senders commute at a device: they touch disjoint per-sender state
//!    (`rt`, `ms`, `fs`, `saw` entries, 2SM channel, `hwm`), and SR-DGM is a function of
//!    the operation set. Their position matters only relative to the *emitting* packets
//!    (creates, updates, removes, adds, Welcomes) processed at the same device. So a
//!    transition is "device d processes one emitting packet e, preceded by any per-sender
//!    FIFO prefixes of its ready non-emitting chains" (the chain of e's own sender in
//!    full, since it precedes e in FIFO); every combination of prefixes is a branch. When
//!    no emitting packet is ready anywhere, all remaining non-emitting packets are
//!    processed (the order of a final run is irrelevant by commutation) and the leaf is
//!    checked. The commutation claim is not just assumed: at every explored state, every
//!    pair of ready non-emitting packets from different senders at one device is
//!    processed in both orders and the two resulting states are compared (members,
//!    history, views, `saw`, hwm, member secrets, every ratchet state and sending epoch,
//!    heal flag, status); a difference is reported as a violation.
//! 4. **Memoisation on canonical local histories.** A device's state is a function of the
//!    sequence of packets it processed (and of their contents, which are functions of
//!    their senders' histories when sent), up to the values drawn from the random
//!    generator. Interleavings that give every device the same sequence reach the same
//!    global state, so each is explored once. The key is the vector of per-device
//!    sequences of canonical packet names `(sender device, kind, sequence number,
//!    instance generation)`, independent of transcript numbering, with each run of
//!    non-emitting packets sorted (rule 3); it is stored as a 128-bit fingerprint.
//!    (Plain *sets* of delivered packets would be unsound: a device that processes A2
//!    then B2 sends different acks than one that processes B2 then A2.)
//!
//! Within these rules the search is complete: every per-device processing order
//! reachable under the ACB rules is covered up to the commutation of non-emitting
//! packets, which the audit checks. Optional mid-flight messages are sent
//! deterministically (by a device right after its first reply), so they are part of its
//! local history.
//!
//! Sizes: every scenario uses its spec size (at most five devices), except the
//! transitive-cancellation row, which uses the smallest group that shows the cascade
//! ({A, B}, then C and D): with an extra observer it takes over a minute on two cores.
//! Runtime of the whole file in `cargo test --release`: about 5 s.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::hash::{Hash, Hasher};
use std::time::Instant;

use common::{control_body, created, none};
use dcgka::codec::Decode;
use dcgka::events::Event;
use dcgka::group::Status;
use dcgka::ids::{MemberId, Origin};
use dcgka::wire::{ControlBody, Envelope, EnvelopeKind, SenderRef};
use dcgka_sim::names::{A, B, C, D};
use dcgka_sim::{Dev, PacketKind, Sim, oracle};

/// Canonical packet name: (sender device, kind tag or 255 for a Welcome, seq, generation).
type Name = (Dev, u8, u64, u32);

/// Per sender: its ready non-emitting chain, and the emitting packet after it.
type Chains = BTreeMap<MemberId, (Vec<usize>, Option<usize>)>;

/// The simulation plus what the search needs to know about it.
#[derive(Clone)]
struct World {
    sim: Sim,
    names: Vec<Name>,
    local: Vec<Vec<Name>>,
    mid_senders: Vec<bool>,
    started: Vec<bool>,
}

enum Verdict {
    Ready,
    Wait,
}

impl World {
    fn new(sim: Sim, mid_senders: &[Dev]) -> Self {
        let n = sim.devices.len();
        let mut w = World {
            sim,
            names: Vec::new(),
            local: vec![Vec::new(); n],
            mid_senders: (0..n).map(|d| mid_senders.contains(&d)).collect(),
            started: vec![false; n],
        };
        w.sync_names();
        w
    }

    fn sync_names(&mut self) {
        for i in self.names.len()..self.sim.transcript.len() {
            let p = &self.sim.transcript[i];
            let (k, seq) = match p.kind {
                PacketKind::Envelope(k, s) => (k.tag(), s.0),
                PacketKind::Welcome => {
                    // The Welcome carries the add envelope sent just before it.
                    let add = (0..i)
                        .rev()
                        .find(|j| {
                            let q = &self.sim.transcript[*j];
                            q.from == p.from && matches!(q.kind, PacketKind::Envelope(EnvelopeKind::Add, _))
                        })
                        .unwrap();
                    (255, self.names[add].2)
                }
            };
            let generation = self.names.iter().filter(|n| n.0 == p.from && n.1 == k && n.2 == seq).count() as u32;
            self.names.push((p.from, k, seq, generation));
        }
    }

    /// Whether packet `id`, queued at `d`, would be processed at once.
    fn verdict(&self, d: Dev, id: usize) -> Verdict {
        let p = &self.sim.transcript[id];
        let dev = &self.sim.devices[d];
        if p.kind == PacketKind::Welcome {
            return Verdict::Ready;
        }
        let Some(g) = dev.group().filter(|_| dev.active()) else { return Verdict::Wait };
        let env = Envelope::from_bytes(&p.bytes).unwrap();
        let sync = g.sync_state();
        let find = |t: &dcgka::ids::MemberTag| sync.iter().find(|(m, _)| m.tag() == *t).map(|(m, h)| (*m, h.0));
        // The acknowledged operation must have been processed (or lie below the horizon).
        let acked = match env.kind {
            EnvelopeKind::Ack | EnvelopeKind::AddAck => match ControlBody::from_bytes(env.kind, &env.body).unwrap() {
                ControlBody::Ack { of, .. } | ControlBody::AddAck { of, .. } => match find(&of.of_sender) {
                    Some((m, h)) if h >= of.of_seq.0 => Some((m, of.of_seq)),
                    _ => return Verdict::Wait,
                },
                _ => unreachable!(),
            },
            _ => None,
        };
        match env.sender {
            SenderRef::Tag(t) => match find(&t) {
                Some((_, h)) if env.seq.0 == h + 1 => Verdict::Ready,
                _ => Verdict::Wait,
            },
            SenderRef::Identity(ik) => {
                let Some((y, q)) = acked else { return Verdict::Wait };
                let mid = MemberId::derive(&g.gid(), &ik, Origin::Operation(y, q));
                match sync.get(&mid) {
                    Some(h) if h.0 >= 1 => Verdict::Wait, // stale
                    _ if ik == dev.identity().public_key() => Verdict::Wait,
                    _ => Verdict::Ready,
                }
            }
        }
    }

    fn choices(&self) -> Vec<(Dev, usize)> {
        let mut v = Vec::new();
        for d in 0..self.sim.devices.len() {
            for p in &self.sim.devices[d].inbox {
                if matches!(self.verdict(d, p.id), Verdict::Ready) {
                    v.push((d, p.id));
                }
            }
        }
        v
    }

    /// Per sender at an active device `d`: the chain of non-emitting packets that would be
    /// processed in FIFO order one after the other, and the emitting packet that follows
    /// it, if that one is ready once the chain is processed. Welcomes are returned apart.
    fn chains(&self, d: Dev) -> (Chains, Vec<usize>) {
        let dev = &self.sim.devices[d];
        let welcomes: Vec<usize> = dev.inbox.iter().filter(|p| p.kind == PacketKind::Welcome).map(|p| p.id).collect();
        let mut chains: Chains = BTreeMap::new();
        let Some(g) = dev.group().filter(|_| dev.active()) else { return (chains, welcomes) };
        let mut hwm: BTreeMap<MemberId, u64> = g.sync_state().into_iter().map(|(m, h)| (m, h.0)).collect();
        let envs: Vec<(usize, Envelope)> = dev
            .inbox
            .iter()
            .filter(|p| p.kind != PacketKind::Welcome)
            .map(|p| (p.id, Envelope::from_bytes(&p.bytes).unwrap()))
            .collect();
        let mut used = vec![false; envs.len()];
        loop {
            let mut progress = false;
            for (i, (id, env)) in envs.iter().enumerate() {
                if used[i] {
                    continue;
                }
                let find = |t: &dcgka::ids::MemberTag| hwm.iter().find(|(m, _)| m.tag() == *t).map(|(m, h)| (*m, *h));
                let acked = match env.kind {
                    EnvelopeKind::Ack | EnvelopeKind::AddAck => {
                        match ControlBody::from_bytes(env.kind, &env.body).unwrap() {
                            ControlBody::Ack { of, .. } | ControlBody::AddAck { of, .. } => match find(&of.of_sender) {
                                Some((m, h)) if h >= of.of_seq.0 => Some((m, of.of_seq)),
                                _ => continue,
                            },
                            _ => unreachable!(),
                        }
                    }
                    _ => None,
                };
                let sender = match env.sender {
                    SenderRef::Tag(t) => match find(&t) {
                        Some((m, _)) => m,
                        None => continue,
                    },
                    SenderRef::Identity(ik) => {
                        let Some((y, q)) = acked else { continue };
                        if ik == dev.identity().public_key() {
                            continue;
                        }
                        MemberId::derive(&g.gid(), &ik, Origin::Operation(y, q))
                    }
                };
                let h = hwm.get(&sender).copied().unwrap_or(0);
                if env.seq.0 != h + 1 {
                    continue;
                }
                let chain = chains.entry(sender).or_default();
                if chain.1.is_some() {
                    continue;
                }
                used[i] = true;
                progress = true;
                if emits(&self.names[*id]) {
                    chain.1 = Some(*id);
                } else {
                    chain.0.push(*id);
                    hwm.insert(sender, env.seq.0);
                }
            }
            if !progress {
                break;
            }
        }
        (chains, welcomes)
    }

    /// Every transition from this state: (device, packets to process in order). Each
    /// ends with one emitting packet (or a Welcome), preceded by any per-sender FIFO
    /// prefixes of the non-emitting chains at that device (the whole chain of the
    /// emitting packet's own sender).
    fn transitions(&self) -> Vec<(Dev, Vec<usize>)> {
        let mut v = Vec::new();
        for d in 0..self.sim.devices.len() {
            let (chains, welcomes) = self.chains(d);
            for w in welcomes {
                v.push((d, vec![w]));
            }
            let senders: Vec<&MemberId> = chains.keys().collect();
            for x in &senders {
                let (own, Some(e)) = &chains[*x] else { continue };
                // Odometer over the prefix lengths of the other senders' chains.
                let others: Vec<&Vec<usize>> = senders.iter().filter(|y| *y != x).map(|y| &chains[*y].0).collect();
                let mut len = vec![0usize; others.len()];
                loop {
                    let mut batch = Vec::new();
                    for (c, l) in others.iter().zip(&len) {
                        batch.extend_from_slice(&c[..*l]);
                    }
                    batch.extend_from_slice(own);
                    batch.push(*e);
                    v.push((d, batch));
                    let mut k = 0;
                    while k < len.len() && len[k] == others[k].len() {
                        len[k] = 0;
                        k += 1;
                    }
                    if k == len.len() {
                        break;
                    }
                    len[k] += 1;
                }
            }
        }
        v
    }

    /// Processes every non-emitting chain everywhere (the final runs).
    fn flush(&mut self) {
        loop {
            let mut any = false;
            for d in 0..self.sim.devices.len() {
                let (chains, _) = self.chains(d);
                for (own, _) in chains.values() {
                    for id in own {
                        self.step(d, *id);
                        any = true;
                    }
                }
            }
            if !any {
                break;
            }
        }
    }

    fn step(&mut self, d: Dev, id: usize) {
        let before = self.sim.transcript.len();
        assert!(self.sim.deliver_id(d, id));
        if let Some(g) = self.sim.devices[d].group() {
            assert_eq!(
                g.pending(),
                0,
                "readiness mismatch: {} buffered #{id} {:?} after {:?}",
                self.sim.devices[d].name,
                self.names[id],
                self.local[d]
            );
        }
        let name = self.names[id];
        let replied = self.sim.transcript.len() != before;
        assert!(emits(&name) || !replied, "{} replied to a non-emitting {:?}", self.sim.devices[d].name, name);
        self.local[d].push(name);
        if self.mid_senders[d] && !self.started[d] && replied && self.sim.devices[d].active() {
            let text = format!("mid from {}", self.sim.devices[d].name);
            self.sim.send(d, text.as_bytes()).unwrap();
            self.started[d] = true;
        }
        self.sync_names();
    }

    /// Checks the commutation the reduction relies on: for every two ready non-emitting
    /// packets from different senders at one device, processing them in either order
    /// leaves that device in the same state.
    fn audit(&self) -> Vec<String> {
        let mut v = Vec::new();
        let choices = self.choices();
        for (i, (d, p)) in choices.iter().enumerate() {
            for (d2, q) in &choices[i + 1..] {
                let (np, nq) = (self.names[*p], self.names[*q]);
                if d != d2 || emits(&np) || emits(&nq) || np.0 == nq.0 {
                    continue;
                }
                let mut w1 = self.clone();
                w1.step(*d, *p);
                w1.step(*d, *q);
                let mut w2 = self.clone();
                w2.step(*d, *q);
                w2.step(*d, *p);
                if let Some(diff) = differs(&w1.sim, &w2.sim, *d) {
                    v.push(format!(
                        "{}: {:?} and {:?} do not commute ({diff}) after {:?}",
                        self.sim.devices[*d].name, np, nq, self.local
                    ));
                }
            }
        }
        v
    }
}

/// How device `d`'s state differs between two simulations, if it does.
fn differs(s1: &Sim, s2: &Sim, d: Dev) -> Option<String> {
    let (a, b) = (&s1.devices[d], &s2.devices[d]);
    if a.active() != b.active() {
        return Some("status".into());
    }
    let (Some(g1), Some(g2)) = (a.group(), b.group()) else { return None };
    if g1.status() != g2.status() {
        return Some("status".into());
    }
    if g1.members() != g2.members() {
        return Some("members".into());
    }
    if !g1.history().same_history(g2.history()) {
        return Some("history".into());
    }
    if g1.heal_pending() != g2.heal_pending() || g1.seq() != g2.seq() || g1.sync_state() != g2.sync_state() {
        return Some("heal/seq/hwm".into());
    }
    let (mut k1, mut k2) = (g1.member_secret_keys(), g2.member_secret_keys());
    k1.sort();
    k2.sort();
    if k1 != k2 {
        return Some("member secrets".into());
    }
    for id in g1.ever_added() {
        if !g1.same_ratchet_state(g2, &id) || g1.sender_epoch(&id) != g2.sender_epoch(&id) {
            return Some(format!("ratchet of {}", s1.name_of_member(&id)));
        }
        if g1.member_view(&id) != g2.member_view(&id) {
            return Some(format!("view of {}", s1.name_of_member(&id)));
        }
    }
    None
}

/// Whether processing a packet of this kind can make the receiver send something: acks,
/// add-acks and application messages never do (they are not acknowledged).
fn emits(n: &Name) -> bool {
    !matches!(n.1, 2 | 6 | 16)
}

/// The canonical form of local histories: every maximal run of non-emitting packets
/// between two emitting ones is sorted (such packets commute; see the module docs and
/// [`World::audit`]).
fn canonical(local: &[Vec<Name>]) -> Vec<Vec<Name>> {
    local
        .iter()
        .map(|seq| {
            let mut out = Vec::with_capacity(seq.len());
            let mut run: Vec<Name> = Vec::new();
            for n in seq {
                if emits(n) {
                    run.sort_unstable();
                    out.append(&mut run);
                    out.push(*n);
                } else {
                    run.push(*n);
                }
            }
            run.sort_unstable();
            out.append(&mut run);
            out
        })
        .collect()
}

/// A 128-bit fingerprint of the (canonical) per-device local histories (two independently keyed
/// 64-bit hashes; a collision, which would wrongly prune a state, has probability about
/// 2⁻¹²⁸ per pair).
fn fingerprint(local: &[Vec<Name>]) -> u128 {
    let h = |salt: u64| {
        let mut s = DefaultHasher::new();
        salt.hash(&mut s);
        canonical(local).hash(&mut s);
        s.finish()
    };
    (u128::from(h(0x5eed_0001)) << 64) | u128::from(h(0x5eed_0002))
}

/// What a scenario expects at every leaf.
struct Expect {
    /// For each device: `Some(final members as devices)` if it must hold a live instance,
    /// `None` if it must not (terminated with `Removed`, or never joined). Several
    /// alternatives are allowed where the spec says the outcome depends on the order.
    outcomes: Vec<Vec<Option<Vec<Dev>>>>,
    /// Devices whose (last) instance must have terminated with `Removed`.
    removed: Vec<Dev>,
}

struct Explorer {
    seen: HashSet<u128>,
    leaves: usize,
    steps: usize,
    outcomes: BTreeMap<Vec<Option<BTreeSet<String>>>, usize>,
    violations: Vec<String>,
    expect: Expect,
    extra: fn(&Sim) -> Vec<String>,
}

impl Explorer {
    /// Explores `w`, whose key has just been inserted into `seen`.
    fn explore(&mut self, w: World) {
        self.violations.extend(w.audit());
        let transitions = w.transitions();
        if transitions.is_empty() {
            let mut w = w;
            w.flush();
            self.leaf(w);
            return;
        }
        // Successor keys are known before stepping: skip the already explored ones
        // without cloning or processing anything.
        let fresh: Vec<(Dev, Vec<usize>)> = transitions
            .into_iter()
            .filter(|(d, batch)| {
                let mut k = w.local.clone();
                k[*d].extend(batch.iter().map(|id| w.names[*id]));
                self.seen.insert(fingerprint(&k))
            })
            .collect();
        let last = fresh.len().wrapping_sub(1);
        let mut w = Some(w);
        for (k, (d, batch)) in fresh.into_iter().enumerate() {
            let mut next = if k == last { w.take().unwrap() } else { w.as_ref().unwrap().clone() };
            for id in batch {
                next.step(d, id);
                self.steps += 1;
            }
            self.explore(next);
        }
    }

    fn leaf(&mut self, w: World) {
        self.leaves += 1;
        let mut sim = w.sim;
        let order = format!("{:?}", w.local);
        let mut v = Vec::new();
        let n = sim.devices.len();
        let outcome: Vec<Option<BTreeSet<String>>> =
            (0..n).map(|d| sim.devices[d].active().then(|| sim.member_names(d))).collect();
        let ok = self.expect.outcomes.iter().any(|alt| {
            alt.iter().enumerate().all(|(d, e)| {
                let want = e.as_ref().map(|m| m.iter().map(|x| sim.devices[*x].name.clone()).collect());
                outcome[d] == want
            })
        });
        if !ok {
            v.push(format!("membership {outcome:?}"));
        }
        *self.outcomes.entry(outcome).or_default() += 1;
        for d in &self.expect.removed {
            let dev = &sim.devices[*d];
            if dev.active() || !dev.retired.last().is_some_and(|g| matches!(g.status(), Status::Removed { .. })) {
                v.push(format!("{} must have terminated (Removed)", dev.name));
            }
        }
        // Quiescent: nothing buffered anywhere; flushing the stale rest changes nothing.
        for (d, g) in oracle::active(&sim) {
            if g.pending() != 0 {
                v.push(format!("{} still buffers {} envelopes", sim.devices[d].name, g.pending()));
            }
        }
        let before = sim.transcript.len();
        sim.deliver_all();
        if sim.transcript.len() != before {
            v.push("stale packets produced output".into());
        }
        v.extend(oracle::global_oracles(&sim));
        v.extend(oracle::delivery_violations(&sim));
        v.extend((self.extra)(&sim));
        for (name, errs) in sim.errors() {
            v.push(format!("errors at {name}: {errs:?}"));
        }
        // Everyone sends after full delivery: exactly the final members read it.
        let senders: Vec<Dev> = (0..n).filter(|d| sim.devices[*d].active()).collect();
        let mut sent = Vec::new();
        for d in &senders {
            let ids = sim.send(*d, format!("final from {}", sim.devices[*d].name).as_bytes()).unwrap();
            sent.push((*d, *ids.last().unwrap()));
        }
        sim.deliver_all();
        for (s, id) in sent {
            for d in 0..n {
                if d != s && sim.decrypted(d, id) != senders.contains(&d) {
                    v.push(format!(
                        "final message of {}: read by {} = {}",
                        sim.devices[s].name,
                        sim.devices[d].name,
                        !senders.contains(&d)
                    ));
                }
            }
        }
        v.extend(oracle::global_oracles(&sim));
        if !v.is_empty() {
            self.violations.push(format!("order {order}: {v:?}"));
        }
    }
}

/// Runs the search from `sim` (after the scenario's script) and asserts everything.
fn enumerate(name: &str, sim: Sim, mid_senders: &[Dev], expect: Expect, extra: fn(&Sim) -> Vec<String>) {
    let t = Instant::now();
    let mut x = Explorer {
        seen: HashSet::new(),
        leaves: 0,
        steps: 0,
        outcomes: BTreeMap::new(),
        violations: Vec::new(),
        expect,
        extra,
    };
    let w = World::new(sim, mid_senders);
    x.seen.insert(fingerprint(&w.local));
    x.explore(w);
    println!(
        "{name}: {} states, {} steps, {} leaves (distinct final histories), {:.1?}; outcomes {:?}",
        x.seen.len(),
        x.steps,
        x.leaves,
        t.elapsed(),
        x.outcomes
    );
    assert!(x.leaves > 1, "{name}: the scenario must have concurrency");
    assert!(
        x.violations.is_empty(),
        "{name}: {} of {} leaves violate; first: {:#?}",
        x.violations.len(),
        x.leaves,
        &x.violations[..x.violations.len().min(3)]
    );
}

fn same(devs: &[Dev], members: &[Dev], n: usize) -> Vec<Option<Vec<Dev>>> {
    (0..n).map(|d| devs.contains(&d).then(|| members.to_vec())).collect()
}

fn no_cancelled_ratchet(sim: &Sim) -> Vec<String> {
    // §5.7 [fix]: A has processed its own remove(B) before B's add, so E is cancelled at A
    // and A's add-ack must carry no ratchet.
    let mut v = Vec::new();
    for p in sim.transcript.iter().filter(|p| p.from == A) {
        let PacketKind::Envelope(EnvelopeKind::AddAck, _) = p.kind else { continue };
        if let ControlBody::AddAck { ratchet_ct: Some(_), .. } = control_body(sim, p.id) {
            v.push("A sent a ratchet to the cancelled E".into());
        }
    }
    v
}

// ------------------------------------------------------------------------------------

/// S2: A update ∥ C add(D), group {A, B, C}; B sends a message mid-flight.
#[test]
fn enumerate_s2_update_concurrent_with_add() {
    let mut sim = created(4, &[B, C], 2);
    sim.update(A).unwrap();
    sim.send(A, b"mA@A2").unwrap();
    sim.add(C, D).unwrap();
    let all = [A, B, C, D];
    enumerate("S2", sim, &[B], Expect { outcomes: vec![same(&all, &all, 4)], removed: vec![] }, none);
}

/// S3: A add(C) ∥ B add(D), group {A, B}; C sends mid-flight.
#[test]
fn enumerate_s3_concurrent_adds() {
    let mut sim = created(4, &[B], 3);
    sim.add(A, C).unwrap();
    sim.add(B, D).unwrap();
    let all = [A, B, C, D];
    enumerate("S3", sim, &[C], Expect { outcomes: vec![same(&all, &all, 4)], removed: vec![] }, none);
}

/// S4: A update ∥ B update, group {A, B, C}; C sends mid-flight.
#[test]
fn enumerate_s4_concurrent_updates() {
    let mut sim = created(3, &[B, C], 4);
    sim.update(A).unwrap();
    sim.update(B).unwrap();
    let all = [A, B, C];
    enumerate("S4", sim, &[C], Expect { outcomes: vec![same(&all, &all, 3)], removed: vec![] }, none);
}

/// S5: A remove(C) ∥ C update (both send right after), group {A, B, C}.
#[test]
fn enumerate_s5_remove_concurrent_with_update() {
    let mut sim = created(3, &[B, C], 5);
    sim.remove(A, C).unwrap();
    sim.send(A, b"mA@A2").unwrap();
    sim.update(C).unwrap();
    sim.send(C, b"mC@C2").unwrap();
    enumerate("S5", sim, &[B], Expect { outcomes: vec![same(&[A, B], &[A, B], 3)], removed: vec![C] }, none);
}

/// S6: A remove(B) ∥ B remove(A), group {A, B, C, D}.
#[test]
fn enumerate_s6_mutual_removes() {
    let mut sim = created(4, &[B, C, D], 6);
    sim.remove(A, B).unwrap();
    sim.remove(B, A).unwrap();
    enumerate("S6", sim, &[], Expect { outcomes: vec![same(&[C, D], &[C, D], 4)], removed: vec![A, B] }, none);
}

/// §6.5 mutual removes at the smallest size: A remove(B) ∥ B remove(A), group {A, B, C}.
#[test]
fn enumerate_conflict_mutual_removes_three() {
    let mut sim = created(3, &[B, C], 61);
    sim.remove(A, B).unwrap();
    sim.remove(B, A).unwrap();
    enumerate("mutual-3", sim, &[C], Expect { outcomes: vec![same(&[C], &[C], 3)], removed: vec![A, B] }, none);
}

/// S7: A remove(C) ∥ B remove(D), group {A, B, C, D}.
#[test]
fn enumerate_s7_concurrent_removes() {
    let mut sim = created(4, &[B, C, D], 7);
    sim.remove(A, C).unwrap();
    sim.remove(B, D).unwrap();
    enumerate("S7", sim, &[], Expect { outcomes: vec![same(&[A, B], &[A, B], 4)], removed: vec![C, D] }, none);
}

/// S8 (§6.5 "remove ∥ add by the removed member"): A remove(B) ∥ B add(E), group
/// {A, B, C}; E is device 3 here. C sends mid-flight.
#[test]
fn enumerate_s8_remove_concurrent_with_add_by_removed() {
    let mut sim = created(4, &[B, C], 8);
    sim.remove(A, B).unwrap();
    sim.add(B, D).unwrap();
    enumerate("S8", sim, &[C], Expect { outcomes: vec![same(&[A, C], &[A, C], 4)], removed: vec![B] }, |sim| {
        let mut v = no_cancelled_ratchet(sim);
        // E (device 3) never ends as a member, and if it joined it terminated.
        if sim.devices[D].active() {
            v.push("E is active".into());
        }
        if !sim.devices[A].events.iter().any(|e| matches!(e, Event::AddCancelled { .. })) {
            v.push("no AddCancelled at A".into());
        }
        v
    });
}

/// §6.5 "same member removed twice": A remove(C) ∥ B remove(C), group {A, B, C}.
#[test]
fn enumerate_conflict_same_member_removed_twice() {
    let mut sim = created(3, &[B, C], 9);
    sim.remove(A, C).unwrap();
    sim.remove(B, C).unwrap();
    enumerate("removed-twice", sim, &[], Expect { outcomes: vec![same(&[A, B], &[A, B], 3)], removed: vec![C] }, none);
}

/// §6.5 "unrelated add": A remove(B) ∥ C add(D), group {A, B, C}.
#[test]
fn enumerate_conflict_unrelated_add() {
    let mut sim = created(4, &[B, C], 10);
    sim.remove(A, B).unwrap();
    sim.add(C, D).unwrap();
    enumerate(
        "unrelated-add",
        sim,
        &[],
        Expect { outcomes: vec![same(&[A, C, D], &[A, C, D], 4)], removed: vec![B] },
        none,
    );
}

/// §6.5 "acknowledged add survives": B adds C; A acks the add; then A removes B, while
/// C, X (device 2 is X here, C is device 3) and B process everything in any order.
#[test]
fn enumerate_conflict_acknowledged_add_survives() {
    let mut sim = created(4, &[B, C], 11);
    let ids = sim.add(B, D).unwrap();
    assert!(sim.deliver_id(A, ids[0]));
    sim.remove(A, B).unwrap();
    enumerate(
        "acked-add-survives",
        sim,
        &[],
        Expect { outcomes: vec![same(&[A, C, D], &[A, C, D], 4)], removed: vec![B] },
        none,
    );
}

/// §6.5 "transitively cancelled": A remove(B) ∥ (B adds C ≺ C adds D), A having seen
/// neither add. Group {A, B}: the smallest size with the cascade (with an extra observer
/// the enumeration takes over a minute: 8,936 distinct final histories, all correct).
#[test]
fn enumerate_conflict_transitively_cancelled() {
    let mut sim = created(4, &[B], 12);
    let ids = sim.add(B, C).unwrap();
    assert!(sim.deliver_id(C, ids[1]), "C joins through B's Welcome");
    sim.add(C, D).unwrap();
    sim.remove(A, B).unwrap();
    enumerate("transitive", sim, &[], Expect { outcomes: vec![same(&[A], &[A], 4)], removed: vec![B] }, |sim| {
        let mut v = Vec::new();
        for d in [C, D] {
            if sim.devices[d].active() {
                v.push(format!("cancelled {} is active", sim.devices[d].name));
            }
        }
        v
    });
}

/// S11 step 3: A add(E) ∥ B add(E), group {A, B}; E is device 2 here. E's device joins
/// through whichever Welcome it processes first; the other instance is removed by it.
#[test]
fn enumerate_s11_duplicate_concurrent_adds() {
    let mut sim = created(3, &[B], 13);
    sim.add(A, C).unwrap();
    sim.add(B, C).unwrap();
    enumerate(
        "S11-dup",
        sim,
        &[],
        Expect { outcomes: vec![same(&[A, B, C], &[A, B, C], 3)], removed: vec![] },
        |sim| {
            // Exactly one instance of E's identity is a member, and it is E's live one.
            let ik = sim.ik(C);
            let mut v = Vec::new();
            for (d, g) in oracle::active(sim) {
                let inst: Vec<MemberId> = g.members().into_iter().filter(|m| g.identity_of(m) == Some(ik)).collect();
                if inst.len() != 1 || Some(inst[0]) != sim.mid(C) {
                    v.push(format!("{}: instances of E {:?}", sim.devices[d].name, inst.len()));
                }
            }
            v
        },
    );
}
