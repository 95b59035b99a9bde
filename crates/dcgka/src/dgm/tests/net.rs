//! A DGM-level network of members, used by the scenarios and the random runs.

use super::*;

/// What travels: membership operations, and updates and their acks, which consume
/// sequence numbers but never enter `H`.
#[derive(Clone, Debug)]
pub(super) enum Wire {
    Op(Op<Id>),
    Update { sender: Id, seq: u64 },
    UpdateAck { sender: Id, seq: u64, of: OpId<Id> },
    /// A removed member's farewell (§7.5): it processed its removal `of` and sends
    /// nothing more. Never enters `H`; the receivers mark the sender departed.
    Farewell { sender: Id, seq: u64, of: OpId<Id> },
}
impl Wire {
    fn sender(&self) -> Id {
        match self {
            Wire::Op(op) => *op.sender(),
            Wire::Update { sender, .. } | Wire::UpdateAck { sender, .. } | Wire::Farewell { sender, .. } => *sender,
        }
    }
    fn seq(&self) -> u64 {
        match self {
            Wire::Op(op) => op.seq(),
            Wire::Update { seq, .. } | Wire::UpdateAck { seq, .. } | Wire::Farewell { seq, .. } => *seq,
        }
    }
    fn id(&self) -> OpId<Id> {
        id(self.sender(), self.seq())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Status {
    /// An initial member before the create, or a newcomer before its Welcome.
    Waiting,
    Live,
    /// Removed (or cancelled) in its own view: never sends or processes again.
    Stopped,
}

#[derive(Clone, Debug)]
pub(super) struct Node {
    hist: History<Id>,
    /// The same history, compacted after every step (§6.7): the differential twin of
    /// `hist`, which is never compacted.
    shadow: History<Id>,
    /// Last sequence number used.
    pub(super) seq: u64,
    status: Status,
    /// Per sender, the highest sequence number processed (or below the horizon).
    processed: BTreeMap<Id, u64>,
}
impl Node {
    fn new() -> Self {
        Node { hist: History::new(), shadow: History::new(), seq: 0, status: Status::Waiting, processed: BTreeMap::new() }
    }
}

pub(super) struct Welcome {
    adder: Id,
    snapshot: History<Id>,
    shadow: History<Id>,
    add: Op<Id>,
    hwm: BTreeMap<Id, u64>,
}

#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Stats {
    pub(super) cascades: usize,
    pub(super) cancelled_at_once: usize,
    pub(super) stopped: usize,
    pub(super) joins: usize,
    pub(super) partitions: usize,
    pub(super) skipped_acks: usize,
    pub(super) final_members: usize,
    /// Operations folded by the compacted twins, summed over every compaction.
    pub(super) folded: usize,
    pub(super) forgotten: usize,
}

pub(super) struct Net {
    pub(super) nodes: BTreeMap<Id, Node>,
    pub(super) log: BTreeMap<Id, Vec<Wire>>,
    pub(super) welcomes: BTreeMap<Id, Welcome>,
    /// Partition: members on different sides cannot exchange.
    pub(super) side: Option<BTreeMap<Id, bool>>,
    pub(super) deep: bool,
    /// Members whose ID is a multiple of 3 skip about half of their acks of adds and
    /// removes (allowed by the validity rules; see
    /// `skipped_ack_is_closed_over_the_causal_past`).
    pub(super) lazy: bool,
    pub(super) stats: Stats,
}

impl Net {
    pub(super) fn new(creator: Id, others: &[Id]) -> Net {
        let mut net = Net {
            nodes: BTreeMap::new(),
            log: BTreeMap::new(),
            welcomes: BTreeMap::new(),
            side: None,
            deep: true,
            lazy: false,
            stats: Stats::default(),
        };
        for &o in others {
            net.nodes.insert(o, Node::new());
        }
        let mut n = Node::new();
        n.status = Status::Live;
        net.nodes.insert(creator, n);
        net.send(creator, |q| Wire::Op(create(creator, q, others)));
        net
    }

    /// Created, and every initial member's ack processed everywhere (§10 setup).
    pub(super) fn setup(creator: Id, others: &[Id]) -> Net {
        let mut net = Net::new(creator, others);
        net.deliver_all();
        net
    }

