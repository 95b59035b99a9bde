//! The per-sender message ratchet: forward-secure AEAD (§8).
//!
//! Each update secret `(X, e, I)` from the DCGKA initialises a fresh chain for sender X at
//! epoch e. Message i uses `mk_i = Expand(ck_i, "app-message-key", u32(i))` and the chain
//! moves on with `ck_{i+1} = Expand(ck_i, "app-chain-next", u32(i))`; every key is erased
//! after use. The AEAD's associated data binds group, sender, epoch, index and envelope
//! sequence number. Decryption is all-or-nothing: the state advances only once the AEAD
//! check has passed.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use crate::consts::{MAX_PLAINTEXT_SIZE, MAX_SKIP, MAX_SKIPPED};
use crate::crypto::{self, CryptoError, KEY_LEN, Secret32, labels};
use crate::ids::{Epoch, GroupId, MemberId, MessageIndex, SeqNo};
use crate::snapshot::{SnapshotError, StateReader, StateWriter};

/// Why an application message could not be encrypted or decrypted (§8).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RatchetError {
    /// I never held the update secret for that epoch of this sender.
    #[error("not for us: no key for epoch {epoch} (ratchet holds {held:?})")]
    NotForUs {
        /// The epoch the message claims.
        epoch: Epoch,
        /// The epoch this ratchet is at, if any.
        held: Option<Epoch>,
    },
    /// The message claims an epoch older than the ratchet's: impossible for an honest sender
    /// under FIFO delivery.
    #[error("stale epoch {epoch}: ratchet already at {current}")]
    StaleEpoch {
        /// The epoch the message claims.
        epoch: Epoch,
        /// The ratchet's epoch.
        current: Epoch,
    },
    /// The index is further ahead than [`MAX_SKIP`].
    #[error("message index {index} is {jump} ahead of {next}, more than the maximum {max}")]
    TooFarAhead {
        /// The message's index.
        index: MessageIndex,
        /// The next expected index.
        next: MessageIndex,
        /// `index - next`.
        jump: u32,
        /// [`MAX_SKIP`].
        max: u32,
    },
    /// The key for that index was already used (replay) or evicted.
    #[error("key for index {0} already used or evicted")]
    KeyUnavailable(MessageIndex),
    /// The AEAD check failed.
    #[error("application ciphertext failed to authenticate")]
    AuthenticationFailed,
    /// The plaintext is larger than [`MAX_PLAINTEXT_SIZE`].
    #[error("plaintext of {size} bytes exceeds the maximum {max}")]
    PlaintextTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The chain has produced 2³² keys; the sender must update first.
    #[error("message index space of this epoch exhausted")]
    ChainExhausted,
    /// A primitive failed where it cannot: a bug.
    #[error(transparent)]
    Crypto(CryptoError),
}

impl From<CryptoError> for RatchetError {
    fn from(e: CryptoError) -> Self {
        RatchetError::Crypto(e)
    }
}

/// One sender's FS-AEAD state `fs[X]` for one epoch.
#[derive(Clone, Debug)]
pub struct SenderRatchet {
    gid: GroupId,
    sender: MemberId,
    epoch: Epoch,
    ck: Secret32,
    next: MessageIndex,
    skipped: BTreeMap<u32, Secret32>,
}

fn aad(gid: &GroupId, sender: &MemberId, epoch: Epoch, i: MessageIndex, seq: SeqNo) -> Vec<u8> {
    crypto::info(
        labels::APP_AAD,
        &[&gid.0, &sender.0, &epoch.0.to_be_bytes(), &i.0.to_be_bytes(), &seq.0.to_be_bytes()],
    )
}

/// One chain step: `(mk_i, ck_{i+1})`.
fn step(ck: &Secret32, i: u32) -> Result<(Secret32, Secret32), CryptoError> {
    let prk = crypto::Prk::from_secret(ck)?;
    let idx = i.to_be_bytes();
    Ok((prk.expand(labels::APP_MESSAGE_KEY, &[&idx])?, prk.expand(labels::APP_CHAIN_NEXT, &[&idx])?))
}

