//! The identity layer of an identity snapshot ([`Identity::snapshot`]): the signing key,
//! then the key store. Header, framing and the canonical-decoding rules are those of
//! [`crate::snapshot`].

use zeroize::Zeroizing;

use super::{Identity, KeyStore, OneTimePrekeyId, SignedPrekeyId, SpkEntry};
use crate::codec::DecodeError;
use crate::consts::MAX_ONE_TIME_PREKEYS;
use crate::crypto::{KEY_LEN, SigningSecret, X25519Secret};
use crate::snapshot::{IDENTITY_SNAPSHOT_VERSION, SnapshotError, StateReader, StateWriter};

/// Smallest encoded signed prekey entry: `id:var ‖ secret:[32] ‖ not_after:var`.
const MIN_SPK_ENTRY: usize = 1 + KEY_LEN + 1;

/// Smallest encoded one-time prekey entry: `id:var ‖ secret:[32]`.
const MIN_OPK_ENTRY: usize = 1 + KEY_LEN;

impl Identity {
    /// `signing:[32] ‖ key store`, the seed of the Ed25519 identity key first.
    pub(super) fn encode_state(&self, w: &mut StateWriter) {
        w.raw(&self.signing.to_bytes()[..]);
        self.keys.encode_state(w);
    }

    /// Reverses [`encode_state`](Self::encode_state) for the snapshot's format version.
    pub(super) fn decode_state(r: &mut StateReader<'_>) -> Result<Self, SnapshotError> {
        // Version 1 is the only identity format so far; a later one adds its branch here.
        match r.version() {
            1 => {}
            found => return Err(SnapshotError::UnsupportedVersion { found, supported: IDENTITY_SNAPSHOT_VERSION }),
        }
        let signing = SigningSecret::from_bytes(&Zeroizing::new(r.array()?));
        let keys = KeyStore::decode_state(r)?;
        Ok(Identity { signing, keys })
    }
}

impl KeyStore {
    /// `next_spk:var ‖ spks:map<id:var, (secret:[32], not_after:var)> ‖ next_opk:var ‖
    /// opks:map<id:var, secret:[32]>`. The counters are the last ids issued.
    fn encode_state(&self, w: &mut StateWriter) {
        w.var(self.next_spk);
        w.map(&self.spks, |w, id, e| {
            w.var(id.0);
            w.raw(&e.secret.to_bytes()[..]);
            w.var(e.not_after);
        });
        w.var(self.next_opk);
        w.map(&self.opks, |w, id, secret| {
            w.var(id.0);
            w.raw(&secret.to_bytes()[..]);
        });
    }

    /// Reverses [`encode_state`](Self::encode_state). Refuses what the store could never
    /// hold: an id it has not issued (0, or above its counter) and more one-time prekeys
    /// than [`MAX_ONE_TIME_PREKEYS`].
    fn decode_state(r: &mut StateReader<'_>) -> Result<Self, SnapshotError> {
        let next_spk = r.var()?;
        let spks = r.map(MIN_SPK_ENTRY, |r| {
            let id = SignedPrekeyId(issued(r.var()?, next_spk)?);
            let secret = x25519_secret(r)?;
            Ok((id, SpkEntry { secret, not_after: r.var()? }))
        })?;
        let next_opk = r.var()?;
        let opks = r.map(MIN_OPK_ENTRY, |r| Ok((OneTimePrekeyId(issued(r.var()?, next_opk)?), x25519_secret(r)?)))?;
        if opks.len() > MAX_ONE_TIME_PREKEYS {
            return Err(SnapshotError::Inconsistent(
                "the key store holds more than MAX_ONE_TIME_PREKEYS one-time prekeys",
            ));
        }
        Ok(KeyStore { spks, opks, next_spk, next_opk })
    }
}

/// A prekey id, which the store issues as `1..=counter`.
fn issued(id: u64, counter: u64) -> Result<u64, SnapshotError> {
    if (1..=counter).contains(&id) {
        Ok(id)
    } else {
        Err(SnapshotError::Inconsistent("a prekey id the key store has not issued"))
    }
}

