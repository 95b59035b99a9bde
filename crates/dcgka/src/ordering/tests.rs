//! Flood tests of every buffer bound (§7.3) on the ordering layer alone, against a fixed
//! roster: each bound's error, memory that stays flat (buffered count and bytes, the
//! encoded state), and an honest envelope that still gets through afterwards.

use std::collections::BTreeMap;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::*;
use crate::consts::{
    MAX_BUFFERED_BYTES, MAX_BUFFERED_PER_GROUP, MAX_BUFFERED_PER_SENDER, MAX_BUFFERED_UNKNOWN,
    MAX_BUFFERED_UNKNOWN_BYTES, MAX_CANDIDATES_PER_SLOT, MAX_PREPARED_KEYS, MAX_RECENT_HASHES, MAX_UNVERIFIED_BYTES_PER_SENDER,
    MAX_UNVERIFIED_FAR_BYTES_PER_SENDER, MAX_UNVERIFIED_FAR_PER_SENDER, MAX_UNVERIFIED_PER_SENDER,
    UNVERIFIED_NEAR,
};
use crate::crypto::SigningSecret;
use crate::two_party::{KeyRef, TwoSmCiphertext};
use crate::wire::Forward;

/// A group of `n` members known by their identity keys; member 0 is me.
struct Net {
    gid: GroupId,
    keys: Vec<SigningSecret>,
    ids: Vec<MemberId>,
    /// Members introduced by a later add: the add and the identity key.
    introduced: BTreeMap<MemberId, (OpId<MemberId>, IdentityKey)>,
    rng: ChaCha20Rng,
}

impl Net {
    fn new(n: usize) -> Net {
        let mut rng = ChaCha20Rng::seed_from_u64(n as u64);
        let gid = GroupId([7; 32]);
        let keys: Vec<SigningSecret> = (0..n).map(|_| SigningSecret::generate(&mut rng)).collect();
        let ids = keys.iter().map(|k| MemberId::derive(&gid, &k.verifying_key(), Origin::Creator)).collect();
        Net { gid, keys, ids, introduced: BTreeMap::new(), rng }
    }

    /// A genuine application envelope of member `i`, signed under its identity key (its
    /// key until its first rotation).
    fn app(&self, i: usize, seq: u64, len: usize) -> Envelope {
        Envelope::seal(EnvelopeKind::Application, &self.gid, SeqNo(seq), &self.ids[i], None, None, None, vec![1; len], &self.keys[i])
    }

    /// `genuine` claimed by member `i` at `seq` with `body` but not re-signed: a forgery.
    fn forged(&self, genuine: &Envelope, i: usize, seq: u64, body: Vec<u8>) -> Envelope {
        let mut e = genuine.clone();
        e.sender = SenderRef::Tag(self.ids[i].tag());
        e.seq = SeqNo(seq);
        e.body = body;
        e
    }

    /// A first envelope of a fresh identity acknowledging `(member i, of_seq)`, with a
    /// forward of `pad` bytes.
    fn first(&mut self, i: usize, of_seq: u64, pad: usize) -> (Envelope, MemberId, IdentityKey) {
        let key = SigningSecret::generate(&mut self.rng);
        let ik = key.verifying_key();
        let id = MemberId::derive(&self.gid, &ik, Origin::Operation(self.ids[i], SeqNo(of_seq)));
        let forwards = if pad == 0 {
            Vec::new()
        } else {
            let ct = TwoSmCiphertext { key_ref: KeyRef::YourKey(0), enc: [0; 32], ct: vec![0; pad] };
            vec![Forward { recipient: self.ids[0].tag(), ct }]
        };
        let of = AckRef { of_sender: self.ids[i].tag(), of_seq: SeqNo(of_seq), of_hash: [0; 16] };
        let body = ControlBody::Ack { of, forwards }.to_bytes();
        (Envelope::seal(EnvelopeKind::Ack, &self.gid, SeqNo(1), &id, Some(ik), None, None, body, &key), id, ik)
    }
}

