//! Unit tests of the group layer that need its internals.

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::*;
use crate::consts::MAX_GROUP;
use crate::dgm::Op;
use crate::prekeys::InMemoryPrekeyDirectory;

/// An adder whose history introduced more than `MAX_GROUP` instances refuses to add, as the
/// newcomer would refuse the Welcome (§7.4), and nothing changes.
#[test]
fn an_adder_whose_history_exceeds_the_welcome_bound_refuses_to_add() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let now = 1_800_000_000;
    let mut dir = InMemoryPrekeyDirectory::new();
    let mut alice = Identity::generate(&mut rng);
    let mut bob = Identity::generate(&mut rng);
    dir.publish_identity(&mut rng, &mut alice, now, 10).unwrap();
    dir.publish_identity(&mut rng, &mut bob, now, 10).unwrap();
    let mut ctx = Context { rng: &mut rng, now, prekeys: &mut dir, identity: &mut alice };
    let (mut g, _) = Group::create(&mut ctx, &[], GroupConfig::default()).unwrap();
    // The history a long-lived group would have: Alice added (and so introduced) more
    // instances than a Welcome may carry.
    let me = g.me();
    for k in 0..MAX_GROUP as u64 {
        let mut target = [0x77; 32];
        target[..8].copy_from_slice(&k.to_le_bytes());
        g.d.h.apply(Op::Add { sender: me, seq: k + 2, target: MemberId(target) }).unwrap();
    }
    assert_eq!(g.d.h.ever_added().len(), MAX_GROUP + 1);
    let before = g.snapshot();
    let r = g.add(&mut ctx, bob.public_key());
    assert!(matches!(r, Err(GroupError::InvalidOperation(RejectReason::InvalidAdd(_)))), "{r:?}");
    assert_eq!(g.snapshot(), before, "nothing changed");
}
