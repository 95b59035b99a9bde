//! The decompressed signing keys of the senders verified most recently: a bounded cache, so
//! that a sender who sends in bursts pays for one point decompression, not one per envelope,
//! while a group of any size holds at most [`MAX_PREPARED_KEYS`] of them.

use crate::consts::MAX_PREPARED_KEYS;
use crate::crypto::{PreparedKey, VerifyingKey};
use crate::ids::{GroupId, MemberId};
use crate::wire::Envelope;

/// At most [`MAX_PREPARED_KEYS`] decompressed keys, the least recently used evicted first.
#[derive(Clone, Debug, Default)]
pub(super) struct PreparedKeys {
    /// `(sender, its key decompressed, when last used)`, in no particular order.
    keys: Vec<(MemberId, PreparedKey, u64)>,
    /// The use counter.
    clock: u64,
}

impl PreparedKeys {
    /// The cached decompressed form of `key`, the current key of `id`.
    fn get(&self, id: &MemberId, key: &VerifyingKey) -> Option<usize> {
        self.keys.iter().position(|(m, p, _)| m == id && p.public() == *key)
    }

    /// Verifies `env` as an envelope of `id` under `key`, with the cached decompressed key
    /// if there is one; nothing is cached.
    pub(super) fn verify(&self, gid: &GroupId, id: &MemberId, key: &VerifyingKey, env: &Envelope) -> bool {
        match self.get(id, key).and_then(|i| self.keys.get(i)) {
            Some((_, p, _)) => env.verify_prepared(gid, id, p).is_ok(),
            None => env.verify(gid, id, key).is_ok(),
        }
    }

    /// [`PreparedKeys::verify`], keeping the decompressed key of an authentic envelope in the
    /// cache (a forgery evicts nothing).
    pub(super) fn verify_caching(&mut self, gid: &GroupId, id: &MemberId, key: &VerifyingKey, env: &Envelope) -> bool {
        self.clock += 1;
        if let Some((_, p, used)) = self.get(id, key).and_then(|i| self.keys.get_mut(i)) {
            *used = self.clock;
            return env.verify_prepared(gid, id, p).is_ok();
        }
        // An invalid key verifies nothing.
        let Ok(p) = key.prepare() else { return false };
        if env.verify_prepared(gid, id, &p).is_err() {
            return false;
        }
        // One entry per sender: its previous key goes, else the least recently used one.
        let slot = match self.keys.iter().position(|(m, _, _)| m == id) {
            Some(i) => Some(i),
            None if self.keys.len() >= MAX_PREPARED_KEYS => {
                self.keys.iter().enumerate().min_by_key(|(_, (_, _, used))| *used).map(|(i, _)| i)
            }
            None => None,
        };
        match slot.and_then(|i| self.keys.get_mut(i)) {
            Some(e) => *e = (*id, p, self.clock),
            None => self.keys.push((*id, p, self.clock)),
        }
        true
    }

    /// Caches `key`, the new current key of `id` (a rotation), while there is room or in
    /// place of `id`'s previous key; it never evicts another sender's. So a group of up to
    /// [`MAX_PREPARED_KEYS`] members decompresses each key once, when it is announced.
    pub(super) fn offer(&mut self, id: &MemberId, key: &VerifyingKey) {
        let slot = self.keys.iter().position(|(m, _, _)| m == id);
        if slot.is_none() && self.keys.len() >= MAX_PREPARED_KEYS {
            return;
        }
        // An invalid key verifies nothing and is not cached.
        let Ok(p) = key.prepare() else {
            self.forget(id);
            return;
        };
        self.clock += 1;
        match slot.and_then(|i| self.keys.get_mut(i)) {
            Some(e) => *e = (*id, p, self.clock),
            None => self.keys.push((*id, p, self.clock)),
        }
    }

    /// Forgets `id`'s key.
    pub(super) fn forget(&mut self, id: &MemberId) {
        self.keys.retain(|(m, _, _)| m != id);
    }

    /// How many keys are cached.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether a key of `id` is cached.
    #[cfg(test)]
    pub(super) fn holds(&self, id: &MemberId) -> bool {
        self.keys.iter().any(|(m, _, _)| m == id)
    }
}