impl Roster for Net {
    fn gid(&self) -> GroupId {
        self.gid
    }
    fn me(&self) -> MemberId {
        self.ids[0]
    }
    fn resolve(&self, tag: &MemberTag) -> Option<MemberId> {
        self.ids.iter().find(|m| m.tag() == *tag).copied()
    }
    fn identity(&self, id: &MemberId) -> Option<IdentityKey> {
        match self.ids.iter().position(|m| m == id) {
            Some(i) => Some(self.keys[i].verifying_key()),
            None => self.introduced.get(id).map(|(_, ik)| *ik),
        }
    }
    fn introduced_by(&self, id: &MemberId) -> Option<OpId<MemberId>> {
        self.introduced.get(id).map(|(op, _)| op.clone())
    }
    fn removal_settled(&self, _: &MemberId) -> bool {
        false
    }
}

fn encoded_len(ord: &Ordering) -> usize {
    let mut w = StateWriter::new();
    ord.encode_parts(&mut w, true);
    w.finish().len()
}

/// Processes member `i`'s next envelope, which must be `expect`: the honest traffic check.
fn deliver_next(ord: &mut Ordering, net: &Net, i: usize, expect: &Envelope) {
    assert!(matches!(ord.arrive(net, expect.clone(), false), Ok(Arrival::Taken { .. })));
    loop {
        match ord.next(net, false, false).expect("a step") {
            Step::Next { sender, chosen: Some(v), .. } => {
                assert_eq!((sender, v.env()), (net.ids[i], expect));
                ord.advance(net, sender, expect.seq.0, None, None);
                return;
            }
            Step::Next { chosen: None, .. } | Step::Discarded { .. } | Step::Equivocal { .. } => {}
            Step::Unrolled { .. } => panic!("no batch here"),
        }
    }
}

fn unverified_what(r: Result<Arrival, BufferError>) -> &'static str {
    match r {
        Err(BufferError::Unverified { what, .. }) => what,
        Err(e) => panic!("expected an unverified-budget refusal, got {e:?}"),
        Ok(_) => panic!("expected an unverified-budget refusal, got Ok"),
    }
}

#[test]
fn flood_max_ahead() {
    let net = Net::new(3);
    let mut ord = Ordering::default();
    let g = net.app(1, 1, 10);
    for seq in [MAX_AHEAD + 1, MAX_AHEAD + 2, u64::MAX / 2, u64::MAX] {
        let r = ord.arrive(&net, net.forged(&g, 1, seq, vec![0; 10]), false);
        assert!(matches!(r, Err(BufferError::TooFarAhead { max: MAX_AHEAD, .. })), "{seq}");
    }
    assert_eq!((ord.buffered(), ord.buffered_bytes()), (0, 0));
    deliver_next(&mut ord, &net, 1, &g);
}

/// Item 1 of the adversarial review: one unsigned envelope near 16 MiB at `hwm + MAX_AHEAD`
/// was buffered and then refused every verified envelope of every sender.
#[test]
fn one_big_unsigned_envelope_far_ahead_freezes_nobody() {
    let net = Net::new(3);
    let mut ord = Ordering::default();
    let g = net.app(1, 1, 10);
    let big = net.forged(&g, 1, MAX_AHEAD, vec![0; MAX_BUFFERED_BYTES - 200]);
    assert_eq!(unverified_what(ord.arrive(&net, big, false)), "far ahead bytes, per sender");
    assert_eq!(ord.buffered(), 0);
    deliver_next(&mut ord, &net, 1, &g);
    deliver_next(&mut ord, &net, 2, &net.app(2, 1, 10));
}

