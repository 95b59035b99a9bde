//! DCGKA: the decentralized continuous group key agreement of §5 (ePrint Fig. 4).
//!
//! `Dcgka` is the state γ of one member in one group. Local operations (`create`,
//! `update`, `remove`, `add`) and the `process-*` functions follow the spec's pseudo-code
//! line by line, with the paper's names. Each returns the update secrets it produces: `Is`
//! for the sender of the processed message and `Ir` for the local member.
//!
//! Processing happens in two phases so that nothing is half-applied:
//! 1. **validate and plan** (V1–V6 of §5.6, views on a scratch copy of `H` where the
//!    operation changes it, and prefetching of every prekey bundle a first contact needs);
//!    failures here change nothing;
//! 2. **execute**; the only failure left is a 2SM decryption failure on an authenticated
//!    envelope, which is FATAL by definition (the group becomes unusable).

use std::collections::{BTreeMap, BTreeSet};

use rand_core::CryptoRng;

use crate::consts::MAX_GROUP;
use crate::crypto::{self, IdentityKey, KEY_LEN, Secret32, VerifyingKey, labels};
use crate::dgm::{DgmError, History, Op, OpId};
use crate::events::{Event, MalformedBody, Misbehaviour, RejectReason};
use crate::ids::{Epoch, GroupId, MemberId, MemberTag, Origin, SeqNo};
use crate::prekeys::{CarriedPrekey, KeyStore, PrekeyProvider, VerifiedBundle};
use crate::snapshot::{SnapshotError, StateReader, StateWriter};
use crate::two_party::{SessionContext, SessionState, TwoSmCiphertext};
use crate::wire::{AckRef, ControlBody, EnvelopeKind, Forward, SeedBlock, recipients_digest};

mod acks;
mod process;

pub(crate) use acks::{AckTracker, OpKey};

/// An update secret `(X, e, I)`: the secret that re-keys X's sender ratchet at epoch e.
#[derive(Debug)]
pub(crate) struct UpdateSecret {
    pub(crate) member: MemberId,
    pub(crate) epoch: Epoch,
    pub(crate) secret: Secret32,
}

/// Input to the outer ratchet (`encode-input`, §2.3).
enum RatchetInput<'a> {
    Member(&'a Secret32),
    Welcome,
    Add,
}

/// Why processing stopped without changing anything, or why it broke the group.
#[derive(Debug)]
pub(crate) enum ProcessError {
    /// A deterministic validity failure (§5.6 REJECT).
    Reject(RejectReason),
    /// A first contact needs this identity's bundle; retry once the provider has one.
    NeedBundle(IdentityKey),
    /// Local state can no longer stay consistent (§5.6 FATAL).
    Fatal(&'static str),
    /// A 2SM ciphertext of the authenticated sender does not decrypt for me (§5.6 FATAL,
    /// blamed on the sender).
    BadCiphertext(Misbehaviour),
}

impl From<RejectReason> for ProcessError {
    fn from(r: RejectReason) -> Self {
        ProcessError::Reject(r)
    }
}

fn fatal(what: &'static str) -> ProcessError {
    ProcessError::Fatal(what)
}

fn malformed(what: &'static str) -> ProcessError {
    ProcessError::Reject(RejectReason::Malformed(MalformedBody::Invalid(what)))
}

fn refused<M>(e: DgmError<M>) -> ProcessError {
    ProcessError::Reject(RejectReason::Malformed(MalformedBody::History(e.reason())))
}

impl crate::ordering::Roster for Dcgka {
    fn gid(&self) -> GroupId {
        self.gid
    }

    fn me(&self) -> MemberId {
        self.me
    }

    fn resolve(&self, tag: &MemberTag) -> Option<MemberId> {
        Dcgka::resolve(self, tag)
    }

    fn identity(&self, id: &MemberId) -> Option<IdentityKey> {
        self.ik.get(id).copied()
    }

    fn introduced_by(&self, id: &MemberId) -> Option<OpId<MemberId>> {
        self.h.addop(id).cloned()
    }

    fn removal_settled(&self, id: &MemberId) -> bool {
        Dcgka::removal_settled(self, id)
    }
}

/// A validated create with the prekey bundles it needs ([`Dcgka::stage_create`]).
pub(crate) struct StagedCreate {
    iks: Vec<IdentityKey>,
    members: Vec<(MemberId, IdentityKey)>,
    bundles: Bundles,
}

/// A validated add with the newcomer's prekey bundle ([`Dcgka::stage_add`]) and the signed
/// prekey the add will carry.
pub(crate) struct StagedAdd {
    ik: IdentityKey,
    bundle: VerifiedBundle,
    prekey: CarriedPrekey,
}

impl StagedAdd {
    /// The newcomer's identity key.
    pub(crate) fn identity(&self) -> IdentityKey {
        self.ik
    }
}

/// What the ordering layer knows about an acknowledged envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AckTarget {
    /// Processed here: its kind and the first 16 bytes of its hash.
    Known { kind: EnvelopeKind, hash: [u8; 16] },
    /// Processed here and not retained: an ack or application message, or a create,
    /// update, remove or add that every member has acknowledged (its entry in the
    /// [`AckTracker`] completed, and the ordering layer forgot its kind and hash).
    Unretained,
    /// Below this newcomer's horizon: processed by the adder before the add.
    BelowHorizon,
}

