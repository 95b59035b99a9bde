//! The networked subcommands as processes on loopback: `dcgka chat` driven through stdin,
//! two chats and a mailbox (`dcgka node --mailbox`), one chat reading from the mailbox alone
//! while the other is stopped, several `dcgka node`s with one killed and restarted
//! mid-stream, and `dcgka invite` beside a running node.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use support::{Proc, QUICK};

fn args(extra: &[&str]) -> Vec<String> {
    QUICK.iter().chain(extra).map(|s| s.to_string()).collect()
}

fn is(event: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["event"] == event
}

/// A group's members as every process in `procs` reports them (after `/members`).
fn members_everywhere(procs: &mut [&mut Proc], gid: &str, n: usize) -> BTreeSet<String> {
    let mut all = Vec::new();
    for p in procs.iter_mut() {
        let v = p.run(&format!("/members {}", &gid[..8]), is("members"));
        assert_eq!(v["group"], gid);
        let names: BTreeSet<String> =
            v["members"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_string()).collect();
        assert_eq!(names.len(), n, "{}: {v}", p.label);
        assert_eq!(v["me"], p.name.as_str());
        all.push(names);
    }
    assert!(all.windows(2).all(|w| w[0] == w[1]), "members differ: {all:?}");
    all.pop().unwrap()
}

/// Waits until every process in `procs` reports exactly `n` members of `gid` on its own.
fn wait_members(procs: &mut [&mut Proc], gid: &str, n: usize) {
    for p in procs.iter_mut() {
        let g = gid.to_string();
        p.until(&format!("{n} members of {gid}"), |seen| {
            seen.iter()
                .rev()
                .find(|v| v["event"] == "members" && v["group"] == g.as_str())
                .is_some_and(|v| v["members"].as_array().is_some_and(|m| m.len() == n))
        });
    }
}

#[test]
fn chat_is_driven_through_stdin() {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = Proc::start("A", "chat", &tmp.path().join("a"), &args(&[]));
    let mut b = Proc::start("B", "chat", &tmp.path().join("b"), &args(&["--peer", &a.full_addr()]));
    // (More processes, such as a mailbox both know, start here the same way:
    // `Proc::start(label, "node", dir, &args(&[...]))`.)

    // A creates a group: `joined` with its ID.
    let gid = a.run("/create", is("joined"))["group"].as_str().unwrap().to_string();
    assert_eq!(gid.len(), 64);
    // B's invitation; A adds B by a prefix of the group ID.
    let inv = b.run("/invite", is("invite"));
    assert_eq!(inv["name"], b.name.as_str());
    let code = inv["code"].as_str().unwrap().to_string();
    assert!(code.starts_with("dcgka1-"));
    let ok = a.run(&format!("/add {} {code}", &gid[..6]), |v| is("ok")(v) || is("error")(v));
    assert_eq!(ok["command"], "add", "{ok}");
    assert_eq!(ok["name"], b.name.as_str());
    // B joins with no further input.
    let joined = b.wait("B joined", is("joined"));
    assert_eq!(joined["group"], gid.as_str());
    wait_members(&mut [&mut a, &mut b], &gid, 2);
    let names = members_everywhere(&mut [&mut a, &mut b], &gid, 2);
    assert_eq!(names, BTreeSet::from([a.name.clone(), b.name.clone()]));

    // A writes with /send; B answers with a plain line (its current group).
    a.run(&format!("/send {} hello, B!", &gid[..10]), is("ok"));
    let m = b.wait("A's message", |v| is("message")(v) && v["text"] == "hello, B!");
    assert_eq!((m["group"].as_str(), m["from"].as_str()), (Some(gid.as_str()), Some(a.name.as_str())));
    assert!(m["id"].is_u64());
    b.run("hi A, the rest of the line", is("ok"));
    let m = a.wait("B's message", |v| is("message")(v) && v["text"] == "hi A, the rest of the line");
    assert_eq!(m["from"], b.name.as_str());

    // Failed commands print an error and the process goes on.
    assert!(a.run_err("/send nosuchgroup x").contains("no group"));
    assert!(a.run_err(&format!("/add {} dcgka1-garbage", &gid[..8])).contains("invitation"));
    assert!(a.run_err(&format!("/remove {} 00000000", &gid[..8])).contains("no member"));
    assert!(a.run_err("/frobnicate").contains("unknown command"));
    assert!(a.run_err("/add").contains("GROUP"));
    let groups = a.run("/groups", is("groups"));
    assert_eq!(groups["groups"], serde_json::json!([gid]));
    assert_eq!(a.run("/help", is("help"))["commands"].as_array().map(Vec::len), Some(11));

    // B updates its keys; messages still flow both ways.
    let ok = b.run(&format!("/update {}", &gid[..8]), |v| is("ok")(v) || is("error")(v));
    assert_eq!(ok["command"], "update", "{ok}");
    a.run(&format!("/send {} after the update", &gid[..8]), is("ok"));
    b.wait("the message after the update", |v| is("message")(v) && v["text"] == "after the update");

    // A removes B: B hears it, A is alone.
    let ok = a.run(&format!("/remove {} {}", &gid[..8], b.name), |v| is("ok")(v) || is("error")(v));
    assert_eq!(ok["command"], "remove", "{ok}");
    let removed = b.wait("B removed", is("removed"));
    assert_eq!(removed["group"], gid.as_str());
    members_everywhere(&mut [&mut a], &gid, 1);
    a.run(&format!("/send {} only A reads this", &gid[..8]), is("ok"));
    // B's group is gone: its commands on it fail.
    assert!(b.run_err(&format!("/send {} x", &gid[..8])).contains("no group"));

    let (status_a, _) = a.quit();
    let (status_b, seen_b) = b.quit();
    assert!(status_a.success() && status_b.success(), "{status_a} {status_b}");
    assert!(!seen_b.iter().any(|v| v["text"] == "only A reads this"));
}