    pub(super) fn hist(&self, n: Id) -> &History<Id> {
        &self.nodes[&n].hist
    }

    pub(super) fn status(&self, n: Id) -> Status {
        self.nodes[&n].status
    }

    pub(super) fn live(&self) -> BTreeSet<Id> {
        self.nodes.iter().filter(|(_, n)| n.status == Status::Live).map(|(i, _)| *i).collect()
    }

    fn check(&self, n: Id) {
        assert_consistent(self.hist(n), self.deep);
        assert_same_views(&self.nodes[&n].hist, &self.nodes[&n].shadow, n);
    }

    /// Compacts `n`'s twin and checks that nothing it answers changed.
    fn compact(&mut self, n: Id) {
        let node = self.nodes.get_mut(&n).unwrap();
        let before = node.shadow.clone();
        let c = node.shadow.compact();
        self.stats.folded += c.folded;
        self.stats.forgotten += c.forgotten.len();
        if c.folded > 0 {
            // The compacted history is its own replay.
            assert_eq!(History::rebuilt(node.shadow.folded()).unwrap(), node.shadow, "replay at {n}");
            assert_same_views(&before, &node.shadow, n);
        }
        self.check(n);
    }

    /// `n` sends a message; membership operations are applied locally at once.
    fn send(&mut self, n: Id, make: impl FnOnce(u64) -> Wire) -> OpId<Id> {
        let node = self.nodes.get_mut(&n).unwrap();
        assert_eq!(node.status, Status::Live, "{n} may not send");
        node.seq += 1;
        let w = make(node.seq);
        match &w {
            Wire::Op(op) => {
                if let Op::Ack { of, .. } = op {
                    assert!(!node.hist.follows_own_removal(&n, of), "honest {n} flagged");
                }
                if let Op::Add { .. } | Op::Remove { .. } = op {
                    assert!(node.hist.view_me().contains(&n), "{n} sends while removed");
                }
                node.hist.apply(op.clone()).unwrap();
                node.shadow.apply(op.clone()).unwrap();
            }
            Wire::UpdateAck { of, .. } => {
                assert!(!node.hist.follows_own_removal(&n, of), "honest {n} flagged");
            }
            Wire::Update { .. } | Wire::Farewell { .. } => {}
        }
        node.processed.insert(n, node.seq);
        let wid = w.id();
        self.log.entry(n).or_default().push(w);
        self.compact(n);
        wid
    }

    pub(super) fn add(&mut self, s: Id, t: Id) -> OpId<Id> {
        assert!(!self.nodes.contains_key(&t), "{t} is not fresh");
        let node = &self.nodes[&s];
        let snapshot = node.hist.clone();
        let shadow = node.shadow.clone();
        let mut hwm = node.processed.clone();
        hwm.insert(s, node.seq);
        let aid = self.send(s, |q| Wire::Op(add(s, q, t)));
        let add_op = self.hist(s).get(&aid).unwrap().clone();
        self.welcomes.insert(t, Welcome { adder: s, snapshot, shadow, add: add_op, hwm });
        self.nodes.insert(t, Node::new());
        if let Some(side) = &mut self.side {
            let s_side = side.get(&s).copied().unwrap_or(false);
            side.insert(t, s_side);
        }
        aid
    }

    pub(super) fn remove(&mut self, s: Id, t: Id) -> OpId<Id> {
        self.send(s, |q| Wire::Op(rm(s, q, t)))
    }

    pub(super) fn update(&mut self, s: Id) -> OpId<Id> {
        self.send(s, |q| Wire::Update { sender: s, seq: q })
    }

    fn connected(&self, a: Id, b: Id) -> bool {
        self.side
            .as_ref()
            .is_none_or(|side| side.get(&a).copied().unwrap_or(false) == side.get(&b).copied().unwrap_or(false))
    }

