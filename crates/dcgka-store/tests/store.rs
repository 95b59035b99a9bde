//! The store as a device's storage: groups, logs, outbox and inbox survive a reopen;
//! each call is one transaction; rows are sealed to their place; the inbox API; what a
//! received message writes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dcgka::events::Event;
use dcgka::group::GroupConfig;
use dcgka::ids::SeqNo;
use dcgka_device::{Device, StateKey, Storage};
use dcgka_store::consts::{DEFAULT_KDF_M_COST_KIB, DEFAULT_KDF_P_COST, DEFAULT_KDF_T_COST};
use dcgka_store::{KdfParams, StorageKey, Store, StoreError};
use rusqlite::Connection;

mod support;

use support::{Net, key};

#[test]
fn devices_reopened_from_their_files_are_the_same_devices_and_go_on() {
    let mut net = Net::new(5, 1);
    let others: Vec<_> = (1..4).map(|d| net.dev(d).public_key()).collect();
    let (gid, r) = net.try_call(0, |d, env| d.create(env, &others)).unwrap();
    net.post(0, &r);
    net.pump();
    let e_ik = net.dev(4).public_key();
    net.run(1, |d, env| d.update(env, &gid));
    net.run(2, |d, env| d.send(env, &gid, b"one"));
    net.pump();
    net.run(0, |d, env| d.add(env, &gid, e_ik));
    net.pump();
    let c = net.me(2);
    net.run(3, |d, env| d.remove(env, &gid, c));
    net.run(4, |d, env| d.send(env, &gid, b"two"));
    net.pump();
    for d in 0..5 {
        let before = (
            net.dev(d).identity().snapshot(),
            net.dev(d).group(&gid).map(|g| g.snapshot()),
            net.dev(d).log(&gid).cloned(),
            net.dev(d).known_instances(&gid),
            net.dev(d).outbox().to_vec(),
        );
        net.reopen(d);
        let after = (
            net.dev(d).identity().snapshot(),
            net.dev(d).group(&gid).map(|g| g.snapshot()),
            net.dev(d).log(&gid).cloned(),
            net.dev(d).known_instances(&gid),
            net.dev(d).outbox().to_vec(),
        );
        assert!(before == after, "device {d} reopened differently");
    }
    net.run(4, |d, env| d.update(env, &gid));
    net.run(0, |d, env| d.send(env, &gid, b"after"));
    net.pump();
    for d in [1, 3, 4] {
        assert_eq!(net.plaintexts(d).last().unwrap(), b"after", "device {d}");
        assert_eq!(net.members(d), net.members(0));
    }
    assert!(net.dev(2).group(&gid).is_none(), "C was removed");
}

#[test]
fn the_outbox_keeps_what_was_not_confirmed_across_a_reopen() {
    let mut net = Net::group(3, 2);
    let gid = net.gid(0);
    let r = net.try_call(1, |d, env| d.send(env, &gid, b"unsent")).unwrap();
    let r2 = net.try_call(1, |d, env| d.send(env, &gid, b"sent")).unwrap();
    net.dev_mut(1).mark_sent(&[r2.transmit[0].id]).unwrap();
    net.reopen(1);
    assert_eq!(net.dev(1).outbox(), &r.transmit[..], "exactly the unconfirmed item");
    // Confirming it after the reopen removes it from the file too.
    let id = net.dev(1).outbox()[0].id;
    net.dev_mut(1).mark_sent(&[id]).unwrap();
    net.reopen(1);
    assert!(net.dev(1).outbox().is_empty());
}

