//! The stored format is frozen: databases written by schema version 1 of this crate
//! (`tests/fixtures/store-v1-*.sqlite`, four devices of one group) open with the current
//! code and their group continues; a new store has exactly the fixture's schema, so a
//! change of the schema must come with a new version and a migration (the OpenMLS habit).
//!
//! The fixture scenario: A creates a group with B and C; B updates; A, B and C each send a
//! message; A adds D, which is offline and never receives its Welcome (A keeps it); A
//! sends again; C sends a message it never confirms as sent (it stays in C's outbox); A's
//! application consumes its first three events. B's store is opened by passphrase (cheap
//! Argon2id parameters), the others by key. `DCGKA_REGENERATE_FIXTURES=1 cargo test -p
//! dcgka-store --test fixtures` rewrites the files: do it only for a new schema version,
//! under new names, keeping the old files, which must still open.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use dcgka::events::Event;
use dcgka::group::GroupConfig;
use dcgka_device::{Destination, Device};
use dcgka_store::consts::SCHEMA_VERSION;
use dcgka_store::{KdfParams, Store};
use rusqlite::Connection;

mod support;

use support::{Net, key};

const NAMES: [&str; 4] = ["store-v1-a.sqlite", "store-v1-b.sqlite", "store-v1-c.sqlite", "store-v1-d.sqlite"];
const PASSPHRASE: &[u8] = b"fixture passphrase";
const CHEAP: KdfParams = KdfParams { m_cost_kib: 64, t_cost: 1, p_cost: 1 };

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("fixtures")
}

fn make(d: usize, path: &Path) -> Store {
    if d == 1 {
        Store::create_with_passphrase(path, PASSPHRASE, CHEAP).unwrap()
    } else {
        Store::create(path, &key(d)).unwrap()
    }
}

fn unlock(d: usize, path: &Path) -> Store {
    if d == 1 { Store::open_with_passphrase(path, PASSPHRASE).unwrap() } else { Store::open(path, &key(d)).unwrap() }
}

/// Runs the scenario; returns the network with every device closed (files in its directory).
fn scenario() -> Net {
    let mut net = Net::new_with(4, 1101, make);
    let (b, c, d) = (net.dev(1).public_key(), net.dev(2).public_key(), net.dev(3).public_key());
    let (gid, r) = net.try_call(0, |dev, env| dev.create(env, &[b, c])).unwrap();
    net.post(0, &r);
    net.pump();
    net.run(1, |dev, env| dev.update(env, &gid));
    net.pump();
    for (x, name) in [(0, "A"), (1, "B"), (2, "C")] {
        let text = format!("fixture message from {name}");
        net.run(x, |dev, env| dev.send(env, &gid, text.as_bytes()));
        net.pump();
    }
    net.offline.insert(3);
    net.run(0, |dev, env| dev.add(env, &gid, d));
    net.pump();
    net.run(0, |dev, env| dev.send(env, &gid, b"after the add"));
    net.pump();
    let unsent = net.try_call(2, |dev, env| dev.send(env, &gid, b"unconfirmed from C")).unwrap();
    assert_eq!(unsent.transmit.len(), 1);
    let first: Vec<u64> = net.dev(0).store().inbox().unwrap().iter().take(3).map(|e| e.id).collect();
    net.dev(0).store().mark_consumed(&first).unwrap();
    for x in 0..4 {
        net.close(x);
    }
    net
}

/// The scenario still runs; with `DCGKA_REGENERATE_FIXTURES=1` it rewrites the fixtures.
#[test]
fn the_fixture_scenario() {
    let net = scenario();
    if std::env::var_os("DCGKA_REGENERATE_FIXTURES").is_none_or(|v| v != "1") {
        return;
    }
    std::fs::create_dir_all(fixture_dir()).unwrap();
    for (x, name) in NAMES.iter().enumerate() {
        std::fs::copy(net.path(x), fixture_dir().join(name)).unwrap();
    }
}

/// The fixtures, copied into a fresh directory (the committed files are never written).
fn copies() -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let paths = NAMES
        .iter()
        .map(|n| {
            let to = dir.path().join(n);
            std::fs::copy(fixture_dir().join(n), &to).unwrap();
            to
        })
        .collect();
    (dir, paths)
}

