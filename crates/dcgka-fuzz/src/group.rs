//! Targets on the group API: `Group::join` from a Welcome, `Group::restore` (and the
//! identity and sender-record restores), and `Group::receive` at a live member with raw
//! bytes or with envelopes sealed under a real member's current signing key.

use dcgka::codec::{Decode, Encode};
use dcgka::crypto::SigningSecret;
use dcgka::events::Event;
use dcgka::group::{Context, Group, GroupConfig, Output};
use dcgka::ids::SeqNo;
use dcgka::prekeys::Identity;
use dcgka::snapshot::SNAPSHOT_VERSION;
use dcgka::welcome::Welcome;
use dcgka::wire::{CertifiedKey, Envelope, EnvelopeKind, SenderRef, requires_rotation};
use dcgka_sim::{NOW, PacketKind};

use crate::fixture::{self, Fixture};
use crate::{frame, frames};

/// A Welcome: decoding is canonical, and `Group::join` at the genuine newcomer succeeds
/// only for a Welcome the adder signed (its signature covers every byte: the genuine one,
/// or an earlier encoding of the same history in the corpus), joining the members the
/// fixture saw.
/// The input is frames (see [`crate::frames`]), each a Welcome on its own (one corpus
/// file can pack many).
pub fn welcome(data: &[u8]) {
    for (_, w) in frames(data) {
        join(w);
    }
}

/// [`welcome`], returning the joined group.
fn join(data: &[u8]) -> Option<Group> {
    let fx = fixture::get();
    if let Ok(w) = Welcome::from_bytes(data) {
        assert_eq!(w.to_bytes(), data, "Welcome decoding is not canonical");
    }
    let (mut dir, mut id, mut rng) = (fx.directory.clone(), fx.newcomer.clone(), Fixture::rng());
    let mut ctx = Context { rng: &mut rng, now: NOW, prekeys: &mut dir, identity: &mut id };
    let (g, out) = Group::join(&mut ctx, data, GroupConfig::default()).ok()?;
    if data != &fx.welcome[..] {
        // Only the adder can sign a Welcome: anything else accepted is one it signed (an
        // earlier encoding of the same history kept in the corpus, say), never a forgery.
        let signer = |w: &[u8]| Group::inspect_welcome(w).map(|s| s.adder_identity).ok();
        assert_eq!(signer(data), signer(&fx.welcome), "a Welcome the adder did not sign was accepted");
    }
    assert_eq!(g.members(), fx.joined_members);
    assert!(!out.broadcast.is_empty(), "a newcomer acknowledges its add");
    assert_restores(&g);
    Some(g)
}

/// Seeds: the genuine Welcome.
pub(crate) fn welcome_seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    frame(&mut out, 0, &fixture::get().welcome);
    vec![out]
}

/// Selector `0`: a group snapshot; `1`: an identity snapshot; `2`: framed core and sender
/// record for `Group::restore_records`. Whatever restores snapshots back to the same bytes,
/// or, for an older format version (migrated on loading), to bytes of the current version
/// that restore to themselves. The input is frames (see [`crate::frames`]), each restored
/// on its own with its tag as the selector (one corpus file can pack many).
pub fn restore(data: &[u8]) {
    for (sel, rest) in frames(data) {
        restore_one(sel, rest);
    }
}

/// Whether `bytes` (a group snapshot or a record) claim the current format version.
fn current(bytes: &[u8]) -> bool {
    bytes.get(1) == Some(&SNAPSHOT_VERSION)
}

fn restore_one(sel: u8, rest: &[u8]) {
    match sel % 3 {
        0 => {
            if let Ok(g) = Group::restore(rest) {
                if current(rest) {
                    assert_eq!(&g.snapshot()[..], rest, "restore then snapshot changed the bytes");
                } else {
                    assert!(current(&g.snapshot()), "an old snapshot is written in the current version");
                }
                assert_restores(&g);
            }
        }
        1 => {
            if let Ok(id) = Identity::restore(rest) {
                assert_eq!(&id.snapshot()[..], rest, "identity restore then snapshot changed the bytes");
            }
        }
        _ => {
            let f = frames(rest);
            let [(_, core), (_, member), (_, record)] = f[..] else { return };
            let Ok(member) = <[u8; 32]>::try_from(member) else { return };
            let member = dcgka::ids::MemberId(member);
            if let Ok(g) = Group::restore_records(core, [(member, record)]) {
                let r = g.records();
                if current(core) && current(record) {
                    assert_eq!(&r.core[..], core, "restore_records then records changed the core");
                    assert_eq!(r.senders.get(&member).map(|s| &s[..]), Some(record), "the sender record changed");
                }
                assert_restores(&g);
            }
        }
    }
}