impl SenderRatchet {
    /// `FS-Init(I, X, e)`: `ck₀ = Expand(I, "app-chain-init", gid‖X‖u64(e))`. Consumes `I`,
    /// which is erased.
    pub fn new(gid: GroupId, sender: MemberId, epoch: Epoch, update_secret: Secret32) -> Result<Self, RatchetError> {
        let ck = crypto::expand(&update_secret, labels::APP_CHAIN_INIT, &[&gid.0, &sender.0, &epoch.0.to_be_bytes()])?;
        drop(update_secret);
        Ok(SenderRatchet { gid, sender, epoch, ck, next: MessageIndex(0), skipped: BTreeMap::new() })
    }

    /// The epoch this chain belongs to.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The sender whose messages this chain protects.
    pub fn sender(&self) -> &MemberId {
        &self.sender
    }

    /// The next unused message index.
    pub fn next_index(&self) -> MessageIndex {
        self.next
    }

    /// Number of skipped keys held for out-of-order messages.
    pub fn skipped_keys(&self) -> usize {
        self.skipped.len()
    }

    /// Snapshot encoding: `epoch:var ‖ ck:[32] ‖ next:var ‖ skipped:list<(index:var,
    /// key:[32])>`. The group and the sender come from the enclosing state.
    pub(crate) fn encode_state(&self, w: &mut StateWriter) {
        w.var(self.epoch.0);
        w.secret(&self.ck);
        w.var(u64::from(self.next.0));
        w.map(&self.skipped, |w, i, mk| {
            w.var(u64::from(*i));
            w.secret(mk);
        });
    }

    /// Reverses [`encode_state`](Self::encode_state) for `sender`'s chain in group `gid`.
    pub(crate) fn decode_state(r: &mut StateReader<'_>, gid: GroupId, sender: MemberId) -> Result<Self, SnapshotError> {
        let epoch = Epoch(r.var()?);
        let ck = r.secret()?;
        let next = MessageIndex(r.var_u32()?);
        let skipped = r.map(1 + KEY_LEN, |r| Ok((r.var_u32()?, r.secret()?)))?;
        if skipped.len() > MAX_SKIPPED {
            return Err(SnapshotError::Inconsistent("a sender ratchet holds more than MAX_SKIPPED skipped keys"));
        }
        Ok(SenderRatchet { gid, sender, epoch, ck, next, skipped })
    }

    /// `FS-Encrypt`: encrypts the next message, sent in the envelope numbered `seq`.
    /// Returns its index (which does not travel) and the ciphertext.
    pub fn encrypt(&mut self, seq: SeqNo, pt: &[u8]) -> Result<(MessageIndex, Vec<u8>), RatchetError> {
        if pt.len() > MAX_PLAINTEXT_SIZE {
            return Err(RatchetError::PlaintextTooLarge { size: pt.len(), max: MAX_PLAINTEXT_SIZE });
        }
        let i = self.next;
        let following = i.0.checked_add(1).ok_or(RatchetError::ChainExhausted)?;
        let (mk, ck) = step(&self.ck, i.0)?;
        let ct = crypto::aead_seal(&mk, &aad(&self.gid, &self.sender, self.epoch, i, seq), pt)?;
        self.ck = ck;
        self.next = MessageIndex(following);
        Ok((i, ct))
    }

