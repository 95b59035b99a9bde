//! Forward secrecy on disk (issue 11, item 5): when the library deletes a key, no copy of
//! its stored bytes survives in any file of the store (main database, rollback journal,
//! WAL, anything else in the directory), free pages included.
//!
//! Each test records, while the key exists, the stored bytes of the row holding it (the
//! sealed value, read with a plain SQLite connection) and, where the library exposes them,
//! the key's own bytes; lets the protocol delete the key; then searches the raw bytes of
//! every file for any 16-byte window of them. Before the deletion the sealed row is found
//! (the search works); after it, nothing is.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dcgka::events::Event;
use dcgka::ids::MessageIndex;
use dcgka::prekeys::OneTimePrekeyId;
use dcgka_device::Storage;
use rusqlite::Connection;

mod support;

use support::{Net, found_in_files, found_windows};

/// The sealed value of a state row of device `d` (`kind`: 0 identity, 1 group core,
/// 2 sender), by member for sender rows.
fn sealed_state(net: &mut Net, d: usize, kind: u8, member: &[u8]) -> Vec<u8> {
    net.raw(d, |c: &Connection| {
        c.query_row("SELECT sealed FROM state WHERE kind = ?1 AND member = ?2", (kind, member), |r| r.get(0)).unwrap()
    })
}

/// Asserts that the needles are in the files now (before the deletion).
fn present(net: &Net, needles: &[Vec<u8>]) {
    let found = found_in_files(net.dir.path(), needles);
    assert_eq!(found, (0..needles.len()).collect::<Vec<_>>(), "the stored bytes are on disk before the deletion");
}

/// Asserts that none of the needles survives anywhere.
fn gone(net: &Net, needles: &[Vec<u8>], what: &str) {
    let found = found_in_files(net.dir.path(), needles);
    assert!(found.is_empty(), "{what}: stored bytes of needles {found:?} survive on disk");
}

#[test]
fn a_message_key_once_its_message_is_decrypted() {
    let mut net = Net::group(3, 31);
    let gid = net.gid(0);
    let b = net.me(1);
    let sent = net.call(1, |d, env| d.send(env, &gid, b"read me once"));
    let bytes = sent.transmit[0].bytes.clone();
    let held = net.pump_except(2);
    // C holds the key of B's message (in B's sender ratchet, in the sender record).
    let g = net.dev(2).group(&gid).unwrap();
    let index = (0..4).map(MessageIndex).find(|i| g.can_decrypt(&bytes, *i).is_some()).expect("C can read it");
    let row = sealed_state(&mut net, 2, 2, &b.0);
    present(&net, std::slice::from_ref(&row));
    net.queue.extend(held);
    net.pump();
    assert_eq!(net.plaintexts(2), vec![b"read me once".to_vec()]);
    let g = net.dev(2).group(&gid).unwrap();
    assert!(g.can_decrypt(&bytes, index).is_none(), "the library deleted the key");
    gone(&net, &[row], "the sender record that held the message key");
}

#[test]
fn a_member_secret_once_every_ack_is_in() {
    let mut net = Net::group(4, 32);
    let gid = net.gid(0);
    net.run(1, |d, env| d.update(env, &gid));
    // Everyone processes B's update; B has not seen the acks yet: it holds one member
    // secret per member for its update.
    let held = net.pump_except(1);
    let pending = net.dev(1).group(&gid).unwrap().member_secret_count();
    assert!(pending >= 3, "B holds {pending} member secrets");
    let core = sealed_state(&mut net, 1, 1, &[]);
    present(&net, std::slice::from_ref(&core));
    net.queue.extend(held);
    net.pump();
    assert_eq!(net.dev(1).group(&gid).unwrap().member_secret_count(), 0, "the acks deleted them");
    gone(&net, &[core], "the core record that held the member secrets");
}

#[test]
fn a_two_party_secret_key_once_used() {
    let mut net = Net::group(3, 33);
    let gid = net.gid(0);
    // C's 2SM state for A holds the secret key A's next 2SM message is sealed to; A's update
    // seals C's seed to it, and processing it deletes that secret key (replaced by the new one
    // the message carries, ePrint Fig. 2).
    let before = net.dev(2).store().load().unwrap();
    let core = sealed_state(&mut net, 2, 1, &[]);
    present(&net, std::slice::from_ref(&core));
    net.run(0, |d, env| d.update(env, &gid));
    net.pump();
    assert!(net.events[2].iter().any(|(_, e)| matches!(e, Event::Updated { .. })));
    let after = net.dev(2).store().load().unwrap();
    let key = dcgka_device::StateKey::Group(gid);
    let (old, new) = (&before.state[&key], &after.state[&key]);
    // Some 32 bytes of the old record (the used secret key among them) are in no later record.
    let dropped: Vec<Vec<u8>> =
        old.windows(32).filter(|w| !new.windows(32).any(|v| v == *w)).map(<[u8]>::to_vec).collect();
    assert!(!dropped.is_empty());
    gone(&net, &[core], "the core record that held the 2SM secret key");
    // None of those 32-byte stretches of the plaintext record is on disk either (every row
    // is sealed; the key columns hold only group and member IDs, which are left out).
    let ids: Vec<[u8; 32]> = std::iter::once(gid.0).chain(net.members(0).iter().map(|m| m.0)).collect();
    let secret: Vec<Vec<u8>> = dropped.into_iter().filter(|w| !ids.iter().any(|i| i[..] == w[..])).collect();
    assert!(!secret.is_empty());
    let found = found_windows(net.dir.path(), &secret, 32);
    assert!(found.is_empty(), "plaintext stretches {found:?} of the old core record are on disk");
}

