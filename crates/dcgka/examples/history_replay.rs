//! How long a newcomer takes to replay a Welcome's history (§7.4), for legitimate long
//! histories and for the largest history a Welcome may carry without acks: the membership
//! history `H` is rebuilt operation by operation with `History::apply`, which is what
//! `Group::join` does after the Welcome's signature and bounds were checked.
//!
//! Run with `cargo run --release --example history_replay -- PROFILE`, PROFILE being
//! `churn` (32 members; the creator adds a member and removes the oldest other one, 75
//! times, every member acknowledging everything: 4,907 operations, 107 instances),
//! `growth` (a group grown one add at a time to 100 members, every member acknowledging each
//! add: 5,050 operations) or `adds` (the creator adds 1,023 members and nobody acknowledges
//! anything: the largest instance count a Welcome may introduce, `MAX_GROUP`). It prints
//! the time and the process's peak resident memory (Linux). A second argument changes the
//! number of cycles, the final size or the number of adds.

use std::time::Instant;

use dcgka::dgm::{History, Op, OpId};
use dcgka::ids::MemberId;

/// Builds a history as a list of operations, tracking each member's sequence number.
struct Builder {
    ops: Vec<Op<MemberId>>,
    seq: Vec<u64>,
}

impl Builder {
    fn member(n: usize) -> MemberId {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&(n as u64).to_be_bytes());
        // Spread the IDs as real MIDs are spread, not in creation order.
        b[8] = (n.wrapping_mul(97) % 251) as u8;
        b.reverse();
        MemberId(b)
    }

    fn next(&mut self, n: usize) -> u64 {
        if self.seq.len() <= n {
            self.seq.resize(n + 1, 0);
        }
        self.seq[n] += 1;
        self.seq[n]
    }

    fn create(&mut self, others: usize) -> OpId<MemberId> {
        let seq = self.next(0);
        let members = (1..=others).map(Self::member).collect();
        self.ops.push(Op::Create { sender: Self::member(0), seq, members });
        OpId::new(Self::member(0), seq)
    }

    fn add(&mut self, by: usize, target: usize) -> OpId<MemberId> {
        let seq = self.next(by);
        self.ops.push(Op::Add { sender: Self::member(by), seq, target: Self::member(target) });
        OpId::new(Self::member(by), seq)
    }

    fn remove(&mut self, by: usize, target: usize) -> OpId<MemberId> {
        let seq = self.next(by);
        self.ops.push(Op::Remove { sender: Self::member(by), seq, target: Self::member(target) });
        OpId::new(Self::member(by), seq)
    }

    fn ack(&mut self, by: usize, of: &OpId<MemberId>) {
        let seq = self.next(by);
        self.ops.push(Op::Ack { sender: Self::member(by), seq, of: of.clone() });
    }
}

fn churn(cycles: usize) -> Vec<Op<MemberId>> {
    let mut b = Builder { ops: Vec::new(), seq: Vec::new() };
    let mut live: Vec<usize> = (1..32).collect();
    let c = b.create(31);
    for &m in &live {
        b.ack(m, &c);
    }
    for next in 32..32 + cycles {
        let a = b.add(0, next);
        for &m in &live {
            b.ack(m, &a);
        }
        b.ack(next, &a);
        live.push(next);
        let old = live.remove(0);
        let r = b.remove(0, old);
        for &m in &live {
            b.ack(m, &r);
        }
    }
    b.ops
}

fn growth(size: usize) -> Vec<Op<MemberId>> {
    let mut b = Builder { ops: Vec::new(), seq: Vec::new() };
    let c = b.create(1);
    b.ack(1, &c);
    for n in 2..size {
        let a = b.add(0, n);
        for m in 1..n {
            b.ack(m, &a);
        }
        b.ack(n, &a);
    }
    b.ops
}

fn adds(count: usize) -> Vec<Op<MemberId>> {
    let mut b = Builder { ops: Vec::new(), seq: Vec::new() };
    b.create(0);
    for n in 1..=count {
        b.add(0, n);
    }
    b.ops
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let profile = std::env::args().nth(1).unwrap_or_else(|| "churn".to_string());
    let size: Option<usize> = std::env::args().nth(2).map(|s| s.parse()).transpose()?;
    let ops = match profile.as_str() {
        "churn" => churn(size.unwrap_or(75)),
        "growth" => growth(size.unwrap_or(100)),
        "adds" => adds(size.unwrap_or(1023)),
        other => return Err(format!("unknown profile {other}: churn, growth or adds").into()),
    };
    let before = peak_rss_kib();
    let n = ops.len();
    let start = Instant::now();
    let mut h = History::new();
    for op in ops {
        h.apply(op)?;
    }
    let took = start.elapsed();
    println!(
        "{profile}: {n} operations, {} instances, {} members now; replayed in {:.1} ms; peak RSS {} KiB (before {} KiB)",
        h.ever_added().len(),
        h.view_me().len(),
        took.as_secs_f64() * 1e3,
        peak_rss_kib().unwrap_or(0),
        before.unwrap_or(0),
    );
    Ok(())
}