    /// `FS-Decrypt`: decrypts message `index` of `epoch`, carried in envelope `seq`.
    /// All-or-nothing: on any error the ratchet is unchanged.
    pub fn decrypt(
        &mut self,
        epoch: Epoch,
        index: MessageIndex,
        seq: SeqNo,
        ct: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, RatchetError> {
        if self.epoch < epoch {
            return Err(RatchetError::NotForUs { epoch, held: Some(self.epoch) });
        }
        if self.epoch > epoch {
            return Err(RatchetError::StaleEpoch { epoch, current: self.epoch });
        }
        let aad = aad(&self.gid, &self.sender, epoch, index, seq);
        if index < self.next {
            let mk = self.skipped.get(&index.0).ok_or(RatchetError::KeyUnavailable(index))?;
            let pt = crypto::aead_open(mk, &aad, ct).map_err(|_| RatchetError::AuthenticationFailed)?;
            self.skipped.remove(&index.0);
            return Ok(pt);
        }
        let jump = index.0 - self.next.0;
        if jump > MAX_SKIP {
            return Err(RatchetError::TooFarAhead { index, next: self.next, jump, max: MAX_SKIP });
        }
        // Derive into temporaries; commit only after the AEAD check.
        let mut skipped = self.skipped.clone();
        let mut ck = self.ck.clone();
        for j in self.next.0..index.0 {
            let (mk, next_ck) = step(&ck, j)?;
            skipped.insert(j, mk);
            ck = next_ck;
            while skipped.len() > MAX_SKIPPED {
                skipped.pop_first();
            }
        }
        let (mk, next_ck) = step(&ck, index.0)?;
        let following = index.0.checked_add(1).ok_or(RatchetError::ChainExhausted)?;
        let pt = crypto::aead_open(&mk, &aad, ct).map_err(|_| RatchetError::AuthenticationFailed)?;
        self.skipped = skipped;
        self.ck = next_ck;
        self.next = MessageIndex(following);
        Ok(pt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GID: GroupId = GroupId([9; 32]);
    const ALICE: MemberId = MemberId([1; 32]);
    const BOB: MemberId = MemberId([2; 32]);

    fn pair(epoch: u64) -> (SenderRatchet, SenderRatchet) {
        let s = Secret32::from_bytes([42; 32]);
        (
            SenderRatchet::new(GID, ALICE, Epoch(epoch), s.clone()).unwrap(),
            SenderRatchet::new(GID, ALICE, Epoch(epoch), s).unwrap(),
        )
    }

    fn send_n(tx: &mut SenderRatchet, n: u64) -> Vec<(MessageIndex, SeqNo, Vec<u8>, Vec<u8>)> {
        (0..n)
            .map(|k| {
                let seq = SeqNo(10 + k);
                let pt = format!("message {k}").into_bytes();
                let (i, ct) = tx.encrypt(seq, &pt).unwrap();
                (i, seq, pt, ct)
            })
            .collect()
    }

    #[test]
    fn in_order() {
        let (mut tx, mut rx) = pair(3);
        for (i, seq, pt, ct) in send_n(&mut tx, 5) {
            assert_eq!(&rx.decrypt(Epoch(3), i, seq, &ct).unwrap()[..], &pt[..]);
        }
        assert_eq!(rx.next_index(), MessageIndex(5));
        assert_eq!(rx.skipped_keys(), 0);
    }

    #[test]
    fn out_of_order_within_the_cap_and_replay() {
        let (mut tx, mut rx) = pair(3);
        let msgs = send_n(&mut tx, 6);
        for k in [4usize, 0, 5, 2, 1, 3] {
            let (i, seq, pt, ct) = &msgs[k];
            assert_eq!(&rx.decrypt(Epoch(3), *i, *seq, ct).unwrap()[..], &pt[..], "message {k}");
        }
        assert_eq!(rx.skipped_keys(), 0, "every skipped key is erased once used");
        let (i, seq, _, ct) = &msgs[2];
        assert_eq!(rx.decrypt(Epoch(3), *i, *seq, ct), Err(RatchetError::KeyUnavailable(*i)));
    }

    #[test]
    fn beyond_the_cap() {
        let (mut tx, mut rx) = pair(3);
        let msgs = send_n(&mut tx, u64::from(MAX_SKIP) + 2);
        let (i, seq, _, ct) = msgs.last().unwrap();
        assert!(
            matches!(rx.decrypt(Epoch(3), *i, *seq, ct), Err(RatchetError::TooFarAhead { jump, max: MAX_SKIP, .. }) if jump == MAX_SKIP + 1)
        );
        assert_eq!(rx.next_index(), MessageIndex(0), "unchanged on error");
        // Exactly MAX_SKIP ahead is allowed; only the newest MAX_SKIPPED keys are kept.
        let (i, seq, pt, ct) = &msgs[MAX_SKIP as usize];
        assert_eq!(&rx.decrypt(Epoch(3), *i, *seq, ct).unwrap()[..], &pt[..]);
        assert_eq!(rx.skipped_keys(), MAX_SKIPPED);
        let (i, seq, _, ct) = &msgs[0];
        assert_eq!(rx.decrypt(Epoch(3), *i, *seq, ct), Err(RatchetError::KeyUnavailable(*i)), "evicted");
        let (i, seq, pt, ct) = &msgs[MAX_SKIP as usize - 1];
        assert_eq!(&rx.decrypt(Epoch(3), *i, *seq, ct).unwrap()[..], &pt[..], "recent skipped key kept");
    }

    #[test]
    fn wrong_epoch() {
        let (mut tx, mut rx) = pair(3);
        let (i, seq, _, ct) = send_n(&mut tx, 1).remove(0);
        assert_eq!(
            rx.decrypt(Epoch(4), i, seq, &ct),
            Err(RatchetError::NotForUs { epoch: Epoch(4), held: Some(Epoch(3)) })
        );
        assert_eq!(
            rx.decrypt(Epoch(2), i, seq, &ct),
            Err(RatchetError::StaleEpoch { epoch: Epoch(2), current: Epoch(3) })
        );
        // Same key material, different epoch label: the chain and AAD both differ.
        let (_, mut rx5) = pair(5);
        assert_eq!(rx5.decrypt(Epoch(5), i, seq, &ct), Err(RatchetError::AuthenticationFailed));
    }

    #[test]
    fn wrong_sender_seq_or_tampering_fails_and_changes_nothing() {
        let (mut tx, mut rx) = pair(3);
        let (i, seq, pt, ct) = send_n(&mut tx, 1).remove(0);
        let mut as_bob = SenderRatchet::new(GID, BOB, Epoch(3), Secret32::from_bytes([42; 32])).unwrap();
        assert_eq!(as_bob.decrypt(Epoch(3), i, seq, &ct), Err(RatchetError::AuthenticationFailed));
        assert_eq!(rx.decrypt(Epoch(3), i, SeqNo(seq.0 + 1), &ct), Err(RatchetError::AuthenticationFailed));
        let mut bad = ct.clone();
        bad[0] ^= 0x80;
        assert_eq!(rx.decrypt(Epoch(3), i, seq, &bad), Err(RatchetError::AuthenticationFailed));
        assert_eq!(rx.next_index(), MessageIndex(0));
        assert_eq!(&rx.decrypt(Epoch(3), i, seq, &ct).unwrap()[..], &pt[..]);
    }

    #[test]
    fn forward_secrecy_snapshot_after_receipt() {
        let (mut tx, mut rx) = pair(3);
        let msgs = send_n(&mut tx, 3);
        let (i, seq, _, ct) = &msgs[1];
        rx.decrypt(Epoch(3), *i, *seq, ct).unwrap();
        let mut snapshot = rx.clone();
        assert_eq!(snapshot.decrypt(Epoch(3), *i, *seq, ct), Err(RatchetError::KeyUnavailable(*i)));
        // The skipped key for message 0 is still held (it was never received): expected.
        let (i0, seq0, pt0, ct0) = &msgs[0];
        assert_eq!(&snapshot.decrypt(Epoch(3), *i0, *seq0, ct0).unwrap()[..], &pt0[..]);
    }

    #[test]
    fn debug_redacts_keys() {
        let (tx, _) = pair(3);
        let s = format!("{tx:?}");
        assert!(s.contains("redacted"));
        assert!(!s.contains("42, 42"));
    }
}