#[test]
fn flood_unverified_per_sender() {
    let net = Net::new(3);
    let mut ord = Ordering::default();
    let g = net.app(1, 1, 10);
    let mut refused = Vec::new();
    for round in 0..3u8 {
        for seq in 2..=40 {
            if let Err(e) = ord.arrive(&net, net.forged(&g, 1, seq, vec![round; 10]), false) {
                refused.push(e);
            }
        }
    }
    assert!(refused.iter().all(|e| matches!(e, BufferError::Unverified { what: "per sender", .. })), "{refused:?}");
    assert_eq!(refused.len(), 3 * 39 - MAX_UNVERIFIED_PER_SENDER);
    assert_eq!(ord.buffered(), MAX_UNVERIFIED_PER_SENDER);
    let size = encoded_len(&ord);
    let _ = ord.arrive(&net, net.forged(&g, 1, 41, vec![9; 10]), false);
    assert_eq!(encoded_len(&ord), size, "flat");
    // Another sender is unaffected, and so is this one's genuine next envelope.
    deliver_next(&mut ord, &net, 2, &net.app(2, 1, 10));
    deliver_next(&mut ord, &net, 1, &g);
}

#[test]
fn flood_unverified_bytes_per_sender() {
    let net = Net::new(3);
    let mut ord = Ordering::default();
    let g = net.app(1, 1, 10);
    let body = 300 * 1024;
    let fits = MAX_UNVERIFIED_BYTES_PER_SENDER / (body + 120);
    for seq in 2..2 + fits as u64 {
        assert!(ord.arrive(&net, net.forged(&g, 1, seq, vec![0; body]), false).is_ok());
    }
    let r = ord.arrive(&net, net.forged(&g, 1, 50, vec![0; body]), false);
    assert_eq!(unverified_what(r), "bytes per sender");
    assert!(ord.buffered_bytes() <= MAX_UNVERIFIED_BYTES_PER_SENDER);
    deliver_next(&mut ord, &net, 1, &g);
}

#[test]
fn flood_unverified_far_ahead() {
    let net = Net::new(3);
    let mut ord = Ordering::default();
    let g = net.app(1, 1, 10);
    let far = UNVERIFIED_NEAR + 1;
    for k in 0..MAX_UNVERIFIED_FAR_PER_SENDER as u64 {
        assert!(ord.arrive(&net, net.forged(&g, 1, far + k, vec![0; 10]), false).is_ok());
    }
    let r = ord.arrive(&net, net.forged(&g, 1, far + 100, vec![0; 10]), false);
    assert_eq!(unverified_what(r), "far ahead, per sender");
    // Near ones still fit in the sender's larger budget.
    assert!(ord.arrive(&net, net.forged(&g, 1, 2, vec![0; 10]), false).is_ok());
    // Far bytes, for another sender.
    let body = 20 * 1024;
    let fits = MAX_UNVERIFIED_FAR_BYTES_PER_SENDER / (body + 120);
    for k in 0..fits as u64 {
        assert!(ord.arrive(&net, net.forged(&g, 2, far + k, vec![0; body]), false).is_ok());
    }
    let r = ord.arrive(&net, net.forged(&g, 2, far + 50, vec![0; body]), false);
    assert_eq!(unverified_what(r), "far ahead bytes, per sender");
    deliver_next(&mut ord, &net, 1, &g);
    deliver_next(&mut ord, &net, 2, &net.app(2, 1, 10));
}

/// Unverified data of many claimed senders fills `MAX_BUFFERED_BYTES`: another unverified
/// envelope is refused, but a verified one evicts unverified data and is taken.
#[test]
fn flood_group_bytes_and_verified_data_evicts() {
    let net = Net::new(10);
    let mut ord = Ordering::default();
    let g = net.app(1, 1, 10);
    let body = 1_000_000;
    let mut refused = Vec::new();
    for i in 1..10 {
        for seq in [2, 3] {
            if let Err(e) = ord.arrive(&net, net.forged(&g, i, seq, vec![0; body]), false) {
                refused.push(e);
            }
        }
    }
    assert!(!refused.is_empty());
    assert!(refused.iter().all(|e| matches!(e, BufferError::Full { what: "group bytes", .. })), "{refused:?}");
    let full = ord.buffered_bytes();
    assert!(full <= MAX_BUFFERED_BYTES && full + body + 120 > MAX_BUFFERED_BYTES);
    // A verified envelope (a sender's next one) evicts and is taken, every time.
    for i in 1..10 {
        deliver_next(&mut ord, &net, i, &net.app(i, 1, body));
        assert!(ord.buffered_bytes() <= MAX_BUFFERED_BYTES);
    }
}

