//! The mailbox file: a foreign, newer or damaged file is refused with its own error and
//! left byte for byte as it was; a second opener finds it locked.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::Path;

use dcgka::ids::GroupId;
use dcgka_mailbox::consts::{APPLICATION_ID, SCHEMA_VERSION};
use dcgka_mailbox::{Mailbox, MailboxError};
use rusqlite::Connection;

/// A mailbox file serving one group, closed.
fn mailbox_file(path: &Path) {
    let mut mb = Mailbox::open(path).unwrap();
    assert!(mb.serve(GroupId([1; 32])).unwrap());
}

/// Opens `path` expecting an error, and checks the file did not change.
fn refused(path: &Path) -> MailboxError {
    let bytes = fs::read(path).unwrap();
    let e = Mailbox::open(path).unwrap_err();
    assert_eq!(fs::read(path).unwrap(), bytes, "the file is untouched");
    e
}

#[test]
fn a_mailbox_file_reopens_with_its_contents() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mb.sqlite");
    mailbox_file(&path);
    let mb = Mailbox::open(&path).unwrap();
    assert_eq!(mb.served().unwrap(), vec![GroupId([1; 32])]);
    drop(mb);
    let conn = Connection::open(&path).unwrap();
    let app: i32 = conn.query_row("PRAGMA application_id", [], |r| r.get(0)).unwrap();
    let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!((app, version), (APPLICATION_ID, SCHEMA_VERSION));
}

#[test]
fn a_newer_schema_version_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mb.sqlite");
    mailbox_file(&path);
    Connection::open(&path).unwrap().execute_batch("PRAGMA journal_mode = DELETE; PRAGMA user_version = 2;").unwrap();
    let e = refused(&path);
    assert!(matches!(e, MailboxError::NewerVersion { found: 2, supported: SCHEMA_VERSION }), "{e}");
}

#[test]
fn foreign_files_are_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    // Another application's SQLite database.
    let other = dir.path().join("other.sqlite");
    Connection::open(&other).unwrap().execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);").unwrap();
    assert!(matches!(refused(&other), MailboxError::Foreign(_)));
    let tagged = dir.path().join("tagged.sqlite");
    Connection::open(&tagged).unwrap().execute_batch("PRAGMA application_id = 7; CREATE TABLE t (x);").unwrap();
    assert!(matches!(refused(&tagged), MailboxError::Foreign(_)));
    // Not SQLite at all.
    let garbage = dir.path().join("garbage");
    fs::write(&garbage, (0..4096u32).map(|i| (i * 7 % 251) as u8).collect::<Vec<_>>()).unwrap();
    assert!(matches!(refused(&garbage), MailboxError::Foreign(_)));
    let text = dir.path().join("text");
    fs::write(&text, b"hello").unwrap();
    assert!(matches!(refused(&text), MailboxError::Foreign(_)));
}

#[test]
fn a_damaged_mailbox_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mb.sqlite");
    mailbox_file(&path);
    Connection::open(&path).unwrap().execute_batch("PRAGMA journal_mode = DELETE; DROP TABLE invite;").unwrap();
    assert!(matches!(refused(&path), MailboxError::Corrupt(_)));
    let path = dir.path().join("mb2.sqlite");
    mailbox_file(&path);
    Connection::open(&path).unwrap().execute_batch("PRAGMA journal_mode = DELETE; PRAGMA user_version = 0;").unwrap();
    assert!(matches!(refused(&path), MailboxError::Corrupt(_)));
}

#[test]
fn a_second_opener_finds_the_file_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mb.sqlite");
    let _first = Mailbox::open(&path).unwrap();
    assert!(matches!(Mailbox::open(&path), Err(MailboxError::Locked)));
}