/// The caller-side inputs of one processing step.
pub(crate) struct Env<'a, R: CryptoRng> {
    pub(crate) rng: &'a mut R,
    pub(crate) keys: &'a mut KeyStore,
    pub(crate) provider: &'a mut dyn PrekeyProvider,
    pub(crate) now: u64,
}

/// The result of processing one control message, or of a local operation.
#[derive(Debug, Default)]
pub(crate) struct Processed {
    /// The ack or add-ack I must broadcast, with its sequence number.
    pub(crate) reply: Option<(ControlBody, SeqNo)>,
    /// `Is` and `Ir`, in that order.
    pub(crate) secrets: Vec<UpdateSecret>,
    /// Set when this message removed me (TERMINATE).
    pub(crate) terminated_by: Option<MemberId>,
    /// An instance of my own identity that I must now remove (§6.6).
    pub(crate) duplicate_instance: Option<MemberId>,
    /// Events for the application.
    pub(crate) events: Vec<Event>,
    /// Operations every member has now acknowledged (their [`AckTracker`] entries
    /// completed): the ordering layer forgets what it retained of them.
    pub(crate) completed: Vec<OpKey>,
}

/// The retention start of member secrets restored from a snapshot older than version 5,
/// which did not record it: the first expiry check sets it to its own time.
const UNSET_SINCE: u64 = u64::MAX;

/// Prefetched, verified prekey bundles for the first contacts of one step.
type Bundles = BTreeMap<IdentityKey, VerifiedBundle>;

/// The DCGKA state γ of one member in one group (§5.1).
#[derive(Clone, Debug)]
pub(crate) struct Dcgka {
    pub(crate) me: MemberId,
    pub(crate) gid: GroupId,
    /// The last sequence number I used (control and application envelopes alike).
    pub(crate) seq: u64,
    /// Membership history and SR-DGM state.
    pub(crate) h: History<MemberId>,
    next_seed: Option<Secret32>,
    /// The 2SM session with each peer (its context is this state's: gid, me, the peer and
    /// its identity key).
    sm: BTreeMap<MemberId, SessionState>,
    ms: BTreeMap<(MemberId, u64, MemberId), Secret32>,
    rt: BTreeMap<MemberId, Secret32>,
    pub(crate) heal_pending: bool,
    /// Another member acknowledged another version of an update or remove than the one I
    /// processed (§7.6): its view of my ratchet differs from mine until my own next update
    /// or remove re-initialises it. Auto-heal performs that update.
    pub(crate) resync_pending: bool,
    /// `IK(m)` for every ever-added member. Sorted by MID, and so by member tag (a MID's
    /// first bytes): it resolves tags too ([`Dcgka::resolve`]).
    pub(crate) ik: BTreeMap<MemberId, IdentityKey>,
    /// The operations processed here that not every current member has acknowledged yet
    /// (V4 (d) for updates, which are not in `H`; completion for all four kinds).
    acks: AckTracker,
    /// When (the callers' clock) each operation whose member secrets `ms` still holds was
    /// processed here: the start of their retention period (§5.7).
    ms_since: BTreeMap<(MemberId, u64), u64>,
    /// Members whose outer ratchet is lost here because member secrets held for them
    /// expired (§5.7): no update secret is derived for them until their own next update
    /// or remove resets their ratchet from a fresh seed.
    stale: BTreeSet<MemberId>,
    /// Members retired here (§5.7), each with the last sequence number of it processed
    /// here: what it sent after that was refused. They stay known, so that an ack of one of
    /// their refused operations is recognised as such.
    retired: BTreeMap<MemberId, u64>,
}

/// The processed acks of updates that snapshots before version 4 kept for good, as
/// `(acker, S, q)`: read only to build the [`AckTracker`] of an old snapshot.
pub(crate) type LegacyUpdateAcks = BTreeSet<(MemberId, MemberId, u64)>;

impl Dcgka {
    /// `init(me, gid)`.
    pub(crate) fn new(me: MemberId, gid: GroupId, my_ik: IdentityKey) -> Self {
        let mut d = Dcgka {
            me,
            gid,
            seq: 0,
            h: History::new(),
            next_seed: None,
            sm: BTreeMap::new(),
            ms: BTreeMap::new(),
            rt: BTreeMap::new(),
            heal_pending: false,
            resync_pending: false,
            ik: BTreeMap::new(),
            acks: AckTracker::default(),
            ms_since: BTreeMap::new(),
            stale: BTreeSet::new(),
            retired: BTreeMap::new(),
        };
        d.learn(me, my_ik);
        d
    }

    fn learn(&mut self, id: MemberId, ik: IdentityKey) {
        self.ik.insert(id, ik);
    }

    /// Resolves a member tag to an ever-added MID.
    pub(crate) fn resolve(&self, tag: &MemberTag) -> Option<MemberId> {
        let mut first = [0; 32];
        first[..tag.0.len()].copy_from_slice(&tag.0);
        self.ik.range(MemberId(first)..).next().map(|(id, _)| *id).filter(|id| id.tag() == *tag)
    }

    /// `member-view(me)`.
    pub(crate) fn view_me(&self) -> BTreeSet<MemberId> {
        self.h.view_me()
    }