#[test]
fn flood_group_count_and_verified_data_evicts() {
    let net = Net::new(200);
    let mut ord = Ordering::default();
    let g = net.app(1, 1, 10);
    let mut refused = Vec::new();
    'flood: for i in 1..200 {
        for seq in 2..=33 {
            for v in 0..2u8 {
                if let Err(e) = ord.arrive(&net, net.forged(&g, i, seq, vec![v; 4]), false) {
                    refused.push(e);
                    if refused.len() > 10 {
                        break 'flood;
                    }
                }
            }
        }
    }
    assert!(refused.iter().all(|e| matches!(e, BufferError::Full { what: "group", .. })), "{refused:?}");
    assert_eq!(ord.buffered(), MAX_BUFFERED_PER_GROUP);
    let size = encoded_len(&ord);
    assert!(ord.arrive(&net, net.forged(&g, 199, 2, vec![3; 4]), false).is_err());
    assert_eq!(encoded_len(&ord), size, "flat");
    deliver_next(&mut ord, &net, 199, &net.app(199, 1, 10));
    assert!(ord.buffered() <= MAX_BUFFERED_PER_GROUP);
}

/// `MAX_BUFFERED_PER_SENDER` can only be reached by verified entries (the unverified budget
/// is far smaller); they first evict the sender's unverified ones.
#[test]
fn flood_per_sender() {
    let net = Net::new(3);
    let mut ord = Ordering::default();
    let g = net.app(1, 1, 10);
    for seq in 2..12 {
        ord.buffer(&net, net.forged(&g, 1, seq, vec![1; 4]), false).unwrap();
    }
    for seq in 2..2 + MAX_BUFFERED_PER_SENDER as u64 {
        ord.buffer(&net, net.forged(&g, 1, seq, vec![2; 4]), true).unwrap();
    }
    assert_eq!(ord.buffered(), MAX_BUFFERED_PER_SENDER);
    let r = ord.buffer(&net, net.forged(&g, 1, 5000, vec![2; 4]), true);
    assert!(matches!(r, Err(BufferError::Full { what: "sender", .. })), "{r:?}");
    assert_eq!(ord.buffered(), MAX_BUFFERED_PER_SENDER);
    deliver_next(&mut ord, &net, 2, &net.app(2, 1, 10));
}

/// Item 2 of the adversarial review: four unsigned acks for a sender's slot whose
/// dependency never holds filled the slot for good and the genuine envelope was refused.
#[test]
fn four_unsigned_acks_do_not_freeze_a_sender() {
    let net = Net::new(3);
    let mut ord = Ordering::default();
    let g1 = net.app(1, 1, 10);
    for k in 0..MAX_CANDIDATES_PER_SLOT as u8 {
        // Each acknowledges an operation that will never exist.
        let never = AckRef { of_sender: net.ids[2].tag(), of_seq: SeqNo(9_000), of_hash: [k; 16] };
        let mut e = net.forged(&g1, 1, 2, ControlBody::Ack { of: never, forwards: Vec::new() }.to_bytes());
        e.kind = EnvelopeKind::Ack;
        ord.arrive(&net, e, false).unwrap();
    }
    let r = ord.arrive(&net, net.forged(&g1, 1, 2, vec![5; 4]), false);
    assert!(matches!(r, Err(BufferError::Full { what: "slot", .. })), "{:?}", r.err());
    deliver_next(&mut ord, &net, 1, &g1);
    // The slot is next now: all its candidates are verified at once and the forgeries leave.
    let Some(Step::Next { chosen: None, forged, .. }) = ord.next(&net, false, false) else { panic!("forgeries dropped") };
    assert_eq!(forged.len(), MAX_CANDIDATES_PER_SLOT);
    assert_eq!(ord.buffered(), 0);
    deliver_next(&mut ord, &net, 1, &net.app(1, 2, 10));
}

