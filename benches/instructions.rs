//! Instructions per operation, counted by callgrind: the figure a shared, noisy machine
//! does not disturb.
//!
//! The bench runs itself under `valgrind --tool=callgrind` twice per measure: once to
//! set up and stop, once to set up and run `INSTR_OPS` operations. The difference over
//! the operations is the cost of one. Measures:
//!
//! - a churn operation of the design doc's trace (the trace of `benches/churn.rs`),
//!   on every selected peer (`BENCH_PEERS`), with each peer's ratio to TLSF;
//! - a 1-block allocate + free pair on an empty space, on every peer;
//! - a pin + unpin of an Allocated extent on pinalloc, beside 10,000 pins holding
//!   10,000 Deferred extents;
//! - a churn operation on pinalloc after the pins bench's setup, with its 10,000 small
//!   extents Allocated and with them Deferred under pins (the pins bench's ratio);
//! - a churn operation on a `SharedAllocator` from one thread, beside the core's: what
//!   the thread-safe layer adds (groups, locks, summaries, stats).
//!
//! ```text
//! cargo bench --bench instructions                   # about a minute
//! INSTR_OPS=50000 cargo bench --bench instructions   # fewer operations
//! ```
//!
//! Where the instructions go, per function: keep the profiles and compare a run of
//! the operations with the run of none. With debug info, the names carry lines too.
//!
//! ```text
//! mkdir -p /tmp/cg && INSTR_KEEP=/tmp/cg CARGO_PROFILE_BENCH_DEBUG=true cargo bench --bench instructions
//! callgrind_annotate --inclusive=yes /tmp/cg/callgrind.churn.pinalloc.200000 | head -60
//! callgrind_annotate --inclusive=yes /tmp/cg/callgrind.churn.pinalloc.0 | head -60
//! ```
//!
//! Without valgrind on the `PATH`, it says so and stops. Under `cargo test --benches`
//! it runs each measure once, natively, on a few operations.

mod common;

use std::hint::black_box;
use std::process::Command;

use pinalloc::{Extent, ExtentAllocator, Request};

use common::{
    Peer, PeerVisitor, RunMode, SharedPeer, Trace, Workload, churn, env_u64, fill, held_setup,
    pair_1block, visit_peers,
};

/// What one inner run does, after its setup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Measure {
    Churn,
    Pairs,
    PinUnpin,
    /// pinalloc's churn after the pins bench's setup with 10,000 Allocated extents.
    Unheld,
    /// The same with each of them pinned and freed: Deferred under a live pin.
    Held,
    /// The churn on a `SharedAllocator`, from one thread.
    SharedChurn,
}

impl Measure {
    fn name(self) -> &'static str {
        match self {
            Measure::Churn => "churn",
            Measure::Pairs => "pairs",
            Measure::PinUnpin => "pin-unpin",
            Measure::Unheld => "churn-unheld",
            Measure::Held => "churn-held",
            Measure::SharedChurn => "shared-churn",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "churn" => Measure::Churn,
            "pairs" => Measure::Pairs,
            "pin-unpin" => Measure::PinUnpin,
            "churn-unheld" => Measure::Unheld,
            "churn-held" => Measure::Held,
            "shared-churn" => Measure::SharedChurn,
            other => panic!("unknown measure {other:?}"),
        }
    }
}

/// Runs `ops` operations of `measure` on peer `P`, after the setup. The churn trace is
/// generated for `total` operations whatever `ops` is, so that both runs of a
/// difference generate the same trace.
struct Inner {
    measure: Measure,
    ops: usize,
    total: usize,
    peer: String,
}

impl PeerVisitor for Inner {
    fn visit<P: Peer>(&mut self) {
        if P::NAME != self.peer {
            return;
        }
        match self.measure {
            Measure::Churn => {
                let trace = Trace::generate(&Workload::design_doc(self.total));
                let mut peer = P::new(trace.capacity);
                let mut live = fill(&mut peer, &trace);
                churn(&mut peer, &mut live, &trace.churn[..self.ops]);
                black_box(&live.slots);
            }
            Measure::Pairs => {
                let mut peer = P::new(1 << 20);
                for _ in 0..self.ops {
                    pair_1block(&mut peer);
                }
            }
            Measure::PinUnpin | Measure::Unheld | Measure::Held | Measure::SharedChurn => {
                unreachable!("pinalloc only")
            }
        }
    }
}

/// pinalloc: `ops` operations of the churn trace (`total` long) after the pins bench's
/// setup, with its 10,000 small extents Deferred under pins (`with_pins`) or Allocated.
fn held_churn(ops: usize, total: usize, with_pins: bool) {
    let trace = Trace::generate(&Workload::design_doc(total));
    let mut s = held_setup(&trace, 10_000, with_pins);
    churn(&mut s.peer, &mut s.live, &trace.churn[..ops]);
    black_box((&s.live.slots, &s.pins));
}

/// `ops` operations of the churn trace (`total` long) on a `SharedAllocator`.
fn shared_churn(ops: usize, total: usize) {
    let trace = Trace::generate(&Workload::design_doc(total));
    let mut peer = SharedPeer::new(trace.capacity);
    let mut live = fill(&mut peer, &trace);
    churn(&mut peer, &mut live, &trace.churn[..ops]);
    black_box(&live.slots);
}

