//! Integration tests of `dcgka bench`: a small run writes the documented CSV, one row per
//! (operation, size), with positive and deterministic traffic that grows with n; and of
//! `dcgka bench-net`: real nodes on 127.0.0.1, one row per (nodes, op) with the exact
//! header scripts read.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::process::Command;

const HEADER: &str = "op,n,iterations,traffic_bytes,sender_cpu_ms_median,sender_cpu_ms_sd,\
recipient_cpu_ms_median,recipient_cpu_ms_sd,newcomer_cpu_ms_median";

/// Runs `dcgka bench --sizes 4,8 --iterations 1 --csv <tmp>` and returns the CSV text.
fn bench_csv(name: &str, seed: &str) -> String {
    bench_csv_with(name, seed, &[])
}

fn bench_csv_with(name: &str, seed: &str, extra: &[&str]) -> String {
    let path = std::env::temp_dir().join(format!("dcgka-bench-test-{}-{name}.csv", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_dcgka"))
        .args(["bench", "--sizes", "4,8", "--iterations", "1", "--seed", seed])
        .args(extra)
        .arg("--csv")
        .arg(&path)
        .output()
        .expect("run dcgka bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "dcgka bench failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("peak memory (VmHWM) after n = 8"), "{stdout}");
    assert!(stdout.contains("serialized state at n = 8 after setup: member 0 "), "{stdout}");
    if extra.contains(&"--store") {
        assert!(stdout.contains("one device's database at n = 8"), "{stdout}");
    }
    let csv = std::fs::read_to_string(&path).expect("CSV written");
    let _ = std::fs::remove_file(&path);
    csv
}

#[test]
fn bench_writes_one_row_per_op_and_size_with_growing_traffic() {
    let csv = bench_csv("a", "7");
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some(HEADER));
    let mut traffic = BTreeMap::new();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), 9, "{line}");
        let (op, n) = (f[0].to_string(), f[1].parse::<usize>().unwrap());
        assert_eq!(f[2], "1", "iterations: {line}");
        let bytes: u64 = f[3].parse().unwrap();
        assert!(bytes > 0, "{line}");
        for x in &f[4..8] {
            let v: f64 = x.parse().unwrap_or_else(|e| panic!("{e}: {line}"));
            assert!(v >= 0.0, "{line}");
        }
        assert!(f[4].parse::<f64>().unwrap() > 0.0, "sender CPU: {line}");
        assert!(f[6].parse::<f64>().unwrap() > 0.0, "recipient CPU: {line}");
        if op == "add" {
            assert!(f[8].parse::<f64>().unwrap() > 0.0, "newcomer CPU: {line}");
        } else {
            assert!(f[8].is_empty(), "newcomer only for add: {line}");
        }
        assert!(traffic.insert((op, n), bytes).is_none(), "duplicate row: {line}");
    }
    let ops = ["create", "add", "remove", "update", "message"];
    assert_eq!(traffic.len(), ops.len() * 2, "{csv}");
    for op in ops {
        for n in [4, 8] {
            assert!(traffic.contains_key(&(op.to_string(), n)), "missing {op} at {n}: {csv}");
        }
    }
    assert!(traffic[&("update".to_string(), 8)] > traffic[&("update".to_string(), 4)], "{csv}");
    // 32-byte payload plus a bounded overhead, independent of n.
    assert_eq!(traffic[&("message".to_string(), 4)], traffic[&("message".to_string(), 8)]);

    // Traffic is deterministic for a fixed seed (CPU times are not).
    let again = bench_csv("b", "7");
    let bytes = |text: &str| -> Vec<String> {
        text.lines().map(|l| l.split(',').take(4).collect::<Vec<_>>().join(",")).collect()
    };
    assert_eq!(bytes(&csv), bytes(&again));
}

fn traffic_of(csv: &str) -> BTreeMap<(String, usize), u64> {
    csv.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            ((f[0].to_string(), f[1].parse().unwrap()), f[3].parse().unwrap())
        })
        .collect()
}

