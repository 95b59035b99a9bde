//! Flood tests of the protocol library's limits (`dcgka::consts`), the buffer bounds
//! aside (they have their own suite): each floods a limit, checks its own error, checks
//! that the state does not grow past the bound, and that honest traffic still gets
//! through afterwards. `MAX_SKIP` and `MAX_SKIPPED` are flooded by the ratchet's unit test
//! (`ratchet::tests`), where the index is under the test's control; through a group an
//! honest sender's envelopes arrive in order, so the index never jumps.

use dcgka::codec::{Decode, DecodeError, Encode};
use dcgka::consts::{
    MAX_BATCH_ITEMS, MAX_GROUP, MAX_LIST_LEN, MAX_MESSAGE_SIZE, MAX_ONE_TIME_PREKEYS, MAX_PLAINTEXT_SIZE, MAX_SKIP,
    MAX_SKIPPED, MAX_SNAPSHOT_SIZE, PREKEY_DEFAULT_VALIDITY, PREKEY_GRACE, PREKEY_MIN_REMAINING, PREKEY_SKEW,
};
use dcgka::crypto::{Hash32, Secret32, SigningSecret, VerifyingKey};
use dcgka::events::{Event, RejectReason};
use dcgka::group::{Context, Group, GroupConfig, GroupError, JoinError};
use dcgka::ids::{Epoch, GroupId, MemberId, MessageIndex, Origin, SeqNo};
use dcgka::prekeys::{Identity, InMemoryPrekeyDirectory, PrekeyBundle, PrekeyError, SignedPrekeyId};
use dcgka::ratchet::{RatchetError, SenderRatchet};
use dcgka::snapshot::SnapshotError;
use dcgka::wire::{BatchItem, CertifiedKey, ControlBody, Envelope, EnvelopeKind, SeedBlock, encode_batch};
use rand_chacha::ChaCha20Rng;

use super::{NOW, rng};

/// Two members A and B of one group, every envelope delivered.
struct Pair {
    rng: ChaCha20Rng,
    dir: InMemoryPrekeyDirectory,
    ids: [Identity; 2],
    groups: [Group; 2],
}

impl Pair {
    fn new(seed: u64) -> Self {
        let mut rng = rng(seed);
        let mut dir = InMemoryPrekeyDirectory::new();
        let mut ids = [Identity::generate(&mut rng), Identity::generate(&mut rng)];
        for id in &mut ids {
            dir.publish_identity(&mut rng, id, NOW, 4).unwrap();
        }
        let b_ik = ids[1].public_key();
        let [ia, ib] = &mut ids;
        let mut ctx = Context { rng: &mut rng, now: NOW, prekeys: &mut dir, identity: ia };
        let (mut a, out) = Group::create(&mut ctx, &[b_ik], GroupConfig::default()).unwrap();
        let mut ctx = Context { rng: &mut rng, now: NOW, prekeys: &mut dir, identity: ib };
        let (b, acks) = Group::from_create(&mut ctx, &out.broadcast[0], GroupConfig::default()).unwrap();
        let mut ctx = Context { rng: &mut rng, now: NOW, prekeys: &mut dir, identity: ia };
        for ack in &acks.broadcast {
            let _ = a.receive(&mut ctx, ack).unwrap();
        }
        Pair { rng, dir, ids, groups: [a, b] }
    }

