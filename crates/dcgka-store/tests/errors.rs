//! Errors, never damage: a missing, locked, corrupt, truncated or foreign file, a wrong
//! storage key, a newer schema version and a tampered row each give their own error, and
//! the files are left exactly as they were (every store file hashed before and after, and
//! no file appears or disappears).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use dcgka_store::{StorageKey, Store, StoreError};
use rusqlite::Connection;

mod support;

use support::{Net, contains, fingerprint, key};

/// A store of a device in a group of three that has exchanged messages, closed; returns the
/// directory (kept alive) and the file.
fn a_store() -> (tempfile::TempDir, PathBuf) {
    let mut net = Net::group(3, 21);
    let gid = net.gid(0);
    net.run(1, |d, env| d.send(env, &gid, b"hello"));
    net.pump();
    for d in 0..3 {
        net.close(d);
    }
    let path = net.path(2);
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("store.sqlite");
    std::fs::copy(&path, &copy).unwrap();
    (dir, copy)
}

fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

/// Opens `path` with `key`, expects `check` of the error, and that nothing changed.
fn refused(path: &Path, key: &StorageKey, check: impl Fn(&StoreError) -> bool) {
    let dir = path.parent().unwrap();
    let (before, files) = (fingerprint(path), listing(dir));
    match Store::open(path, key) {
        Ok(_) => panic!("opened"),
        Err(e) => assert!(check(&e), "unexpected error: {e:?}"),
    }
    assert_eq!(fingerprint(path), before, "the files changed");
    assert_eq!(listing(dir), files, "files appeared or disappeared");
}

#[test]
fn a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nothing.sqlite");
    assert!(matches!(Store::open(&path, &key(0)), Err(StoreError::Missing(p)) if p == path));
    assert!(listing(dir.path()).is_empty(), "nothing was created");
}

#[test]
fn a_locked_file() {
    let (_dir, path) = a_store();
    let holder = Store::open(&path, &key(2)).unwrap();
    refused(&path, &key(2), |e| matches!(e, StoreError::Locked));
    drop(holder);
    assert!(Store::open(&path, &key(2)).is_ok(), "free again once the holder closed it");
}

#[test]
fn a_corrupt_file() {
    // A page of the database overwritten with junk.
    let (_dir, path) = a_store();
    let mut bytes = std::fs::read(&path).unwrap();
    let page = 4096;
    assert!(bytes.len() >= 4 * page);
    bytes[2 * page..3 * page].fill(0xA5);
    std::fs::write(&path, &bytes).unwrap();
    refused(&path, &key(2), |e| matches!(e, StoreError::Corrupt(_)));
    // A header with an impossible page size.
    let (_dir, path) = a_store();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[16..18].copy_from_slice(&300u16.to_be_bytes());
    std::fs::write(&path, &bytes).unwrap();
    refused(&path, &key(2), |e| matches!(e, StoreError::Corrupt(_)));
    // A schema object no version wrote (a trigger that would copy rows before deletion).
    let (_dir, path) = a_store();
    Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE keep (v); CREATE TRIGGER t BEFORE DELETE ON state BEGIN INSERT INTO keep VALUES (old.sealed); END;")
        .unwrap();
    refused(&path, &key(2), |e| matches!(e, StoreError::Corrupt(_)));
}

#[test]
fn a_truncated_file() {
    let (_dir, path) = a_store();
    let bytes = std::fs::read(&path).unwrap();
    for cut in [bytes.len() - 4096, bytes.len() - 100, 4096, 99, 50, 10, 0] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        refused(&path, &key(2), |e| matches!(e, StoreError::Truncated { len, .. } if *len == cut as u64));
    }
}

#[test]
fn a_foreign_file() {
    let dir = tempfile::tempdir().unwrap();
    // Not SQLite at all.
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, vec![0x42; 8192]).unwrap();
    refused(&path, &key(0), |e| matches!(e, StoreError::Foreign(_)));
    // Another application's SQLite database.
    let path = dir.path().join("other.sqlite");
    Connection::open(&path).unwrap().execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);").unwrap();
    refused(&path, &key(0), |e| matches!(e, StoreError::Foreign(_)));
    // A directory.
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    assert!(matches!(Store::open(&sub, &key(0)), Err(StoreError::Foreign(_))));
}

#[test]
fn a_wrong_key() {
    let (_dir, path) = a_store();
    refused(&path, &key(1), |e| matches!(e, StoreError::WrongKey));
    refused(&path, &StorageKey::from_bytes([0; 32]), |e| matches!(e, StoreError::WrongKey));
}

#[test]
fn a_newer_schema_version() {
    let (_dir, path) = a_store();
    Connection::open(&path).unwrap().execute_batch("PRAGMA user_version = 2;").unwrap();
    refused(&path, &key(2), |e| matches!(e, StoreError::NewerVersion { found: 2, supported: 1 }));
}

#[test]
fn a_tampered_row() {
    let (_dir, path) = a_store();
    let sealed: Vec<u8> = Connection::open(&path)
        .unwrap()
        .query_row("SELECT sealed FROM state WHERE kind = 1", [], |r| r.get(0))
        .unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let probe = &sealed[..64];
    assert!(contains(&bytes, probe));
    let at = bytes.windows(probe.len()).position(|w| w == probe).unwrap();
    bytes[at + 40] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    refused(&path, &key(2), |e| matches!(e, StoreError::Tampered("state")));
}

#[test]
fn the_untouched_file_still_opens() {
    let (_dir, path) = a_store();
    let before = fingerprint(&path);
    drop(Store::open(&path, &key(2)).unwrap());
    // Opening and closing wrote nothing either.
    assert_eq!(fingerprint(&path)[0], before[0]);
}
