//! The envelope log of one group (§7.7): every envelope this device accepted or sent, by
//! sender and sequence number, and every Welcome it sent until its target has joined.
//! The device serves sync requests from it.

use std::collections::BTreeMap;

use dcgka::IdentityKey;
use dcgka::ids::{MemberId, SeqNo};

/// One logged envelope (a batch is one entry spanning `seq..=last_seq`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// Position in this device's log of the group: the order in which it was taken, which
    /// respects causality (an envelope is taken only after what it depends on).
    pub pos: u64,
    /// The sending member instance.
    pub sender: MemberId,
    /// Its sequence number (the first item's, for a batch).
    pub seq: SeqNo,
    /// The sequence number of its last item.
    pub last_seq: SeqNo,
    /// Its short hash (what acks reference and sync requests report).
    pub hash: [u8; 16],
    /// The envelope in its wire encoding.
    pub bytes: Vec<u8>,
}

/// A Welcome this device sent, kept to re-offer it to its target until the target joins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentWelcome {
    /// The member instance the Welcome makes its recipient.
    pub target: MemberId,
    /// The recipient's identity key.
    pub identity: IdentityKey,
    /// The Welcome.
    pub bytes: Vec<u8>,
}

/// The envelope log of one group at this device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvelopeLog {
    by_sender: BTreeMap<MemberId, BTreeMap<u64, LogEntry>>,
    next_pos: u64,
    welcomes: Vec<SentWelcome>,
}

impl EnvelopeLog {
    /// Appends an envelope unless one with the same sender and first sequence number is
    /// logged already. Returns the new entry.
    pub(crate) fn append(
        &mut self,
        sender: MemberId,
        seq: SeqNo,
        last_seq: SeqNo,
        hash: [u8; 16],
        bytes: Vec<u8>,
    ) -> Option<LogEntry> {
        let slots = self.by_sender.entry(sender).or_default();
        if slots.contains_key(&seq.0) {
            return None;
        }
        let entry = LogEntry { pos: self.next_pos, sender, seq, last_seq, hash, bytes };
        self.next_pos += 1;
        slots.insert(seq.0, entry.clone());
        Some(entry)
    }

    /// Restores an entry read back from storage.
    pub(crate) fn restore(&mut self, entry: LogEntry) {
        self.next_pos = self.next_pos.max(entry.pos + 1);
        self.by_sender.entry(entry.sender).or_default().insert(entry.seq.0, entry);
    }

    /// Entries of `sender` whose last item lies above `hwm`.
    pub fn after(&self, sender: &MemberId, hwm: u64) -> impl Iterator<Item = &LogEntry> {
        self.by_sender.get(sender).into_iter().flat_map(move |m| m.values().filter(move |e| e.last_seq.0 > hwm))
    }

    /// Every sender with logged envelopes.
    pub fn senders(&self) -> impl Iterator<Item = &MemberId> {
        self.by_sender.keys()
    }

    /// The entry of `sender` starting at `seq`.
    pub fn get(&self, sender: &MemberId, seq: SeqNo) -> Option<&LogEntry> {
        self.by_sender.get(sender)?.get(&seq.0)
    }

    /// Number of logged envelopes.
    pub fn len(&self) -> usize {
        self.by_sender.values().map(BTreeMap::len).sum()
    }

    /// Whether nothing is logged.
    pub fn is_empty(&self) -> bool {
        self.by_sender.is_empty()
    }

    /// Welcomes kept for re-offering.
    pub fn welcomes(&self) -> &[SentWelcome] {
        &self.welcomes
    }

    pub(crate) fn add_welcome(&mut self, w: SentWelcome) {
        if !self.welcomes.contains(&w) {
            self.welcomes.push(w);
        }
    }

    /// Drops the kept Welcomes for which `done` holds; returns their targets.
    pub(crate) fn retire_welcomes(&mut self, mut done: impl FnMut(&SentWelcome) -> bool) -> Vec<MemberId> {
        let mut gone = Vec::new();
        self.welcomes.retain(|w| {
            let d = done(w);
            if d {
                gone.push(w.target);
            }
            !d
        });
        gone
    }
}