/// pinalloc: `ops` pins and unpins of Allocated extents beside 10,000 pins holding
/// 10,000 Deferred extents.
fn pin_unpin(ops: usize) {
    let mut a = ExtentAllocator::new(1 << 20);
    let all: Vec<Extent> = (0..20_000)
        .map(|_| a.allocate(Request::new(16)).unwrap())
        .collect();
    for e in all.iter().step_by(2) {
        a.pin(*e).unwrap();
        a.free(*e).unwrap();
    }
    let others: Vec<Extent> = all.iter().skip(1).step_by(2).copied().collect();
    for i in 0..ops {
        let id = a.pin(others[i % others.len()]).unwrap();
        a.unpin(black_box(id)).unwrap();
    }
}

fn inner(args: &[String]) {
    let measure = Measure::parse(&args[0]);
    let peer = args[1].clone();
    let ops: usize = args[2].parse().expect("an operation count");
    let total: usize = args[3].parse().expect("a trace length");
    if measure == Measure::PinUnpin {
        pin_unpin(ops);
    } else if matches!(measure, Measure::Unheld | Measure::Held) {
        held_churn(ops, total, measure == Measure::Held);
    } else if measure == Measure::SharedChurn {
        shared_churn(ops, total);
    } else {
        visit_peers(&mut Inner {
            measure,
            ops,
            total,
            peer,
        });
    }
}

/// Instructions callgrind counts for one inner run of `ops` of `total` operations.
fn count(measure: Measure, peer: &str, ops: u64, total: u64) -> u64 {
    let me = std::env::current_exe().expect("the bench binary");
    // `INSTR_KEEP=dir`: keep each run's profile there, for `callgrind_annotate`.
    let keep = std::env::var("INSTR_KEEP").ok().filter(|d| !d.is_empty());
    let file = match &keep {
        Some(dir) => format!("{dir}/callgrind.{}.{peer}.{ops}", measure.name()),
        None => "/dev/null".into(),
    };
    let out = Command::new("valgrind")
        .args([
            "--tool=callgrind",
            &format!("--callgrind-out-file={file}"),
            "--",
        ])
        .arg(me)
        .args(["--inner", measure.name(), peer])
        .args([ops.to_string(), total.to_string()])
        .output()
        .expect("valgrind runs");
    assert!(out.status.success(), "valgrind failed: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    err.lines()
        .find_map(|l| {
            let (_, n) = l.split_once("Collected : ")?;
            n.trim().parse().ok()
        })
        .unwrap_or_else(|| panic!("no instruction total in valgrind's output:\n{err}"))
}

/// Instructions per operation: the difference between a run of `ops` and one of none.
fn per_op(measure: Measure, peer: &str, ops: u64) -> f64 {
    let none = count(measure, peer, 0, ops);
    let some = count(measure, peer, ops, ops);
    (some.saturating_sub(none)) as f64 / ops as f64
}

struct Names(Vec<&'static str>);

impl PeerVisitor for Names {
    fn visit<P: Peer>(&mut self) {
        self.0.push(P::NAME);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--inner") {
        inner(&args[at + 1..]);
        return;
    }
    let mut names = Names(Vec::new());
    visit_peers(&mut names);
    if RunMode::from_args() != RunMode::Bench {
        // A smoke run of every inner measure, natively.
        for &peer in &names.0 {
            for m in ["churn", "pairs"] {
                inner(&[m.into(), peer.into(), "1000".into(), "1000".into()]);
            }
        }
        pin_unpin(1000);
        for m in ["churn-unheld", "churn-held", "shared-churn"] {
            inner(&[m.into(), "pinalloc".into(), "1000".into(), "20000".into()]);
        }
        return;
    }
    let have_valgrind = Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_valgrind {
        eprintln!("instructions: valgrind is not on the PATH; nothing measured");
        return;
    }
    let ops = env_u64("INSTR_OPS", 200_000);
    println!("instructions per operation (callgrind, {ops} operations minus none)\n");
    println!("| peer | churn op | vs TLSF | 1-block pair | vs TLSF |");
    println!("|---|---:|---:|---:|---:|");
    let rows: Vec<(&str, f64, f64)> = names
        .0
        .iter()
        .map(|&p| {
            let c = per_op(Measure::Churn, p, ops);
            let q = per_op(Measure::Pairs, p, ops);
            eprintln!("  {p}: {c:.0} per churn op, {q:.0} per pair");
            (p, c, q)
        })
        .collect();
    let tlsf = rows
        .iter()
        .find(|r| r.0 == "xalloc-tlsf")
        .map(|r| (r.1, r.2));
    for (p, c, q) in &rows {
        let ratio = |x: f64, t: Option<f64>| t.map_or("-".into(), |t| format!("{:.2}x", x / t));
        println!(
            "| {p} | {c:.0} | {} | {q:.0} | {} |",
            ratio(*c, tlsf.map(|t| t.0)),
            ratio(*q, tlsf.map(|t| t.1))
        );
    }
    let pins = per_op(Measure::PinUnpin, "pinalloc", ops);
    println!("\npinalloc pin + unpin of an Allocated extent, beside 10,000 pins holding");
    println!("10,000 Deferred extents: {pins:.0} instructions per pair");
    let unheld = per_op(Measure::Unheld, "pinalloc", ops);
    let held = per_op(Measure::Held, "pinalloc", ops);
    println!(
        "\npinalloc churn op after the pins bench's setup: {unheld:.0} instructions with its \
         10,000 extents Allocated, {held:.0} with them Deferred under 10,000 pins ({:.3}x)",
        held / unheld
    );
    let core = rows.iter().find(|r| r.0 == "pinalloc").map(|r| r.1);
    let shared = per_op(Measure::SharedChurn, "pinalloc", ops);
    println!(
        "
`SharedAllocator` churn op from one thread: {shared:.0} instructions ({})",
        core.map_or("-".into(), |c| format!("{:.2}x the core's", shared / c))
    );
}
