//! The §10 scenarios: membership outcomes on the DGM-level network.

use super::net::{Net, Status};
use super::*;

/// The final history of `n`, replayed in its own order and 200 random causal orders.
fn replay_sampled_orders(net: &Net, n: Id) {
    let h = net.hist(n).clone();
    let expected = h.view_me();
    let mut orders = sampled_orders(h.ops(), 200, u64::from(n));
    orders.push((0..h.len()).collect());
    check_orders(h.ops(), &orders, |r| assert_eq!(r.view_me(), expected));
}

#[test]
fn s1_fig2_create_ack_add_update_remove() {
    let mut net = Net::new(A, &[B]); // A1
    net.step(B, A); // B ⟵ A1 → B1
    net.step(A, B); // A ⟵ B1
    let b2 = net.add(B, C); // B2
    assert!(net.join(C)); // C ⟵ B2 → C1
    net.step(A, B); // A ⟵ B2 → A2 (add-ack)
    net.deliver_all(); // everyone processes C1 and A2
    assert_eq!(net.hist(A).view_me(), set(&[A, B, C]));
    net.update(C); // C2
    net.step(B, C); // B ⟵ C2 → B3
    net.step(C, B); // C ⟵ B3
    net.update(A); // A3
    let c3 = net.remove(C, A); // C3
    assert_eq!(c3, id(C, 3));
    net.step(B, C); // B ⟵ C3 → B4
    net.step(C, B); // C ⟵ B4
    net.step(B, A); // B ⟵ A3 → B5 (A already removed in B's view)
    net.step(C, A); // C ⟵ A3 → C4
    assert_eq!(net.nodes[&C].seq, 4);
    net.step(A, C); // A ⟵ C2 → A4
    net.step(A, B); // A ⟵ B3
    net.step(A, C); // A ⟵ C3 → removed
    assert_eq!(net.status(A), Status::Stopped);
    net.settle(); // B and C process A4, a concurrent message from a removed member
    net.assert_converged();
    for x in [B, C] {
        let h = net.hist(x);
        assert_eq!(h.view_me(), set(&[B, C]));
        assert!(h.is_add(&b2) && h.is_remove(&c3));
        assert!(!h.has_acked(&c3, &A), "A never acks its own removal");
        assert!(h.has_acked(&c3, &B));
        // A4 acked C's update C2 and is concurrent with C3: not a post-removal ack.
        assert!(!h.follows_own_removal(&A, &id(C, 2)));
    }
    replay_sampled_orders(&net, B);
}

#[test]
fn s5_remove_concurrent_with_update() {
    for a2_first in [true, false] {
        let mut net = Net::setup(A, &[B, C]);
        net.remove(A, C); // A2
        net.update(C); // C2
        if a2_first {
            net.step(B, A);
            net.step(B, C);
        } else {
            net.step(B, C);
            net.step(B, A);
        }
        net.settle();
        net.assert_converged();
        assert_eq!(net.status(C), Status::Stopped);
        assert_eq!(net.live(), set(&[A, B]));
        assert_eq!(net.hist(B).view_me(), set(&[A, B]));
        replay_sampled_orders(&net, B);
    }
}

#[test]
fn s6_mutual_removes() {
    for c_first in [A, B] {
        for d_first in [A, B] {
            let mut net = Net::setup(A, &[B, C, D]);
            net.remove(A, B); // A2
            net.remove(B, A); // B2
            let other = |x| if x == A { B } else { A };
            net.step(C, c_first);
            net.step(C, other(c_first));
            net.step(D, d_first);
            net.step(D, other(d_first));
            net.settle();
            net.assert_converged();
            assert_eq!(net.status(A), Status::Stopped);
            assert_eq!(net.status(B), Status::Stopped);
            assert_eq!(net.hist(C).view_me(), set(&[C, D]));
            replay_sampled_orders(&net, C);
        }
    }
}

#[test]
fn s7_two_concurrent_removes_of_different_members() {
    for swap in [false, true] {
        let mut net = Net::setup(A, &[B, C, D]);
        net.remove(A, C); // A2
        net.remove(B, D); // B2
        let (c_first, d_first) = if swap { (A, B) } else { (B, A) };
        let other = |x| if x == A { B } else { A };
        net.step(C, c_first);
        if net.status(C) == Status::Live {
            net.step(C, other(c_first));
        }
        net.step(D, d_first);
        if net.status(D) == Status::Live {
            net.step(D, other(d_first));
        }
        assert_eq!(net.status(C), Status::Stopped);
        assert_eq!(net.status(D), Status::Stopped);
        net.settle();
        net.assert_converged();
        assert_eq!(net.live(), set(&[A, B]));
        if !swap {
            // C acked B2 before it processed its own removal: an honest ack.
            assert!(net.hist(A).has_acked(&id(B, 2), &C));
            assert!(!net.hist(A).has_acked(&id(A, 2), &C));
        }
        replay_sampled_orders(&net, A);
    }
}

#[test]
fn s8_remove_concurrent_with_add_by_removed_member() {
    for remove_first in [true, false] {
        let mut net = Net::setup(A, &[B, C]);
        let a2 = net.remove(A, B); // A2
        net.add(B, E); // B2
        if remove_first {
            net.step(C, A);
            net.step(C, B);
            // E is cancelled at once: never a member at C.
            assert!(!net.hist(C).view_me().contains(&E));
            assert_eq!(net.hist(C).removed_by(&E), vec![a2.clone()]);
        } else {
            net.step(C, B);
            assert!(net.hist(C).view_me().contains(&E));
            net.step(C, A);
            assert!(!net.hist(C).view_me().contains(&E));
        }
        net.step(A, B); // A ⟵ B2: cancelled at once
        assert!(!net.hist(A).view_me().contains(&E));
        assert_eq!(net.hist(A).removed_by(&E), vec![a2.clone()]);
        assert!(net.join(E));
        net.step(E, A); // E processes A2 above its horizon and terminates
        assert_eq!(net.status(E), Status::Stopped);
        net.settle();
        net.assert_converged();
        assert_eq!(net.live(), set(&[A, C]));
        assert_eq!(net.hist(C).targets(&a2), Some(&set(&[B, E])));
        replay_sampled_orders(&net, C);
    }
}

#[test]
fn s9_partition_then_heal() {
    let mut net = Net::setup(A, &[B, C, D]);
    net.side = Some(BTreeMap::from([(A, false), (B, false), (C, true), (D, true)]));
    net.add(A, E);
    assert!(net.join(E));
    net.update(B);
    net.step(A, B); // A acks B's update
    net.deliver_all(); // within each side
    assert_eq!(net.hist(E).view_me(), set(&[A, B, C, D, E]));
    net.remove(C, D);
    net.step(D, C);
    assert_eq!(net.status(D), Status::Stopped);
    net.deliver_all();
    assert_eq!(net.hist(C).view_me(), set(&[A, B, C]));
    assert_eq!(net.hist(A).view_me(), set(&[A, B, C, D, E]));
    net.settle();
    net.assert_converged();
    assert_eq!(net.live(), set(&[A, B, C, E]));
    for x in [A, B, C, E] {
        assert_eq!(net.hist(x).view_me(), set(&[A, B, C, E]));
        assert!(net.hist(x).removed_by(&E).is_empty(), "no cascade to E");
    }
    replay_sampled_orders(&net, C);
}