#[test]
fn two_chats_and_a_mailbox() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = Proc::start("M", "node", &tmp.path().join("m"), &args(&["--mailbox"]));
    let ready = m.seen[0].clone();
    assert_eq!((ready["role"].as_str(), ready["name"].is_null()), (Some("mailbox"), true), "{ready}");
    let l = m.wait("listening", is("listening"));
    assert_eq!(l["dial"].as_str(), Some(m.full_addr().as_str()), "the address to give to --peer");
    let m_addr = m.full_addr();
    let m_peer = m.peer.clone();

    let a_dir = tmp.path().join("a");
    let b_dir = tmp.path().join("b");
    let mut a = Proc::start("A", "chat", &a_dir, &args(&["--peer", &m_addr]));
    let mut b = Proc::start("B", "chat", &b_dir, &args(&["--peer", &m_addr, "--peer", &a.full_addr()]));
    // Both recognise the mailbox by themselves and stock prekeys there.
    for p in [&mut a, &mut b] {
        let s = p.wait("prekeys stocked at the mailbox", is("stocked"));
        assert_eq!(s["mailbox"], m_peer.as_str());
        assert!(s["one_time_prekeys"].as_u64().is_some_and(|n| n > 0), "{s}");
    }

    // A creates; the mailbox serves the group.
    let gid = a.run("/create", is("joined"))["group"].as_str().unwrap().to_string();
    m.wait("the group's first envelope at the mailbox", |v| is("stored")(v) && v["group"] == gid.as_str());
    // B's invitation names the mailbox; A adds B with it.
    let code = b.run("/invite", is("invite"))["code"].as_str().unwrap().to_string();
    let inv = dcgka_net::Invitation::decode(&code).unwrap();
    assert!(inv.mailboxes.iter().any(|(p, _)| p.to_string() == m_peer), "{:?}", inv.mailboxes);
    let ok = a.run(&format!("/add {} {code}", &gid[..8]), |v| is("ok")(v) || is("error")(v));
    assert_eq!((ok["command"].as_str(), ok["name"].as_str()), (Some("add"), Some(b.name.as_str())), "{ok}");
    assert_eq!(b.wait("B joined", is("joined"))["group"], gid.as_str());
    wait_members(&mut [&mut a, &mut b], &gid, 2);

    // Both ways.
    a.run(&format!("/send {} hello B", &gid[..8]), is("ok"));
    let got = b.wait("A's message", |v| is("message")(v) && v["text"] == "hello B");
    assert_eq!((got["group"].as_str(), got["from"].as_str()), (Some(gid.as_str()), Some(a.name.as_str())));
    b.run("hello A", is("ok"));
    let got = a.wait("B's message", |v| is("message")(v) && v["text"] == "hello A");
    assert_eq!(got["from"], b.name.as_str());
    let names = members_everywhere(&mut [&mut a, &mut b], &gid, 2);
    assert_eq!(names, BTreeSet::from([a.name.clone(), b.name.clone()]));
    let (a_name, b_name, b_peer) = (a.name.clone(), b.name.clone(), b.peer.clone());

    // B stops; A writes while B is away; the mailbox keeps it (the only envelope A makes
    // now: application messages are not acknowledged).
    let (status, _) = b.quit();
    assert!(status.success(), "B: {status}");
    a.wait("B gone", |v| is("disconnected")(v) && v["peer"] == b_peer.as_str());
    let mark = m.mark();
    a.run(&format!("/send {} while B was away", &gid[..8]), is("ok"));
    m.wait_from(mark, "the message at the mailbox", |v| is("stored")(v) && v["group"] == gid.as_str());
    // A stops too: nobody but the mailbox holds the message now.
    let (status, seen_a) = a.quit();
    assert!(status.success(), "A: {status}");

    // B comes back with the mailbox as its only peer and reads the message from it.
    let mut b = Proc::start("B", "chat", &b_dir, &args(&["--peer", &m_addr]));
    let got = b.wait("the message from the mailbox", |v| is("message")(v) && v["text"] == "while B was away");
    assert_eq!((got["group"].as_str(), got["from"].as_str()), (Some(gid.as_str()), Some(a_name.as_str())));
    // It came by sync from the mailbox (the node reports the exchange after its items).
    b.wait("a sync from the mailbox", |v| is("synced")(v) && v["peer"] == m_peer.as_str());
    // It read nothing twice under two ids, and nothing from before its return again.
    let msgs = b.messages(&gid);
    assert_eq!(msgs.iter().filter(|(_, _, t)| t == "while B was away").count(), 1, "{msgs:?}");
    assert!(!msgs.iter().any(|(_, _, t)| t == "hello B"), "{msgs:?}");

    // A comes back (the same device: same name) and removes B.
    let mut a = Proc::start("A", "chat", &a_dir, &args(&["--peer", &m_addr, "--peer", &b.full_addr()]));
    assert_eq!(a.name, a_name);
    assert!(!a.seen.iter().chain(&seen_a).any(|v| v["text"] == "while B was away"), "A reads not its own");
    let b_peer = b.peer.clone();
    a.wait("B connected", |v| is("connected")(v) && v["peer"] == b_peer.as_str());
    let ok = a.run(&format!("/remove {} {b_name}", &gid[..8]), |v| is("ok")(v) || is("error")(v));
    assert_eq!((ok["command"].as_str(), ok["name"].as_str()), (Some("remove"), Some(b_name.as_str())), "{ok}");
    assert_eq!(b.wait("B removed", is("removed"))["group"], gid.as_str());
    assert_eq!(members_everywhere(&mut [&mut a], &gid, 1), BTreeSet::from([a_name.clone()]));
    assert!(b.run_err(&format!("/members {}", &gid[..8])).contains("no group"));
    a.run(&format!("/send {} after B left", &gid[..8]), is("ok"));

    let (status_a, _) = a.quit();
    let (status_b, seen_b) = b.quit();
    assert!(status_a.success() && status_b.success(), "{status_a} {status_b}");
    assert!(!seen_b.iter().any(|v| v["text"] == "after B left"));
    // The mailbox stops cleanly at SIGTERM.
    m.signal("TERM");
    let (status_m, _) = m.wait_exit();
    assert!(status_m.success(), "M: {status_m}");
}