/// A verified envelope replaces unverified candidates of a full slot.
#[test]
fn a_verified_envelope_replaces_unverified_candidates() {
    let net = Net::new(3);
    let mut ord = Ordering::default();
    let g = net.app(1, 1, 10);
    for k in 0..MAX_CANDIDATES_PER_SLOT as u8 {
        ord.buffer(&net, net.forged(&g, 1, 1, vec![k; 4]), false).unwrap();
    }
    ord.buffer(&net, g.clone(), true).unwrap();
    assert_eq!(ord.buffered(), 1);
    let Some(Step::Next { chosen: Some(v), .. }) = ord.next(&net, false, false) else { panic!("the genuine one") };
    assert_eq!(v.env(), &g);
}

/// Item 3 of the adversarial review: junk first envelopes filled the unknown-sender buffer
/// for good and every later newcomer's first envelope was refused.
#[test]
fn junk_first_envelopes_do_not_lock_newcomers_out() {
    let mut net = Net::new(3);
    let mut ord = Ordering::default();
    for k in 0..(MAX_BUFFERED_UNKNOWN + 50) as u64 {
        let (e, ..) = net.first(1, 10 + k, 0);
        assert!(matches!(ord.arrive(&net, e, false), Ok(Arrival::Taken { .. })));
    }
    assert_eq!(ord.buffered(), MAX_BUFFERED_UNKNOWN);
    // Beyond MAX_AHEAD of the acknowledged sender: dropped at once.
    let (e, ..) = net.first(1, MAX_AHEAD + 1, 0);
    assert!(matches!(ord.arrive(&net, e, false), Err(BufferError::TooFarAhead { .. })));
    // A newcomer added by member 1's next operation: its first envelope evicts junk.
    let (newcomer, nid, nik) = net.first(1, 1, 0);
    assert!(matches!(ord.arrive(&net, newcomer.clone(), false), Ok(Arrival::Taken { .. })));
    assert_eq!(ord.buffered(), MAX_BUFFERED_UNKNOWN);
    net.introduced.insert(nid, (OpId::new(net.ids[1], 1), nik));
    ord.advance(&net, net.ids[1], 1, None, None);
    let chosen = std::iter::from_fn(|| ord.next(&net, false, false))
        .find_map(|s| match s {
            Step::Next { chosen: Some(v), .. } => Some(v),
            _ => None,
        })
        .expect("the newcomer's first envelope");
    assert_eq!((chosen.sender, chosen.env()), (nid, &newcomer));
    // Once the operation is processed, a first envelope it did not introduce is dropped on
    // arrival, and one it did is taken at once.
    let (junk, ..) = net.first(1, 1, 0);
    let before = ord.buffered();
    assert!(matches!(ord.arrive(&net, junk, false), Ok(Arrival::Dropped(DropReason::NotAMember))));
    assert_eq!(ord.buffered(), before);
}

