//! # dcgka-fuzz
//!
//! The logic of every fuzz target, one function per target taking the fuzzer's bytes.
//! Two callers share it: the cargo-fuzz crate in the repository's `fuzz/` directory
//! (nightly and libFuzzer, outside the workspace), and this crate's `corpus` test, which
//! replays every committed input under `fuzz/corpus/<target>/` on stable, so CI checks
//! the corpora without a fuzzer.
//!
//! A target does not only look for panics: wherever an invariant can be checked it
//! asserts it (decoding then encoding gives the input back, restoring a snapshot and
//! snapshotting again gives the same bytes, a failed call changes nothing, the
//! simulator's oracles hold), and an assertion failure is a finding like a panic.
//!
//! | Target | What the bytes are |
//! |---|---|
//! | [`decode`] | frames, each a selector and the input to one wire decoder (envelope, control and application bodies, batch, Welcome, 2SM ciphertext, prekey bundle, sync messages) |
//! | [`welcome`] | frames, each a Welcome, decoded and handed to `Group::join` at its genuine target |
//! | [`restore`] | frames, each a selector and a group snapshot, a sender record or an identity snapshot |
//! | [`receive_raw`] | framed byte strings fed to `Group::receive` at a live member |
//! | [`receive_insider`] | frames whose bodies are sealed and signed under a real member's current key, so that they pass the signature check |
//! | [`device`] | framed inputs to `Device::receive`, `receive_welcome`, `apply_sync` and `answer_sync` |
//! | [`sim`] | a simulator configuration, then the schedule's every decision |

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod decode;
mod device;
mod fixture;
mod group;
mod sim;

pub use decode::decode;
pub use device::device;
pub use group::{receive_insider, receive_raw, restore, welcome};
pub use sim::sim;

/// A target: the fuzzer's bytes in; a panic or a failed assertion is a finding.
pub type Target = fn(&[u8]);

/// Every target by name (the name of its `fuzz/fuzz_targets/` file and corpus directory).
pub const TARGETS: &[(&str, Target)] = &[
    ("decode", decode),
    ("welcome", welcome),
    ("restore", restore),
    ("receive_raw", receive_raw),
    ("receive_insider", receive_insider),
    ("device", device),
    ("sim", sim),
];

/// The targets whose input is a sequence of independent frames, each a complete input:
/// their corpora are packed many inputs to a file.
pub const PACKED: &[&str] = &["decode", "welcome", "restore"];

/// Every frame of `data`, each re-encoded whole (for packing a corpus).
pub fn reframe(data: &[u8]) -> Vec<Vec<u8>> {
    frames(data)
        .into_iter()
        .map(|(tag, bytes)| {
            let mut out = Vec::new();
            frame(&mut out, tag, bytes);
            out
        })
        .collect()
}

/// Inputs that exercise the genuine paths of `target`, built from the fixture (a real
/// group history): the starting corpus before fuzzing, also replayed by the corpus test.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "decode" => decode::seeds(),
        "welcome" => group::welcome_seeds(),
        "restore" => group::restore_seeds(),
        "receive_raw" => group::receive_raw_seeds(),
        "receive_insider" => group::receive_insider_seeds(),
        "device" => device::seeds(),
        "sim" => sim::seeds(),
        _ => Vec::new(),
    }
}

/// Splits fuzzer bytes into frames `tag:u8 ‖ len:u16 (little endian) ‖ bytes`; a frame
/// cut short takes what is left.
pub(crate) fn frames(mut data: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    while let Some((&tag, rest)) = data.split_first() {
        let (len, rest) = match rest {
            [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
            _ => (rest.len(), rest),
        };
        let len = len.min(rest.len());
        out.push((tag, &rest[..len]));
        data = &rest[len..];
    }
    out
}

/// The inverse of [`frames`], for building seeds.
pub(crate) fn frame(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    out.push(tag);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&bytes[..usize::from(len)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        frame(&mut buf, 3, b"abc");
        frame(&mut buf, 0, b"");
        frame(&mut buf, 7, &[9; 300]);
        let f = frames(&buf);
        assert_eq!(f, vec![(3, &b"abc"[..]), (0, &b""[..]), (7, &[9u8; 300][..])]);
        assert_eq!(frames(&[5, 10, 0, 1, 2]), vec![(5, &[1u8, 2][..])]);
        assert_eq!(frames(&[5, 1]), vec![(5, &[1u8][..])]);
    }
}
