//! Local operations are transactions: an add is staged (validated, the newcomer's prekey
//! bundle fetched) before a pending heal update runs, so a refused add changes nothing,
//! not even the heal.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{group, observe};
use dcgka::group::{Context, GroupError};
use dcgka::prekeys::InMemoryPrekeyDirectory;
use dcgka_sim::names::{A, B, C, D, E};
use dcgka_sim::{NOW, Sim};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

#[test]
fn a_refused_add_with_a_heal_pending_changes_nothing() {
    let mut sim = Sim::new(5, 1001);
    sim.create(A, &[B, C]).unwrap();
    sim.deliver_all();
    // B removes C while A adds D; D joins from A's Welcome, then processes B's removal,
    // whose seed it did not receive: a heal is pending at D (§5.8).
    let b2 = *sim.remove(B, C).unwrap().last().unwrap();
    let ids = sim.add(A, D).unwrap();
    assert!(sim.deliver_id(D, ids[1]), "D's Welcome");
    assert!(sim.deliver_id(D, b2), "B's removal");
    let g = group(&sim, D);
    assert!(g.heal_pending());
    let before = observe(g);
    // D adds E without E's prekey bundle: refused, and neither the heal update nor the add
    // happened.
    let e_ik = sim.ik(E);
    let (g, identity) = sim.devices[D].group_mut().unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let mut empty = InMemoryPrekeyDirectory::new();
    let mut ctx = Context { rng: &mut rng, now: NOW, prekeys: &mut empty, identity };
    assert_eq!(g.add(&mut ctx, e_ik), Err(GroupError::MissingPrekeyBundle(e_ik)));
    assert!(g.heal_pending());
    assert_eq!(observe(g), before);
    // With the bundle, the same add performs the heal update first, then the add.
    let ids = sim.add(D, E).unwrap();
    assert_eq!(ids.len(), 3, "heal update, add, Welcome");
    assert!(!sim.devices[D].group().unwrap().heal_pending());
    sim.deliver_all();
    assert!(sim.devices[E].active());
    assert_eq!(sim.member_names(E), sim.member_names(A));
}

/// A prekey bundle whose one-time prekey is a small-order point (signed by its owner, so
/// it passes the signature checks) is refused when fetched: the add fails and changes
/// nothing, where it used to corrupt the adder's group (docs/protocol.md §3).
#[test]
fn an_add_to_a_small_order_prekey_is_refused_and_changes_nothing() {
    use dcgka::consts::PREKEY_DEFAULT_VALIDITY;
    use dcgka::crypto::{X25519Public, labels};
    let mut sim = Sim::new(5, 1002);
    sim.create(A, &[B, C]).unwrap();
    sim.deliver_all();
    let e_ik = sim.ik(E);
    let signer = sim.devices[E].identity().signing_key().clone();
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let mut scratch = dcgka::prekeys::Identity::generate(&mut rng);
    let mut dir = InMemoryPrekeyDirectory::new();
    // E's genuine signed prekey, and a one-time prekey at the zero point signed by E.
    let mut spk = scratch.new_signed_prekey(&mut rng, NOW, NOW + PREKEY_DEFAULT_VALIDITY);
    spk.value.ik = e_ik;
    spk.signature = signer.sign(labels::SIG_SIGNED_PREKEY, &[&dcgka::codec::Encode::to_bytes(&spk.value)]);
    let mut opk = scratch.new_one_time_prekeys(&mut rng, 1, NOW + PREKEY_DEFAULT_VALIDITY).unwrap().remove(0);
    opk.value.ik = e_ik;
    opk.value.opk_pub = X25519Public([0; 32]);
    opk.signature = signer.sign(labels::SIG_ONE_TIME_PREKEY, &[&dcgka::codec::Encode::to_bytes(&opk.value)]);
    dir.publish_signed_prekey(spk);
    dir.publish_one_time_prekeys(vec![opk]);
    let before = observe(group(&sim, A));
    let (g, identity) = sim.devices[A].group_mut().unwrap();
    let mut ctx = Context { rng: &mut rng, now: NOW, prekeys: &mut dir, identity };
    let err = g.add(&mut ctx, e_ik).unwrap_err();
    // A refused bundle counts as a missing one (§3): fetch another and retry.
    assert_eq!(err, GroupError::MissingPrekeyBundle(e_ik));
    assert_eq!(observe(g), before, "the refused add changed nothing");
    // The group goes on: an honest add of E reaches everyone.
    sim.add(A, E).unwrap();
    sim.deliver_all();
    assert!(sim.devices[E].active());
    assert_eq!(sim.member_names(E), sim.member_names(A));
}