    /// `member-view(id)`.
    pub(crate) fn member_view(&self, id: &MemberId) -> BTreeSet<MemberId> {
        if *id == self.me { self.h.view_me() } else { self.h.view_of(id) }
    }

    /// Whether `u ∈ member-view(x)`, without building the view (O(log n) instead of O(n)).
    pub(crate) fn in_view(&self, u: &MemberId, x: &MemberId) -> bool {
        let fast = if *x == self.me { self.is_member(u) } else { self.h.in_view_of(u, x) };
        #[cfg(any(test, feature = "cross-checks"))]
        assert_eq!(fast, self.member_view(x).contains(u), "in_view disagrees with member_view");
        fast
    }

    /// Whether `id` is a current member here.
    pub(crate) fn is_member(&self, id: &MemberId) -> bool {
        self.h.addop(id).is_some() && self.h.removed_by(id).is_empty()
    }

    /// The outer ratchet state of `id`, for tests and oracles.
    #[cfg(any(test, feature = "test-hooks"))]
    pub(crate) fn ratchet_state(&self, id: &MemberId) -> Option<&Secret32> {
        self.rt.get(id)
    }

    /// Number of member secrets held (§5.7 deletion oracle).
    #[cfg(any(test, feature = "test-hooks"))]
    pub(crate) fn member_secret_count(&self) -> usize {
        self.ms.len()
    }

    /// Every member secret held, as `(S, q, ID)`.
    #[cfg(any(test, feature = "test-hooks"))]
    pub(crate) fn member_secret_keys(&self) -> Vec<(MemberId, SeqNo, MemberId)> {
        self.ms.keys().map(|(s, q, id)| (*s, SeqNo(*q), *id)).collect()
    }

    /// Member secrets held for the operation `(s, q)`.
    #[cfg(any(test, feature = "test-hooks"))]
    pub(crate) fn member_secrets_of(&self, s: &MemberId, q: u64) -> Vec<MemberId> {
        self.ms.range((*s, q, MemberId([0; 32]))..=(*s, q, MemberId([0xff; 32]))).map(|(k, _)| k.2).collect()
    }

    /// Folds what the membership history allows (§6.7) and forgets, everywhere in γ, the
    /// members it forgot (never one for which `keep` holds): their identity keys, tags, 2SM sessions, outer ratchets and the
    /// member secrets held for them or from their operations. Returns the forgotten members
    /// (the caller forgets them in the outer layers).
    pub(crate) fn compact(&mut self, keep: &dyn Fn(&MemberId) -> bool) -> Vec<MemberId> {
        let holding = self.holding_secrets_of();
        let c = self.h.compact_keeping(&|m| keep(m) || holding.contains(m));
        for id in &c.forgotten {
            self.ik.remove(id);
            self.sm.remove(id);
            self.rt.remove(id);
        }
        if !c.forgotten.is_empty() {
            self.ms.retain(|(s, _, id), _| !c.forgotten.contains(s) && !c.forgotten.contains(id));
            self.stale.retain(|m| !c.forgotten.contains(m));
            self.prune_ms_since();
        }
        c.forgotten
    }

    /// The members that stay known whatever compaction allows (§6.7): those whose
    /// operations I still hold member secrets of, since the acks that take those secrets
    /// name them, and those retired here (§5.7), since acks of their refused operations
    /// name them.
    pub(crate) fn holding_secrets_of(&self) -> BTreeSet<MemberId> {
        self.ms.keys().map(|(s, _, _)| *s).chain(self.retired.keys().copied()).collect()
    }

    /// Erases every secret (TERMINATE).
    pub(crate) fn erase_secrets(&mut self) {
        self.next_seed = None;
        self.sm.clear();
        self.ms.clear();
        self.rt.clear();
        self.ms_since.clear();
    }

    // ------------------------------------------------------------------------------------
    // Retention (§5.7)
    // ------------------------------------------------------------------------------------

    /// Starts the retention period of the member secrets of `(s, q)`, just derived.
    fn hold_since(&mut self, s: MemberId, q: u64, now: u64) {
        self.ms_since.entry((s, q)).or_insert(now);
    }

    /// How many member secrets of `(s, q)` are held.
    fn member_secrets_held(&self, s: &MemberId, q: u64) -> usize {
        self.ms.range((*s, q, MemberId([0; 32]))..=(*s, q, MemberId([0xff; 32]))).count()
    }

    /// Drops the retention start of operations whose member secrets are all consumed.
    fn prune_ms_since(&mut self) {
        let ms = &self.ms;
        self.ms_since.retain(|(s, q), _| ms.range((*s, *q, MemberId([0; 32]))..=(*s, *q, MemberId([0xff; 32]))).next().is_some());
    }

    /// The earliest time at which [`Dcgka::expire`] would erase something, if any.
    pub(crate) fn next_expiry(&self, retention: u64) -> Option<u64> {
        self.ms_since.values().min().map(|t| t.saturating_add(retention))
    }

