//! The crash test's stream of device calls, its file format, and the journal in which the
//! child, acting as the application, records the events it consumed. Shared by the child
//! binary (which applies a stream) and the test (which writes it and reads the journal).

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;

use dcgka::codec::{Decode, DecodeError, Encode, Reader, Writer};
use dcgka::ids::{GroupId, MemberId};
use dcgka::prekeys::{PrekeyBundle, PrekeyProvider};
use dcgka::{IdentityKey, VerifyingKey};

/// Largest stream file the child reads.
pub const MAX_STREAM_BYTES: usize = 256 * 1024 * 1024;

/// The time every call runs at.
pub const NOW: u64 = 1_800_000_000;

/// One device call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `Device::create` with these others.
    Create(Vec<IdentityKey>),
    /// `Device::receive`.
    Receive(Vec<u8>),
    /// `Device::receive_welcome`.
    Welcome(Vec<u8>),
    /// `Device::send`.
    Send(GroupId, Vec<u8>),
    /// `Device::add`.
    Add(GroupId, IdentityKey),
    /// `Device::remove`.
    Remove(GroupId, MemberId),
    /// `Device::update`.
    Update(GroupId),
    /// `Device::mark_sent` of the outbox items with these bytes (outbox item numbers are
    /// the device's own and may differ between runs; the bytes do not).
    MarkSent(Vec<Vec<u8>>),
    /// The application consumes the inbox: records every event in its journal, then
    /// marks them consumed.
    Consume,
}

/// A call with the prekey bundles the device asked for during it, in order (`None` when
/// the directory had none), so that a replay answers exactly as the first run did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub op: Op,
    pub bundles: Vec<(IdentityKey, Option<Vec<u8>>)>,
}

/// The whole stream: the store's key, the seed of every call's randomness, the calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stream {
    pub key: [u8; 32],
    pub seed: u64,
    pub calls: Vec<Call>,
}

impl Stream {
    /// The seed of call `i`'s randomness.
    pub fn call_seed(&self, i: usize) -> u64 {
        self.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(&self.key);
        w.var(self.seed);
        w.list(&self.calls, |w, c| {
            match &c.op {
                Op::Create(iks) => {
                    w.u8(0);
                    w.list(iks, |w, k| w.raw(&k.0));
                }
                Op::Receive(b) => {
                    w.u8(1);
                    w.opaque(b);
                }
                Op::Welcome(b) => {
                    w.u8(2);
                    w.opaque(b);
                }
                Op::Send(g, t) => {
                    w.u8(3);
                    w.raw(&g.0);
                    w.opaque(t);
                }
                Op::Add(g, k) => {
                    w.u8(4);
                    w.raw(&g.0);
                    w.raw(&k.0);
                }
                Op::Remove(g, m) => {
                    w.u8(5);
                    w.raw(&g.0);
                    w.raw(&m.0);
                }
                Op::Update(g) => {
                    w.u8(6);
                    w.raw(&g.0);
                }
                Op::MarkSent(items) => {
                    w.u8(7);
                    w.list(items, |w, b| w.opaque(b));
                }
                Op::Consume => w.u8(8),
            }
            w.list(&c.bundles, |w, (k, b)| {
                w.raw(&k.0);
                w.opt(b.as_ref(), |w, b| w.opaque(b));
            });
        });
        w.into_bytes()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::with_max_size(bytes, MAX_STREAM_BYTES)?;
        let key = r.array()?;
        let seed = r.var()?;
        let calls = r.list(2, |r| {
            let op = match r.u8()? {
                0 => Op::Create(r.list(32, |r| Ok(VerifyingKey(r.array()?)))?),
                1 => Op::Receive(r.opaque()?.to_vec()),
                2 => Op::Welcome(r.opaque()?.to_vec()),
                3 => Op::Send(GroupId(r.array()?), r.opaque()?.to_vec()),
                4 => Op::Add(GroupId(r.array()?), VerifyingKey(r.array()?)),
                5 => Op::Remove(GroupId(r.array()?), MemberId(r.array()?)),
                6 => Op::Update(GroupId(r.array()?)),
                7 => Op::MarkSent(r.list(1, |r| Ok(r.opaque()?.to_vec()))?),
                8 => Op::Consume,
                t => return Err(DecodeError::UnknownTag { what: "crash stream op", tag: u64::from(t) }),
            };
            let bundles = r.list(33, |r| Ok((VerifyingKey(r.array()?), r.opt(|r| Ok(r.opaque()?.to_vec()))?)))?;
            Ok(Call { op, bundles })
        })?;
        r.finish()?;
        Ok(Stream { key, seed, calls })
    }
}

/// A prekey provider that records what another provider answers.
pub struct Recording<'a, P: PrekeyProvider> {
    pub inner: &'a mut P,
    pub seen: Vec<(IdentityKey, Option<Vec<u8>>)>,
}

impl<P: PrekeyProvider> PrekeyProvider for Recording<'_, P> {
    fn bundle(&mut self, ik: &IdentityKey) -> Option<PrekeyBundle> {
        let b = self.inner.bundle(ik);
        self.seen.push((*ik, b.as_ref().map(|b| b.to_bytes())));
        b
    }
}

/// A prekey provider that answers what a [`Recording`] saw, in order.
pub struct Replay {
    pub answers: std::collections::VecDeque<(IdentityKey, Option<Vec<u8>>)>,
}

impl PrekeyProvider for Replay {
    fn bundle(&mut self, ik: &IdentityKey) -> Option<PrekeyBundle> {
        let (k, b) = self.answers.pop_front()?;
        if k != *ik {
            return None;
        }
        let b = b?;
        let mut r = Reader::new(&b).ok()?;
        let bundle = PrekeyBundle::decode(&mut r).ok()?;
        r.finish().ok()?;
        Some(bundle)
    }
}

/// One line of the application's journal of consumed events: the event's number and,
/// for a message, its plaintext in hex (`-` for other events).
pub fn journal_line(id: u64, plaintext: Option<&[u8]>) -> String {
    match plaintext {
        Some(p) => format!("{id} {}\n", p.iter().map(|b| format!("{b:02x}")).collect::<String>()),
        None => format!("{id} -\n"),
    }
}

/// Reads a journal: every complete line, by event number (a line cut by a crash is
/// ignored). Returns the entries and the numbers seen more than once.
pub fn read_journal(text: &str) -> (BTreeMap<u64, Option<Vec<u8>>>, Vec<u64>) {
    let mut map = BTreeMap::new();
    let mut twice = Vec::new();
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    for line in complete.lines() {
        let mut parts = line.split(' ');
        let (Some(id), Some(p)) = (parts.next().and_then(|s| s.parse::<u64>().ok()), parts.next()) else { continue };
        let plain = if p == "-" {
            None
        } else {
            Some((0..p.len() / 2).filter_map(|i| u8::from_str_radix(p.get(2 * i..2 * i + 2)?, 16).ok()).collect())
        };
        if map.insert(id, plain).is_some() {
            twice.push(id);
        }
    }
    (map, twice)
}
