//! The retention period of §5.7 (issue 10, item 3): what a member keeps for slow or absent
//! members is dropped once the period runs out, with an event, and the trade-off shows: a
//! member with a longer period still reads what one with a shorter period no longer can.
//!
//! Each test moves the simulation's clock (`Sim::now`) and asserts outcomes: which events
//! were reported, who decrypted what, which secrets and ratchets are held, how long the
//! membership history is, and who is a member where.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{created, deliver_all_except, group};
use dcgka::consts::DEFAULT_RETENTION_SECS;
use dcgka::events::Event;
use dcgka::group::{Group, GroupConfig};
use dcgka::ids::{MemberId, SeqNo};
use dcgka_sim::names::{A, B, C, D, E};
use dcgka_sim::{Dev, Sim};

const DAY: u64 = 24 * 60 * 60;

/// Sets `d`'s retention period in its live group (a test hook: not committed).
fn set_retention(sim: &mut Sim, d: Dev, secs: u64) {
    let (g, _) = sim.devices[d].group_mut().unwrap();
    let config = GroupConfig { retention_secs: secs, ..g.config() };
    g.set_config(config);
}

/// The plaintexts `d` decrypted from `sender`.
fn read_from(sim: &Sim, d: Dev, sender: MemberId) -> Vec<Vec<u8>> {
    sim.devices[d]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Message { sender: s, plaintext, .. } if *s == sender => Some(plaintext.clone()),
            _ => None,
        })
        .collect()
}

/// How many events at `d` match `f`.
fn count(sim: &Sim, d: Dev, f: impl Fn(&Event) -> bool) -> usize {
    sim.devices[d].events.iter().filter(|e| f(e)).count()
}

/// The sequence number of the update `d` sent last (its first transcript id is the update).
fn update_seq(sim: &Sim, d: Dev) -> SeqNo {
    group(sim, d).seq()
}

#[test]
fn a_removed_member_that_never_says_farewell_is_retired_after_the_retention_period() {
    let mut sim = created(5, &[B, C, D], 41);
    let d_mid = sim.mid(D).unwrap();
    // D is away: A removes it, and D never processes its removal (no farewell).
    sim.remove(A, D).unwrap();
    deliver_all_except(&mut sim, &[D]);
    // What D sent concurrently with its removal is still readable: it was written before D
    // knew, and A, B and C keep D's state for it.
    let concurrent = sim.send(D, b"sent before D knew").unwrap();
    for to in [A, B, C] {
        for id in &concurrent {
            sim.deliver_id(to, *id);
        }
    }
    let late = sim.send(D, b"arrives after the retention period").unwrap();
    for d in [A, B, C] {
        assert_eq!(read_from(&sim, d, d_mid), vec![b"sent before D knew".to_vec()], "device {d}");
        assert!(!group(&sim, d).members().contains(&d_mid));
        // D never said farewell: the history is held back for it, and its ratchet is kept.
        assert!(group(&sim, d).history().unfolded_len() > 0, "device {d}");
        assert!(group(&sim, d).has_ratchet_state(&d_mid), "device {d}");
    }
    // B keeps what it keeps for ever.
    set_retention(&mut sim, B, u64::MAX);
    let held_back = group(&sim, A).history().unfolded_len();

    // One second short of the period, nothing happens.
    sim.now += DEFAULT_RETENTION_SECS - 1;
    sim.collect_garbage(A).unwrap();
    assert_eq!(count(&sim, A, |e| matches!(e, Event::MemberRetired { .. })), 0);
    assert_eq!(group(&sim, A).history().unfolded_len(), held_back);
    assert_eq!(group(&sim, A).next_expiry(), Some(dcgka_sim::NOW + DEFAULT_RETENTION_SECS));
    // The period is in the snapshot: a restored copy expires at the same time.
    let restored = Group::restore(&group(&sim, A).snapshot()).unwrap();
    assert_eq!(restored.next_expiry(), group(&sim, A).next_expiry());

    sim.now += 1;
    sim.collect_garbage(A).unwrap();
    sim.collect_garbage(C).unwrap();
    sim.collect_garbage(B).unwrap();
    for d in [A, C] {
        assert_eq!(count(&sim, d, |e| matches!(e, Event::MemberRetired { member } if *member == d_mid)), 1);
        let g = group(&sim, d);
        assert!(!g.has_ratchet_state(&d_mid), "device {d}: D's ratchet is erased");
        // D no longer holds the compaction back.
        assert!(g.history().unfolded_len() < held_back, "device {d}");
        assert_eq!(g.next_expiry(), None);
    }
    assert_eq!(count(&sim, B, |e| matches!(e, Event::MemberRetired { .. })), 0);
    assert!(group(&sim, B).has_ratchet_state(&d_mid));

    // D's late message: refused where D was retired, read where it was not (the trade-off).
    for to in [A, B, C] {
        for id in &late {
            sim.deliver_id(to, *id);
        }
    }
    for d in [A, C] {
        assert_eq!(read_from(&sim, d, d_mid).len(), 1, "device {d} reads nothing more of D");
    }
    assert_eq!(read_from(&sim, B, d_mid).len(), 2);
    // The group goes on: everyone still reads everyone.
    sim.send(C, b"still here").unwrap();
    deliver_all_except(&mut sim, &[D]);
    let c_mid = sim.mid(C).unwrap();
    for d in [A, B] {
        assert_eq!(read_from(&sim, d, c_mid), vec![b"still here".to_vec()], "device {d}");
        assert_eq!(group(&sim, d).members(), group(&sim, C).members());
    }
}