    /// Erases the member secrets held, longer than `retention` before `now`, for the
    /// acknowledgment of another member (§5.7), and with them every member secret held for
    /// that member: its outer ratchet here is lost, so it becomes stale until its own next
    /// update or remove. Returns each stale member with the number of secrets erased.
    pub(crate) fn expire(&mut self, now: u64, retention: u64) -> Vec<(MemberId, usize)> {
        for t in self.ms_since.values_mut().filter(|t| **t == UNSET_SINCE) {
            *t = now;
        }
        let due: BTreeSet<(MemberId, u64)> = self
            .ms_since
            .iter()
            .filter(|(_, t)| t.saturating_add(retention) <= now)
            .map(|(k, _)| *k)
            .collect();
        if due.is_empty() {
            return Vec::new();
        }
        let slow: BTreeSet<MemberId> = self
            .ms
            .keys()
            .filter(|(s, q, id)| *id != self.me && due.contains(&(*s, *q)))
            .map(|(_, _, id)| *id)
            .collect();
        let mut out = Vec::new();
        for m in slow {
            let before = self.ms.len();
            self.ms.retain(|(_, _, id), _| *id != m);
            drop(self.rt.remove(&m));
            self.stale.insert(m);
            out.push((m, before - self.ms.len()));
        }
        self.prune_ms_since();
        out
    }

    /// Retires `m`, a member that left here and never acknowledged its removal (§5.7): it
    /// departs from the history (§6.7), and its 2SM session, outer ratchet and the member
    /// secrets held for it are erased. `last_processed` is its last sequence number
    /// processed here; the caller refuses the rest.
    pub(crate) fn retire(&mut self, m: &MemberId, last_processed: u64) {
        self.retired.insert(*m, last_processed);
        self.h.depart(m);
        self.sm.remove(m);
        drop(self.rt.remove(m));
        self.ms.retain(|(_, _, id), _| id != m);
        self.stale.remove(m);
        self.prune_ms_since();
    }

    /// The members that left `member-view(me)` here (removed, or added and cancelled) and
    /// have not departed: what [`Dcgka::retire`] may retire.
    pub(crate) fn absent(&self) -> BTreeSet<MemberId> {
        let view = self.view_me();
        self.h.live_members().filter(|m| **m != self.me && !view.contains(*m)).copied().collect()
    }

    /// Marks `m`'s outer ratchet as lost here: it moved on from something this member
    /// could not follow. `m` is stale until its own next update or remove.
    pub(crate) fn lose_ratchet(&mut self, m: MemberId) {
        if m != self.me {
            drop(self.rt.remove(&m));
            self.stale.insert(m);
        }
    }

    /// Records that `m`'s operations after `last` are refused here, as its adder refused
    /// them: a retired member inherited from a Welcome (§5.7).
    pub(crate) fn refuse_after(&mut self, m: MemberId, last: u64) {
        self.retired.insert(m, last);
    }

    /// Whether `(s, q)` is an operation of a member retired here that arrived after its
    /// retirement and was refused (§5.7).
    pub(crate) fn refused_as_retired(&self, s: &MemberId, q: u64) -> bool {
        self.retired.get(s).is_some_and(|last| q > *last)
    }

    /// Whether `m`'s outer ratchet is lost here ([`Dcgka::expire`]).
    pub(crate) fn is_stale(&self, m: &MemberId) -> bool {
        self.stale.contains(m)
    }

    // ------------------------------------------------------------------------------------
    // State snapshots
    // ------------------------------------------------------------------------------------

    /// Snapshot encoding of γ: `me ‖ gid:[32] ‖ seq:var ‖ ik:map<member, [32]> ‖ H ‖
    /// next_seed:opt<[32]> ‖ sm:map<member, 2SM session> ‖ ms:map<(member, q:var, member),
    /// [32]> ‖ rt:map<member, [32]> ‖ heal_pending:u8 ‖ resync_pending:u8 ‖ in_flight`, with
    /// `in_flight` the [`AckTracker`] (`map<(member, q:var), (pending:list<member>,
    /// acked:list<member>)>`, since version 4; before it, `update_acks:list<(member,
    /// member, q:var)>`, every processed ack of an update, which
    /// [`Dcgka::decode_state`] hands back for [`Dcgka::migrate_acks`]). `H` is its
    /// operation log ([`History::encode_state`]); the tag table is not stored (it is
    /// `ik`'s keys by tag).
    pub(crate) fn encode_state(&self, w: &mut StateWriter) {
        w.member(&self.me);
        w.raw(&self.gid.0);
        w.var(self.seq);
        w.map(&self.ik, |w, id, ik| {
            w.member(id);
            w.raw(&ik.0);
        });
        self.h.encode_state(w);
        w.opt(self.next_seed.as_ref(), |w, s| w.raw(s.expose()));
        w.map(&self.sm, |w, id, session| {
            w.member(id);
            session.encode_state(w);
        });
        w.map(&self.ms, |w, (s, q, id), m| {
            w.member(s);
            w.var(*q);
            w.member(id);
            w.secret(m);
        });
        w.map(&self.rt, |w, id, state| {
            w.member(id);
            w.secret(state);
        });
        w.flag(self.heal_pending);
        w.flag(self.resync_pending);
        self.acks.encode_state(w);
        w.map(&self.ms_since, |w, (s, q), t| {
            w.member(s);
            w.var(*q);
            w.var(*t);
        });
        w.items(self.stale.iter(), |w, m| w.member(m));
        w.map(&self.retired, |w, m, q| {
            w.member(m);
            w.var(*q);
        });
    }

