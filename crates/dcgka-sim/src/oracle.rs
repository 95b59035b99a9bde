//! The global oracles of spec §10, checked after full delivery.
//!
//! Each function returns human-readable violations; an empty list means the property holds.

use std::collections::BTreeSet;

use dcgka::events::Event;
use dcgka::group::Group;
use dcgka::ids::{MemberId, SeqNo};

use crate::{Dev, PacketKind, SentMessage, Sim};

/// The live, active groups of the simulation, with their device.
pub fn active(sim: &Sim) -> Vec<(Dev, &Group)> {
    sim.devices.iter().enumerate().filter(|(_, d)| d.active()).filter_map(|(i, d)| d.group().map(|g| (i, g))).collect()
}

/// Oracles 1, 2, 4 and 5 of §10 (oracle 3, equal update secrets, is checked through
/// decryption: see [`delivery_violations`]).
pub fn global_oracles(sim: &Sim) -> Vec<String> {
    let mut v = Vec::new();
    let groups = active(sim);
    // 1. Same membership everywhere; with late operations withheld, the group may have
    // forked (§7.5): then every active member agrees with the first one it shares a
    // member with, and forks share no live member.
    let fork_of = |g: &Group| -> (Dev, &Group) {
        let (d0, g0) = groups[0];
        if !sim.config.withhold_late_operations {
            return (d0, g0);
        }
        let live: BTreeSet<MemberId> = groups.iter().map(|(_, x)| x.me()).collect();
        let mine: BTreeSet<MemberId> = g.members().intersection(&live).copied().collect();
        groups.iter().copied().find(|(_, x)| x.members().intersection(&mine).next().is_some()).unwrap_or((d0, g0))
    };
    if !groups.is_empty() {
        for (d, g) in &groups {
            let (d0, g0) = fork_of(g);
            if g.members() != g0.members() {
                v.push(format!(
                    "oracle 1: {} has members {:?}, {} has {:?}",
                    sim.devices[*d].name,
                    sim.member_names(*d),
                    sim.devices[d0].name,
                    sim.member_names(d0)
                ));
            }
        }
    }
    // 2. Y's rt[X] equals X's own rt[X], for all current members X and Y.
    for (dx, gx) in &groups {
        let x = gx.me();
        for (dy, gy) in &groups {
            if dx != dy && gy.members().contains(&x) && !gy.same_ratchet_state(gx, &x) {
                v.push(format!(
                    "oracle 2: {}'s ratchet state for {} differs from its own",
                    sim.devices[*dy].name, sim.devices[*dx].name
                ));
            }
        }
    }
    // 4. No member secret remains for a (message, member) pair whose ack was processed:
    // every entry left must belong to someone who is not a current member, or to a member
    // whose instance no device holds, which therefore never acknowledges anything. (With
    // late operations withheld, a fork can add a device that lives on in the other fork:
    // its Welcome stays pending there, §7.5.)
    let live: BTreeSet<MemberId> = groups.iter().map(|(_, g)| g.me()).collect();
    for (d, g) in &groups {
        let members = g.members();
        for (s, q, id) in g.member_secret_keys() {
            if members.contains(&id) && live.contains(&id) {
                v.push(format!(
                    "oracle 4: {} still holds the member secret of {} for ({}, {})",
                    sim.devices[*d].name,
                    sim.name_of_member(&id),
                    sim.name_of_member(&s),
                    q
                ));
            }
        }
    }
    // 5. Identical histories (within a fork).
    if !groups.is_empty() {
        for (d, g) in &groups {
            let (d0, g0) = fork_of(g);
            let (h, h0) = (g.history(), g0.history());
            let (live, live0): (BTreeSet<&MemberId>, BTreeSet<&MemberId>) =
                (h.live_members().collect(), h0.live_members().collect());
            // A member retired at one of the two (§5.7) may still be live at the other:
            // compare over the members live at both.
            let retired: BTreeSet<MemberId> = [*d, d0].iter().flat_map(|x| retired_at(sim, *x)).collect();
            let same = if live == live0 {
                h.same_history(h0)
            } else {
                live.symmetric_difference(&live0).all(|m| retired.contains(*m))
                    && h.same_history_among(h0, &live.intersection(&live0).copied().collect())
            };
            if !same {
                v.push(format!("oracle 5: {}'s history differs from {}'s", sim.devices[*d].name, sim.devices[d0].name));
            }
        }
    }
    v
}

/// Whether device `d` must decrypt message `m`: its instance `g` was in the sender's view
/// when it was sent and is among the `final_members`, and the message does not depend on
/// an operation that `d` withholds for good ([`withheld_at`]).
pub fn must_decrypt(sim: &Sim, d: Dev, g: &Group, m: &SentMessage, final_members: &BTreeSet<MemberId>) -> bool {
    let me = g.me();
    if d == m.from || !m.view.contains(&me) || !final_members.contains(&me) {
        return false;
    }
    let PacketKind::Envelope(_, seq) = sim.transcript[m.packet].kind else { return true };
    !withheld_at(sim, d, g, m.sender, seq.0.saturating_sub(1))
}