    /// The newcomer `t` processes its Welcome: the adder's history from just before
    /// the add, then the add, then its ack of the add.
    pub(super) fn join(&mut self, t: Id) -> bool {
        let Some(w) = self.welcomes.get(&t) else {
            return false;
        };
        if self.status(t) != Status::Waiting || !self.connected(t, w.adder) {
            return false;
        }
        let w = self.welcomes.remove(&t).unwrap();
        let aid = w.add.id();
        let node = self.nodes.get_mut(&t).unwrap();
        node.hist = w.snapshot;
        node.shadow = w.shadow;
        node.processed = w.hwm;
        node.hist.apply(w.add.clone()).unwrap();
        node.shadow.apply(w.add).unwrap();
        node.processed.insert(aid.sender, aid.seq);
        node.status = Status::Live;
        assert!(node.hist.view_me().contains(&t));
        self.stats.joins += 1;
        self.check(t);
        self.send(t, |q| Wire::Op(Op::Ack { sender: t, seq: q, of: aid }));
        true
    }

    /// The next message of `y` that `n` may process now, if any.
    pub(super) fn deliverable(&self, n: Id, y: Id) -> Option<Wire> {
        if n == y || !self.connected(n, y) {
            return None;
        }
        let node = self.nodes.get(&n)?;
        let done = node.processed.get(&y).copied().unwrap_or(0);
        let w = self.log.get(&y)?.iter().find(|w| w.seq() > done)?;
        match node.status {
            Status::Stopped => return None,
            // Only an initial member processes anything before joining: the create.
            Status::Waiting if self.welcomes.contains_key(&n) || !matches!(w, Wire::Op(Op::Create { .. })) => {
                return None;
            }
            _ => {}
        }
        let ready = match w {
            Wire::Op(Op::Ack { of, .. }) | Wire::UpdateAck { of, .. } | Wire::Farewell { of, .. } => {
                node.processed.get(&of.sender).is_some_and(|&s| s >= of.seq)
            }
            _ => true,
        };
        ready.then(|| w.clone())
    }

    /// `n` processes the next message of `y`, then acks it (unless it removed `n`).
    fn deliver(&mut self, n: Id, y: Id) -> bool {
        let Some(w) = self.deliverable(n, y) else {
            return false;
        };
        let node = self.nodes.get_mut(&n).unwrap();
        node.processed.insert(y, w.seq());
        match w {
            Wire::Update { sender, seq } => {
                self.send(n, |q| Wire::UpdateAck { sender: n, seq: q, of: id(sender, seq) });
            }
            Wire::UpdateAck { sender, of, .. } => {
                assert!(!node.hist.follows_own_removal(&sender, &of), "{sender} flagged");
                if !node.shadow.departed(&sender) && node.shadow.ever_added().contains(&sender) {
                    assert!(!node.shadow.follows_own_removal(&sender, &of), "{sender} flagged by the twin");
                }
            }
            Wire::Farewell { sender, .. } => {
                // Departure changes no answer of a history; only what it may fold.
                node.hist.depart(&sender);
                node.shadow.depart(&sender);
                self.compact(n);
            }
            Wire::Op(op) => {
                if let Op::Ack { sender, of, .. } = &op {
                    assert!(node.hist.contains(of), "{n} lacks {of:?}");
                    assert!(!node.hist.follows_own_removal(sender, of), "{sender} flagged");
                }
                if let Op::Add { sender, .. } = &op
                    && !node.hist.removed_by(sender).is_empty()
                {
                    self.stats.cancelled_at_once += 1;
                }
                let oid = op.id();
                let kind = op.kind();
                if let Err(e) = node.shadow.apply(op.clone()) {
                    panic!("{n}'s compacted twin cannot apply {oid:?}: {e}");
                }
                if let Err(e) = node.hist.apply(op) {
                    panic!("{n} cannot apply {oid:?}: {e}");
                }
                if kind == OpKind::Create {
                    node.status = Status::Live;
                }
                if kind == OpKind::Remove && node.hist.targets(&oid).is_some_and(|t| t.len() > 1) {
                    self.stats.cascades += 1;
                }
                self.compact(n);
                if kind != OpKind::Ack {
                    let node = &mut self.nodes.get_mut(&n).unwrap();
                    let skip = self.lazy
                        && kind != OpKind::Create
                        && n.is_multiple_of(3)
                        && (oid.seq + u64::from(oid.sender) + u64::from(n)).is_multiple_of(2);
                    if !node.hist.view_me().contains(&n) {
                        // TERMINATE: never ack one's own removal; say farewell.
                        assert_eq!(kind, OpKind::Remove);
                        node.status = Status::Stopped;
                        node.seq += 1;
                        let seq = node.seq;
                        node.processed.insert(n, seq);
                        self.log.entry(n).or_default().push(Wire::Farewell { sender: n, seq, of: oid });
                        self.stats.stopped += 1;
                    } else if skip {
                        self.stats.skipped_acks += 1;
                    } else {
                        self.send(n, |q| Wire::Op(Op::Ack { sender: n, seq: q, of: oid }));
                    }
                }
            }
        }
        true
    }

