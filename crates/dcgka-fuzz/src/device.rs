//! The device layer: `Device::receive`, `receive_welcome`, the sync messages' decoders,
//! `apply_sync` and `answer_sync`, at B's device from the fixture's checkpoint.

use dcgka::events::Event;
use dcgka_device::consts::MAX_SYNC_RESPONSE_ITEMS;
use dcgka_device::{Env, Report, SyncRequest, SyncResponse};
use dcgka_sim::Device;
use dcgka_sim::{NOW, PacketKind};

use crate::fixture::{self, Fixture};
use crate::{frame, frames};

/// Frame tags of [`device`].
const ENVELOPE: u8 = 0;
const WELCOME: u8 = 1;
const RESPONSE: u8 = 2;
const REQUEST: u8 = 3;

/// Frames, each by its tag: `0` an envelope for `Device::receive`, `1` a Welcome for
/// `Device::receive_welcome`, `2` a sync response (decoded canonically, then applied),
/// `3` a sync request (decoded canonically, then answered within the response bounds).
/// Without a key nothing but genuine traffic gets in: every member the device's groups
/// see is one the fixture knows, and every message decrypted is one somebody sent; every
/// group the device holds survives a snapshot and a restore.
pub fn device(data: &[u8]) {
    run(data);
}

/// [`device`], returning the device and the plaintexts it decrypted.
fn run(data: &[u8]) -> (Device, Vec<Vec<u8>>) {
    let fx = fixture::get();
    let mut read = Vec::new();
    let mut dev = fx.b_device.clone();
    let (mut dir, mut rng) = (fx.directory.clone(), Fixture::rng());
    for (tag, bytes) in frames(data) {
        let mut env = Env { rng: &mut rng, now: NOW, prekeys: &mut dir };
        let report = match tag % 4 {
            ENVELOPE => dev.receive(&mut env, bytes),
            WELCOME => dev.receive_welcome(&mut env, bytes),
            RESPONSE => match SyncResponse::from_bytes(bytes) {
                Ok(resp) => {
                    assert_eq!(resp.to_bytes(), bytes, "sync response decoding is not canonical");
                    dev.apply_sync(&mut env, &resp)
                }
                Err(_) => continue,
            },
            _ => {
                if let Ok(req) = SyncRequest::from_bytes(bytes) {
                    assert_eq!(req.to_bytes(), bytes, "sync request decoding is not canonical");
                    let resp = dev.answer_sync(&req);
                    assert!(resp.len() <= MAX_SYNC_RESPONSE_ITEMS, "a sync answer beyond its bound");
                    let back = SyncResponse::from_bytes(&resp.to_bytes());
                    assert_eq!(back.ok().as_ref(), Some(&resp), "a sync answer does not decode");
                }
                continue;
            }
        };
        if let Ok(report) = report {
            read.extend(check_report(fx, report));
        }
    }
    for (_, g) in dev.groups() {
        assert!(g.members().is_subset(&fx.known), "the device sees a member nobody added");
        let s = g.snapshot();
        let back = dcgka::group::Group::restore(&s);
        assert!(back.is_ok_and(|b| b.snapshot() == s), "a group of the device does not restore");
    }
    (dev, read)
}

/// Checks a report's messages; returns their plaintexts.
fn check_report(fx: &Fixture, report: Report) -> Vec<Vec<u8>> {
    let mut read = Vec::new();
    for (_, e) in report.events {
        if let Event::Message { plaintext, .. } = e {
            assert!(fx.plaintexts.contains(&plaintext), "the device decrypted a message nobody sent");
            read.push(plaintext);
        }
    }
    read
}

/// Seeds: the post-checkpoint transcript (envelopes and the Welcome, which is not for
/// B); B's own sync request; A's answer to it.
pub(crate) fn seeds() -> Vec<Vec<u8>> {
    let fx = fixture::get();
    let mut all = Vec::new();
    for p in &fx.after {
        let tag = if p.kind == PacketKind::Welcome { WELCOME } else { ENVELOPE };
        frame(&mut all, tag, &p.bytes);
    }
    let mut sync = Vec::new();
    frame(&mut sync, REQUEST, &fx.sync_request);
    frame(&mut sync, RESPONSE, &fx.sync_response);
    frame(&mut sync, REQUEST, &fx.sync_request);
    vec![all, sync]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The genuine transcript brings B's device to the end of the history (D added, C
    /// removed, the newcomer's message read); A's sync answer alone does the same.
    #[test]
    fn the_seeds_replay_the_history_at_b() {
        let fx = fixture::get();
        for seed in seeds() {
            let (dev, read) = run(&seed);
            let g = dev.group(&fx.b.gid());
            assert_eq!(g.map(|g| g.members().len()), Some(3));
            assert!(g.is_some_and(|g| !g.members().is_subset(&fx.b.members())), "D is a member");
            assert!(read.iter().any(|r| r == b"hello from the newcomer"));
        }
    }
}