    /// Reverses [`encode_state`](Self::encode_state). For a snapshot before version 4 the
    /// tracker is empty and the old `update_acks` are returned, to be turned into entries
    /// once the ordering layer's retained operations are known ([`Dcgka::migrate_acks`]).
    pub(crate) fn decode_state(r: &mut StateReader<'_>) -> Result<(Self, Option<LegacyUpdateAcks>), SnapshotError> {
        let me = r.member()?;
        let gid = GroupId(r.array()?);
        let seq = r.var()?;
        let ik: BTreeMap<MemberId, IdentityKey> =
            r.map(1 + KEY_LEN, |r| Ok((r.member()?, VerifyingKey(r.array()?))))?;
        if !ik.contains_key(&me) {
            return Err(SnapshotError::Inconsistent("own identity key missing"));
        }
        if ik.keys().zip(ik.keys().skip(1)).any(|(a, b)| a.tag() == b.tag()) {
            return Err(SnapshotError::Inconsistent("two members share a member tag"));
        }
        let h = History::decode_state(r)?;
        let next_seed = if r.flag()? { Some(r.secret()?) } else { None };
        let sm = r.map(2, |r| {
            let peer = r.member()?;
            if !ik.contains_key(&peer) {
                return Err(SnapshotError::Inconsistent("2SM session with an unknown identity"));
            }
            Ok((peer, SessionState::decode_state(r)?))
        })?;
        let ms = r.map(3 + KEY_LEN, |r| Ok(((r.member()?, r.var()?, r.member()?), r.secret()?)))?;
        let rt = r.map(1 + KEY_LEN, |r| Ok((r.member()?, r.secret()?)))?;
        let heal_pending = r.flag()?;
        let resync_pending = r.flag()?;
        let (acks, legacy) = if r.version() >= 4 {
            (AckTracker::decode_state(r)?, None)
        } else {
            let update_acks = r.map(3, |r| Ok(((r.member()?, r.member()?, r.var()?), ())))?.into_keys().collect();
            (AckTracker::default(), Some(update_acks))
        };
        // Version 5 added the retention of member secrets (§5.7).
        let (ms_since, stale, retired) = if r.version() >= 5 {
            let ms_since: BTreeMap<(MemberId, u64), u64> = r.map(3, |r| Ok(((r.member()?, r.var()?), r.var()?)))?;
            let stale: BTreeSet<MemberId> = r.map(1, |r| Ok((r.member()?, ())))?.into_keys().collect();
            let retired: BTreeMap<MemberId, u64> = r.map(2, |r| Ok((r.member()?, r.var()?)))?;
            (ms_since, stale, retired)
        } else {
            (BTreeMap::new(), BTreeSet::new(), BTreeMap::new())
        };
        let mut d = Dcgka {
            me,
            gid,
            seq,
            h,
            next_seed,
            sm,
            ms,
            rt,
            heal_pending,
            resync_pending,
            ik,
            acks,
            ms_since,
            stale,
            retired,
        };
        if r.version() < 5 {
            // An older snapshot's held secrets start their retention period now (at the
            // first expiry check, which reads the time).
            d.ms_since = d.ms.keys().map(|(s, q, _)| ((*s, *q), UNSET_SINCE)).collect();
        }
        Ok((d, legacy))
    }

    /// Builds the [`AckTracker`] of a snapshot before version 4, which kept the kind and
    /// hash of every processed create, update, remove and add for good (the ordering
    /// layer's `retained`, given here) and every processed ack of an update
    /// (`update_acks`). Each retained operation gets an entry; returns those for which no
    /// member is awaited, which the ordering layer then forgets.
    ///
    /// For a create, add or remove, `H` tells exactly who has seen it (acknowledged it, sent
    /// it, or inherited it from its adder); the other current members are pending. For an
    /// update, the ackers in `update_acks` have acknowledged it, and so have the members S
    /// itself added after it (and the members those added, down the line): their Welcomes
    /// cover it. Every other current member is pending, also a newcomer whose adder had
    /// processed the update before adding it, so that its Welcome covers it and it never
    /// acknowledges it: the old state does not say when the adder acknowledged, and
    /// counting the newcomer as having acknowledged could refuse an ack that is its first.
    /// Such an entry completes only when that newcomer leaves the group.
    pub(crate) fn migrate_acks(
        &mut self,
        update_acks: &LegacyUpdateAcks,
        retained: impl IntoIterator<Item = (OpKey, EnvelopeKind)>,
    ) -> Vec<OpKey> {
        let mut ackers: BTreeMap<OpKey, BTreeSet<MemberId>> = BTreeMap::new();
        for (a, s, q) in update_acks {
            ackers.entry((*s, *q)).or_default().insert(*a);
        }
        let view = self.view_me();
        let mut completed = Vec::new();
        for ((s, q), kind) in retained {
            let op = OpId::new(s, q);
            let others = view.iter().copied().filter(|m| *m != s && *m != self.me);
            let (acked, pending): (BTreeSet<MemberId>, BTreeSet<MemberId>) =
                if kind != EnvelopeKind::Update && self.h.contains(&op) {
                    others.partition(|m| self.h.seen_by(m, &op))
                } else {
                    let mut acked = ackers.remove(&(s, q)).unwrap_or_default();
                    let pending =
                        others.filter(|m| !acked.contains(m) && !self.welcome_covers(m, s, q)).collect::<BTreeSet<_>>();
                    acked.extend(view.iter().copied().filter(|m| *m != s && *m != self.me && !pending.contains(m)));
                    (acked, pending)
                };
            completed.extend(self.acks.open((s, q), pending, acked));
        }
        completed
    }