#[test]
fn flood_unknown_bytes() {
    let mut net = Net::new(3);
    let mut ord = Ordering::default();
    let pad = 100_000;
    let each = buffered_size(&net.first(1, 10, pad).0);
    for k in 0..30 {
        let (e, ..) = net.first(1, 10 + k, pad);
        assert!(ord.arrive(&net, e, false).is_ok());
        assert!(ord.buffered_bytes() <= MAX_BUFFERED_UNKNOWN_BYTES);
    }
    assert_eq!(ord.buffered(), MAX_BUFFERED_UNKNOWN_BYTES / each);
    let size = encoded_len(&ord);
    let (e, ..) = net.first(1, 100, pad);
    assert!(ord.arrive(&net, e, false).is_ok());
    assert_eq!(encoded_len(&ord), size, "flat");
    let (huge, ..) = net.first(1, 11, MAX_BUFFERED_UNKNOWN_BYTES);
    let r = ord.arrive(&net, huge, false);
    assert!(matches!(r, Err(BufferError::Full { what: "unknown sender bytes", .. })), "{:?}", r.err());
    deliver_next(&mut ord, &net, 1, &net.app(1, 1, 10));
}

#[test]
fn recent_hashes_are_bounded_and_survive_a_snapshot() {
    let net = Net::new(3);
    let mut ord = Ordering::default();
    for seq in 1..=100 {
        ord.advance(&net, net.ids[1], seq, None, None);
        ord.remember(net.ids[1], seq, [seq as u8; 16]);
    }
    assert!(ord.processed_version(&net.ids[1], 100 - MAX_RECENT_HASHES as u64).is_none());
    let kept = 100 - MAX_RECENT_HASHES as u64 + 1;
    assert_eq!(ord.processed_version(&net.ids[1], kept).map(|v| v.0), Some([kept as u8; 16]));
    let mut w = StateWriter::new();
    ord.encode_parts(&mut w, true);
    let bytes = w.finish();
    let mut r = StateReader::open(&bytes).unwrap();
    let back = Ordering::decode_state(&mut r).unwrap();
    assert_eq!(back.senders, ord.senders);
    assert_eq!(back.senders[&net.ids[1]].recent.len(), MAX_RECENT_HASHES);
    assert!(ord.senders[&net.ids[1]].recent.capacity() <= MAX_RECENT_HASHES, "never allocated for more");
}

/// However many members send, at most [`MAX_PREPARED_KEYS`] decompressed keys are kept,
/// the least recently used leaving first; a forgery caches nothing and evicts nothing.
#[test]
fn decompressed_keys_are_bounded() {
    let n = MAX_PREPARED_KEYS + 9;
    let net = Net::new(n);
    let mut ord = Ordering::default();
    for i in 1..n {
        deliver_next(&mut ord, &net, i, &net.app(i, 1, 10));
        assert_eq!(ord.prepared.len(), i.min(MAX_PREPARED_KEYS));
    }
    assert!(!ord.prepared.holds(&net.ids[1]) && ord.prepared.holds(&net.ids[n - 1]));
    let forgery = net.forged(&net.app(2, 2, 10), 1, 2, vec![2; 10]);
    assert!(matches!(ord.arrive(&net, forgery, false), Ok(Arrival::Dropped(DropReason::BadSignature))));
    assert!(!ord.prepared.holds(&net.ids[1]) && ord.prepared.holds(&net.ids[n - 1]));
    deliver_next(&mut ord, &net, 1, &net.app(1, 2, 10));
    assert!(ord.prepared.holds(&net.ids[1]));
    assert_eq!(ord.prepared.len(), MAX_PREPARED_KEYS);
    // A rotation caches the new key in place of the sender's old one, or while there is
    // room, but evicts nobody.
    let rotated = |seq: u64| {
        let key = SigningSecret::generate(&mut ChaCha20Rng::seed_from_u64(seq));
        Some(CertifiedKey { key: key.verifying_key(), seq: SeqNo(seq), cert: Signature([0; 64]) })
    };
    let outside = (2..n).find(|i| !ord.prepared.holds(&net.ids[*i])).unwrap();
    ord.advance(&net, net.ids[outside], 2, rotated(2), None);
    assert!(!ord.prepared.holds(&net.ids[outside]));
    ord.advance(&net, net.ids[1], 3, rotated(3), None);
    assert!(ord.prepared.holds(&net.ids[1]));
    assert_eq!(ord.prepared.len(), MAX_PREPARED_KEYS);
    let mut small = Ordering::default();
    small.advance(&net, net.ids[2], 1, rotated(1), None);
    small.advance(&net, net.ids[0], 1, rotated(1), None);
    assert!(small.prepared.holds(&net.ids[2]) && !small.prepared.holds(&net.ids[0]), "not my own key");
}

