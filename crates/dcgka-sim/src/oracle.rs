//! The global oracles of spec §10, checked after full delivery.
//!
//! Each function returns human-readable violations; an empty list means the property holds.

use std::collections::BTreeSet;

use dcgka::group::Group;

use crate::{Dev, Sim};

/// The live, active groups of the simulation, with their device.
pub fn active(sim: &Sim) -> Vec<(Dev, &Group)> {
    sim.devices.iter().enumerate().filter(|(_, d)| d.active()).filter_map(|(i, d)| d.group().map(|g| (i, g))).collect()
}

/// Oracles 1, 2, 4 and 5 of §10 (oracle 3, equal update secrets, is checked through
/// decryption: see [`delivery_violations`]).
pub fn global_oracles(sim: &Sim) -> Vec<String> {
    let mut v = Vec::new();
    let groups = active(sim);
    // 1. Same membership everywhere.
    if let Some((d0, g0)) = groups.first() {
        for (d, g) in &groups {
            if g.members() != g0.members() {
                v.push(format!(
                    "oracle 1: {} has members {:?}, {} has {:?}",
                    sim.devices[*d].name,
                    sim.member_names(*d),
                    sim.devices[*d0].name,
                    sim.member_names(*d0)
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
    // every entry left must belong to someone who is not a current member.
    for (d, g) in &groups {
        let members = g.members();
        for (s, q, id) in g.member_secret_keys() {
            if members.contains(&id) {
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
    // 5. Identical histories.
    if let Some((d0, g0)) = groups.first() {
        for (d, g) in &groups {
            if !g.history().same_history(g0.history()) {
                v.push(format!(
                    "oracle 5: {}'s history differs from {}'s",
                    sim.devices[*d].name, sim.devices[*d0].name
                ));
            }
        }
    }
    v
}

/// Every application message must have been decrypted by every device whose instance was
/// in the sender's view when it was sent and is still a member at the end.
pub fn delivery_violations(sim: &Sim) -> Vec<String> {
    let mut v = Vec::new();
    let groups = active(sim);
    let final_members: BTreeSet<_> = groups.first().map(|(_, g)| g.members()).unwrap_or_default();
    for m in &sim.messages {
        for (d, g) in &groups {
            let me = g.me();
            if *d != m.from && m.view.contains(&me) && final_members.contains(&me) && !sim.decrypted(*d, m.packet) {
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