/// Seeds: every snapshot, identity and sender record of the fixture.
pub(crate) fn restore_seeds() -> Vec<Vec<u8>> {
    let fx = fixture::get();
    let with = |sel: u8, b: &[u8]| {
        let mut out = Vec::new();
        frame(&mut out, sel, b);
        out
    };
    let mut out: Vec<Vec<u8>> = fx.snapshots.iter().map(|s| with(0, s)).collect();
    out.extend(fx.identities.iter().map(|s| with(1, s)));
    for (core, m, rec) in fx.records.iter().take(4) {
        let mut buf = Vec::new();
        frame(&mut buf, 0, core);
        frame(&mut buf, 0, &m.0);
        frame(&mut buf, 0, rec);
        out.push(with(2, &buf));
    }
    out
}

/// Checks that `g` survives a snapshot and a restore unchanged.
fn assert_restores(g: &Group) {
    let s = g.snapshot();
    let back = Group::restore(&s);
    assert!(back.is_ok(), "a snapshot does not restore: {:?}", back.err());
    if let Ok(back) = back {
        assert_eq!(back.snapshot(), s, "restore then snapshot changed the bytes");
    }
}

/// One receive at B: a failed call changes nothing; returns the output.
fn receive_at_b(
    g: &mut Group,
    id: &mut Identity,
    dir: &mut dcgka::prekeys::InMemoryPrekeyDirectory,
    bytes: &[u8],
) -> Option<Output> {
    let before = g.snapshot();
    let mut rng = Fixture::rng();
    let mut ctx = Context { rng: &mut rng, now: NOW, prekeys: dir, identity: id };
    match g.receive(&mut ctx, bytes) {
        Ok(out) => Some(out),
        Err(_) => {
            assert_eq!(g.snapshot(), before, "a failed receive changed the group");
            None
        }
    }
}

/// Frames of raw bytes fed to `Group::receive` at B, in order. Without a key nobody can
/// make B accept anything but genuine envelopes: every member B ever sees is one the
/// fixture knows, and every message B decrypts is one somebody sent.
pub fn receive_raw(data: &[u8]) {
    run_raw(data);
}

/// [`receive_raw`], returning B's group and the plaintexts it decrypted.
fn run_raw(data: &[u8]) -> (Group, Vec<Vec<u8>>) {
    let fx = fixture::get();
    let (mut g, mut id, mut dir) = (fx.b.clone(), fx.b_identity.clone(), fx.directory.clone());
    let mut read = Vec::new();
    for (_, bytes) in frames(data) {
        let Some(out) = receive_at_b(&mut g, &mut id, &mut dir, bytes) else { continue };
        for e in out.events {
            if let Event::Message { plaintext, .. } = e {
                assert!(fx.plaintexts.contains(&plaintext), "B decrypted a message nobody sent");
                read.push(plaintext);
            }
        }
        assert!(g.members().is_subset(&fx.known), "B sees a member nobody added");
    }
    assert_restores(&g);
    (g, read)
}

/// Seeds: every genuine envelope after the checkpoint in transcript order; each alone.
pub(crate) fn receive_raw_seeds() -> Vec<Vec<u8>> {
    let fx = fixture::get();
    let envelopes: Vec<&[u8]> =
        fx.after.iter().filter(|p| p.kind != PacketKind::Welcome).map(|p| &p.bytes[..]).collect();
    let mut all = Vec::new();
    for e in &envelopes {
        frame(&mut all, 0, e);
    }
    let mut out = vec![all];
    for e in envelopes.iter().take(6) {
        let mut one = Vec::new();
        frame(&mut one, 0, e);
        out.push(one);
    }
    out
}

/// Frame tags of [`receive_insider`].
const RAW: u8 = 0;
const NEXT: u8 = 1;
const SKIP: u8 = 2;
const AGAIN: u8 = 3;

/// Frames fed to `Group::receive` at B. Tag `0`: raw bytes. Tags `1`–`3`: `kind:u8 ‖
/// body`, sealed as A's envelope and signed with A's current signing key (rotating it
/// where §7.2 requires), so that it passes the signature check: `1` at A's next
/// sequence number, `2` one further (leaving a gap), `3` at the last one again (an
/// equivocation). The body is whatever the fuzzer made of it. An authenticated insider
/// can do harm, but never a panic, never a half-applied failure, never a state that does
/// not restore.
pub fn receive_insider(data: &[u8]) {
    run_insider(data);
}

