//! Replays every committed fuzz input (`fuzz/corpus/<target>/`) and every seed through
//! its target, so that CI checks the corpora on stable without a fuzzer. With
//! `DCGKA_WRITE_FUZZ_SEEDS=1` it first writes the seeds into the corpus directories
//! (the starting corpus before fuzzing; `cargo fuzz cmin` then keeps what adds coverage).
//! With `DCGKA_PACK_FUZZ_CORPUS=1` it first packs the corpora of the targets whose
//! inputs are independent frames ([`dcgka_fuzz::PACKED`]) into files of 256 frames each.

use std::fs;
use std::path::PathBuf;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("..").join("fuzz").join("corpus").join(target)
}

#[test]
fn every_target_replays_its_seeds_and_its_corpus() {
    let write = std::env::var_os("DCGKA_WRITE_FUZZ_SEEDS").is_some();
    let pack = std::env::var_os("DCGKA_PACK_FUZZ_CORPUS").is_some();
    for (name, target) in dcgka_fuzz::TARGETS {
        let dir = corpus_dir(name);
        if pack && dcgka_fuzz::PACKED.contains(name) {
            pack_corpus(&dir);
        }
        let seeds = dcgka_fuzz::seeds(name);
        assert!(!seeds.is_empty(), "{name}: no seeds");
        if write {
            assert!(fs::create_dir_all(&dir).is_ok());
            for (i, s) in seeds.iter().enumerate() {
                assert!(fs::write(dir.join(format!("seed-{i:02}")), s).is_ok());
            }
        }
        for s in &seeds {
            target(s);
        }
        let entries = fs::read_dir(&dir).map(|d| d.filter_map(Result::ok).collect::<Vec<_>>());
        assert!(entries.is_ok(), "{name}: no corpus directory at {}", dir.display());
        let mut files: Vec<PathBuf> = entries.unwrap_or_default().into_iter().map(|e| e.path()).collect();
        files.sort();
        assert!(!files.is_empty(), "{name}: empty corpus");
        for f in &files {
            let data = fs::read(f);
            assert!(data.is_ok(), "{}: unreadable", f.display());
            eprintln!("{name}: {}", f.display());
            target(&data.unwrap_or_default());
        }
        println!("{name}: {} seeds and {} corpus files replayed", seeds.len(), files.len());
    }
}

/// Rewrites every file of `dir` as files of 256 frames each (each frame re-encoded whole,
/// so that a frame cut short at the end of one file cannot swallow the next).
fn pack_corpus(dir: &std::path::Path) {
    let mut files: Vec<PathBuf> =
        fs::read_dir(dir).map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect()).unwrap_or_default();
    files.sort();
    let mut frames = Vec::new();
    for f in &files {
        let data = fs::read(f).unwrap_or_default();
        frames.extend(dcgka_fuzz::reframe(&data));
        assert!(fs::remove_file(f).is_ok());
    }
    for (i, chunk) in frames.chunks(256).enumerate() {
        assert!(fs::write(dir.join(format!("packed-{i:02}")), chunk.concat()).is_ok());
    }
}
