//! Tests of the foundation layers: 2SM, prekeys, identity snapshots, signatures, the wire
//! codec, frozen known-answer vectors and snapshot fixtures, and redaction of secrets in
//! `Debug`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bounds;
mod debug;
mod fixtures;
mod identity_snapshot;
mod kat;
mod signatures;
mod two_party;
mod wire;

use dcgka::crypto::IdentityKey;
use dcgka::ids::{GroupId, MemberId, Origin, SeqNo};
use dcgka::prekeys::{Identity, InMemoryPrekeyDirectory};
use dcgka::two_party::TwoPartySession;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// A fixed "now" for prekey validity checks.
pub const NOW: u64 = 1_800_000_000;

/// A deterministic CSPRNG for tests.
pub fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// One device in one group: its identity, MID, and 2SM session with the peer.
pub struct Device {
    /// Long-term identity and key store.
    pub identity: Identity,
    /// Membership instance ID.
    pub mid: MemberId,
    /// 2SM session with the other device.
    pub session: TwoPartySession,
}

/// Two devices A and B in one group, with prekeys published (`opks` one-time prekeys each).
pub fn two_devices(rng: &mut ChaCha20Rng, opks: usize) -> (Device, Device, InMemoryPrekeyDirectory) {
    let gid = GroupId([7; 32]);
    let mut dir = InMemoryPrekeyDirectory::new();
    let mut ia = Identity::generate(rng);
    let mut ib = Identity::generate(rng);
    dir.publish_identity(rng, &mut ia, NOW, opks).unwrap();
    dir.publish_identity(rng, &mut ib, NOW, opks).unwrap();
    let (ika, ikb): (IdentityKey, IdentityKey) = (ia.public_key(), ib.public_key());
    let a = MemberId::derive(&gid, &ika, Origin::Creator);
    let b = MemberId::derive(&gid, &ikb, Origin::Operation(a, SeqNo(1)));
    (
        Device { identity: ia, mid: a, session: TwoPartySession::new(gid, a, b, ikb) },
        Device { identity: ib, mid: b, session: TwoPartySession::new(gid, b, a, ika) },
        dir,
    )
}
