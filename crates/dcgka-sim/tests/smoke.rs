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

#[test]
fn oracles_hold_after_a_random_run() {
    let mut sim = Sim::new(5, 3);
    sim.create(0, &[1, 2, 3]).unwrap();
    sim.deliver_random(10, 10);
    sim.send(1, b"x").unwrap();
    sim.update(2).unwrap();
    sim.add(0, 4).unwrap();
    sim.remove(3, 1).unwrap();
    sim.send(2, b"y").unwrap();
    sim.deliver_random(10, 10);
    sim.send(0, b"z").unwrap();
    sim.deliver_random(10, 10);
    let v = dcgka_sim::oracle::global_oracles(&sim);
    assert!(v.is_empty(), "{v:#?}");
    let v = dcgka_sim::oracle::delivery_violations(&sim);
    assert!(v.is_empty(), "{v:#?}");
    assert!(sim.errors().is_empty(), "{:?}", sim.errors());
    println!("members: {:?}", sim.member_names(0));
}

#[test]
fn removed_members_state_decrypts_nothing_after_removal() {
    let mut sim = Sim::new(4, 5);
    sim.shadows = true;
    sim.create(0, &[1, 2, 3]).unwrap();
    sim.deliver_all();
    let before = sim.send(1, b"before").unwrap();
    sim.deliver_all();
    sim.remove(0, 3).unwrap();
    sim.deliver_all();
    let after = sim.send(1, b"after").unwrap();
    sim.deliver_all();
    sim.feed_transcript_to_shadows();
    let v = dcgka_sim::oracle::confidentiality_violations(&sim);
    assert!(v.is_empty(), "{v:#?}");
    let shadow_of_d = &sim.devices[3].shadows[0];
    let got: Vec<&[u8]> = shadow_of_d
        .events
        .iter()
        .filter_map(|e| match e {
            dcgka::events::Event::Message { plaintext, .. } => Some(plaintext.as_slice()),
            _ => None,
        })
        .collect();
    assert_eq!(got, vec![b"before".as_slice()], "the removed member's state reads exactly the pre-removal message");
    assert!(sim.decrypted(3, *before.last().unwrap()));
    assert!(!sim.decrypted(3, *after.last().unwrap()));
}
