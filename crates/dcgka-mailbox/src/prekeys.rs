//! A stock of one identity's prekeys: its current signed prekey and signed one-time
//! prekeys, each one-time prekey handed out at most once.

use std::collections::BTreeMap;

use dcgka::IdentityKey;
use dcgka::codec::{Decode, Encode};
use dcgka::prekeys::{OneTimePrekey, PrekeyBundle, PrekeyError, Signed, SignedPrekey};
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use crate::direct::admit_identity;
use crate::error::MailboxError;
use crate::mailbox::{Mailbox, sql_u64, usize_of};

/// `now` as SQLite compares it.
fn sql_time(now: u64) -> i64 {
    i64::try_from(now).unwrap_or(i64::MAX)
}

impl Mailbox {
    /// Stocks an identity's signed prekey (replacing the one stocked) and one-time
    /// prekeys; returns how many one-time prekeys were added.
    ///
    /// Everything is verified first, as a sender would at `now` ([`PrekeyBundle::verify`]):
    /// every signature under `spk.value.ik`, every key of that identity, none expired. Any
    /// failure refuses the whole call. A signed prekey with a lower ID than the stocked
    /// one is refused ([`MailboxError::StaleSignedPrekey`]). One-time prekey IDs increase
    /// (as [`dcgka::prekeys::Identity::new_one_time_prekeys`] numbers them): only IDs above
    /// the highest ever stocked for the identity are taken, so a replayed upload cannot
    /// stock a key again after it was handed out. Expired one-time prekeys are dropped.
    pub fn stock_prekeys(
        &mut self,
        spk: Signed<SignedPrekey>,
        opks: Vec<Signed<OneTimePrekey>>,
        now: u64,
    ) -> Result<usize, MailboxError> {
        let limits = self.limits;
        let max = limits.one_time_prekeys_per_identity;
        if opks.len() > max {
            return Err(MailboxError::TooManyOneTimePrekeys { held: 0, adding: opks.len(), max });
        }
        let ik = spk.value.ik;
        let mut bundle = PrekeyBundle { signed_prekey: spk, one_time_prekey: None };
        bundle.verify(&ik, now).map_err(|error| MailboxError::Prekey { index: None, error })?;
        let spk_id = sql_u64(bundle.signed_prekey.value.spk_id.0, "signed prekey id")?;
        let mut fresh: BTreeMap<i64, Signed<OneTimePrekey>> = BTreeMap::new();
        for (i, o) in opks.into_iter().enumerate() {
            if o.value.ik != ik {
                return Err(MailboxError::Prekey { index: Some(i), error: PrekeyError::WrongIdentity });
            }
            let id = sql_u64(o.value.opk_id.0, "one-time prekey id")?;
            bundle.one_time_prekey = Some(o);
            bundle.verify(&ik, now).map_err(|error| MailboxError::Prekey { index: Some(i), error })?;
            if let Some(o) = bundle.one_time_prekey.take() {
                fresh.insert(id, o);
            }
        }
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let stocked: Option<(i64, i64)> = tx
            .prepare_cached("SELECT spk_id, opk_floor FROM signed_prekey WHERE ik = ?1")?
            .query_row([&ik.0[..]], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let floor = match stocked {
            Some((stocked, _)) if spk_id < stocked => {
                return Err(MailboxError::StaleSignedPrekey {
                    offered: bundle.signed_prekey.value.spk_id.0,
                    stocked: u64::try_from(stocked).unwrap_or(0),
                });
            }
            Some((_, floor)) => floor,
            None => {
                admit_identity(&tx, &ik, &limits)?;
                -1
            }
        };
        let fresh: Vec<(i64, Signed<OneTimePrekey>)> = fresh.into_iter().filter(|(id, _)| *id > floor).collect();
        let new_floor = fresh.last().map_or(floor, |(id, _)| *id);
        tx.prepare_cached(
            "INSERT INTO signed_prekey (ik, spk_id, opk_floor, bytes) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (ik) DO UPDATE SET spk_id = excluded.spk_id, opk_floor = excluded.opk_floor,
             bytes = excluded.bytes",
        )?
        .execute(params![&ik.0[..], spk_id, new_floor, bundle.signed_prekey.to_bytes()])?;
        tx.prepare_cached("DELETE FROM one_time_prekey WHERE ik = ?1 AND not_after < ?2")?
            .execute(params![&ik.0[..], sql_time(now)])?;
        let held: i64 = tx
            .prepare_cached("SELECT count(*) FROM one_time_prekey WHERE ik = ?1")?
            .query_row([&ik.0[..]], |r| r.get(0))?;
        let held = usize_of(held);
        if held + fresh.len() > max {
            return Err(MailboxError::TooManyOneTimePrekeys { held, adding: fresh.len(), max });
        }
        let mut added = 0;
        for (id, o) in &fresh {
            added += tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO one_time_prekey (ik, opk_id, not_after, bytes) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![&ik.0[..], id, sql_time(o.value.not_after), o.to_bytes()])?;
        }
        tx.commit()?;
        Ok(added)
    }

    /// A bundle for `ik`: the stocked signed prekey and the oldest unexpired one-time
    /// prekey, which is deleted in the same transaction (handed out at most once, also
    /// across restarts). Expired one-time prekeys are dropped. When none is left, the
    /// signed prekey goes alone; when the signed prekey itself no longer verifies at
    /// `now`, it goes alone too (no one-time prekey is spent on a bundle every sender
    /// refuses). `None` if no signed prekey is stocked.
    pub fn bundle(&mut self, ik: &IdentityKey, now: u64) -> Result<Option<PrekeyBundle>, MailboxError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let spk: Option<Vec<u8>> = tx
            .prepare_cached("SELECT bytes FROM signed_prekey WHERE ik = ?1")?
            .query_row([&ik.0[..]], |r| r.get(0))
            .optional()?;
        let Some(spk) = spk else { return Ok(None) };
        let spk = Signed::<SignedPrekey>::from_bytes(&spk).map_err(|_| MailboxError::BadRow("signed prekey"))?;
        let mut bundle = PrekeyBundle { signed_prekey: spk, one_time_prekey: None };
        tx.prepare_cached("DELETE FROM one_time_prekey WHERE ik = ?1 AND not_after < ?2")?
            .execute(params![&ik.0[..], sql_time(now)])?;
        if bundle.verify(ik, now).is_ok() {
            let next: Option<(i64, Vec<u8>)> = tx
                .prepare_cached("SELECT rowid, bytes FROM one_time_prekey WHERE ik = ?1 ORDER BY rowid LIMIT 1")?
                .query_row([&ik.0[..]], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            if let Some((rowid, bytes)) = next {
                let opk =
                    Signed::<OneTimePrekey>::from_bytes(&bytes).map_err(|_| MailboxError::BadRow("one-time prekey"))?;
                tx.prepare_cached("DELETE FROM one_time_prekey WHERE rowid = ?1")?.execute([rowid])?;
                bundle.one_time_prekey = Some(opk);
            }
        }
        tx.commit()?;
        Ok(Some(bundle))
    }
}