#[test]
fn a_new_store_has_the_fixtures_schema() {
    let schema = |p: &Path| -> Vec<(String, Option<String>)> {
        let c = Connection::open_with_flags(p, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let mut s = c.prepare("SELECT name, sql FROM sqlite_schema ORDER BY name").unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
    };
    let version = |p: &Path| -> (i64, i64) {
        let c = Connection::open_with_flags(p, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        (
            c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap(),
            c.query_row("PRAGMA application_id", [], |r| r.get(0)).unwrap(),
        )
    };
    let (dir, paths) = copies();
    let fresh = dir.path().join("fresh.sqlite");
    drop(Store::create(&fresh, &key(0)).unwrap());
    assert_eq!(SCHEMA_VERSION, 1, "a new schema version needs fixtures of its own (and these must still open)");
    for p in &paths {
        assert_eq!(version(p), (1, i64::from(dcgka_store::consts::APPLICATION_ID)));
        assert_eq!(schema(p), schema(&fresh), "the schema changed without a new version");
    }
}

#[test]
fn the_version_1_fixtures_open_and_their_group_continues() {
    let (dir, paths) = copies();
    let devs: Vec<Device<Store>> =
        paths.iter().enumerate().map(|(x, p)| Device::open(GroupConfig::default(), unlock(x, p)).unwrap()).collect();
    let gid = *devs[0].groups().next().unwrap().0;
    // What the files hold: A, B and C in the group with D added; D in no group yet.
    for (x, dev) in devs.iter().enumerate().take(3) {
        assert_eq!(dev.group(&gid).unwrap().members().len(), 4, "device {x}");
    }
    assert!(devs[3].groups().next().is_none());
    // A keeps D's Welcome; C's last message waits in its outbox; the others' are confirmed.
    assert_eq!(devs[0].log(&gid).unwrap().welcomes().len(), 1);
    assert_eq!(devs[2].outbox().len(), 1);
    assert!(devs[0].outbox().is_empty() && devs[1].outbox().is_empty());
    // A's application consumed three events; the rest wait, the messages among them.
    let inbox = devs[0].store().inbox().unwrap();
    assert_eq!(inbox[0].id, 3);
    let texts: Vec<Vec<u8>> = inbox
        .iter()
        .filter_map(|e| match &e.event {
            Event::Message { plaintext, .. } => Some(plaintext.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, vec![b"fixture message from C".to_vec()], "B's message was among the three consumed");

    // The group goes on: C's unconfirmed message is sent now, D joins through sync with A
    // (A offers it its Welcome), A updates, everyone writes.
    let mut net = Net::adopt(dir, devs, 1102);
    let pending = net.dev(2).outbox().to_vec();
    net.queue.extend((0..4).filter(|x| *x != 2).map(|x| (x, pending[0].clone())));
    net.dev_mut(2).mark_sent(&[pending[0].id]).unwrap();
    assert!(matches!(pending[0].to, Destination::Group));
    net.pump();
    net.sync(3, 0);
    assert!(net.dev(3).group(&gid).is_some(), "D joined from the kept Welcome");
    for x in 0..4 {
        net.sync(x, 0);
    }
    net.run(0, |dev, env| dev.update(env, &gid));
    net.pump();
    for x in 0..4 {
        let text = format!("continued from {x}");
        net.run(x, |dev, env| dev.send(env, &gid, text.as_bytes()));
        net.pump();
    }
    for x in 0..4 {
        assert_eq!(net.members(x), net.members(0), "device {x}");
        let got = net.plaintexts(x);
        for y in (0..4).filter(|y| *y != x) {
            assert!(got.contains(&format!("continued from {y}").into_bytes()), "{x} read {y}");
        }
    }
    for x in [0, 1] {
        assert!(net.plaintexts(x).contains(&b"unconfirmed from C".to_vec()), "{x} read C's late message");
    }
    // And reopened once more, every device is where it was.
    for (x, name) in NAMES.iter().enumerate() {
        let before = net.dev(x).group(&gid).map(|g| g.snapshot());
        let p = net.path_of(x, name);
        net.close(x);
        let again = Device::open(GroupConfig::default(), unlock(x, &p)).unwrap();
        assert_eq!(again.group(&gid).map(|g| g.snapshot()), before);
    }
}
