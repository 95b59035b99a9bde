//! A harness for `dcgka node` and `dcgka chat` processes on loopback: each runs the built
//! binary with `--json` in its own data directory; a thread reads its stdout lines into a
//! channel, and tests wait on them, each wait bounded by [`WAIT`], never sleeping.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The bound on any one wait.
pub const WAIT: Duration = Duration::from_secs(60);

/// Options that make nodes quick to sync and to acknowledge, for tests.
pub const QUICK: &[&str] = &["--sync-interval-ms", "500", "--ack-delay-ms", "50"];

/// One `dcgka` process.
pub struct Proc {
    /// A label for messages.
    pub label: String,
    /// Its data directory.
    pub dir: PathBuf,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Value>,
    /// Every JSON line it printed so far, in order.
    pub seen: Vec<Value>,
    /// Its short name and peer ID (from `ready`).
    pub name: String,
    pub peer: String,
    /// Its first listening address (without `/p2p/<peer>`).
    pub addr: String,
    /// How many `/send`s [`Proc::send_texts`] has written.
    pub queued_sends: usize,
}

impl Proc {
    /// Starts `dcgka <mode> --json --data-dir <dir> <args>` and waits for its `ready` and
    /// first `listening` lines.
    pub fn start(label: &str, mode: &str, dir: &Path, args: &[String]) -> Proc {
        let log = std::fs::File::create(dir.with_extension("stderr.log")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_dcgka"))
            .arg(mode)
            .arg("--json")
            .arg("--data-dir")
            .arg(dir)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start dcgka");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = channel();
        let who = label.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let v: Value =
                    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{who}: not one JSON object ({e}): {line}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut p = Proc {
            label: label.to_string(),
            dir: dir.to_path_buf(),
            child,
            stdin,
            lines: rx,
            seen: Vec::new(),
            name: String::new(),
            peer: String::new(),
            addr: String::new(),
            queued_sends: 0,
        };
        let ready = p.wait("ready", |v| v["event"] == "ready");
        assert_eq!(p.seen[0], ready, "{}: `ready` is the first line", p.label);
        // A device names itself; a process that is no device (a mailbox) may not.
        p.name = ready["name"].as_str().unwrap_or_default().to_string();
        p.peer = ready["peer"].as_str().unwrap().to_string();
        let l = p.wait("listening", |v| v["event"] == "listening");
        p.addr = l["address"].as_str().unwrap().to_string();
        p
    }

    /// Its address with its peer ID.
    pub fn full_addr(&self) -> String {
        format!("{}/p2p/{}", self.addr, self.peer)
    }

    /// Writes one command line.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").and_then(|()| stdin.flush()).unwrap();
    }

    /// Writes a `/send` to `group` for each text (without waiting).
    pub fn send_texts(&mut self, group: &str, texts: &[String]) {
        for t in texts {
            self.send(&format!("/send {group} {t}"));
            self.queued_sends += 1;
        }
    }

    /// Waits until every `/send` written by [`Proc::send_texts`] is confirmed by an `ok`;
    /// none may have failed.
    pub fn wait_sent(&mut self) {
        let n = self.queued_sends;
        self.until(&format!("{n} sends confirmed"), |seen| {
            seen.iter().filter(|v| v["event"] == "ok" && v["command"] == "send").count() >= n
        });
        let errors: Vec<&Value> = self.seen.iter().filter(|v| v["event"] == "error").collect();
        assert!(errors.is_empty(), "{}: {errors:?}", self.label);
    }

    /// Closes its stdin.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// How many lines it printed so far (a mark for [`Proc::wait_from`]).
    pub fn mark(&mut self) -> usize {
        self.drain();
        self.seen.len()
    }

    fn drain(&mut self) {
        while let Ok(v) = self.lines.try_recv() {
            self.seen.push(v);
        }
    }