#[test]
fn the_inbox_holds_events_until_consumed_with_ids_never_reused() {
    let mut net = Net::group(3, 3);
    let gid = net.gid(0);
    net.run(1, |d, env| d.send(env, &gid, b"first"));
    net.pump();
    let inbox = net.dev(2).store().inbox().unwrap();
    // Joined, the membership events of the create, then the message.
    assert!(matches!(inbox[0].event, Event::Joined { .. }));
    let msgs: Vec<_> = inbox.iter().filter(|e| matches!(e.event, Event::Message { .. })).collect();
    assert_eq!(msgs.len(), 1);
    assert!(inbox.iter().all(|e| e.gid == gid));
    assert!(inbox.windows(2).all(|w| w[0].id < w[1].id));
    // The application's view equals what the calls reported.
    let reported: Vec<Event> = net.events[2].iter().map(|(_, e)| e.clone()).collect();
    assert_eq!(inbox.iter().map(|e| e.event.clone()).collect::<Vec<_>>(), reported);
    // Debug never shows a plaintext.
    assert!(!format!("{inbox:?}").contains("first") && !format!("{inbox:?}").contains("102, 105"));
    // Consume everything; a reopen keeps counting from where it was.
    let last = inbox.last().unwrap().id;
    net.dev(2).store().mark_consumed(&inbox.iter().map(|e| e.id).collect::<Vec<_>>()).unwrap();
    assert!(net.dev(2).store().inbox().unwrap().is_empty());
    net.reopen(2);
    assert!(net.dev(2).store().inbox().unwrap().is_empty());
    net.run(1, |d, env| d.send(env, &gid, b"second"));
    net.pump();
    let inbox = net.dev(2).store().inbox().unwrap();
    assert_eq!(inbox.len(), 1);
    assert!(inbox[0].id > last, "{} after {last}", inbox[0].id);
    assert!(matches!(&inbox[0].event, Event::Message { plaintext, .. } if plaintext == b"second"));
}

#[test]
fn a_received_message_writes_one_sender_record_its_log_entry_and_its_event() {
    for n in [3, 24] {
        let mut net = Net::group(n, 4);
        let gid = net.gid(0);
        net.run(1, |d, env| d.send(env, &gid, &[7u8; 32]));
        net.pump();
        let st = net.dev(2).store().last_commit();
        // The sender record, the log entry, the event and the event counter.
        assert_eq!((st.rows_written, st.rows_deleted), (4, 0), "n = {n}");
        assert!(st.row_bytes <= 2048, "n = {n}: {} bytes", st.row_bytes);
    }
}

#[test]
fn rows_are_sealed_to_their_place() {
    let mut net = Net::group(3, 5);
    let gid = net.gid(0);
    net.run(1, |d, env| d.send(env, &gid, b"x"));
    net.run(0, |d, env| d.send(env, &gid, b"y"));
    net.pump();
    let (a, b) = (net.me(0), net.me(1));
    net.close(2);
    let path = net.path(2);
    // Swap the sealed values of two sender records: each is valid, but not in the other's place.
    {
        let conn = Connection::open(&path).unwrap();
        let get = |m: &[u8]| -> Vec<u8> {
            conn.query_row("SELECT sealed FROM state WHERE kind = 2 AND member = ?1", [m], |r| r.get(0)).unwrap()
        };
        let (sa, sb) = (get(&a.0), get(&b.0));
        conn.execute("UPDATE state SET sealed = ?1 WHERE kind = 2 AND member = ?2", (&sb, &a.0[..])).unwrap();
        conn.execute("UPDATE state SET sealed = ?1 WHERE kind = 2 AND member = ?2", (&sa, &b.0[..])).unwrap();
    }
    assert!(matches!(Store::open(&path, &key(2)), Err(StoreError::Tampered("state"))));
    let _ = gid;
}

#[test]
fn a_row_moved_from_another_store_under_the_same_key_does_not_authenticate() {
    let dir = tempfile::tempdir().unwrap();
    let k = StorageKey::from_bytes([1; 32]);
    let (p1, p2) = (dir.path().join("a"), dir.path().join("b"));
    let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(6);
    for p in [&p1, &p2] {
        let id = dcgka::prekeys::Identity::generate(&mut rng);
        drop(Device::new(id, GroupConfig::default(), Store::create(p, &k).unwrap()).unwrap());
    }
    let sealed: Vec<u8> =
        Connection::open(&p1).unwrap().query_row("SELECT sealed FROM state WHERE kind = 0", [], |r| r.get(0)).unwrap();
    Connection::open(&p2).unwrap().execute("UPDATE state SET sealed = ?1 WHERE kind = 0", [&sealed]).unwrap();
    assert!(matches!(Store::open(&p2, &k), Err(StoreError::Tampered("state"))));
    assert!(Store::open(&p1, &k).is_ok());
}

#[test]
fn one_store_per_file_at_a_time() {
    let net = Net::group(2, 7);
    // The device holds its store: a second open of the file is refused.
    assert!(matches!(Store::open(net.path(1), &key(1)), Err(StoreError::Locked)));
    drop(net);
}

