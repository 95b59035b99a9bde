//! Snapshots of a group: the group layer's part of the state format (Appendix B).

use super::*;

impl Group {
    /// This member's complete state in this group as bytes: everything that determines
    /// the group's future behaviour, secrets included (the [`crate::snapshot`] format).
    /// [`Group::restore`] turns it back into an equal group, and a restored group's
    /// snapshot is byte for byte the same.
    ///
    /// Persist it **before transmitting** anything a call returned, together with the
    /// device's [`Identity`] (which is not part of it): a device that crashes after sending
    /// and restarts from an older state would reuse sequence numbers, seeds and keys.
    ///
    /// The bytes are as secret as the state: the buffer zeroizes on drop; encrypt them at
    /// rest. A group in any status can be saved. The adversarial test flag is not part of
    /// the format: a restored group is an ordinary member.
    pub fn snapshot(&self) -> Zeroizing<Vec<u8>> {
        let mut w = StateWriter::new();
        self.encode_state(&mut w);
        w.finish()
    }

    /// Rebuilds a group from [`Group::snapshot`] bytes. Decoding is canonical and total:
    /// the bytes of an unsupported version, a truncation or any corruption that the format
    /// can detect give a [`SnapshotError`], never a panic. (Snapshots carry no integrity
    /// check of their own: storage that may be tampered with needs authenticated
    /// encryption.) A snapshot of an older supported version is migrated (versions 2 and 3:
    /// its retained operations become the operations in flight, docs/protocol.md
    /// Appendix B) and is written in the current version from then on.
    pub fn restore(bytes: &[u8]) -> Result<Group, SnapshotError> {
        let (mut g, version) = Group::restore_core(bytes)?;
        if version < 4 {
            g.ord.prune_keys();
        }
        Ok(g)
    }

    /// [`Group::restore`] without the last step of loading a snapshot before version 4
    /// (pruning the retained keys, which needs the recent hashes of every sender); returns
    /// the snapshot's version.
    fn restore_core(bytes: &[u8]) -> Result<(Group, u8), SnapshotError> {
        let mut r = StateReader::open(bytes)?;
        let version = r.version();
        let g = Group::decode_state(&mut r)?;
        r.finish()?;
        Ok((g, version))
    }

    /// This member's state as records, for a store that writes only what changed: a core
    /// record (the [`snapshot`](Group::snapshot) format, with the per-sender parts left
    /// empty) and one record per sender, holding its ordering head, its sender ratchet
    /// and its message index. An in-order application message changes only its sender's
    /// record. [`Group::restore_records`] turns them back into an equal group.
    pub fn records(&self) -> GroupRecords {
        let mut w = StateWriter::new();
        self.encode_parts(&mut w, false);
        let core = w.finish();
        let mut ids: BTreeSet<MemberId> = self.ord.senders().keys().copied().collect();
        ids.extend(self.fs.keys());
        ids.extend(self.app_index.keys());
        let senders = ids.into_iter().map(|id| (id, self.sender_record(&id))).collect();
        GroupRecords { core, senders }
    }

    /// One sender's record: `magic 0xDD ‖ version ‖ member table ‖ member ‖
    /// head:opt<(sender state, recent:list<(seq:var, hash:[16])>)> ‖ ratchet:opt<sender ratchet> ‖
    /// index:opt<(epoch:var, next:var)>`.
    fn sender_record(&self, id: &MemberId) -> Zeroizing<Vec<u8>> {
        let mut w = StateWriter::of_kind(crate::snapshot::SnapshotKind::Sender);
        w.member(id);
        let head = self.ord.senders().get(id);
        w.flag(head.is_some());
        if let Some(st) = head {
            st.encode_state(&mut w);
            self.ord.encode_recent(&mut w, id);
        }
        w.flag(self.fs.contains_key(id));
        if let Some(r) = self.fs.get(id) {
            r.encode_state(&mut w);
        }
        w.flag(self.app_index.contains_key(id));
        if let Some((epoch, next)) = self.app_index.get(id) {
            w.var(epoch.0);
            w.var(u64::from(*next));
        }
        w.finish()
    }

    /// Rebuilds a group from [`Group::records`]: the core record and every sender record.
    /// Canonical and total like [`Group::restore`]: a record under the wrong member, an
    /// empty record, or a core record that holds per-sender parts is an error.
    pub fn restore_records<'a>(
        core: &[u8],
        senders: impl IntoIterator<Item = (MemberId, &'a [u8])>,
    ) -> Result<Group, SnapshotError> {
        let (mut g, version) = Group::restore_core(core)?;
        if !(g.ord.senders().is_empty() && g.fs.is_empty() && g.app_index.is_empty()) {
            return Err(SnapshotError::Inconsistent("a core record holds per-sender parts"));
        }
        for (id, bytes) in senders {
            let mut r = StateReader::open_kind(bytes, crate::snapshot::SnapshotKind::Sender)?;
            if r.member()? != id {
                return Err(SnapshotError::Inconsistent("a sender record filed under another member"));
            }
            let mut any = false;
            if r.flag()? {
                let st = SenderState::decode_state(&mut r)?;
                let recent = Ordering::decode_recent(&mut r)?;
                g.ord.insert_sender(id, st);
                g.ord.insert_recent(id, recent);
                any = true;
            }
            if r.flag()? {
                g.fs.insert(id, SenderRatchet::decode_state(&mut r, g.d.gid, id)?);
                any = true;
            }
            if r.flag()? {
                g.app_index.insert(id, (Epoch(r.var()?), r.var_u32()?));
                any = true;
            }
            r.finish()?;
            if !any {
                return Err(SnapshotError::Inconsistent("an empty sender record"));
            }
        }
        if version < 4 {
            g.ord.prune_keys();
        }
        Ok(g)
    }

