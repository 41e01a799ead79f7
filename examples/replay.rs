//! Replays a recorded workload against each placement policy, to choose one for
//! your own workload rather than for a synthetic one, and checks that the recorded
//! policies give back every recorded result.
//!
//! ```text
//! cargo run --release --example replay [TRACE_FILE]
//! ```
//!
//! With no file it records a churn of small files with pins, commits and readers
//! (the kind of trace the churn bench times), writes it to `target/churn.trace`,
//! and replays that. Record your own with `pinalloc::trace::Recorder` (or
//! `SharedRecorder`) and `pinalloc::trace::encode`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use pinalloc::testing::SplitMix;
use pinalloc::trace::{self, Recorder, ReplayReport, Trace};
use pinalloc::{Extent, ExtentAllocator, Policy, Request};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let trace = match std::env::args().nth(1) {
        Some(path) => {
            let bytes = std::fs::read(&path)?;
            let trace = match trace::decode(&bytes) {
                Ok(t) => t,
                Err(trace::TraceError::Torn { calls }) => {
                    eprintln!("{path} is torn: replaying its {calls} complete calls");
                    trace::decode_prefix(&bytes)?
                }
                Err(e) => return Err(e.into()),
            };
            println!(
                "{path}: {} calls on {} blocks",
                trace.calls.len(),
                trace.capacity
            );
            trace
        }
        None => {
            let trace = record_churn(200_000);
            let path = PathBuf::from("target/churn.trace");
            std::fs::create_dir_all("target")?;
            let bytes = trace::encode(&trace);
            std::fs::write(&path, &bytes)?;
            println!(
                "recorded a churn of {} calls on {} blocks: {} ({} bytes, {:.1} per call)",
                trace.calls.len(),
                trace.capacity,
                path.display(),
                bytes.len(),
                bytes.len() as f64 / trace.calls.len() as f64
            );
            trace
        }
    };
    println!();
    println!("{}", ReplayReport::table_header());
    let recorded = replay(&trace, None)?;
    println!("{}", recorded.table_row());
    for policy in [Policy::BestFit, Policy::FirstFit] {
        println!("{}", replay(&trace, Some(policy))?.table_row());
    }
    println!();
    println!(
        "The recorded policies gave back all {} recorded results.",
        recorded.equal_results
    );
    Ok(())
}

/// One replay, with a progress bar on standard error for a long trace.
fn replay(trace: &Trace, policy: Option<Policy>) -> Result<ReplayReport, trace::ReplayError> {
    let total = trace.calls.len();
    let name = policy.map_or("recorded".into(), |p| format!("{p:?}"));
    let show = total >= 100_000 && std::io::stderr().is_terminal();
    let report = trace::replay_with_progress(trace, policy, |done| {
        if show {
            let filled = done * 40 / total.max(1);
            eprint!(
                "\r{name:>9} [{}{}] {:3}%",
                "#".repeat(filled),
                " ".repeat(40 - filled),
                done * 100 / total.max(1)
            );
            let _ = std::io::stderr().flush();
        }
    });
    if show {
        eprintln!();
    }
    report
}

/// A churn of small files on a 2^16-block volume, kept near 70% full, with some
/// files freed under a pin (I/O in flight), frees on commit, commits and readers.
fn record_churn(calls: usize) -> Trace {
    let mut rec = Recorder::new(ExtentAllocator::new(1 << 16));
    let mut rng = SplitMix::new(2026);
    let mut live: Vec<Extent> = Vec::new();
    let mut used = 0u64;
    let mut pins = Vec::new();
    let mut readers = Vec::new();
    while rec.trace().calls.len() < calls {
        let full = used * 10 >= (1 << 16) * 7;
        match rng.below(16) {
            0..=6 if !full => {
                let len = 1 + rng.below(64);
                if let Ok(e) = rec.allocate(Request::new(len)) {
                    used += e.len;
                    live.push(e);
                }
            }
            0..=11 if !live.is_empty() => {
                let e = live.swap_remove(rng.below(live.len() as u64) as usize);
                used -= e.len;
                if rng.below(8) == 0 {
                    pins.push(rec.pin(e).expect("a live file pins"));
                }
                if rng.below(4) == 0 {
                    rec.free_on_commit(e).expect("a live file frees");
                } else {
                    rec.free(e).expect("a live file frees");
                }
            }
            12 if !pins.is_empty() => {
                let p = pins.swap_remove(0);
                rec.unpin(p).expect("a live pin");
            }
            13 => {
                let epoch = rec.allocator().epoch();
                rec.commit(epoch).expect("the open epoch");
            }
            14 if readers.len() < 4 => readers.push(rec.begin_read()),
            15 if !readers.is_empty() => {
                let r = readers.swap_remove(0);
                rec.end_read(r).expect("a live reader");
            }
            _ => {}
        }
    }
    rec.into_trace()
}
