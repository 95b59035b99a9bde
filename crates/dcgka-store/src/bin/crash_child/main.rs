//! The crash test's child process (not an application): applies a stream of device calls
//! to a store, from a given call on, printing `ready` once the store is open and
//! `done <i>` after each call is committed, then `finished`. The test kills it with
//! SIGKILL at random points and restarts it where the store says it stopped.
//!
//! Usage: `dcgka-store-crash-child <store> <stream> <journal> <from>`.

#![forbid(unsafe_code)]

mod stream;

use std::collections::{BTreeSet, VecDeque};
use std::io::Write as _;
use std::process::ExitCode;

use dcgka::events::Event;
use dcgka::group::GroupConfig;
use dcgka_device::{Device, Env};
use dcgka_store::{StorageKey, Store};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use stream::{NOW, Op, Replay, Stream, journal_line, read_journal};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crash child: {e}");
            ExitCode::from(2)
        }
    }
}

type Failure = Box<dyn std::error::Error>;

fn say(line: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

fn run() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().collect();
    let [_, store_path, stream_path, journal_path, from] = &args[..] else {
        return Err("usage: dcgka-store-crash-child <store> <stream> <journal> <from>".into());
    };
    let from: usize = from.parse()?;
    let stream = Stream::from_bytes(&std::fs::read(stream_path)?)?;
    let store = Store::open(store_path, &StorageKey::from_bytes(stream.key))?;
    let mut dev = Device::open(GroupConfig::default(), store)?;
    let journal_text = std::fs::read_to_string(journal_path).unwrap_or_default();
    let mut journaled: BTreeSet<u64> = read_journal(&journal_text).0.into_keys().collect();
    let mut journal = std::fs::OpenOptions::new().create(true).append(true).open(journal_path)?;
    say("ready")?;
    for (i, call) in stream.calls.iter().enumerate().skip(from) {
        let mut rng = ChaCha20Rng::seed_from_u64(stream.call_seed(i));
        let mut pki = Replay { answers: call.bundles.iter().cloned().collect::<VecDeque<_>>() };
        let mut env = Env { rng: &mut rng, now: NOW, prekeys: &mut pki };
        match &call.op {
            Op::Create(others) => drop(dev.create(&mut env, others)?),
            Op::Receive(b) => drop(dev.receive(&mut env, b)?),
            Op::Welcome(b) => drop(dev.receive_welcome(&mut env, b)?),
            Op::Send(gid, text) => drop(dev.send(&mut env, gid, text)?),
            Op::Add(gid, ik) => drop(dev.add(&mut env, gid, *ik)?),
            Op::Remove(gid, m) => drop(dev.remove(&mut env, gid, *m)?),
            Op::Update(gid) => drop(dev.update(&mut env, gid)?),
            Op::MarkSent(items) => {
                let ids: Vec<u64> = dev.outbox().iter().filter(|t| items.contains(&t.bytes)).map(|t| t.id).collect();
                dev.mark_sent(&ids)?;
            }
            Op::Consume => {
                // The application records what it handles (durably) before marking it
                // consumed; after a crash in between it recognises the events by number.
                let events = dev.store().inbox()?;
                let mut lines = String::new();
                for e in &events {
                    if journaled.insert(e.id) {
                        let plain = match &e.event {
                            Event::Message { plaintext, .. } => Some(plaintext.as_slice()),
                            _ => None,
                        };
                        lines.push_str(&journal_line(e.id, plain));
                    }
                }
                journal.write_all(lines.as_bytes())?;
                journal.sync_all()?;
                dev.store().mark_consumed(&events.iter().map(|e| e.id).collect::<Vec<_>>())?;
            }
        }
        say(&format!("done {i}"))?;
    }
    say("finished")?;
    Ok(())
}