    /// The size of this member's [`snapshot`](Group::snapshot) in bytes.
    pub fn state_size(&self) -> usize {
        self.snapshot().len()
    }

    /// The group layer of a snapshot: `auto_heal:u8 ‖ coalesce_acks:u8 ‖
    /// withhold_late_operations:u8 (since version 3) ‖ retention_secs:var (since version 5) ‖
    /// my_ik:[32] ‖ γ ‖
    /// ordering ‖ signing:[32] ‖ fs:map<member, sender ratchet> ‖ app_index:map<member,
    /// (epoch:var, next:var)> ‖ status ‖ pending_removal:opt<member> ‖
    /// held:list<(seq:var, kind:u8, body:opaque)> ‖ absent_since:map<member, var>` (since
    /// version 5); `status` is `0` (active), `1 ‖ by`
    /// (removed) or `2 ‖ reason:opaque` (corrupted); `signing` is all zeros once TERMINATE
    /// erased it.
    pub(super) fn encode_state(&self, w: &mut StateWriter) {
        self.encode_parts(w, true);
    }

    /// [`Self::encode_state`]; without `senders`, the per-sender parts (ordering head,
    /// sender ratchet, message index) are written as empty maps: the core record.
    fn encode_parts(&self, w: &mut StateWriter, senders: bool) {
        let (no_fs, no_index) = (BTreeMap::new(), BTreeMap::new());
        let (fs, app_index) = if senders { (&self.fs, &self.app_index) } else { (&no_fs, &no_index) };
        w.flag(self.config.auto_heal);
        w.flag(self.config.coalesce_acks);
        w.flag(self.config.withhold_late_operations);
        w.var(self.config.retention_secs);
        w.raw(&self.my_ik.0);
        self.d.encode_state(w);
        self.ord.encode_parts(w, senders);
        w.raw(&self.signing.to_bytes()[..]);
        w.map(fs, |w, id, r| {
            w.member(id);
            r.encode_state(w);
        });
        w.map(app_index, |w, id, (epoch, next)| {
            w.member(id);
            w.var(epoch.0);
            w.var(u64::from(*next));
        });
        match &self.status {
            Status::Active => w.u8(0),
            Status::Removed { by } => {
                w.u8(1);
                w.member(by);
            }
            Status::Corrupted { reason } => {
                w.u8(2);
                w.opaque(reason.as_bytes());
            }
        }
        w.flag(self.pending_removal.is_some());
        if let Some(t) = &self.pending_removal {
            w.member(t);
        }
        w.items(self.held.iter(), |w, h| {
            w.var(h.seq.0);
            w.u8(h.item.kind.tag());
            w.opaque(&h.item.body);
        });
        w.map(&self.absent_since, |w, m, t| {
            w.member(m);
            w.var(*t);
        });
    }

    pub(super) fn decode_state(r: &mut StateReader<'_>) -> Result<Group, SnapshotError> {
        let (auto_heal, coalesce_acks) = (r.flag()?, r.flag()?);
        // Version 3 added the withholding of late operations.
        let withhold_late_operations = r.version() >= 3 && r.flag()?;
        // Version 5 added the retention period (§5.7).
        let retention_secs = if r.version() >= 5 { r.var()? } else { crate::consts::DEFAULT_RETENTION_SECS };
        let config = GroupConfig { auto_heal, coalesce_acks, withhold_late_operations, retention_secs };
        let my_ik = VerifyingKey(r.array()?);
        let (mut d, legacy) = Dcgka::decode_state(r)?;
        let mut ord = Ordering::decode_state(r)?;
        if let Some(update_acks) = legacy {
            // Before version 4 everything processed stayed retained: only the operations
            // still in flight are kept (their keys are pruned once the recent hashes are in).
            let completed = d.migrate_acks(&update_acks, ord.retained_ops());
            ord.forget_retained(&completed);
        }
        let signing = SigningSecret::from_bytes(&Zeroizing::new(r.array()?));
        let fs = r.map(2 + KEY_LEN, |r| {
            let id = r.member()?;
            Ok((id, SenderRatchet::decode_state(r, d.gid, id)?))
        })?;
        let app_index = r.map(3, |r| Ok((r.member()?, (Epoch(r.var()?), r.var_u32()?))))?;
        let status = match r.u8()? {
            0 => Status::Active,
            1 => Status::Removed { by: r.member()? },
            2 => {
                let reason = String::from_utf8(r.opaque()?.to_vec())
                    .map_err(|_| DecodeError::InvalidField("corruption reason is not UTF-8"))?;
                Status::Corrupted { reason }
            }
            t => return Err(DecodeError::UnknownTag { what: "group status", tag: u64::from(t) }.into()),
        };
        let pending_removal = if r.flag()? { Some(r.member()?) } else { None };
        let held = r.items(3, |r| {
            let seq = SeqNo(r.var()?);
            let kind = EnvelopeKind::from_tag(r.u8()?)?;
            Ok(HeldItem { seq, item: BatchItem { kind, body: r.opaque()?.to_vec() } })
        })?;
        let absent_since = if r.version() >= 5 { r.map(2, |r| Ok((r.member()?, r.var()?)))? } else { BTreeMap::new() };
        Ok(Group {
            config,
            my_ik,
            d,
            ord,
            signing,
            fs,
            app_index,
            status,
            pending_removal,
            #[cfg(any(test, feature = "test-hooks"))]
            adversarial: false,
            held,
            compaction: true,
            absent_since,
            absent_checked: None,
        })
    }
}