/// [`receive_insider`], returning B's group and the plaintexts it decrypted.
fn run_insider(data: &[u8]) -> (Group, Vec<Vec<u8>>) {
    let fx = fixture::get();
    let mut read = Vec::new();
    let (mut g, mut id, mut dir) = (fx.b.clone(), fx.b_identity.clone(), fx.directory.clone());
    let (gid, a) = (fx.a.gid(), fx.a.me());
    let mut key = fx.a.signing_secret().clone();
    let mut last: Option<(u64, SigningSecret)> = None;
    let mut next = fx.a.seq().0 + 1;
    for (n, (tag, bytes)) in frames(data).into_iter().enumerate() {
        let bytes = if tag % 4 == RAW {
            bytes.to_vec()
        } else {
            let Some((&k, body)) = bytes.split_first() else { continue };
            let Ok(kind) = EnvelopeKind::from_tag(k) else { continue };
            let (seq, signer) = match tag % 4 {
                SKIP => (next + 1, key.clone()),
                AGAIN => match &last {
                    Some((s, k)) => (*s, k.clone()),
                    None => continue,
                },
                _ => (next, key.clone()),
            };
            let rotate = requires_rotation(kind, SeqNo(seq)) || (kind == EnvelopeKind::Batch && body_rotates(body));
            let new_key = rotate.then(|| SigningSecret::from_bytes(&[n as u8 ^ 0x5a; 32]));
            let env = Envelope::seal(
                kind,
                &gid,
                SeqNo(seq),
                &a,
                (seq == 1).then_some(fx.a_identity.public_key()),
                new_key.as_ref().map(SigningSecret::verifying_key),
                new_key.as_ref().map(|k| {
                    CertifiedKey::issue(fx.a_identity.signing_key(), &gid, &a, SeqNo(seq), k.verifying_key()).cert
                }),
                body.to_vec(),
                &signer,
            );
            if tag % 4 != AGAIN {
                last = Some((seq, signer));
                next = env.last_seq().0.max(seq) + 1;
                if let Some(k) = new_key {
                    key = k;
                }
            }
            env.to_bytes()
        };
        if let Some(out) = receive_at_b(&mut g, &mut id, &mut dir, &bytes) {
            read.extend(out.events.into_iter().filter_map(|e| match e {
                Event::Message { plaintext, .. } => Some(plaintext),
                _ => None,
            }));
        }
    }
    assert_restores(&g);
    (g, read)
}

/// Whether a batch body's last item rotates the signing key (a batch carries the new key
/// exactly then).
fn body_rotates(body: &[u8]) -> bool {
    dcgka::wire::decode_batch(body).ok().and_then(|i| i.last().map(|i| i.kind.rotates_signing_key())).unwrap_or(false)
}

/// Seeds: the post-checkpoint transcript with A's envelopes as `kind ‖ body` frames to
/// seal (tag 1) and everyone else's as raw frames; and A's envelopes alone.
pub(crate) fn receive_insider_seeds() -> Vec<Vec<u8>> {
    let fx = fixture::get();
    let a_tag = SenderRef::Tag(fx.a.me().tag());
    let mut all = Vec::new();
    let mut only_a = Vec::new();
    for p in fx.after.iter().filter(|p| p.kind != PacketKind::Welcome) {
        match Envelope::from_bytes(&p.bytes) {
            Ok(e) if e.sender == a_tag => {
                let body = [&[e.kind.tag()][..], &e.body].concat();
                frame(&mut all, NEXT, &body);
                frame(&mut only_a, NEXT, &body);
            }
            _ => frame(&mut all, RAW, &p.bytes),
        }
    }
    let mut again = only_a.clone();
    frame(&mut again, AGAIN, &[EnvelopeKind::Application.tag(), 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    vec![all, only_a, again]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The genuine Welcome joins the newcomer (the target's checks then ran).
    #[test]
    fn the_genuine_welcome_joins() {
        let g = join(&fixture::get().welcome);
        assert_eq!(g.map(|g| g.members()), Some(fixture::get().joined_members.clone()));
    }

    /// Replaying the genuine transcript brings B to the end of the history: D added, C
    /// removed, every message after the checkpoint read.
    #[test]
    fn the_raw_seed_replays_the_history_at_b() {
        let fx = fixture::get();
        let (g, read) = run_raw(&receive_raw_seeds()[0]);
        assert_eq!(g.members().len(), 3);
        assert!(g.members().contains(&fx.b.me()) && g.members().contains(&fx.a.me()));
        assert!(!g.members().is_subset(&fx.b.members()), "D is a member");
        for m in [&b"after the checkpoint, from A"[..], b"hello from the newcomer", b"after the removal, from A"] {
            assert!(read.iter().any(|r| r == m), "B read {:?}", String::from_utf8_lossy(m));
        }
    }

    /// A's envelopes, resealed by the harness under A's current key, pass the signature
    /// check at B: B processes every one of them and reads A's messages, as with the
    /// genuine transcript.
    #[test]
    fn insider_envelopes_pass_the_signature_check() {
        let fx = fixture::get();
        let (g, read) = run_insider(&receive_insider_seeds()[0]);
        let from_a = fx.after.iter().filter(|p| p.from == 0 && p.kind != PacketKind::Welcome).count() as u64;
        assert_eq!(g.sync_state().get(&fx.a.me()).map(|s| s.0), Some(fx.a.seq().0 + from_a));
        assert_eq!(g.members(), run_raw(&receive_raw_seeds()[0]).0.members());
        for m in [&b"after the checkpoint, from A"[..], b"after the removal, from A"] {
            assert!(read.iter().any(|r| r == m), "B read {:?}", String::from_utf8_lossy(m));
        }
    }
}