#[test]
fn a_passphrase_store_opens_with_its_passphrase_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.sqlite");
    let cheap = KdfParams { m_cost_kib: 64, t_cost: 1, p_cost: 1 };
    let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(8);
    let id = dcgka::prekeys::Identity::generate(&mut rng);
    let ik = id.public_key();
    let store = Store::create_with_passphrase(&path, b"correct horse", cheap).unwrap();
    drop(Device::new(id, GroupConfig::default(), store).unwrap());
    assert!(matches!(Store::open_with_passphrase(&path, b"wrong horse"), Err(StoreError::WrongKey)));
    assert!(matches!(Store::open(&path, &StorageKey::from_bytes([0; 32])), Err(StoreError::WrongKey)));
    let store = Store::open_with_passphrase(&path, b"correct horse").unwrap();
    // Reopening keeps the derived key (no second derivation is needed).
    let store = store.reopen().unwrap();
    let dev = Device::open(GroupConfig::default(), store).unwrap();
    assert_eq!(dev.public_key(), ik);
    drop(dev);
    // A store made with a key cannot be opened with a passphrase.
    let kpath = dir.path().join("k.sqlite");
    drop(Store::create(&kpath, &key(0)).unwrap());
    assert!(matches!(Store::open_with_passphrase(&kpath, b"correct horse"), Err(StoreError::WrongKey)));
    // The default parameters are RFC 9106's second recommendation.
    assert_eq!(
        KdfParams::default(),
        KdfParams { m_cost_kib: DEFAULT_KDF_M_COST_KIB, t_cost: DEFAULT_KDF_T_COST, p_cost: DEFAULT_KDF_P_COST }
    );
    assert_eq!((DEFAULT_KDF_M_COST_KIB, DEFAULT_KDF_T_COST, DEFAULT_KDF_P_COST), (65536, 3, 4));
    // Parameters out of range are refused, at creation and in a file.
    let huge = KdfParams { m_cost_kib: u32::MAX, t_cost: 1, p_cost: 1 };
    assert!(matches!(Store::create_with_passphrase(dir.path().join("h"), b"x", huge), Err(StoreError::KdfParams(_))));
    Connection::open(&path)
        .unwrap()
        .execute("UPDATE meta SET value = 4294967295 WHERE name = 'kdf_m_cost_kib'", [])
        .unwrap();
    assert!(matches!(Store::open_with_passphrase(&path, b"correct horse"), Err(StoreError::KdfParams(_))));
}

#[test]
fn secrets_never_show_in_debug() {
    let k = StorageKey::from_bytes([0xAB; 32]);
    assert_eq!(format!("{k:?}"), "StorageKey(<redacted>)");
    let net = Net::group(2, 9);
    let s = format!("{:?}", net.dev(0).store());
    assert!(s.starts_with("Store {") && !s.to_lowercase().contains("key"), "{s}");
}

#[test]
fn create_refuses_to_replace_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x");
    std::fs::write(&path, b"something").unwrap();
    assert!(matches!(Store::create(&path, &key(0)), Err(StoreError::AlreadyExists(_))));
    assert_eq!(std::fs::read(&path).unwrap(), b"something");
}

#[test]
fn each_call_commits_once_and_load_sees_it() {
    let mut net = Net::group(3, 10);
    let gid = net.gid(0);
    let before = net.dev(2).store().totals().commits;
    net.run(1, |d, env| d.send(env, &gid, b"m"));
    net.pump();
    assert_eq!(net.dev(2).store().totals().commits - before, 1);
    // What the store loads now is what the device holds.
    let stored = net.dev(2).store().load().unwrap();
    let b = net.me(1);
    let g = net.dev(2).group(&gid).unwrap();
    let records = g.records();
    assert_eq!(stored.state.get(&StateKey::Group(gid)).map(|v| v.to_vec()), Some(records.core.to_vec()));
    let sender = records.senders.iter().find(|(m, _)| *m == &b).unwrap();
    assert_eq!(stored.state.get(&StateKey::Sender(gid, b)).map(|v| v.to_vec()), Some(sender.1.to_vec()));
    // B's ack of the create, then its message.
    assert_eq!(g.sync_state().get(&b), Some(&SeqNo(2)));
}