    /// Whether `m` joined through a chain of adds that starts with an add by `s` after
    /// `s`'s own operation `q`: every Welcome on the way covers `(s, q)`.
    fn welcome_covers(&self, m: &MemberId, s: MemberId, q: u64) -> bool {
        let mut x = *m;
        for _ in 0..self.ik.len() {
            match self.h.adder_of(&x) {
                Some(y) if y == s => return self.h.addop(&x).is_some_and(|o| o.seq > q),
                Some(y) => x = y,
                None => return false,
            }
        }
        false
    }

    /// Number of operations in flight ([`AckTracker`]).
    #[cfg(any(test, feature = "test-hooks"))]
    pub(crate) fn in_flight(&self) -> usize {
        self.acks.len()
    }

    /// The members whose ack of `(s, q)` is awaited, if it is in flight.
    #[cfg(any(test, feature = "test-hooks"))]
    pub(crate) fn awaited(&self, s: &MemberId, q: u64) -> Option<BTreeSet<MemberId>> {
        self.acks.pending_of(&(*s, q)).cloned()
    }

    // ------------------------------------------------------------------------------------
    // Primitives of §5.3
    // ------------------------------------------------------------------------------------

    /// `update-ratchet(γ, ID, input)`.
    fn update_ratchet(&mut self, id: &MemberId, input: RatchetInput<'_>) -> Result<Secret32, ProcessError> {
        let encoded = match input {
            RatchetInput::Member(ms) => crypto::info(labels::INPUT_MEMBER, &[ms.expose()]),
            RatchetInput::Welcome => crypto::info(labels::INPUT_WELCOME, &[]),
            RatchetInput::Add => crypto::info(labels::INPUT_ADD, &[]),
        };
        let p = crypto::extract(self.rt.get(id), &encoded);
        let i = p.expand(labels::RATCHET_UPDATE, &[&self.gid.0, &id.0]).map_err(|_| fatal("ratchet key derivation"))?;
        let next =
            p.expand(labels::RATCHET_NEXT, &[&self.gid.0, &id.0]).map_err(|_| fatal("ratchet key derivation"))?;
        self.rt.insert(*id, next);
        Ok(i)
    }

    /// Erases ID's outer ratchet state, so that the next `update-ratchet` of ID starts from
    /// its input alone. Done for the sender of an update or remove, just before its own
    /// member secret of that operation is applied (§5.5, process-seed step 5): every member
    /// then holds the same state for the sender, whatever it held before (§7.6,
    /// equivocation). The sender's fresh seed is as secret as the chained state was
    /// (§11.5).
    fn reset_ratchet(&mut self, id: &MemberId) {
        drop(self.rt.remove(id));
        self.stale.remove(id);
    }

    /// `MS(seed, S, q, ID)` for every ID in `ids`.
    fn member_secrets(
        &self,
        seed: &Secret32,
        s: &MemberId,
        q: u64,
        ids: impl Iterator<Item = MemberId>,
    ) -> Result<Vec<(MemberId, Secret32)>, ProcessError> {
        let prk = crypto::extract(None, seed.expose());
        ids.map(|id| {
            prk.expand(labels::MEMBER_SECRET, &[&self.gid.0, &s.0, &q.to_be_bytes(), &id.0])
                .map(|m| (id, m))
                .map_err(|_| fatal("member secret derivation"))
        })
        .collect()
    }