#[test]
fn a_one_time_prekey_once_consumed() {
    let mut net = Net::new(3, 34);
    let d_ik = net.dev(2).public_key();
    let b_ik = net.dev(1).public_key();
    let (gid, r) = net.try_call(0, |d, env| d.create(env, &[b_ik])).unwrap();
    net.post(0, &r);
    net.pump();
    // D's one-time prekey secrets, while it holds them all.
    let ks = net.dev(2).identity().key_store();
    let held: Vec<(u64, Vec<u8>)> =
        (0..64).filter_map(|i| ks.opk(OneTimePrekeyId(i)).ok().map(|s| (i, s.to_bytes().to_vec()))).collect();
    assert_eq!(held.len(), 16);
    let identity_row = sealed_state(&mut net, 2, 0, &[]);
    present(&net, std::slice::from_ref(&identity_row));
    // A adds D: the Welcome's first 2SM message is sealed to one of D's one-time prekeys,
    // which D deletes once it decrypts.
    net.run(0, |d, env| d.add(env, &gid, d_ik));
    net.pump();
    assert!(net.dev(2).group(&gid).is_some(), "D joined");
    let ks = net.dev(2).identity().key_store();
    let consumed: Vec<&(u64, Vec<u8>)> = held.iter().filter(|(i, _)| !ks.has_opk(OneTimePrekeyId(*i))).collect();
    assert_eq!(consumed.len(), 1, "one one-time prekey consumed");
    let secret = consumed[0].1.clone();
    gone(&net, &[identity_row], "the identity record that held the one-time prekey");
    gone(&net, &[secret], "the one-time prekey's secret bytes");
}

#[test]
fn a_removed_instances_state_and_a_consumed_message() {
    let mut net = Net::group(3, 35);
    let gid = net.gid(0);
    net.run(1, |d, env| d.send(env, &gid, b"consume me"));
    net.pump();
    // C's records of the group, and the inbox row of the message.
    let c = 2;
    let rows: Vec<Vec<u8>> = net.raw(c, |conn| {
        let mut s = conn.prepare("SELECT sealed FROM state WHERE kind IN (1, 2)").unwrap();
        s.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    });
    assert_eq!(rows.len(), 4, "the core record and three sender records");
    let inbox = net.dev(c).store().inbox().unwrap();
    let msg = inbox.iter().find(|e| matches!(e.event, Event::Message { .. })).unwrap().id;
    let event_row: Vec<u8> = net
        .raw(c, |conn| conn.query_row("SELECT sealed FROM inbox WHERE id = ?1", [msg as i64], |r| r.get(0)).unwrap());
    let mut all = rows.clone();
    all.push(event_row.clone());
    present(&net, &all);
    // The application consumes the message; A removes C, whose instance erases everything.
    net.dev(c).store().mark_consumed(&[msg]).unwrap();
    gone(&net, &[event_row], "the consumed message's inbox row");
    let cm = net.me(c);
    net.run(0, |d, env| d.remove(env, &gid, cm));
    net.pump();
    assert!(net.dev(c).group(&gid).is_none());
    let left: i64 =
        net.raw(c, |conn| conn.query_row("SELECT count(*) FROM state WHERE kind IN (1, 2)", [], |r| r.get(0)).unwrap());
    assert_eq!(left, 0, "no record of the removed instance is left");
    gone(&net, &rows, "the removed instance's records");
}

/// The search finds deleted bytes when SQLite keeps them: a plain database without
/// `secure_delete` and with a persistent journal leaves a deleted blob in its files.
#[test]
fn the_search_finds_what_plain_sqlite_leaves_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.sqlite");
    let secret: Vec<u8> = (0..200u32).map(|i| (i * 151 % 251) as u8).collect();
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch("PRAGMA secure_delete = OFF; PRAGMA journal_mode = PERSIST; CREATE TABLE t (v BLOB);").unwrap();
    conn.execute("INSERT INTO t VALUES (?1)", [&secret]).unwrap();
    conn.execute("INSERT INTO t VALUES (zeroblob(5000))", []).unwrap();
    conn.execute("DELETE FROM t WHERE length(v) = 200", []).unwrap();
    drop(conn);
    assert_eq!(found_in_files(dir.path(), &[secret]), vec![0]);
}