#[test]
fn nodes_survive_a_kill_and_catch_up() {
    let tmp = tempfile::tempdir().unwrap();
    let mut n0 = Proc::start("N0", "node", &tmp.path().join("n0"), &args(&[]));
    let mut n1 = Proc::start("N1", "node", &tmp.path().join("n1"), &args(&["--peer", &n0.full_addr()]));
    // N2 dials N0 by its address alone (no /p2p), and N1.
    let n2_peers = args(&["--peer", &n0.addr, "--peer", &n1.full_addr()]);
    let n2_dir = tmp.path().join("n2");
    let mut n2 = Proc::start("N2", "node", &n2_dir, &n2_peers);

    let gid = n0.run("/create", is("joined"))["group"].as_str().unwrap().to_string();
    for p in [&mut n1, &mut n2] {
        let code = p.run("/invite", is("invite"))["code"].as_str().unwrap().to_string();
        let ok = n0.run(&format!("/add {gid} {code}"), |v| is("ok")(v) || is("error")(v));
        assert_eq!(ok["command"], "add", "{ok}");
        p.wait("joined", is("joined"));
    }
    wait_members(&mut [&mut n0, &mut n1, &mut n2], &gid, 3);

    // Texts each node sent (confirmed by its `ok`), by sender name.
    let mut sent: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let g8 = gid[..8].to_string();
    let before_kill;
    {
        let mut queue = |p: &mut Proc, tag: &str, n: usize| {
            let texts: Vec<String> = (0..n).map(|i| format!("{tag} {} #{i}", p.label)).collect();
            p.send_texts(&g8, &texts);
            sent.entry(p.name.clone()).or_default().extend(texts);
        };

        // A first stream from everyone.
        for p in [&mut n0, &mut n1, &mut n2] {
            queue(p, "first", 5);
        }
        n2.wait_sent();
        // N0 and N1 go on; N2 is killed, without a word, once it has read some of it.
        queue(&mut n0, "stream", 8);
        queue(&mut n1, "stream", 8);
        n2.until("some of the stream", |seen| {
            seen.iter().any(|v| v["event"] == "message" && v["text"].as_str().is_some_and(|t| t.starts_with("stream")))
        });
        before_kill = n2.kill();
        // While N2 is away.
        queue(&mut n0, "away", 4);
        queue(&mut n1, "away", 4);
        n0.wait_sent();
        n1.wait_sent();

        // N2 again, on the same directory and a new port: it redials N0 and N1 and syncs, and
        // it still sends.
        n2 = Proc::start("N2", "node", &n2_dir, &n2_peers);
        queue(&mut n2, "back", 3);
        queue(&mut n0, "last", 2);
        n2.wait_sent();
        n0.wait_sent();
    }

    // Every node reads every message of the others, at least once.
    let n2_name = n2.name.clone();
    let mut nodes = [n0, n1, n2];
    for p in &mut nodes {
        let want: BTreeSet<String> =
            sent.iter().filter(|(who, _)| **who != p.name).flat_map(|(_, t)| t.iter().cloned()).collect();
        let prior: Vec<(u64, String, String)> = if p.name == n2_name {
            before_kill
                .iter()
                .filter(|v| v["event"] == "message")
                .map(|v| (v["id"].as_u64().unwrap(), String::new(), v["text"].as_str().unwrap().to_string()))
                .collect()
        } else {
            Vec::new()
        };
        let g = gid.clone();
        let label = p.label.clone();
        p.until(&format!("every message at {label}"), |seen| {
            let got: BTreeSet<&str> = prior
                .iter()
                .map(|(_, _, t)| t.as_str())
                .chain(
                    seen.iter()
                        .filter(|v| v["event"] == "message" && v["group"] == g.as_str())
                        .filter_map(|v| v["text"].as_str()),
                )
                .collect();
            want.iter().all(|t| got.contains(t.as_str()))
        });
        eprintln!("{label}: {} wanted, {} read before the kill", want.len(), prior.len());
        // No text under two ids (the same id twice is a replay, which consumers dedupe).
        let mut ids: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
        for (id, _, text) in prior.into_iter().chain(p.messages(&gid)) {
            ids.entry(text).or_default().insert(id);
        }
        for (text, ids) in &ids {
            assert_eq!(ids.len(), 1, "{label}: {text:?} under ids {ids:?}");
        }
        // Nothing from outside the group, nothing of its own.
        assert!(ids.keys().all(|t| want.contains(t)), "{label}: {:?}", ids.keys());
    }

    for p in nodes {
        let label = p.label.clone();
        let (status, _) = p.quit();
        assert!(status.success(), "{label}: {status}");
    }
}

