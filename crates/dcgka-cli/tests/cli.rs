//! Integration tests of the `dcgka` binary: the demo verifies itself, and `sim --json`
//! prints one parseable JSON object with the documented fields.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

fn dcgka(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dcgka")).args(args).output().expect("run dcgka");
    (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn demo_exits_zero_and_prints_the_verification_block() {
    let (ok, out, err) = dcgka(&["demo"]);
    assert!(ok, "demo failed:\n{out}\n{err}");
    assert!(out.contains("== Verification =="), "{out}");
    assert!(out.contains("[ok] every active device has the members {A, B, C, E, F}"), "{out}");
    assert!(out.contains("[ok] removed devices could decrypt nothing sent after their removal"), "{out}");
    assert!(!out.contains("FAILED"), "{out}");
    assert!(out.contains("RESULT: all 5 checks passed"), "{out}");
    // The removed device D's state reads exactly what was sent while it was a member, and
    // not C's message sent after D's removal.
    let d_line = out.lines().find(|l| l.trim_start().starts_with("D (instance")).expect("D's line");
    assert!(d_line.contains("\"hello, everyone\""), "{d_line}");
    assert!(!d_line.contains("must not read this"), "{d_line}");
    assert!(!d_line.contains("LEAK"), "{d_line}");
    // Deterministic: the same story twice.
    let (_, again, _) = dcgka(&["demo"]);
    assert_eq!(out, again);
}

#[test]
fn sim_json_has_the_required_fields_and_no_violations() {
    for seed in ["1", "2", "3"] {
        let (ok, out, err) =
            dcgka(&["sim", "--members", "4", "--steps", "80", "--seed", seed, "--partitions", "2", "--json"]);
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!(out.trim().lines().count(), 1, "exactly one JSON object: {out}");
        let violations = v["violations"].as_array().expect("violations array");
        assert!(ok && violations.is_empty(), "seed {seed}: {violations:#?}\n{err}");
        assert_eq!(v["converged"], serde_json::Value::Bool(true));
        for field in ["members", "app_messages", "deliveries_expected", "deliveries_ok"] {
            assert!(v[field].is_u64(), "{field} in {v}");
        }
        assert_eq!(v["deliveries_ok"], v["deliveries_expected"]);
        // The run exercised a group for some steps; every emptying is counted.
        assert!(v["steps_with_group"].as_u64().is_some_and(|s| s > 0 && s <= 80), "{v}");
        assert!(v["emptied"].as_u64().is_some(), "{v}");
        assert!(v["app_messages"].as_u64().unwrap() > 0);
    }
}

#[test]
fn sim_human_summary_and_usage_errors() {
    let (ok, out, _) = dcgka(&["sim", "--members", "3", "--steps", "30", "--seed", "5"]);
    assert!(ok, "{out}");
    assert!(out.contains("OK: no violations"), "{out}");
    let (ok, _, err) = dcgka(&["sim", "--members", "0"]);
    assert!(!ok);
    assert!(err.contains("--members"), "{err}");
}

#[test]
fn sim_with_coalesced_acks_sends_batches_and_has_no_violations() {
    let (ok, out, err) = dcgka(&[
        "sim",
        "--members",
        "5",
        "--steps",
        "150",
        "--seed",
        "11",
        "--partitions",
        "1",
        "--coalesce-acks",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(ok && v["violations"].as_array().is_some_and(Vec::is_empty), "{v}\n{err}");
    assert_eq!(v["coalesce_acks"], serde_json::Value::Bool(true));
    assert!(v["batches"].as_u64().unwrap() > 0, "acks travelled in batches: {v}");
    assert_eq!(v["deliveries_ok"], v["deliveries_expected"]);
}

#[test]
fn demo_keeps_each_device_in_a_file_and_resumes_them_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("devices");
    let data_s = data.to_str().unwrap();
    let (ok, out, err) = dcgka(&["demo", "--data-dir", data_s]);
    assert!(ok, "first run failed:\n{out}\n{err}");
    assert!(out.contains("RESULT: all 5 checks passed"), "{out}");
    for name in ["A", "B", "C", "D", "E", "F", "G"] {
        assert!(data.join(format!("{name}.sqlite")).is_file(), "{name}'s store");
        assert!(out.contains(&format!("{name}.sqlite: ")), "{out}");
    }
    // No plaintext of any message is in any file.
    for entry in std::fs::read_dir(&data).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!bytes.windows(15).any(|w| w == b"hello, everyone"), "a plaintext on disk");
    }
    // Twice more on the same directory: the devices resume and still read each other.
    for run in 0..2 {
        let (ok, out, err) = dcgka(&["demo", "--data-dir", data_s]);
        assert!(ok, "resumed run {run} failed:\n{out}\n{err}");
        assert!(out.contains("resuming the 7 devices from their SQLite files"), "{out}");
        assert!(out.contains("[ok] every active device decrypted every other's message"), "{out}");
        assert!(out.contains("B decrypted \"hello again from A, resumed from disk\" from A"), "{out}");
        assert!(out.contains("D: opened D.sqlite: in no group"), "{out}");
        assert!(out.contains("RESULT: all 6 checks passed"), "{out}");
    }
    // A directory with only some of the devices is refused.
    let partial = dir.path().join("partial");
    std::fs::create_dir(&partial).unwrap();
    std::fs::copy(data.join("A.sqlite"), partial.join("A.sqlite")).unwrap();
    let (ok, _, err) = dcgka(&["demo", "--data-dir", partial.to_str().unwrap()]);
    assert!(!ok && err.contains("1 of the 7 device files"), "{err}");
}