#[test]
fn coalesced_acks_cut_the_traffic_of_acknowledged_operations() {
    let plain = traffic_of(&bench_csv("plain", "3"));
    let coalesced = traffic_of(&bench_csv_with("coalesced", "3", &["--coalesce-acks"]));
    assert_eq!(plain.len(), coalesced.len());
    for n in [4, 8] {
        let key = |op: &str| (op.to_string(), n);
        // An acked operation's acks ride on later messages: each saves a header and a
        // signature.
        for op in ["update", "remove", "add"] {
            assert!(coalesced[&key(op)] < plain[&key(op)], "{op} at n = {n}: {coalesced:?} vs {plain:?}");
        }
        // Nothing acknowledges a create's first acks or an application message.
        assert_eq!(coalesced[&key("create")], plain[&key("create")]);
        assert_eq!(coalesced[&key("message")], plain[&key("message")]);
    }
}

/// The CSV header of `dcgka bench --longevity` (issue 10).
const LONGEVITY_HEADER: &str = "n,operations,state_bytes,welcome_bytes,restore_ms,memory_bytes_per_member";

/// Runs `dcgka bench --longevity --sizes 3,4 --operations 0,20,40 --seed <seed>` and
/// returns standard output and the CSV text.
fn longevity_csv(name: &str, seed: &str) -> (String, String) {
    let path = std::env::temp_dir().join(format!("dcgka-longevity-test-{}-{name}.csv", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_dcgka"))
        .args(["bench", "--longevity", "--sizes", "3,4", "--operations", "0,20,40", "--seed", seed, "--csv"])
        .arg(&path)
        .output()
        .expect("run dcgka bench --longevity");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "dcgka bench --longevity failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = std::fs::read_to_string(&path).expect("CSV written");
    let _ = std::fs::remove_file(&path);
    (stdout, csv)
}

#[test]
fn longevity_writes_one_row_per_size_and_checkpoint() {
    let (stdout, csv) = longevity_csv("a", "5");
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some(LONGEVITY_HEADER));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let keys: Vec<(usize, usize)> = rows.iter().map(|f| (f[0].parse().unwrap(), f[1].parse().unwrap())).collect();
    assert_eq!(keys, [(3, 0), (3, 20), (3, 40), (4, 0), (4, 20), (4, 40)], "{csv}");
    for f in &rows {
        assert_eq!(f.len(), 6, "{f:?}");
        assert!(f[2].parse::<usize>().unwrap() > 0, "state_bytes: {f:?}");
        assert!(f[3].parse::<usize>().unwrap() > 0, "welcome_bytes: {f:?}");
        let restore: f64 = f[4].parse().unwrap();
        assert!(restore > 0.0, "restore_ms: {f:?}");
        assert_eq!(f[4].split('.').nth(1).map(str::len), Some(3), "restore_ms with 3 decimals: {f:?}");
        // The binary counts its heap: a restored group occupies some.
        assert!(f[5].parse::<usize>().unwrap() > 0, "memory_bytes_per_member: {f:?}");
    }
    // The verdict of issue 10's target, per size, against the largest K.
    for n in [3, 4] {
        assert!(stdout.contains(&format!("n = {n}: issue 10's target at K = 40 against K = 0:")), "{stdout}");
    }
    assert_eq!(stdout.matches("state_bytes at K = 40").count(), 2, "{stdout}");

    // State and Welcome sizes are deterministic for a fixed seed (times and heap are not).
    let (_, again) = longevity_csv("b", "5");
    let sizes = |text: &str| -> Vec<String> {
        text.lines().map(|l| l.split(',').take(4).collect::<Vec<_>>().join(",")).collect()
    };
    assert_eq!(sizes(&csv), sizes(&again));
}

#[test]
fn operations_need_longevity() {
    let out = Command::new(env!("CARGO_BIN_EXE_dcgka"))
        .args(["bench", "--sizes", "4", "--operations", "0,20"])
        .output()
        .expect("run dcgka bench");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--longevity"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Issue 10's memory target at n = 128: the heap of a restored member (counted by the
/// binary's allocator) is at most 3 times its snapshot. A group of 128 costs a few seconds
/// to set up in a release build; n = 1024 takes the better part of an hour and is left to
/// `dcgka bench --longevity --sizes 1024 --operations 0`.
#[test]
fn a_restored_member_of_128_takes_at_most_three_times_its_snapshot() {
    let path = std::env::temp_dir().join(format!("dcgka-memory-test-{}.csv", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_dcgka"))
        .args(["bench", "--longevity", "--sizes", "128", "--operations", "0", "--csv"])
        .arg(&path)
        .output()
        .expect("run dcgka bench --longevity");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("✓ memory_bytes_per_member at K = 0 <= 3 x state_bytes"), "{stdout}");
    let csv = std::fs::read_to_string(&path).expect("CSV written");
    let _ = std::fs::remove_file(&path);
    let row: Vec<usize> = csv
        .lines()
        .nth(1)
        .expect("one row")
        .split(',')
        .enumerate()
        .filter(|(i, _)| *i != 4)
        .map(|(_, f)| f.parse().unwrap())
        .collect();
    let [n, k, state, _welcome, memory] = row[..] else { panic!("{csv}") };
    assert_eq!((n, k), (128, 0));
    assert!(memory > 0 && memory <= 3 * state, "heap {memory} B against a snapshot of {state} B");
}

#[test]
fn store_adds_two_columns_with_what_a_receiving_members_commit_writes() {
    let csv = bench_csv_with("store", "9", &["--store", "--ops", "message,update,create"]);
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some(format!("{HEADER},store_write_bytes_median,store_commit_ms_median").as_str()));
    let mut bytes = BTreeMap::new();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), 11, "{line}");
        let written: f64 = f[9].parse().unwrap();
        let ms: f64 = f[10].parse().unwrap();
        assert!(written > 0.0 && ms > 0.0, "{line}");
        bytes.insert((f[0].to_string(), f[1].parse::<usize>().unwrap()), written);
    }
    for n in [4, 8] {
        let key = |op: &str| (op.to_string(), n);
        // A message writes its sender's record, its log entry and its event; a control
        // message rewrites the group's core record as well; a create writes everything.
        assert!(bytes[&key("message")] <= 2048.0, "{bytes:?}");
        assert!(bytes[&key("update")] > bytes[&key("message")], "{bytes:?}");
        assert!(bytes[&key("create")] > bytes[&key("update")], "{bytes:?}");
    }
    // A message's write does not grow with the group.
    assert_eq!(bytes[&("message".to_string(), 4)], bytes[&("message".to_string(), 8)]);
    // Without --store the CSV keeps its columns (the other tests check the header).
}