/// An X25519 secret key; the bytes read never linger outside it.
fn x25519_secret(r: &mut StateReader<'_>) -> Result<X25519Secret, DecodeError> {
    let sk = Zeroizing::new(r.array::<KEY_LEN>()?);
    Ok(X25519Secret::from_bytes(*sk))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Writer;
    use crate::snapshot::{IDENTITY_SNAPSHOT_MAGIC, SNAPSHOT_MAGIC, SNAPSHOT_VERSION};

    /// An identity snapshot written by hand: `next_spk`, the signed prekey ids, `next_opk`,
    /// the one-time prekey ids (every secret `0x42…`, every `not_after` 7).
    fn crafted(next_spk: u64, spks: &[u64], next_opk: u64, opks: &[u64]) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(IDENTITY_SNAPSHOT_MAGIC);
        w.u8(IDENTITY_SNAPSHOT_VERSION);
        w.raw(&[0x17; KEY_LEN]);
        w.var(next_spk);
        w.list(spks, |w, id| {
            w.var(*id);
            w.raw(&[0x42; KEY_LEN]);
            w.var(7);
        });
        w.var(next_opk);
        w.list(opks, |w, id| {
            w.var(*id);
            w.raw(&[0x42; KEY_LEN]);
        });
        w.into_bytes()
    }

    #[test]
    fn a_crafted_snapshot_restores_to_those_keys_and_re_encodes_identically() {
        let bytes = crafted(3, &[1, 3], 5, &[2, 4, 5]);
        let id = Identity::restore(&bytes).unwrap();
        assert_eq!(&id.snapshot()[..], &bytes[..]);
        assert_eq!(id.signing_key().to_bytes()[..], [0x17; KEY_LEN]);
        let store = id.key_store();
        assert_eq!(store.one_time_prekey_count(), 3);
        assert!(store.has_opk(OneTimePrekeyId(4)) && !store.has_opk(OneTimePrekeyId(3)));
        assert_eq!(store.spk(SignedPrekeyId(3)).unwrap().to_bytes()[..], [0x42; KEY_LEN]);
        assert!(store.spk(SignedPrekeyId(2)).is_err());
        assert_eq!((store.next_spk, store.next_opk), (3, 5));
        assert_eq!(store.spks[&SignedPrekeyId(1)].not_after, 7);
        // An empty store.
        let empty = crafted(0, &[], 0, &[]);
        assert_eq!(&Identity::restore(&empty).unwrap().snapshot()[..], &empty[..]);
    }

    #[test]
    fn unsorted_duplicate_and_unissued_ids_are_refused() {
        let not_canonical = Err(SnapshotError::Malformed(DecodeError::NotCanonicalSet));
        let unissued = Err(SnapshotError::Inconsistent("a prekey id the key store has not issued"));
        for (bytes, expected) in [
            (crafted(3, &[3, 1], 0, &[]), &not_canonical),
            (crafted(3, &[1, 1], 0, &[]), &not_canonical),
            (crafted(0, &[], 5, &[4, 2]), &not_canonical),
            (crafted(0, &[], 5, &[2, 2]), &not_canonical),
            (crafted(3, &[0], 0, &[]), &unissued),
            (crafted(3, &[4], 0, &[]), &unissued),
            (crafted(0, &[], 5, &[0]), &unissued),
            (crafted(0, &[], 5, &[6]), &unissued),
        ] {
            assert_eq!(Identity::restore(&bytes).map(|_| ()).as_ref(), expected.as_ref(), "{bytes:?}");
        }
    }

    #[test]
    fn more_one_time_prekeys_than_the_store_holds_are_refused() {
        let max = MAX_ONE_TIME_PREKEYS as u64;
        let full: Vec<u64> = (1..=max).collect();
        assert!(Identity::restore(&crafted(0, &[], max, &full)).is_ok());
        let over: Vec<u64> = (1..=max + 1).collect();
        assert!(matches!(Identity::restore(&crafted(0, &[], max + 1, &over)), Err(SnapshotError::Inconsistent(_))));
    }

    #[test]
    fn header_trailing_bytes_and_the_other_kind_are_refused() {
        let bytes = crafted(1, &[1], 1, &[1]);
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Identity::restore(&longer).err(), Some(SnapshotError::Malformed(DecodeError::TrailingBytes(1))));
        let mut b = bytes.clone();
        b[0] = SNAPSHOT_MAGIC;
        assert_eq!(
            Identity::restore(&b).err(),
            Some(SnapshotError::NotASnapshot { found: SNAPSHOT_MAGIC, expected: IDENTITY_SNAPSHOT_MAGIC })
        );
        let mut b = bytes.clone();
        b[1] = IDENTITY_SNAPSHOT_VERSION + 1;
        assert_eq!(
            Identity::restore(&b).err(),
            Some(SnapshotError::UnsupportedVersion {
                found: IDENTITY_SNAPSHOT_VERSION + 1,
                supported: IDENTITY_SNAPSHOT_VERSION
            })
        );
        assert!(matches!(Identity::restore(&[]), Err(SnapshotError::Malformed(DecodeError::Truncated { .. }))));
        // A group snapshot's header is not an identity's, and the other way round.
        let group_header = [SNAPSHOT_MAGIC, SNAPSHOT_VERSION, 0];
        assert!(matches!(Identity::restore(&group_header), Err(SnapshotError::NotASnapshot { .. })));
        assert!(matches!(crate::group::Group::restore(&bytes), Err(SnapshotError::NotASnapshot { .. })));
    }
}
