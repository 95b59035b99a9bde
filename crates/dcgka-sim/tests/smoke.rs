//! Smoke test: one group life cycle over the simulator.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use dcgka_sim::Sim;

#[test]
fn create_send_add_remove_update() {
    let mut sim = Sim::new(4, 1);
    sim.create(0, &[1, 2]).unwrap();
    sim.deliver_all();
    println!("errors: {:?}", sim.errors());
    for d in 0..3 {
        assert_eq!(sim.member_names(d), ["A", "B", "C"].iter().map(|s| s.to_string()).collect(), "at {d}");
    }
    let m = sim.send(0, b"hello").unwrap();
    sim.deliver_all();
    assert!(sim.decrypted(1, *m.last().unwrap()));
    assert!(sim.decrypted(2, *m.last().unwrap()));
    sim.add(1, 3).unwrap();
    sim.deliver_all();
    println!("errors: {:?}", sim.errors());
    for d in 0..4 {
        assert_eq!(sim.member_names(d).len(), 4, "at {d}: {:?}", sim.member_names(d));
    }
    let m = sim.send(3, b"from d").unwrap();
    sim.deliver_all();
    for d in 0..3 {
        assert!(sim.decrypted(d, *m.last().unwrap()), "{d}");
    }
    sim.remove(0, 1).unwrap();
    sim.deliver_all();
    println!("errors: {:?}", sim.errors());
    for d in [0, 2, 3] {
        assert_eq!(sim.member_names(d), ["A", "C", "D"].iter().map(|s| s.to_string()).collect(), "at {d}");
    }
    sim.update(2).unwrap();
    sim.deliver_all();
    let m = sim.send(2, b"after").unwrap();
    sim.deliver_all();
    assert!(sim.decrypted(0, *m.last().unwrap()));
    assert!(sim.decrypted(3, *m.last().unwrap()));
    assert!(!sim.decrypted(1, *m.last().unwrap()));
    assert!(sim.errors().is_empty(), "{:?}", sim.errors());
}