/// Whether `sender`'s envelopes up to `upto` are out of reach at device `d` (instance `g`)
/// because of a late operation withheld there for good (§7.5): one of `sender`'s own at or
/// below `upto` (it blocks the rest of its stream), or the add that introduced `sender`
/// (its instance then never exists there), recursively.
pub fn withheld_at(sim: &Sim, d: Dev, g: &Group, sender: MemberId, upto: u64) -> bool {
    let (mut sender, mut upto) = (sender, upto);
    // Each step goes to the adder of an instance, so the chain ends (bounded for safety).
    for _ in 0..sim.devices.len() * 8 {
        // A member `g` no longer knows (forgotten after its removal, §6.7) has no
        // high-water mark here: only a known sender's withheld operations are looked at (a
        // member whose operation is withheld is live, so never forgotten).
        if g.ever_added().contains(&sender) {
            let hwm = g.sync_state().get(&sender).copied().unwrap_or(SeqNo(0));
            return sim.devices[d].events.iter().any(|e| {
                matches!(e, Event::LateOperationWithheld { sender: s, seq: q } if *s == sender && q.0 <= upto && hwm < *q)
            });
        }
        // Not introduced here: look at the add that introduced it, in its own history.
        let own = sim.devices.iter().flat_map(|x| x.retired.iter().chain(x.group())).find(|x| x.me() == sender);
        let Some(op) = own.and_then(|x| x.history().addop(&sender).cloned()) else { return false };
        (sender, upto) = (op.sender, op.seq);
    }
    false
}

/// The members device `d` retired (the retention period of §5.7).
fn retired_at(sim: &Sim, d: Dev) -> BTreeSet<MemberId> {
    sim.devices[d]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::MemberRetired { member } => Some(*member),
            _ => None,
        })
        .collect()
}

/// Every application message must have been decrypted by every device whose instance was
/// in the sender's view when it was sent and is still a member at the end (unless it comes
/// after a late operation withheld there, [`must_decrypt`]).
pub fn delivery_violations(sim: &Sim) -> Vec<String> {
    delivery_violations_from(sim, 0)
}

/// [`delivery_violations`] for the messages sent from the `from`-th on.
pub fn delivery_violations_from(sim: &Sim, from: usize) -> Vec<String> {
    let mut v = Vec::new();
    let groups = active(sim);
    let first: BTreeSet<_> = groups.first().map(|(_, g)| g.members()).unwrap_or_default();
    for m in &sim.messages[from.min(sim.messages.len())..] {
        for (d, g) in &groups {
            // With withholding the group may have forked: each member judged in its fork.
            let final_members = if sim.config.withhold_late_operations { g.members() } else { first.clone() };
            if must_decrypt(sim, *d, g, m, &final_members) && !sim.decrypted(*d, m.packet) {
                v.push(format!(
                    "delivery: {} did not decrypt message #{} from {}",
                    sim.devices[*d].name, m.packet, sim.devices[m.from].name
                ));
            }
        }
    }
    v
}

/// No live instance, and no adversarial shadow (a removed instance's state, kept
/// processing past its removal with the full transcript; see [`crate::SimDevice::shadows`]),
/// decrypts a message whose sender's view did not contain that instance when it was sent
/// (§11.1, §11.2). Call [`Sim::feed_transcript_to_shadows`] first.
pub fn confidentiality_violations(sim: &Sim) -> Vec<String> {
    let mut v = Vec::new();
    for dev in &sim.devices {
        // The live instance: what it decrypted itself.
        if let Some(g) = dev.group() {
            let me = g.me();
            for e in &dev.events[dev.instance_start.min(dev.events.len())..] {
                let dcgka::events::Event::Message { sender, seq, plaintext, .. } = e else { continue };
                let sent = sim.messages.iter().find(|m| {
                    m.sender == *sender
                        && m.plaintext == *plaintext
                        && matches!(sim.transcript[m.packet].kind, crate::PacketKind::Envelope(_, s) if s == *seq)
                });
                if let Some(m) = sent
                    && !m.view.contains(&me)
                {
                    v.push(format!(
                        "confidentiality: {} (instance {}) decrypted message #{} from {}, sent outside its view",
                        dev.name, me, m.packet, sim.devices[m.from].name
                    ));
                }
            }
        }
        for sh in &dev.shadows {
            let me = sh.group.me();
            for e in &sh.events {
                let dcgka::events::Event::Message { sender, seq, plaintext, .. } = e else { continue };
                let sent = sim.messages.iter().find(|m| {
                    m.sender == *sender
                        && m.plaintext == *plaintext
                        && matches!(sim.transcript[m.packet].kind, crate::PacketKind::Envelope(_, s) if s == *seq)
                });
                match sent {
                    Some(m) if !m.view.contains(&me) => v.push(format!(
                        "confidentiality: the state of {} (instance {}) decrypts message #{} from {}, sent outside its view",
                        dev.name, me, m.packet, sim.devices[m.from].name
                    )),
                    Some(_) => {}
                    None => v.push(format!("confidentiality: {} decrypted a message nobody sent", dev.name)),
                }
            }
        }
    }
    v
}