#[test]
fn member_secrets_of_a_member_that_never_acknowledges_expire_and_it_recovers_at_its_next_update() {
    let mut sim = created(5, &[B, C, D], 42);
    let (a_mid, d_mid) = (sim.mid(A).unwrap(), sim.mid(D).unwrap());
    // D is offline while A updates: A, B and C hold the member secret of D for that update.
    sim.update(A).unwrap();
    let q = update_seq(&sim, A);
    deliver_all_except(&mut sim, &[D]);
    for d in [A, B, C] {
        assert_eq!(group(&sim, d).member_secrets_pending(&a_mid, q), vec![d_mid], "device {d}");
    }
    set_retention(&mut sim, B, u64::MAX);
    assert_eq!(group(&sim, A).next_expiry(), Some(dcgka_sim::NOW + DEFAULT_RETENTION_SECS));

    sim.now += DEFAULT_RETENTION_SECS;
    for d in [A, B, C] {
        sim.collect_garbage(d).unwrap();
    }
    for d in [A, C] {
        assert_eq!(
            count(&sim, d, |e| matches!(e, Event::SecretsExpired { member, erased: 1 } if *member == d_mid)),
            1,
            "device {d}"
        );
        assert!(group(&sim, d).member_secrets_pending(&a_mid, q).is_empty(), "device {d}");
        assert_eq!(group(&sim, d).member_secret_count(), 0, "device {d}");
        // D is still a member: only secrets went.
        assert!(group(&sim, d).members().contains(&d_mid));
    }
    assert_eq!(group(&sim, B).member_secrets_pending(&a_mid, q), vec![d_mid]);

    // D comes back, acknowledges A's update and writes: A and C can no longer read it, B can.
    sim.deliver_all();
    sim.send(D, b"after my ack").unwrap();
    sim.deliver_all();
    assert_eq!(read_from(&sim, B, d_mid), vec![b"after my ack".to_vec()]);
    for d in [A, C] {
        assert!(read_from(&sim, d, d_mid).is_empty(), "device {d}");
        assert_eq!(count(&sim, d, |e| matches!(e, Event::Undecryptable { sender, .. } if *sender == d_mid)), 1);
    }
    // Nobody was cut off and nobody's view differs: D's ack was accepted everywhere.
    for d in [A, B, C, D] {
        assert!(sim.devices[d].errors.is_empty(), "device {d}: {:?}", sim.devices[d].errors);
        assert_eq!(group(&sim, d).members(), group(&sim, A).members(), "device {d}");
    }
    // While its ratchet is lost here, D adds E: E's ratchet, which starts from D's, is
    // lost at A and C too, with no harm to the group; B reads E.
    sim.add(D, E).unwrap();
    sim.deliver_all();
    let e_mid = sim.mid(E).unwrap();
    sim.send(E, b"new here").unwrap();
    sim.deliver_all();
    assert_eq!(read_from(&sim, B, e_mid), vec![b"new here".to_vec()]);
    for d in [A, C] {
        assert!(read_from(&sim, d, e_mid).is_empty(), "device {d}");
        assert!(group(&sim, d).members().contains(&e_mid), "device {d}");
    }
    sim.update(E).unwrap();
    sim.deliver_all();
    sim.send(E, b"re-keyed").unwrap();
    sim.deliver_all();
    for d in [A, B, C, D] {
        assert_eq!(read_from(&sim, d, e_mid).last().unwrap(), b"re-keyed", "device {d}");
    }
    // D's next update re-keys it from a fresh seed: everyone reads it again.
    sim.update(D).unwrap();
    sim.deliver_all();
    sim.send(D, b"after my update").unwrap();
    sim.deliver_all();
    for d in [A, B, C] {
        assert_eq!(read_from(&sim, d, d_mid).last().unwrap(), b"after my update", "device {d}");
    }
    // And D reads the others as before; nobody reported an error.
    sim.send(A, b"to everyone").unwrap();
    sim.deliver_all();
    assert_eq!(read_from(&sim, D, a_mid), vec![b"to everyone".to_vec()]);
    for d in [A, B, C, D, E] {
        assert!(sim.devices[d].errors.is_empty(), "device {d}: {:?}", sim.devices[d].errors);
        assert_eq!(*group(&sim, d).status(), dcgka::group::Status::Active, "device {d}");
    }
}

#[test]
fn a_retention_period_that_never_ends_keeps_everything() {
    let mut sim = created(5, &[B, C, D], 43);
    sim.config.retention_secs = u64::MAX;
    for d in [A, B, C, D] {
        set_retention(&mut sim, d, u64::MAX);
    }
    let d_mid = sim.mid(D).unwrap();
    sim.update(A).unwrap();
    sim.remove(B, D).unwrap();
    deliver_all_except(&mut sim, &[D]);
    let held = group(&sim, A).member_secret_count();
    assert!(held > 0);
    sim.now += 100 * 365 * DAY;
    sim.collect_garbage(A).unwrap();
    assert_eq!(group(&sim, A).member_secret_count(), held);
    assert!(group(&sim, A).has_ratchet_state(&d_mid));
    assert_eq!(group(&sim, A).next_expiry(), None);
    assert_eq!(count(&sim, A, |e| matches!(e, Event::MemberRetired { .. } | Event::SecretsExpired { .. })), 0);
}
