//! Direct messages (Welcomes) held for an identity until it has joined their group.

use dcgka::ids::GroupId;
use dcgka::{IdentityKey, welcome_target};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::error::MailboxError;
use crate::mailbox::{Limits, Mailbox, sha256, usize_of};

impl Mailbox {
    /// Holds a Welcome for identity `to` into group `gid` until `to` syncs listing `gid`
    /// among its active groups ([`Mailbox::answer_sync`]). The bytes must decode as a
    /// Welcome of `gid` (nothing is verified). Holding the same bytes again changes
    /// nothing. The group need not be served here.
    pub fn hold_direct(&mut self, to: &IdentityKey, gid: &GroupId, bytes: &[u8]) -> Result<(), MailboxError> {
        let limits = self.limits;
        let max = limits.envelope_size.min(limits.direct_bytes_per_identity);
        if bytes.len() > max {
            return Err(MailboxError::TooLarge { size: bytes.len(), max });
        }
        let (found, _) = welcome_target(bytes, to).map_err(MailboxError::Malformed)?;
        if found != *gid {
            return Err(MailboxError::WrongGroup { expected: *gid, found });
        }
        let digest = sha256(bytes);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let held = tx
            .prepare_cached("SELECT 1 FROM direct WHERE ik = ?1 AND digest = ?2")?
            .query_row(params![&to.0[..], &digest[..]], |_| Ok(()))
            .optional()?;
        if held.is_some() {
            return Ok(());
        }
        let (count, total): (i64, i64) = tx
            .prepare_cached("SELECT count(*), coalesce(sum(length(bytes)), 0) FROM direct WHERE ik = ?1")?
            .query_row([&to.0[..]], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let (count, total) = (usize_of(count), usize_of(total));
        if count >= limits.directs_per_identity {
            return Err(MailboxError::TooManyDirects { held: count, max: limits.directs_per_identity });
        }
        if total + bytes.len() > limits.direct_bytes_per_identity {
            return Err(MailboxError::DirectBytesExceeded {
                held: total,
                size: bytes.len(),
                max: limits.direct_bytes_per_identity,
            });
        }
        admit_identity(&tx, to, &limits)?;
        tx.prepare_cached("INSERT INTO direct (ik, gid, digest, bytes) VALUES (?1, ?2, ?3, ?4)")?.execute(params![
            &to.0[..],
            &gid.0[..],
            &digest[..],
            bytes
        ])?;
        tx.commit()?;
        Ok(())
    }
}

/// Checks that `ik` may have material here: it has some already, or the mailbox holds
/// material of fewer identities than allowed.
pub(crate) fn admit_identity(conn: &Connection, ik: &IdentityKey, limits: &Limits) -> Result<(), MailboxError> {
    let known: bool = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM direct WHERE ik = ?1) OR EXISTS (SELECT 1 FROM signed_prekey WHERE ik = ?1)",
        )?
        .query_row([&ik.0[..]], |r| r.get(0))?;
    if known {
        return Ok(());
    }
    let n: i64 = conn
        .prepare_cached("SELECT count(*) FROM (SELECT ik FROM direct UNION SELECT ik FROM signed_prekey)")?
        .query_row([], |r| r.get(0))?;
    if usize_of(n) >= limits.identities {
        return Err(MailboxError::TooManyIdentities { max: limits.identities });
    }
    Ok(())
}