#[test]
fn invite_prints_a_line_while_the_node_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let mut node = Proc::start("node", "node", &dir, &args(&[]));
    // The end of its input does not stop a node: it still takes a connection after it.
    node.close_stdin();
    let other = Proc::start("other", "node", &tmp.path().join("o"), &args(&["--peer", &node.full_addr()]));
    let other_peer = other.peer.clone();
    node.wait("the other node's connection", |v| v["event"] == "connected" && v["peer"] == other_peer.as_str());
    assert!(other.quit().0.success());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dcgka"))
        .args(["invite", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8(out.stdout).unwrap();
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.starts_with("dcgka1-"), "{line}");
    let inv = dcgka_net::Invitation::decode(&line).unwrap();
    assert_eq!(inv.peer.to_string(), node.peer);
    assert_eq!(inv.name(), node.name);
    assert!(inv.addrs.iter().any(|a| a.to_string() == node.addr), "{:?} {}", inv.addrs, node.addr);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dcgka"))
        .args(["invite", "--json", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["event"].as_str(), v["name"].as_str()), (Some("invite"), Some(node.name.as_str())));
    assert_eq!(v["code"].as_str(), Some(line.trim()));

    // SIGTERM stops it cleanly.
    node.signal("TERM");
    let (status, _) = node.wait_exit();
    assert!(status.success(), "{status}");
}
