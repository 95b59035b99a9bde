//! `dcgka bench --store`: what a receiving member's device writes to its SQLite store when
//! it receives the operation, and how long that commit takes.
//!
//! After the setup (the lean network's create with every ack), each receiving member (every
//! member but the initiator and, for `remove`, the removed member 1) is given a device on
//! its own store holding its state at that point: the identity and group records are
//! committed to a fresh store, the device is opened from it, and one call that changes
//! nothing (`flush_acks`) lets it write its rules record. The device then receives the
//! operation's envelope (for `create`: a member's device, holding only its identity,
//! receives the create and joins). The figures are that one commit's: row data written
//! ([`dcgka_store::CommitStats::row_bytes`]) and wall-clock time, including the sync to
//! disk. Member stores are made one at a time in a temporary directory and deleted after
//! their measurement, but for the first one, which also receives another member's ack of
//! the operation (an ack rewrites the group's core record) and whose database size is
//! reported.

use std::path::Path;

use dcgka::group::{Context, Group, GroupConfig, GroupError};
use dcgka::prekeys::Identity;
use dcgka_device::{Commit, Destination, Device, Env, Outcome, StateKey, Storage};
use dcgka_sim::NOW;
use dcgka_sim::lean::PAYLOAD;
use dcgka_store::{StorageKey, Store};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::Op;

/// What receiving one operation cost the receiving members' stores.
#[derive(Clone, Debug, Default)]
pub(super) struct StoreRun {
    /// Row data each receiving member's commit wrote.
    pub(super) write_bytes: Vec<f64>,
    /// Each of those commits' wall-clock time, in milliseconds.
    pub(super) commit_ms: Vec<f64>,
    /// The first receiving member's database size after the operation (and one ack).
    pub(super) database_bytes: Option<u64>,
    /// Row data and time of the first receiving member's commit of another member's ack.
    pub(super) ack: Option<(u64, f64)>,
}

/// The key of every benchmark store.
fn key() -> StorageKey {
    StorageKey::from_bytes([0xBE; 32])
}