/// The buffer round-trips through the snapshot with its verified marks and counters.
#[test]
fn a_flooded_buffer_restores_consistently() {
    let net = Net::new(4);
    let mut ord = Ordering::default();
    // Sequence number 1 is a first envelope on the wire: start the senders at 1.
    for i in 1..3 {
        ord.advance(&net, net.ids[i], 1, None, None);
    }
    let g = net.app(1, 2, 10);
    for seq in 3..90 {
        let _ = ord.arrive(&net, net.forged(&g, 1, seq, vec![0; 100]), false);
    }
    ord.buffer(&net, net.app(2, 2, 10), true).unwrap();
    let mut w = StateWriter::new();
    ord.encode_parts(&mut w, true);
    let bytes = w.finish();
    let mut back = Ordering::decode_state(&mut StateReader::open(&bytes).unwrap()).unwrap();
    assert_eq!((back.buffered(), back.buffered_bytes()), (ord.buffered(), ord.buffered_bytes()));
    assert_eq!(back.buffered(), MAX_UNVERIFIED_PER_SENDER + 1);
    let r = back.arrive(&net, net.forged(&g, 1, 91, vec![0; 100]), false);
    assert!(matches!(r, Err(BufferError::Unverified { .. })));
    deliver_next(&mut back, &net, 1, &g);
}

/// The key of an operation that every member acknowledged stays exactly while a recent
/// hash needs it: random interleavings of one sender's operations (each rotating its key)
/// and other envelopes, operations completing at random. Pruning as things happen
/// (`release`, and the recent window moving on) keeps the same keys as pruning once at the
/// end (`prune_keys`, as on loading an old snapshot), every lookup of a processed version
/// is what keeping every key would give, and what is kept is bounded by the operations in
/// flight and the recent window.
#[test]
fn keys_stay_exactly_while_a_recent_hash_needs_them() {
    use rand_core::Rng;

    let net = Net::new(2);
    let id = net.ids[1];
    for seed in 0..24 {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let (mut live, mut lazy) = (Ordering::default(), Ordering::default());
        let mut in_flight: Vec<(MemberId, u64)> = Vec::new();
        let operations = 1 + rng.next_u32() % 4;
        for seq in 1..=150u64 {
            if rng.next_u32() % operations == 0 {
                let k = CertifiedKey { key: VerifyingKey([seq as u8; 32]), seq: SeqNo(seq), cert: Signature([0; 64]) };
                for o in [&mut live, &mut lazy] {
                    o.advance(&net, id, seq, Some(k), Some((EnvelopeKind::Update, [seq as u8; 16])));
                }
                in_flight.push((id, seq));
            } else {
                for o in [&mut live, &mut lazy] {
                    o.advance(&net, id, seq, None, None);
                    o.remember(id, seq, [seq as u8; 16]);
                }
            }
            if !in_flight.is_empty() && rng.next_u32() % 2 == 0 {
                let op = in_flight.remove(rng.next_u32() as usize % in_flight.len());
                live.release(&[op]);
                lazy.forget_retained(&[op]);
            }
        }
        for seq in 1..=150 {
            assert_eq!(live.processed_version(&id, seq), lazy.processed_version(&id, seq), "seed {seed}, seq {seq}");
        }
        lazy.prune_keys();
        assert_eq!(live.retained_keys, lazy.retained_keys, "seed {seed}");
        assert!(live.retained_keys.len() <= in_flight.len() + MAX_RECENT_HASHES, "seed {seed}");
    }
}