    pub(super) fn step(&mut self, n: Id, y: Id) {
        assert!(self.deliver(n, y), "{n} cannot process the next message of {y}");
    }

    pub(super) fn deliver_all(&mut self) -> bool {
        let mut any = false;
        loop {
            let mut progress = false;
            let ids: Vec<Id> = self.nodes.keys().copied().collect();
            let senders: Vec<Id> = self.log.keys().copied().collect();
            for &n in &ids {
                for &y in &senders {
                    while self.deliver(n, y) {
                        progress = true;
                    }
                }
            }
            if !progress {
                return any;
            }
            any = true;
        }
    }

    /// Heals any partition, delivers every Welcome and every message.
    pub(super) fn settle(&mut self) {
        self.side = None;
        loop {
            let waiting: Vec<Id> = self.welcomes.keys().copied().collect();
            let mut progress = false;
            for t in waiting {
                progress |= self.join(t);
            }
            progress |= self.deliver_all();
            if !progress {
                break;
            }
        }
    }

    /// After `settle`: the global oracles at the DGM level.
    pub(super) fn assert_converged(&mut self) {
        let live = self.live();
        assert!(self.nodes.values().all(|n| n.status != Status::Waiting));
        let total = self.log.values().flatten().filter(|w| matches!(w, Wire::Op(_))).count();
        let mut first: Option<&History<Id>> = None;
        for n in &live {
            let h = self.hist(*n);
            assert_eq!(h.len(), total, "{n} misses operations");
            assert_consistent(h, true);
            // A Welcome ships `ops()` (and the departed members); replaying them rebuilds
            // the same state.
            let rebuilt = History::rebuilt(h.folded()).unwrap();
            assert_eq!(&rebuilt, h);
            match first {
                Some(f) => {
                    assert!(f.same_history(h), "{n} diverged");
                    assert_eq!(derived(f), derived(h), "{n} diverged");
                    assert_eq!(f.view_me(), h.view_me());
                }
                None => first = Some(h),
            }
            // Every live member is a member, and every member is live.
            assert_eq!(h.view_me(), live, "at {n}");
            // Once everything is delivered and every removed member said farewell, a
            // member that acked everything has folded everything (§6.7).
            let twin = &self.nodes[n].shadow;
            assert_eq!(twin.view_me(), live, "twin at {n}");
            assert!(twin.same_history(h) && h.same_history(twin), "twin at {n} differs (oracle 5)");
            if !self.lazy {
                assert_eq!(twin.unfolded_len(), 0, "twin at {n}: {:?}", twin.folded());
                assert!(twin.ever_added().is_subset(&live), "twin at {n} keeps departed members");
            }
        }
        self.stats.final_members = live.len();
    }
}

/// A history and its compacted twin give the same answers: the same view for the holder
/// and for every member that may still send, the same removal state of every member the
/// twin still knows, and the twin holds no more than the original.
fn assert_same_views(h: &History<Id>, twin: &History<Id>, at: Id) {
    assert_eq!(h.view_me(), twin.view_me(), "view_me at {at}");
    for x in twin.live_members() {
        assert_eq!(h.view_of(x), twin.view_of(x), "view_of({x}) at {at}");
        assert_eq!(h.removed_by(x), twin.removed_by(x), "removed_by({x}) at {at}");
    }
    assert!(twin.ever_added().is_subset(&h.ever_added()));
    assert!(twin.len() <= h.len(), "the twin holds more operations at {at}");
}