    /// The identity keys of the members of my view (me excluded) with no two-party session
    /// that can send without a bundle, each once.
    pub(crate) fn first_contacts(&self) -> Vec<IdentityKey> {
        let mut out: Vec<IdentityKey> = self
            .view_me()
            .into_iter()
            .filter(|p| *p != self.me && self.sm.get(p).is_none_or(|s| s.needs_bundle()))
            .filter_map(|p| self.ik.get(&p).copied())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Fetches and verifies the bundle of every listed peer that needs a first contact.
    /// Nothing changes on failure.
    fn prefetch<R: CryptoRng>(
        &self,
        env: &mut Env<'_, R>,
        peers: impl IntoIterator<Item = MemberId>,
    ) -> Result<Bundles, ProcessError> {
        let mut known = Vec::new();
        for p in peers {
            let ik = *self.ik.get(&p).ok_or_else(|| fatal("first contact with a member of unknown identity"))?;
            known.push((p, ik));
        }
        self.prefetch_identities(env, known)
    }

    /// [`Self::prefetch`] for members whose identity keys are given (not learnt yet).
    fn prefetch_identities<R: CryptoRng>(
        &self,
        env: &mut Env<'_, R>,
        peers: impl IntoIterator<Item = (MemberId, IdentityKey)>,
    ) -> Result<Bundles, ProcessError> {
        let mut out = Bundles::new();
        for (p, ik) in peers {
            if self.sm.get(&p).is_some_and(|s| !s.needs_bundle()) {
                continue;
            }
            if out.contains_key(&ik) {
                continue;
            }
            let b = env.provider.bundle(&ik).ok_or(ProcessError::NeedBundle(ik))?;
            let v = b.verify(&ik, env.now).map_err(|_| ProcessError::NeedBundle(ik))?;
            out.insert(ik, v);
        }
        Ok(out)
    }

    /// `encrypt-to(γ, ID, m)`.
    fn encrypt_to<R: CryptoRng>(
        &mut self,
        env: &mut Env<'_, R>,
        bundles: &Bundles,
        id: &MemberId,
        m: &[u8],
    ) -> Result<TwoSmCiphertext, ProcessError> {
        let ik = *self.ik.get(id).ok_or_else(|| fatal("encrypt-to a member of unknown identity"))?;
        let ctx = SessionContext { gid: self.gid, me: self.me, peer: *id, peer_ik: ik };
        let session = self.sm.entry(*id).or_insert_with(SessionState::new);
        session.send_prepared(&ctx, env.rng, bundles.get(&ik), m).map_err(|_| fatal("a 2SM message cannot be sealed"))
    }

    /// `decrypt-from(γ, ID, c)`; a failure is FATAL (§5.6), and names `what` `ID` sent.
    fn decrypt_from<R: CryptoRng>(
        &mut self,
        env: &mut Env<'_, R>,
        id: &MemberId,
        c: &TwoSmCiphertext,
        what: Misbehaviour,
    ) -> Result<Secret32, ProcessError> {
        let ik = *self.ik.get(id).ok_or_else(|| fatal("decrypt-from a member of unknown identity"))?;
        let ctx = SessionContext { gid: self.gid, me: self.me, peer: *id, peer_ik: ik };
        let session = self.sm.entry(*id).or_insert_with(SessionState::new);
        let pt = session.receive(&ctx, env.keys, c).map_err(|_| ProcessError::BadCiphertext(what))?;
        let bytes: [u8; KEY_LEN] = pt[..].try_into().map_err(|_| ProcessError::BadCiphertext(what))?;
        Ok(Secret32::from_bytes(bytes))
    }

    /// `generate-seed(γ, R)`, with `R` sorted and first contacts prefetched.
    fn generate_seed<R: CryptoRng>(
        &mut self,
        env: &mut Env<'_, R>,
        bundles: &Bundles,
        recipients: &BTreeSet<MemberId>,
    ) -> Result<SeedBlock, ProcessError> {
        let seed = Secret32::random(env.rng);
        let sorted: Vec<MemberId> = recipients.iter().copied().collect();
        let mut cts = Vec::with_capacity(sorted.len());
        for id in &sorted {
            cts.push(self.encrypt_to(env, bundles, id, seed.expose())?);
        }
        self.next_seed = Some(seed);
        Ok(SeedBlock { recipients_digest: recipients_digest(&sorted), cts })
    }

    fn secret(&self, member: MemberId, epoch: u64, secret: Secret32) -> UpdateSecret {
        UpdateSecret { member, epoch: Epoch(epoch), secret }
    }

    // ------------------------------------------------------------------------------------
    // Local operations (§5.4)
    // ------------------------------------------------------------------------------------

    /// `create(γ, IDs)`, staged: validates `others` (the other initial members' identity
    /// keys) and fetches every prekey bundle the create needs. Changes nothing; commit the
    /// result with [`Self::commit_create`].
    pub(crate) fn stage_create<R: CryptoRng>(
        &self,
        env: &mut Env<'_, R>,
        others: &[IdentityKey],
    ) -> Result<StagedCreate, ProcessError> {
        let my_ik = self.ik.get(&self.me).copied().ok_or_else(|| fatal("own identity unknown"))?;
        let mut iks: Vec<IdentityKey> = others.to_vec();
        iks.sort();
        iks.dedup();
        if others.len() + 1 > MAX_GROUP {
            return Err(RejectReason::TooManyMembers { count: others.len() + 1, max: MAX_GROUP }.into());
        }
        if self.seq != 0 || iks.len() != others.len() || iks.contains(&my_ik) {
            return Err(RejectReason::InvalidCreate("duplicates, self, or not the first message").into());
        }
        let members: Vec<(MemberId, IdentityKey)> = iks
            .iter()
            .map(|ik| (MemberId::derive(&self.gid, ik, Origin::Operation(self.me, SeqNo(1))), *ik))
            .collect();
        let bundles = self.prefetch_identities(env, members.iter().copied())?;
        Ok(StagedCreate { iks, members, bundles })
    }

    /// `create(γ, IDs)`, committed: learns the initial members, numbers the create and
    /// processes it locally. Only a FATAL failure is left.
    pub(crate) fn commit_create<R: CryptoRng>(
        &mut self,
        env: &mut Env<'_, R>,
        staged: StagedCreate,
    ) -> Result<(ControlBody, SeqNo, Processed), ProcessError> {
        let StagedCreate { iks, members, bundles } = staged;
        for (id, ik) in &members {
            self.learn(*id, *ik);
        }
        let ids: BTreeSet<MemberId> = members.iter().map(|(id, _)| *id).collect();
        let q = 1;
        self.seq = q;
        let blk = self.generate_seed(env, &bundles, &ids)?;
        let mut out = self.process_create(env, self.me, q, &ids, None, &bundles)?;
        out.events.push(Event::Joined { gid: self.gid, by: self.me });
        Ok((ControlBody::Create { members: iks, seeds: blk }, SeqNo(q), out))
    }

    /// `update(γ)`.
    pub(crate) fn update<R: CryptoRng>(
        &mut self,
        env: &mut Env<'_, R>,
    ) -> Result<(ControlBody, SeqNo, Processed), ProcessError> {
        let mut recipients = self.view_me();
        recipients.remove(&self.me);
        let bundles = self.prefetch(env, recipients.iter().copied())?;
        self.seq += 1;
        let q = self.seq;
        let blk = self.generate_seed(env, &bundles, &recipients)?;
        let out = self.process_seed(env, EnvelopeKind::Update, self.me, q, None, &bundles)?;
        self.heal_pending = false;
        self.resync_pending = false;
        Ok((ControlBody::Update { seeds: blk }, SeqNo(q), out))
    }

    /// `remove(γ, t)`.
    pub(crate) fn remove<R: CryptoRng>(
        &mut self,
        env: &mut Env<'_, R>,
        t: MemberId,
    ) -> Result<(ControlBody, SeqNo, Processed), ProcessError> {
        let mut recipients = self.view_me();
        if t == self.me || !recipients.contains(&t) {
            return Err(RejectReason::InvalidRemove("target is me or not a member").into());
        }
        recipients.remove(&self.me);
        recipients.remove(&t);
        let bundles = self.prefetch(env, recipients.iter().copied())?;
        self.seq += 1;
        let q = self.seq;
        let blk = self.generate_seed(env, &bundles, &recipients)?;
        let out = self.process_remove(env, self.me, q, t, None, &bundles)?;
        self.heal_pending = false;
        self.resync_pending = false;
        Ok((ControlBody::Remove { target: t.tag(), seeds: blk }, SeqNo(q), out))
    }

    /// The MID an add by me of `ik` would create.
    pub(crate) fn next_add_target(&self, ik: &IdentityKey) -> MemberId {
        MemberId::derive(&self.gid, ik, Origin::Operation(self.me, SeqNo(self.seq + 1)))
    }

    /// `add(γ, ID)`, staged: checks that the holder of `ik` is not a member (nor myself)
    /// and fetches its prekey bundle. Changes nothing; a heal update may run between this
    /// and [`Self::commit_add`].
    pub(crate) fn stage_add<R: CryptoRng>(&self, env: &mut Env<'_, R>, ik: IdentityKey) -> Result<StagedAdd, ProcessError> {
        let my_ik = self.ik.get(&self.me).copied().ok_or_else(|| fatal("own identity unknown"))?;
        if ik == my_ik || self.view_me().iter().any(|m| self.ik.get(m) == Some(&ik)) {
            return Err(RejectReason::InvalidAdd("already a member, or myself").into());
        }
        let b = env.provider.bundle(&ik).ok_or(ProcessError::NeedBundle(ik))?;
        let bundle = b.verify(&ik, env.now).map_err(|_| ProcessError::NeedBundle(ik))?;
        let prekey = CarriedPrekey::of(&b.signed_prekey).ok_or(ProcessError::NeedBundle(ik))?;
        Ok(StagedAdd { ik, bundle, prekey })
    }

    /// The member instance the staged add introduces now (it depends on my next sequence
    /// number). Changes nothing.
    pub(crate) fn add_target(&self, staged: &StagedAdd) -> Result<MemberId, ProcessError> {
        let t = self.next_add_target(&staged.ik);
        if self.resolve(&t.tag()).is_some() {
            return Err(RejectReason::InvalidAdd("member tag collision").into());
        }
        Ok(t)
    }

    /// `add(γ, ID)`, committed: learns the target `t` (from [`Self::add_target`]), seals my
    /// ratchet state to it for the Welcome, numbers the add and processes it locally.
    /// Returns the Welcome's ratchet ciphertext. Only a FATAL failure is left; the caller
    /// builds the Welcome's history from the state before this call.
    pub(crate) fn commit_add<R: CryptoRng>(
        &mut self,
        env: &mut Env<'_, R>,
        staged: StagedAdd,
        t: MemberId,
    ) -> Result<(TwoSmCiphertext, ControlBody, SeqNo, Processed), ProcessError> {
        let StagedAdd { ik, bundle, prekey } = staged;
        let rt_me = self.rt.get(&self.me).cloned().ok_or_else(|| fatal("no ratchet state of my own"))?;
        let mut bundles = Bundles::new();
        bundles.insert(ik, bundle);
        self.learn(t, ik);
        let c = self.encrypt_to(env, &bundles, &t, rt_me.expose())?;
        self.seq += 1;
        let q = self.seq;
        let out = self.process_add(env, self.me, q, t, &Bundles::new())?;
        Ok((c, ControlBody::Add { target: ik, prekey }, SeqNo(q), out))
    }
}

/// V5: the seed block's digest and size match the recipient set.
fn check_seeds(blk: &SeedBlock, r: &BTreeSet<MemberId>) -> Result<(), ProcessError> {
    let sorted: Vec<MemberId> = r.iter().copied().collect();
    if blk.cts.len() != sorted.len() || blk.recipients_digest != recipients_digest(&sorted) {
        return Err(ProcessError::Reject(RejectReason::RecipientsMismatch));
    }
    Ok(())
}