    /// Waits for a line matching `pred` among all lines printed.
    pub fn wait(&mut self, what: &str, pred: impl FnMut(&Value) -> bool) -> Value {
        self.wait_from(0, what, pred)
    }

    /// Waits for a line matching `pred` from line number `from` on.
    pub fn wait_from(&mut self, from: usize, what: &str, mut pred: impl FnMut(&Value) -> bool) -> Value {
        let mut found = None;
        self.until(what, |seen| {
            found = seen.iter().skip(from).find(|v| pred(v)).cloned();
            found.is_some()
        });
        found.unwrap()
    }

    /// Waits until `cond` holds of the lines printed so far.
    pub fn until(&mut self, what: &str, mut cond: impl FnMut(&[Value]) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            self.drain();
            if cond(&self.seen) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => self.seen.push(v),
                Err(RecvTimeoutError::Timeout) => self.fail(&format!("timed out waiting for {what}")),
                Err(RecvTimeoutError::Disconnected) => self.fail(&format!("stdout closed waiting for {what}")),
            }
        }
    }

    /// Runs a command and waits for the first line it prints matching `pred`.
    pub fn run(&mut self, line: &str, pred: impl FnMut(&Value) -> bool) -> Value {
        let from = self.mark();
        self.send(line);
        self.wait_from(from, line, pred)
    }

    /// Runs a command that must fail, and returns its error message.
    pub fn run_err(&mut self, line: &str) -> String {
        let v = self.run(line, |v| v["event"] == "error" || v["event"] == "ok");
        assert_eq!(v["event"], "error", "{}: `{line}` should fail: {v}", self.label);
        v["message"].as_str().unwrap().to_string()
    }

    /// The texts of messages received in `group`, with their ids and senders.
    pub fn messages(&mut self, group: &str) -> Vec<(u64, String, String)> {
        self.drain();
        self.seen
            .iter()
            .filter(|v| v["event"] == "message" && v["group"] == group)
            .map(|v| {
                (
                    v["id"].as_u64().unwrap(),
                    v["from"].as_str().unwrap().to_string(),
                    v["text"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// The member names of the last `members` line of `group`.
    pub fn members(&mut self, group: &str) -> Option<Vec<String>> {
        self.drain();
        let v = self.seen.iter().rev().find(|v| v["event"] == "members" && v["group"] == group)?;
        Some(v["members"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_string()).collect())
    }

    /// Sends `/quit` and waits for the process to exit (bounded); returns its lines too.
    pub fn quit(mut self) -> (ExitStatus, Vec<Value>) {
        self.send("/quit");
        self.wait_exit()
    }

    /// Waits for the process to exit by itself (bounded): its stdout closes, then it is
    /// reaped.
    pub fn wait_exit(mut self) -> (ExitStatus, Vec<Value>) {
        self.read_to_end("the exit");
        let status = self.child.wait().unwrap();
        (status, std::mem::take(&mut self.seen))
    }

    /// Kills the process (SIGKILL on unix) and returns the lines it printed.
    pub fn kill(mut self) -> Vec<Value> {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.read_to_end("the end of the killed process's output");
        std::mem::take(&mut self.seen)
    }

    /// Reads lines until stdout closes (bounded).
    fn read_to_end(&mut self, what: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => self.seen.push(v),
                Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => self.fail(&format!("timed out waiting for {what}")),
            }
        }
    }

    /// Sends a signal by name (`TERM`, `INT`) with the system's `kill`.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(ok.success(), "kill -{sig}");
    }

    fn fail(&mut self, what: &str) -> ! {
        self.drain();
        let log = std::fs::read_to_string(self.dir.with_extension("stderr.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect();
        let seen: Vec<String> = self.seen.iter().map(Value::to_string).collect();
        panic!("{}: {what}\nstdout:\n{}\nstderr (tail):\n{}", self.label, seen.join("\n"), tail.join("\n"));
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // A test that failed half-way leaves no process behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