    /// Runs `f` on member `m` with its context.
    fn with<T>(&mut self, m: usize, f: impl FnOnce(&mut Group, &mut Context<'_, ChaCha20Rng>) -> T) -> T {
        let mut ctx = Context { rng: &mut self.rng, now: NOW, prekeys: &mut self.dir, identity: &mut self.ids[m] };
        f(&mut self.groups[m], &mut ctx)
    }

    /// `from` sends `pt`; the other member receives it. Returns what it decrypted.
    fn message(&mut self, from: usize, pt: &[u8]) -> Vec<Vec<u8>> {
        let out = self.with(from, |g, ctx| g.send(ctx, pt)).unwrap();
        let got = self.with(1 - from, |g, ctx| g.receive(ctx, &out.broadcast[0])).unwrap();
        got.events
            .into_iter()
            .filter_map(|e| match e {
                Event::Message { plaintext, .. } => Some(plaintext),
                _ => None,
            })
            .collect()
    }
}

/// A create envelope signed by `creator` listing `members`, with an empty seed block
/// (every check below fires before the seeds are looked at).
fn crafted_create(creator: &Identity, gid: GroupId, mut members: Vec<VerifyingKey>) -> Vec<u8> {
    members.sort();
    let body = ControlBody::Create { members, seeds: SeedBlock { recipients_digest: Hash32([0; 32]), cts: vec![] } };
    let me = MemberId::derive(&gid, &creator.public_key(), Origin::Creator);
    let next = SigningSecret::from_bytes(&[9; 32]).verifying_key();
    Envelope::seal(
        EnvelopeKind::Create,
        &gid,
        SeqNo(1),
        &me,
        Some(creator.public_key()),
        Some(next),
        Some(CertifiedKey::issue(creator.signing_key(), &gid, &me, SeqNo(1), next).cert),
        body.to_bytes(),
        creator.signing_key(),
    )
    .to_bytes()
}

/// Distinct 32-byte keys (not necessarily curve points: the decoder does not look).
fn keys(n: usize) -> Vec<VerifyingKey> {
    (0..n as u32)
        .map(|i| {
            let mut k = [0x55; 32];
            k[..4].copy_from_slice(&i.to_be_bytes());
            VerifyingKey(k)
        })
        .collect()
}

#[test]
fn max_message_size_inputs_are_refused_before_parsing_and_change_nothing() {
    let mut p = Pair::new(1);
    let before = p.groups[1].snapshot();
    let big = vec![0u8; MAX_MESSAGE_SIZE + 1];
    let too_large = DecodeError::TooLarge { size: MAX_MESSAGE_SIZE + 1, max: MAX_MESSAGE_SIZE };
    for _ in 0..8 {
        assert_eq!(p.with(1, |g, ctx| g.receive(ctx, &big)).unwrap_err(), GroupError::Malformed(too_large.clone()));
    }
    assert_eq!(Group::peek(&big).unwrap_err(), GroupError::Malformed(too_large.clone()));
    let mut ctx = Context { rng: &mut p.rng, now: NOW, prekeys: &mut p.dir, identity: &mut p.ids[1] };
    assert_eq!(
        Group::join(&mut ctx, &big, GroupConfig::default()).unwrap_err(),
        GroupError::Malformed(too_large.clone())
    );
    assert_eq!(
        Group::from_create(&mut ctx, &big, GroupConfig::default()).unwrap_err(),
        GroupError::Malformed(too_large)
    );
    assert_eq!(p.groups[1].snapshot(), before, "nothing of the flood is kept");
    assert_eq!(p.message(0, b"after the flood"), vec![b"after the flood".to_vec()]);
}

#[test]
fn max_list_len_lists_are_refused_when_decoded() {
    let mut p = Pair::new(2);
    let gid = GroupId([3; 32]);
    let b_ik = p.ids[1].public_key();
    let mut members = keys(MAX_LIST_LEN + 1);
    members[0] = b_ik;
    let flood = crafted_create(&p.ids[0], gid, members);
    let decoded = ControlBody::from_bytes(EnvelopeKind::Create, &Envelope::from_bytes(&flood).unwrap().body);
    let too_long = DecodeError::ListTooLong { count: MAX_LIST_LEN as u64 + 1, max: MAX_LIST_LEN };
    assert_eq!(decoded.unwrap_err(), too_long);
    let keys_before = p.ids[1].key_store().one_time_prekey_count();
    for _ in 0..3 {
        let mut ctx = Context { rng: &mut p.rng, now: NOW, prekeys: &mut p.dir, identity: &mut p.ids[1] };
        let r = Group::from_create(&mut ctx, &flood, GroupConfig::default());
        assert_eq!(r.unwrap_err(), GroupError::Malformed(too_long.clone()));
    }
    assert_eq!(p.ids[1].key_store().one_time_prekey_count(), keys_before);
    // A group B is in is untouched, and a list at the bound still decodes (it then meets
    // the group's own bound, MAX_GROUP).
    let mut members = keys(MAX_LIST_LEN);
    members[0] = b_ik;
    let at_bound = crafted_create(&p.ids[0], gid, members);
    let mut ctx = Context { rng: &mut p.rng, now: NOW, prekeys: &mut p.dir, identity: &mut p.ids[1] };
    let r = Group::from_create(&mut ctx, &at_bound, GroupConfig::default());
    assert!(matches!(r, Err(GroupError::CannotJoin(JoinError::Rejected(RejectReason::TooManyMembers { .. })))));
    assert_eq!(p.message(0, b"after"), vec![b"after".to_vec()]);
}

#[test]
fn max_group_creates_are_refused_locally_and_on_receipt() {
    let mut p = Pair::new(3);
    let b_ik = p.ids[1].public_key();
    let too_many = RejectReason::TooManyMembers { count: MAX_GROUP + 1, max: MAX_GROUP };
    // Locally: one more than MAX_GROUP members, before any bundle is fetched.
    let mut others = keys(MAX_GROUP);
    others[0] = b_ik;
    let opks = p.dir.remaining_one_time_prekeys(&b_ik);
    let mut ctx = Context { rng: &mut p.rng, now: NOW, prekeys: &mut p.dir, identity: &mut p.ids[0] };
    let r = Group::create(&mut ctx, &others, GroupConfig::default());
    assert_eq!(r.unwrap_err(), GroupError::InvalidOperation(too_many.clone()));
    assert_eq!(p.dir.remaining_one_time_prekeys(&b_ik), opks, "no bundle was fetched");
    // On receipt: a create listing B among MAX_GROUP others.
    let flood = crafted_create(&p.ids[0], GroupId([4; 32]), others);
    for _ in 0..3 {
        let mut ctx = Context { rng: &mut p.rng, now: NOW, prekeys: &mut p.dir, identity: &mut p.ids[1] };
        let r = Group::from_create(&mut ctx, &flood, GroupConfig::default());
        assert_eq!(r.unwrap_err(), GroupError::CannotJoin(JoinError::Rejected(too_many.clone())));
    }
    // Honest traffic: B's group goes on, and a small create still works.
    assert_eq!(p.message(0, b"still here"), vec![b"still here".to_vec()]);
    let mut ctx = Context { rng: &mut p.rng, now: NOW, prekeys: &mut p.dir, identity: &mut p.ids[0] };
    let (_, out) = Group::create(&mut ctx, &[b_ik], GroupConfig::default()).unwrap();
    let mut ctx = Context { rng: &mut p.rng, now: NOW, prekeys: &mut p.dir, identity: &mut p.ids[1] };
    assert!(Group::from_create(&mut ctx, &out.broadcast[0], GroupConfig::default()).is_ok());
}

#[test]
fn max_plaintext_size_is_refused_and_the_bound_itself_is_delivered() {
    let mut p = Pair::new(4);
    let before = p.groups[0].snapshot();
    let big = vec![7u8; MAX_PLAINTEXT_SIZE + 1];
    for _ in 0..4 {
        let r = p.with(0, |g, ctx| g.send(ctx, &big));
        assert_eq!(
            r.unwrap_err(),
            GroupError::PlaintextTooLarge { size: MAX_PLAINTEXT_SIZE + 1, max: MAX_PLAINTEXT_SIZE }
        );
    }
    assert_eq!(p.groups[0].snapshot(), before, "a refused send changes nothing");
    let largest = vec![8u8; MAX_PLAINTEXT_SIZE];
    assert_eq!(p.message(0, &largest), vec![largest]);
    assert_eq!(p.message(0, b"small"), vec![b"small".to_vec()]);
}

#[test]
fn max_batch_items_batches_are_refused_when_parsed() {
    let mut p = Pair::new(5);
    let before = p.groups[1].snapshot();
    let a = p.groups[0].me();
    let gid = p.groups[0].gid();
    let ack = BatchItem { kind: EnvelopeKind::Ack, body: vec![0; 40] };
    let batch = |n: usize| {
        let key = SigningSecret::from_bytes(&[5; 32]);
        let body = encode_batch(&vec![ack.clone(); n]);
        Envelope::seal(EnvelopeKind::Batch, &gid, SeqNo(10), &a, None, None, None, body, &key).to_bytes()
    };
    assert!(Envelope::from_bytes(&batch(MAX_BATCH_ITEMS)).is_ok(), "the bound itself parses");
    let flood = batch(MAX_BATCH_ITEMS + 1);
    let too_long = DecodeError::ListTooLong { count: MAX_BATCH_ITEMS as u64 + 1, max: MAX_BATCH_ITEMS };
    assert_eq!(Envelope::from_bytes(&flood).unwrap_err(), too_long);
    for _ in 0..4 {
        assert_eq!(p.with(1, |g, ctx| g.receive(ctx, &flood)).unwrap_err(), GroupError::Malformed(too_long.clone()));
    }
    assert_eq!(p.groups[1].snapshot(), before);
    assert_eq!(p.message(0, b"after"), vec![b"after".to_vec()]);
}

#[test]
fn max_snapshot_size_snapshots_are_refused_before_reading() {
    let p = Pair::new(6);
    // Zeroed pages that are never touched: the size is checked first.
    let big = vec![0u8; MAX_SNAPSHOT_SIZE + 1];
    let too_large =
        SnapshotError::Malformed(DecodeError::TooLarge { size: MAX_SNAPSHOT_SIZE + 1, max: MAX_SNAPSHOT_SIZE });
    assert_eq!(Group::restore(&big).unwrap_err(), too_large);
    assert_eq!(Group::restore_records(&big, []).unwrap_err(), too_large);
    assert_eq!(Identity::restore(&big).unwrap_err(), too_large);
    drop(big);
    // Real snapshots still restore exactly.
    let snap = p.groups[1].snapshot();
    assert_eq!(Group::restore(&snap).unwrap().snapshot(), snap);
    let id = p.ids[1].snapshot();
    assert_eq!(Identity::restore(&id).unwrap().snapshot(), id);
}

#[test]
fn max_one_time_prekeys_fills_the_store_and_no_further() {
    let mut r = rng(7);
    let mut id = Identity::generate(&mut r);
    let not_after = NOW + PREKEY_DEFAULT_VALIDITY;
    let spk = id.new_signed_prekey(&mut r, NOW, not_after);
    let mut opks = id.new_one_time_prekeys(&mut r, MAX_ONE_TIME_PREKEYS, not_after).unwrap();
    let full = id.snapshot().len();
    for count in [1, 10, MAX_ONE_TIME_PREKEYS] {
        let e = id.new_one_time_prekeys(&mut r, count, not_after).unwrap_err();
        assert_eq!(e, PrekeyError::TooManyOneTimePrekeys { held: MAX_ONE_TIME_PREKEYS, max: MAX_ONE_TIME_PREKEYS });
    }
    assert_eq!(id.key_store().one_time_prekey_count(), MAX_ONE_TIME_PREKEYS);
    assert_eq!(id.snapshot().len(), full, "a refused request stores nothing");
    // Honest use: a creator uses one of them; the holder joins, which consumes it, and
    // can then publish one more.
    let mut dir = InMemoryPrekeyDirectory::new();
    dir.publish_signed_prekey(spk);
    dir.publish_one_time_prekeys(vec![opks.swap_remove(0)]);
    let mut creator = Identity::generate(&mut r);
    let mut ctx = Context { rng: &mut r, now: NOW, prekeys: &mut dir, identity: &mut creator };
    let (_, out) = Group::create(&mut ctx, &[id.public_key()], GroupConfig::default()).unwrap();
    let mut ctx = Context { rng: &mut r, now: NOW, prekeys: &mut dir, identity: &mut id };
    assert!(Group::from_create(&mut ctx, &out.broadcast[0], GroupConfig::default()).is_ok());
    assert_eq!(id.key_store().one_time_prekey_count(), MAX_ONE_TIME_PREKEYS - 1);
    assert_eq!(id.new_one_time_prekeys(&mut r, 1, not_after).unwrap().len(), 1);
}

#[test]
fn prekey_time_limits_hold_at_their_bounds() {
    let mut r = rng(8);
    let mut id = Identity::generate(&mut r);
    let ik = id.public_key();
    let (not_before, not_after) = (NOW, NOW + PREKEY_DEFAULT_VALIDITY);
    let bundle =
        PrekeyBundle { signed_prekey: id.new_signed_prekey(&mut r, not_before, not_after), one_time_prekey: None };
    // PREKEY_SKEW: usable from not_before − skew, not a second earlier.
    assert!(bundle.verify(&ik, not_before - PREKEY_SKEW).is_ok());
    assert_eq!(
        bundle.verify(&ik, not_before - PREKEY_SKEW - 1).unwrap_err(),
        PrekeyError::NotYetValid { not_before, now: not_before - PREKEY_SKEW - 1 }
    );
    // PREKEY_MIN_REMAINING: usable while at least that much validity remains.
    assert!(bundle.verify(&ik, not_after - PREKEY_MIN_REMAINING).is_ok());
    let late = not_after - PREKEY_MIN_REMAINING + 1;
    assert_eq!(bundle.verify(&ik, late).unwrap_err(), PrekeyError::Expired { not_after, now: late });
    // PREKEY_GRACE: the owner keeps the secret until not_after + grace, then deletes it.
    let spk_id = bundle.signed_prekey.value.spk_id;
    id.key_store_mut().purge_expired(not_after + PREKEY_GRACE);
    assert!(id.key_store().spk(spk_id).is_ok());
    id.key_store_mut().purge_expired(not_after + PREKEY_GRACE + 1);
    assert_eq!(id.key_store().spk(spk_id).unwrap_err(), PrekeyError::UnknownSignedPrekey(spk_id));
    // A flood of rotations (weekly, for three years, purging as it goes): the store holds
    // only the keys within validity and grace, so it stops growing.
    let week = 7 * 24 * 60 * 60;
    let bound = ((PREKEY_DEFAULT_VALIDITY + PREKEY_GRACE) / week + 1) as usize;
    let mut held_counts = Vec::new();
    for w in 0..156u64 {
        let now = NOW + w * week;
        let signed = id.new_signed_prekey(&mut r, now, now + PREKEY_DEFAULT_VALIDITY);
        id.key_store_mut().purge_expired(now);
        let newest = signed.value.spk_id;
        let held = (1..=newest.0).filter(|i| id.key_store().spk(SignedPrekeyId(*i)).is_ok()).count();
        held_counts.push(held);
        // Honest use: the newest bundle verifies, and its secret is held.
        let b = PrekeyBundle { signed_prekey: signed, one_time_prekey: None };
        assert!(b.verify(&ik, now).is_ok());
        assert!(id.key_store().spk(newest).is_ok());
    }
    assert!(held_counts.iter().all(|h| *h <= bound), "{held_counts:?}");
    assert!(held_counts[bound + 1..].iter().all(|h| *h == held_counts[bound + 1]), "{held_counts:?}");
}

#[test]
fn max_skip_and_max_skipped_hold_under_repeated_jumps() {
    let (gid, alice) = (GroupId([1; 32]), MemberId([2; 32]));
    let secret = Secret32::from_bytes([42; 32]);
    let mut tx = SenderRatchet::new(gid, alice, Epoch(1), secret.clone()).unwrap();
    let mut rx = SenderRatchet::new(gid, alice, Epoch(1), secret).unwrap();
    let rounds = 10u64;
    let jump = u64::from(MAX_SKIP);
    let msgs: Vec<(MessageIndex, SeqNo, Vec<u8>)> = (0..rounds * (jump + 1) + 2)
        .map(|k| {
            let (i, ct) = tx.encrypt(SeqNo(k + 1), &k.to_be_bytes()).unwrap();
            (i, SeqNo(k + 1), ct)
        })
        .collect();
    for round in 0..rounds {
        let base = (round * (jump + 1)) as usize;
        // One index too far: refused with its own error, nothing changes.
        let next = rx.next_index();
        let (i, seq, ct) = &msgs[base + jump as usize + 1];
        assert!(matches!(
            rx.decrypt(Epoch(1), *i, *seq, ct),
            Err(RatchetError::TooFarAhead { jump: j, max: MAX_SKIP, .. }) if j == MAX_SKIP + 1
        ));
        assert_eq!(rx.next_index(), next);
        // Exactly MAX_SKIP ahead: accepted, and the skipped keys stay capped.
        let (i, seq, ct) = &msgs[base + jump as usize];
        assert!(rx.decrypt(Epoch(1), *i, *seq, ct).is_ok());
        assert_eq!(rx.skipped_keys(), MAX_SKIPPED);
    }
    // Honest traffic: the next message in order decrypts.
    let k = (rounds * (jump + 1)) as usize;
    let (i, seq, ct) = &msgs[k];
    assert_eq!(&rx.decrypt(Epoch(1), *i, *seq, ct).unwrap()[..], &(k as u64).to_be_bytes());
    assert!(rx.skipped_keys() <= MAX_SKIPPED);
}
