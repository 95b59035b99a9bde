//! The retention period of §5.7: what is kept for slow members is dropped once it ran out.
//!
//! Two things are kept only for members that may never come back:
//! - member secrets held until a current member acknowledges an operation
//!   ([`Dcgka::expire`](crate::dcgka::Dcgka) erases them, and that member's ratchet here
//!   with them, until its own next update or remove);
//! - the state of a member that left the group here but never acknowledged its removal
//!   (its farewell, §7.5): its 2SM session, ratchets and member secrets, kept so that its
//!   messages concurrent with its removal stay readable, and its place among the live
//!   members of the history, which holds compaction back (§6.7). Such a member is retired.
//!
//! Both run at the start of every receive and in [`Group::collect_garbage`], on the
//! callers' clock ([`Context::now`]); a member's time away is counted from when this
//! member first saw it absent, which a snapshot keeps.

use super::*;

impl Group {
    /// Applies the retention period ([`GroupConfig::retention_secs`]) at time `now` (Unix
    /// seconds): erases the member secrets held too long for a slow member
    /// ([`Event::SecretsExpired`]) and retires members that left the group too long ago
    /// without acknowledging their removal ([`Event::MemberRetired`]). Receiving does this
    /// too; call it from a timer so that a quiet group also drops what it no longer keeps.
    /// The output holds only events; persist the state before acting on them.
    pub fn collect_garbage(&mut self, now: u64) -> Result<Output, GroupError> {
        self.require_active()?;
        let mut out = Output::default();
        self.apply_retention(now, &mut out);
        Ok(out)
    }

    /// The earliest time at which [`Group::collect_garbage`] would drop something, as far
    /// as is known now (a member that becomes absent later starts its own period); `None`
    /// if never.
    pub fn next_expiry(&self) -> Option<u64> {
        let r = self.config.retention_secs;
        let absent = self.absent_since.values().min().map(|t| t.saturating_add(r));
        let next = match (self.d.next_expiry(r), absent) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // `u64::MAX` is never.
        next.filter(|t| *t != u64::MAX)
    }

    pub(super) fn apply_retention(&mut self, now: u64, out: &mut Output) {
        if !matches!(self.status, Status::Active) {
            return;
        }
        let retention = self.config.retention_secs;
        for (member, erased) in self.d.expire(now, retention) {
            out.events.push(Event::SecretsExpired { member, erased });
        }
        self.track_absent(now);
        let due: Vec<MemberId> =
            self.absent_since.iter().filter(|(_, t)| t.saturating_add(retention) <= now).map(|(m, _)| *m).collect();
        if due.is_empty() {
            return;
        }
        let before = self.history_size();
        for m in due {
            let last = self.ord.sender(&m, &self.d).map_or(0, |st| st.hwm);
            self.d.retire(&m, last);
            self.fs.remove(&m);
            self.app_index.remove(&m);
            self.ord.cut_off(&self.d, m);
            self.absent_since.remove(&m);
            out.events.push(Event::MemberRetired { member: m });
        }
        self.compact_history(before);
    }

    /// Starts the period of every member that is newly absent (left `member-view(me)`
    /// without departing), and ends that of members no longer absent. Looks at the history
    /// only when it changed since the last look.
    pub(super) fn track_absent(&mut self, now: u64) {
        let size = self.history_size();
        if self.absent_checked == Some(size) {
            return;
        }
        let absent = self.d.absent();
        self.absent_since.retain(|m, _| absent.contains(m));
        for m in absent {
            self.absent_since.entry(m).or_insert(now);
        }
        self.absent_checked = Some(size);
    }
}