/// `dcgka bench-net`'s header: scripts depend on it, exactly.
const NET_HEADER: &str = "nodes,op,p50_ms,p99_ms,msgs_per_s,wire_bytes_per_msg";

#[test]
fn bench_net_writes_one_row_per_size_and_op() {
    let path = std::env::temp_dir().join(format!("dcgka-bench-net-test-{}.csv", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_dcgka"))
        .args(["bench-net", "--nodes", "2,3", "--messages", "12", "--updates", "3", "--csv"])
        .arg(&path)
        .output()
        .expect("run dcgka bench-net");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "dcgka bench-net failed:\n{stdout}\n{stderr}");
    let csv = std::fs::read_to_string(&path).expect("CSV written");
    let _ = std::fs::remove_file(&path);
    // The same CSV on stdout and in the file; progress on stderr only.
    assert_eq!(stdout, csv);
    assert!(stderr.contains("bench-net: 3 nodes: message (throughput) 12/12"), "{stderr}");
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some(NET_HEADER));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let keys: Vec<(&str, &str)> = rows.iter().map(|f| (f[0], f[1])).collect();
    assert_eq!(keys, [("2", "update"), ("2", "message"), ("3", "update"), ("3", "message")]);
    for f in &rows {
        assert_eq!(f.len(), 6, "{f:?}");
        let num = |i: usize| f[i].parse::<f64>().unwrap_or_else(|e| panic!("{e}: {f:?}"));
        let (p50, p99, rate, wire) = (num(2), num(3), num(4), num(5));
        assert!(p50 > 0.0 && p50 <= p99, "latencies: {f:?}");
        // Bounded by the bench's own timeouts; on loopback far below.
        assert!(p99 < 120_000.0, "{f:?}");
        assert!(rate > 0.0, "throughput: {f:?}");
        // At least the envelope itself crossed the wire once per member.
        assert!(wire >= 100.0 && f[5].parse::<u64>().is_ok(), "wire bytes, a whole number: {f:?}");
    }
    // An update carries a seed per member and its acks follow: more bytes than a message.
    let wire = |i: usize| rows[i][5].parse::<u64>().unwrap();
    assert!(wire(2) > wire(3), "update vs message at 3 nodes: {rows:?}");
}

#[test]
fn bench_net_refuses_a_group_of_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_dcgka")).args(["bench-net", "--nodes", "1"]).output().unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
}