fn remove_store(path: &Path) {
    for suffix in ["", "-journal", "-wal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

/// A device on a fresh store at `path` holding `identity` and `group` as they are.
fn seeded_device(
    path: &Path,
    identity: &Identity,
    group: &Group,
    config: GroupConfig,
) -> Result<Device<Store>, String> {
    let mut store = Store::create(path, &key()).map_err(|e| e.to_string())?;
    let gid = group.gid();
    let records = group.records();
    let mut seed = Commit::default();
    seed.state.push((StateKey::Identity, Some(identity.snapshot())));
    seed.state.push((StateKey::Group(gid), Some(records.core)));
    seed.state.extend(records.senders.into_iter().map(|(m, r)| (StateKey::Sender(gid, m), Some(r))));
    store.commit(&seed).map_err(|e| e.to_string())?;
    let mut dev = Device::open(config, store).map_err(|e| e.to_string())?;
    // The device rules' record (the instances this device knows of) is written by its
    // first call that touches the group.
    let mut rng = ChaCha20Rng::seed_from_u64(0);
    let mut pki = dcgka::prekeys::InMemoryPrekeyDirectory::new();
    let mut env = Env { rng: &mut rng, now: NOW, prekeys: &mut pki };
    let _ = dev.flush_acks(&mut env, &gid).map_err(|e| e.to_string())?;
    Ok(dev)
}

/// Measures the receiving members' commits of `op` from the state of `world` after setup
/// (`fresh`: the same network before the create, for `create`).
pub(super) fn measure(
    world: &super::measure::World,
    fresh: &super::measure::World,
    op: Op,
    n: usize,
    config: GroupConfig,
    dir: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<StoreRun, String> {
    let fail = |e: GroupError| format!("{op}: {e}");
    let mut run = StoreRun::default();
    // The operation's envelopes, made by a copy of member 0 (the network is left as it is).
    let (envelopes, gid) = {
        let (start, group) = match op {
            Op::Create => (fresh, None),
            _ => (world, world.node(0).and_then(|d| d.group()).cloned()),
        };
        let node0 = start.node(0).ok_or("no member 0")?;
        let mut identity = node0.identity().clone();
        let mut pki = start.directory().clone();
        let mut rng = ChaCha20Rng::seed_from_u64(n as u64);
        let mut ctx = Context { rng: &mut rng, now: NOW, prekeys: &mut pki, identity: &mut identity };
        let out = match (op, group) {
            (Op::Create, _) => {
                let others: Vec<_> = (1..n).filter_map(|i| start.node(i).map(|d| d.identity().public_key())).collect();
                Group::create(&mut ctx, &others, config).map(|(g, out)| (out, g.gid())).map_err(fail)?
            }
            (_, None) => return Err(format!("{op}: member 0 has no group")),
            (_, Some(mut g)) => {
                let gid = g.gid();
                let newcomer = world.node(world.newcomer()).map(|d| d.identity().public_key()).ok_or("no newcomer")?;
                let target = world.node(1).and_then(|d| d.group()).map(Group::me).ok_or("no member 1")?;
                let out = match op {
                    Op::Add => g.add(&mut ctx, newcomer),
                    Op::Remove => g.remove(&mut ctx, target),
                    Op::Update => g.update(&mut ctx),
                    _ => g.send(&mut ctx, &PAYLOAD),
                }
                .map_err(fail)?;
                (out, gid)
            }
        };
        (out.0.broadcast, out.1)
    };
    let receivers: Vec<usize> = (1..n).filter(|i| !(op == Op::Remove && *i == 1)).collect();
    let mut kept: Option<Device<Store>> = None;
    let kept_path = dir.join("kept.sqlite");
    for (k, &i) in receivers.iter().enumerate() {
        let path = if kept.is_none() { kept_path.clone() } else { dir.join("member.sqlite") };
        remove_store(&path);
        let mut dev = match op {
            Op::Create => {
                let identity = fresh.node(i).ok_or("no member")?.identity().clone();
                Device::new(identity, config, Store::create(&path, &key()).map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?
            }
            _ => {
                let node = world.node(i).ok_or("no member")?;
                let group = node.group().ok_or(format!("member {i} has no group"))?;
                seeded_device(&path, node.identity(), group, config)?
            }
        };
        let mut pki = world.directory().clone();
        let mut rng = ChaCha20Rng::seed_from_u64(i as u64);
        let mut env = Env { rng: &mut rng, now: NOW, prekeys: &mut pki };
        let mut transmit = Vec::new();
        for bytes in &envelopes {
            let r = dev.receive(&mut env, bytes).map_err(|e| format!("{op}: member {i}: {e}"))?;
            if !matches!(r.outcomes.first(), Some(Outcome::Accepted(g) | Outcome::Joined(g)) if *g == gid) {
                return Err(format!("{op}: member {i}: {:?}", r.outcomes));
            }
            transmit = r.transmit;
        }
        let st = dev.store().last_commit();
        run.write_bytes.push(st.row_bytes as f64);
        run.commit_ms.push(st.time.as_secs_f64() * 1e3);
        if kept.is_none() {
            kept = Some(dev);
        } else {
            if let (Some(kd), None) = (kept.as_mut(), run.ack) {
                // Another member's ack of the operation, received by the kept member.
                if let Some(ack) = transmit.iter().find(|t| matches!(t.to, Destination::Group)) {
                    let _ = kd.receive(&mut env, &ack.bytes).map_err(|e| format!("{op}: ack: {e}"))?;
                    let st = kd.store().last_commit();
                    run.ack = Some((st.row_bytes, st.time.as_secs_f64() * 1e3));
                }
            }
            drop(dev);
            remove_store(&path);
        }
        progress(k + 1, receivers.len());
    }
    if let Some(kd) = kept {
        run.database_bytes = kd.store().database_bytes().ok();
        drop(kd);
        remove_store(&kept_path);
    }
    Ok(run)
}
