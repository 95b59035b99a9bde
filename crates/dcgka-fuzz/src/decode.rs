//! The wire decoders: every one is total, and canonical (what decodes encodes back to
//! the same bytes), and the routing helpers agree with the full decoders.

use dcgka::codec::{Decode, Encode};
use dcgka::group::{Group, welcome_target};
use dcgka::prekeys::PrekeyBundle;
use dcgka::two_party::TwoSmCiphertext;
use dcgka::welcome::Welcome;
use dcgka::wire::{ApplicationBody, ControlBody, Envelope, EnvelopeKind, decode_batch, encode_batch};
use dcgka_device::{SyncRequest, SyncResponse};
use dcgka_sim::PacketKind;

use crate::{fixture, frame, frames};

/// Selectors of [`decode`].
const ENVELOPE: u8 = 0;
const CONTROL: u8 = 1;
const APPLICATION: u8 = 2;
const BATCH: u8 = 3;
const WELCOME: u8 = 4;
const TWO_SM: u8 = 5;
const BUNDLE: u8 = 6;
const SYNC_REQUEST: u8 = 7;
const SYNC_RESPONSE: u8 = 8;
const SELECTORS: u8 = 9;

/// Frames (see [`crate::frames`]), each decoded on its own: the frame's tag selects the
/// decoder, its bytes are the input; for the control-body decoder, `kind:u8 ‖ body`.
/// (Inputs are independent, so one corpus file can pack many.)
pub fn decode(data: &[u8]) {
    for (sel, rest) in frames(data) {
        decode_one(sel, rest);
    }
}

fn decode_one(sel: u8, rest: &[u8]) {
    match sel % SELECTORS {
        ENVELOPE => envelope(rest),
        CONTROL => {
            let Some((&k, body)) = rest.split_first() else { return };
            let Ok(kind) = EnvelopeKind::from_tag(k) else { return };
            if let Ok(b) = ControlBody::from_bytes(kind, body) {
                assert_eq!(b.kind(), kind);
                assert_eq!(b.to_bytes(), body, "control body decoding is not canonical");
            }
        }
        APPLICATION => {
            if let Ok(b) = ApplicationBody::from_bytes(rest) {
                assert_eq!(b.to_bytes(), rest, "application body decoding is not canonical");
            }
        }
        BATCH => {
            if let Ok(items) = decode_batch(rest) {
                assert_eq!(encode_batch(&items), rest, "batch decoding is not canonical");
            }
        }
        WELCOME => {
            let w = Welcome::from_bytes(rest);
            if let Ok(w) = &w {
                assert_eq!(w.to_bytes(), rest, "Welcome decoding is not canonical");
            }
            let ik = fixture::get().newcomer.public_key();
            if welcome_target(rest, &ik).is_ok() {
                assert!(w.is_ok(), "welcome_target read a Welcome that does not decode");
            }
        }
        TWO_SM => round_trip::<TwoSmCiphertext>(rest, "2SM ciphertext"),
        BUNDLE => round_trip::<PrekeyBundle>(rest, "prekey bundle"),
        SYNC_REQUEST => {
            if let Ok(r) = SyncRequest::from_bytes(rest) {
                assert_eq!(r.to_bytes(), rest, "sync request decoding is not canonical");
            }
        }
        _ => {
            if let Ok(r) = SyncResponse::from_bytes(rest) {
                assert_eq!(r.to_bytes(), rest, "sync response decoding is not canonical");
            }
        }
    }
}

fn round_trip<T: Decode + Encode>(bytes: &[u8], what: &str) {
    if let Ok(v) = T::from_bytes(bytes) {
        assert_eq!(v.to_bytes(), bytes, "{what} decoding is not canonical");
    }
}

/// An envelope: canonical; `Group::peek` reads exactly the envelopes that decode and
/// agrees with them; a batch's items carry consecutive sequence numbers up to `last_seq`.
fn envelope(bytes: &[u8]) {
    let e = Envelope::from_bytes(bytes);
    let p = Group::peek(bytes);
    match (&e, &p) {
        (Ok(e), Ok(p)) => {
            assert_eq!(e.to_bytes(), bytes, "envelope decoding is not canonical");
            assert_eq!((p.kind, p.sender, p.seq, p.last_seq, p.gid), (e.kind, e.sender, e.seq, e.last_seq(), e.gid));
            assert_eq!(p.hash, e.short_hash());
            if let Ok(items) = e.items() {
                assert_eq!(items.first().map(|i| i.seq), Some(e.seq));
                assert_eq!(items.last().map(|i| i.seq), Some(e.last_seq()));
            }
        }
        (Err(_), Err(_)) => {}
        (Ok(_), Err(err)) => panic_on(&format!("peek refuses an envelope that decodes: {err}")),
        (Err(err), Ok(_)) => panic_on(&format!("peek reads an envelope that does not decode: {err}")),
    }
}

/// Fails the run with `msg` (an assertion, so that the finding is reported as such).
fn panic_on(msg: &str) {
    assert!(msg.is_empty(), "{msg}");
}

/// Seeds: every genuine envelope and body of the fixture under its selector, and the
/// Welcome, a 2SM ciphertext, a prekey bundle and the sync messages.
pub(crate) fn seeds() -> Vec<Vec<u8>> {
    let fx = fixture::get();
    let with = |sel: u8, b: &[u8]| {
        let mut out = Vec::new();
        frame(&mut out, sel, b);
        out
    };
    let mut out = Vec::new();
    let mut kinds_seen = Vec::new();
    for p in &fx.after {
        if p.kind == PacketKind::Welcome {
            out.push(with(WELCOME, &p.bytes));
            continue;
        }
        let Ok(e) = Envelope::from_bytes(&p.bytes) else { continue };
        if kinds_seen.contains(&e.kind) {
            continue;
        }
        kinds_seen.push(e.kind);
        out.push(with(ENVELOPE, &p.bytes));
        match e.kind {
            EnvelopeKind::Application => out.push(with(APPLICATION, &e.body)),
            EnvelopeKind::Batch => out.push(with(BATCH, &e.body)),
            k => {
                out.push(with(CONTROL, &[&[k.tag()][..], &e.body].concat()));
                if let Ok(ControlBody::Update { seeds }) = ControlBody::from_bytes(k, &e.body)
                    && let Some(ct) = seeds.cts.first()
                {
                    out.push(with(TWO_SM, &ct.to_bytes()));
                }
            }
        }
    }
    let mut dir = fx.directory.clone();
    let ik = fx.newcomer.public_key();
    if let Some(b) = dcgka::prekeys::PrekeyProvider::bundle(&mut dir, &ik) {
        out.push(with(BUNDLE, &b.to_bytes()));
    }
    out.push(with(SYNC_REQUEST, &fx.sync_request));
    out.push(with(SYNC_RESPONSE, &fx.sync_response));
    out
}
