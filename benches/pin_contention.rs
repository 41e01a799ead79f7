//! Measures a `SharedAllocator` under your own mix of allocating threads and device
//! pins, so that you can size allocation groups and see what pins cost you.
//!
//! The simulation:
//!
//! - Each allocating thread fills its share of the space to the target occupancy
//!   (untimed), then loops. Below its share it allocates with probability 0.75 and
//!   frees otherwise; above it, the reverse. A free takes a random live extent of its
//!   own. Extent lengths are uniform in `--min-len..=--max-len`.
//! - A fraction `--pin-rate` of the new extents is handed to a simulated device. The
//!   owner pins the extent as it submits the I/O (`pin_owned`), and a device thread
//!   holds the pin for `--pin-us` microseconds, then unpins it. The owner does not wait
//!   for the I/O: it may free the extent while the pin is live, and then the blocks
//!   are Deferred until the device lets go. Since a free picks a random live extent,
//!   the share of frees that defer is about the share of live extents under a pin.
//!
//! The device thread runs beside the allocating threads; the main thread mostly
//! sleeps. With more busy threads than cores, the latency tails show the scheduler
//! taking a core away in the middle of a call.
//!
//! While it runs, it prints one progress line per second. At the end it prints:
//!
//! - throughput: allocate + free calls per second over all threads, including the cost
//!   of reading the clock around each call;
//! - p50, p99 and p99.9 latency of `allocate` and of `free`, from each call's own
//!   timing (per thread, merged and sorted);
//! - the Deferred blocks over time;
//! - the fragmentation of the free space the threads leave behind;
//! - a final check: everything is freed, `check_invariants()` passes, and the free
//!   space is the whole space again.
//!
//! ```text
//! cargo bench --bench pin_contention -- --secs 2
//! cargo bench --bench pin_contention -- --threads 4 --groups 64 --pin-rate 0.5 --pin-us 200
//! cargo bench --bench pin_contention -- --help
//! ```

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::process::ExitCode;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread;
use std::time::{Duration, Instant};

use pinalloc::SharedAllocError;
use pinalloc::testing::SplitMix;
use pinalloc::{AllocError, Extent, PinOptions, Request, SharedAllocator, SharedPinId, Stats};

const USAGE: &str = "\
pin_contention: allocate/free throughput and latency of a SharedAllocator while a
simulated device holds pins on some of the extents.

usage: cargo bench --bench pin_contention -- [options]

options (defaults in brackets):
  --threads N         allocating threads [2]
  --capacity BLOCKS   blocks in the space [1048576]
  --groups N          allocation groups [the allocator's default: 64 on a large space]
  --min-len BLOCKS    shortest extent; lengths are uniform in min..=max [1]
  --max-len BLOCKS    longest extent; at most one group's blocks [64]
  --pin-rate F        fraction of new extents that the device pins, 0..=1 [0.1]
  --pin-us MICROS     how long the device holds each pin [1000]
  --occupancy F       target fill of the space, between 0 and 1 [0.7]
  --secs S            measured run time, in seconds [3]
  --sample-ms MS      how often the Deferred blocks are sampled [100]
  -h, --help          this text

Options take their value as the next argument or after '=' (--secs=2).
";

/// Operations a thread does before it adds them to the shared progress counter.
const OPS_BATCH: u64 = 1024;
/// Latency samples kept per thread and kind before the log keeps only every other one.
const LATENCY_CAP: usize = 1 << 22;

// ---------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Options {
    threads: usize,
    capacity_blocks: u64,
    /// `None`: the allocator's default.
    groups: Option<u64>,
    min_len_blocks: u64,
    max_len_blocks: u64,
    pin_rate: f64,
    pin_duration: Duration,
    occupancy: f64,
    run_time: Duration,
    sample_every: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            threads: 2,
            capacity_blocks: 1 << 20,
            groups: None,
            min_len_blocks: 1,
            max_len_blocks: 64,
            pin_rate: 0.1,
            pin_duration: Duration::from_micros(1000),
            occupancy: 0.7,
            run_time: Duration::from_secs(3),
            sample_every: Duration::from_millis(100),
        }
    }
}

/// The options, or `None` when `--help` was asked for.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
    let mut o = Options::default();
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (arg, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match name.as_str() {
            "--threads" => o.threads = number(&name, &value()?)?,
            "--capacity" => o.capacity_blocks = number(&name, &value()?)?,
            "--groups" => o.groups = Some(number(&name, &value()?)?),
            "--min-len" => o.min_len_blocks = number(&name, &value()?)?,
            "--max-len" => o.max_len_blocks = number(&name, &value()?)?,
            "--pin-rate" => o.pin_rate = number(&name, &value()?)?,
            "--pin-us" => o.pin_duration = Duration::from_micros(number(&name, &value()?)?),
            "--occupancy" => o.occupancy = number(&name, &value()?)?,
            "--secs" => o.run_time = seconds(&name, &value()?)?,
            "--sample-ms" => o.sample_every = Duration::from_millis(number(&name, &value()?)?),
            _ => return Err(format!("unknown option {name:?}")),
        }
    }
    Ok(Some(o))
}

/// A number, with `_` allowed between digits.
fn number<T: std::str::FromStr>(name: &str, text: &str) -> Result<T, String> {
    text.replace('_', "")
        .parse()
        .map_err(|_| format!("{name}: {text:?} is not a valid number"))
}

fn seconds(name: &str, text: &str) -> Result<Duration, String> {
    let secs: f64 = number(name, text)?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{name}: {text:?} is not a duration"))
}

/// Rejects what the run cannot do; `alloc` tells how long a group is.
fn validate(o: &Options, alloc: &SharedAllocator) -> Result<(), String> {
    let checks = [
        (o.threads >= 1, "--threads must be at least 1".to_string()),
        (
            o.capacity_blocks >= 1,
            "--capacity must be at least 1".to_string(),
        ),
        (
            o.min_len_blocks >= 1,
            "--min-len must be at least 1".to_string(),
        ),
        (
            o.max_len_blocks >= o.min_len_blocks,
            "--max-len must be at least --min-len".to_string(),
        ),
        (
            o.max_len_blocks <= alloc.group_blocks(),
            format!(
                "--max-len must be at most one group's {} blocks (raise --capacity or lower --groups)",
                alloc.group_blocks()
            ),
        ),
        (
            (0.0..=1.0).contains(&o.pin_rate),
            "--pin-rate must lie in 0..=1".to_string(),
        ),
        (
            o.occupancy > 0.0 && o.occupancy < 1.0,
            "--occupancy must lie between 0 and 1".to_string(),
        ),
        (!o.run_time.is_zero(), "--secs must be above 0".to_string()),
        (
            !o.sample_every.is_zero(),
            "--sample-ms must be at least 1".to_string(),
        ),
    ];
    match checks.into_iter().find(|(ok, _)| !ok) {
        Some((_, msg)) => Err(msg),
        None => Ok(()),
    }
}

fn build_allocator(o: &Options) -> SharedAllocator {
    let builder = SharedAllocator::builder(o.capacity_blocks);
    match o.groups {
        Some(n) => builder.groups(n).build(),
        None => builder.build(),
    }
}

// ---------------------------------------------------------------------------------
// Small tools
// ---------------------------------------------------------------------------------

/// Per-call durations in nanoseconds. Memory stays bounded: once the log holds
/// `LATENCY_CAP` samples it drops every other one and from then on keeps every other
/// call (then every fourth, and so on), an even thinning over the run.
struct LatencyLog {
    samples_ns: Vec<u32>,
    /// Keep one call in `stride`.
    stride: u64,
    calls: u64,
}

impl LatencyLog {
    fn new() -> Self {
        LatencyLog {
            samples_ns: Vec::new(),
            stride: 1,
            calls: 0,
        }
    }

    #[inline]
    fn record(&mut self, d: Duration) {
        if self.calls % self.stride == 0 {
            self.samples_ns
                .push(u32::try_from(d.as_nanos()).unwrap_or(u32::MAX));
            if self.samples_ns.len() >= LATENCY_CAP {
                let mut i = 0;
                self.samples_ns.retain(|_| {
                    i += 1;
                    i % 2 == 1
                });
                self.stride *= 2;
            }
        }
        self.calls += 1;
    }
}

/// `1234567` as `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

// ---------------------------------------------------------------------------------
// The allocating threads
// ---------------------------------------------------------------------------------

/// What every thread shares.
struct Shared<'a> {
    alloc: &'a SharedAllocator,
    options: &'a Options,
    /// All allocating threads and the main thread: the timed part starts together.
    start: Barrier,
    stop: AtomicBool,
    /// Allocate and free calls so far, updated in batches.
    ops: AtomicU64,
}

/// A pin handed to the device: when its I/O is done, and the pin.
type InFlight = (Instant, SharedPinId);

/// What an allocating thread reports.
struct WorkerReport {
    allocate_ns: LatencyLog,
    free_ns: LatencyLog,
    allocations: u64,
    /// `allocate` calls that found no room.
    failures: u64,
    frees: u64,
    /// Frees that left at least one block Deferred.
    deferred_frees: u64,
    pins: u64,
    /// What it still owns when the run stops.
    live: Vec<Extent>,
}

struct Worker<'a> {
    shared: &'a Shared<'a>,
    device: Sender<InFlight>,
    rng: SplitMix,
    /// The blocks this thread aims to own.
    target_blocks: u64,
    live_blocks: u64,
    pending_ops: u64,
    report: WorkerReport,
}

impl<'a> Worker<'a> {
    fn new(shared: &'a Shared<'a>, index: usize, device: Sender<InFlight>) -> Self {
        let o = shared.options;
        let total = (o.capacity_blocks as f64 * o.occupancy) as u64;
        Worker {
            shared,
            device,
            rng: SplitMix::new(0x5EED_0000 + index as u64),
            target_blocks: total / o.threads as u64,
            live_blocks: 0,
            pending_ops: 0,
            report: WorkerReport {
                allocate_ns: LatencyLog::new(),
                free_ns: LatencyLog::new(),
                allocations: 0,
                failures: 0,
                frees: 0,
                deferred_frees: 0,
                pins: 0,
                live: Vec::new(),
            },
        }
    }

    fn random_len(&mut self) -> u64 {
        let o = self.shared.options;
        o.min_len_blocks + self.rng.below(o.max_len_blocks - o.min_len_blocks + 1)
    }

    /// Untimed: allocates up to this thread's share, or until the space is full.
    fn fill(&mut self) {
        while self.live_blocks < self.target_blocks {
            let len = self.random_len();
            match self.shared.alloc.allocate(Request::new(len)) {
                Ok(e) => {
                    self.live_blocks += e.len;
                    self.report.live.push(e);
                }
                Err(SharedAllocError::Core(AllocError::NoSpace { .. })) => break,
                Err(e) => panic!("fill: {e}"),
            }
        }
    }

    fn run(mut self) -> WorkerReport {
        self.fill();
        self.shared.start.wait();
        while !self.shared.stop.load(Ordering::Relaxed) {
            self.step();
        }
        self.shared
            .ops
            .fetch_add(self.pending_ops, Ordering::Relaxed);
        self.report
    }

    fn step(&mut self) {
        let alloc_probability = if self.live_blocks < self.target_blocks {
            0.75
        } else {
            0.25
        };
        if self.report.live.is_empty() || self.rng.next_f64() < alloc_probability {
            self.allocate_one();
        } else {
            self.free_one();
        }
        self.pending_ops += 1;
        if self.pending_ops == OPS_BATCH {
            self.shared.ops.fetch_add(OPS_BATCH, Ordering::Relaxed);
            self.pending_ops = 0;
        }
    }

    fn allocate_one(&mut self) {
        let len = self.random_len();
        let started = Instant::now();
        let result = self.shared.alloc.allocate(Request::new(len));
        self.report.allocate_ns.record(started.elapsed());
        match result {
            Ok(e) => {
                self.report.allocations += 1;
                self.live_blocks += e.len;
                self.report.live.push(e);
                if self.rng.next_f64() < self.shared.options.pin_rate {
                    self.submit_io(e);
                }
            }
            Err(SharedAllocError::Core(AllocError::NoSpace { .. })) => self.report.failures += 1,
            Err(e) => panic!("allocate: {e}"),
        }
    }

    /// Pins `e` for the device, which unpins it when the simulated I/O is done.
    fn submit_io(&mut self, e: Extent) {
        let pin = self
            .shared
            .alloc
            .pin_owned(e, PinOptions::new())
            .expect("pin of an allocated extent");
        let done_at = Instant::now() + self.shared.options.pin_duration;
        self.device
            .send((done_at, pin))
            .expect("the device outlives the allocating threads");
        self.report.pins += 1;
    }

    fn free_one(&mut self) {
        let i = self.rng.below(self.report.live.len() as u64) as usize;
        let e = self.report.live.swap_remove(i);
        let started = Instant::now();
        let result = self.shared.alloc.free(e);
        self.report.free_ns.record(started.elapsed());
        let out = result.expect("free of a live extent");
        self.report.frees += 1;
        self.report.deferred_frees += u64::from(out.deferred_blocks > 0);
        self.live_blocks -= e.len;
    }
}

// ---------------------------------------------------------------------------------
// The device
// ---------------------------------------------------------------------------------

/// The device thread: holds each pin until its I/O is due, then unpins it. When every
/// allocating thread is gone, it finishes all I/O at once. Returns the most pins it
/// held at a time.
fn device(alloc: &SharedAllocator, submitted: Receiver<InFlight>) -> usize {
    let mut in_flight: BinaryHeap<Reverse<InFlight>> = BinaryHeap::new();
    let mut most = 0;
    loop {
        let now = Instant::now();
        while let Some(&Reverse((due, pin))) = in_flight.peek() {
            if due > now {
                break;
            }
            in_flight.pop();
            alloc.unpin(pin).expect("the device's pins are live");
        }
        let next = match in_flight.peek() {
            Some(&Reverse((due, _))) => submitted.recv_timeout(due.saturating_duration_since(now)),
            None => submitted.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match next {
            Ok(io) => in_flight.push(Reverse(io)),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        in_flight.extend(submitted.try_iter().map(Reverse));
        most = most.max(in_flight.len());
    }
    for Reverse((_, pin)) in in_flight {
        alloc.unpin(pin).expect("the device's pins are live");
    }
    most
}

// ---------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------

/// One sample of the space while the run goes.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    ops: u64,
    deferred_blocks: u64,
    pins: u64,
}

struct RunReport {
    elapsed: Duration,
    workers: Vec<WorkerReport>,
    samples: Vec<Sample>,
    most_in_flight: usize,
    /// The space once the device has finished, before the threads' extents are freed.
    end: Stats,
}

fn run(alloc: &SharedAllocator, options: &Options) -> RunReport {
    let shared = Shared {
        alloc,
        options,
        start: Barrier::new(options.threads + 1),
        stop: AtomicBool::new(false),
        ops: AtomicU64::new(0),
    };
    let (to_device, submitted) = channel();
    let (elapsed, samples, workers, most_in_flight) = thread::scope(|s| {
        let device = s.spawn(|| device(alloc, submitted));
        let workers: Vec<_> = (0..options.threads)
            .map(|i| {
                let worker = Worker::new(&shared, i, to_device.clone());
                s.spawn(move || worker.run())
            })
            .collect();
        drop(to_device);
        shared.start.wait();
        let (elapsed, samples) = watch(&shared);
        let workers: Vec<WorkerReport> = workers
            .into_iter()
            .map(|w| w.join().expect("allocating thread"))
            .collect();
        let most = device.join().expect("device thread");
        (elapsed, samples, workers, most)
    });
    RunReport {
        elapsed,
        workers,
        samples,
        most_in_flight,
        end: alloc.stats().space,
    }
}

/// Samples the space until the run time is up, printing a progress line about once a
/// second, then stops the threads. Returns the measured time and the samples.
fn watch(shared: &Shared<'_>) -> (Duration, Vec<Sample>) {
    let o = shared.options;
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut next_print = Duration::from_secs(1);
    loop {
        let at = started.elapsed();
        if at >= o.run_time {
            break;
        }
        thread::sleep(o.sample_every.min(o.run_time - at));
        let s = shared.alloc.stats().space;
        let sample = Sample {
            at: started.elapsed(),
            ops: shared.ops.load(Ordering::Relaxed),
            deferred_blocks: s.deferred_blocks,
            pins: s.live_pins,
        };
        samples.push(sample);
        if sample.at >= next_print {
            print_progress(&sample);
            next_print += Duration::from_secs(1);
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    (started.elapsed(), samples)
}

fn print_progress(s: &Sample) {
    println!(
        "  {:5.1} s  {:>12} ops  {:>9} blocks Deferred  {:>6} pins live",
        s.at.as_secs_f64(),
        grouped(s.ops),
        grouped(s.deferred_blocks),
        grouped(s.pins),
    );
}

/// Frees what the threads still own, then checks that nothing leaked.
fn release_and_check(alloc: &SharedAllocator, workers: &[WorkerReport]) {
    for e in workers.iter().flat_map(|w| &w.live) {
        let out = alloc.free(*e).expect("free of a live extent");
        assert_eq!(out.deferred_blocks, 0, "no pin is left to defer {e}");
    }
    let s = alloc.stats().space;
    assert_eq!(s.live_pins, 0, "pins leaked");
    assert_eq!(s.deferred_blocks, 0, "Deferred blocks leaked");
    assert_eq!(s.free_blocks, alloc.capacity_blocks(), "blocks leaked");
    alloc
        .check_invariants()
        .expect("the allocator's invariants");
    println!(
        "\nReleased everything: {} of {} blocks Free, no pins, nothing Deferred; \
         check_invariants() passed.",
        grouped(s.free_blocks),
        grouped(alloc.capacity_blocks())
    );
}

// ---------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------

fn print_header(o: &Options, alloc: &SharedAllocator) {
    println!(
        "pin_contention: {} allocating thread(s) + 1 device thread; {} blocks in {} groups of {}",
        o.threads,
        grouped(o.capacity_blocks),
        alloc.group_count(),
        grouped(alloc.group_blocks()),
    );
    println!(
        "lengths uniform in {}..={} blocks; {:.0}% of new extents pinned for {} us; \
         target occupancy {:.0}%; {:.1} s",
        o.min_len_blocks,
        o.max_len_blocks,
        o.pin_rate * 100.0,
        o.pin_duration.as_micros(),
        o.occupancy * 100.0,
        o.run_time.as_secs_f64(),
    );
    println!();
}

fn print_throughput(r: &RunReport) {
    let sum = |f: fn(&WorkerReport) -> u64| r.workers.iter().map(f).sum::<u64>();
    let (allocs, failures, frees) = (
        sum(|w| w.allocations),
        sum(|w| w.failures),
        sum(|w| w.frees),
    );
    let calls = allocs + failures + frees;
    let secs = r.elapsed.as_secs_f64();
    println!("\nThroughput over {secs:.2} s:");
    println!(
        "  {} allocate + free calls/s ({} allocations, {} failed for lack of room, {} frees)",
        grouped((calls as f64 / secs) as u64),
        grouped(allocs),
        grouped(failures),
        grouped(frees),
    );
    println!(
        "  {} pins sent to the device ({} at most in flight); {} frees met a live pin and \
         deferred blocks",
        grouped(sum(|w| w.pins)),
        grouped(r.most_in_flight as u64),
        grouped(sum(|w| w.deferred_frees)),
    );
}

/// The value at quantile `q` of sorted `v` (nearest rank); 0 when empty.
fn quantile(v: &[u32], q: f64) -> u32 {
    if v.is_empty() {
        return 0;
    }
    let rank = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn print_latency(r: &RunReport) {
    println!("\nLatency per call, ns (every thread's calls merged):");
    println!(
        "  {:<9} {:>10} {:>8} {:>8} {:>8} {:>10}",
        "", "samples", "p50", "p99", "p99.9", "max"
    );
    print_latency_row("allocate", r.workers.iter().map(|w| &w.allocate_ns));
    print_latency_row("free", r.workers.iter().map(|w| &w.free_ns));
}

/// Merges the threads' logs of one kind of call, sorts them, and prints one row.
fn print_latency_row<'a>(name: &str, logs: impl Iterator<Item = &'a LatencyLog>) {
    let mut all: Vec<u32> = logs.flat_map(|l| l.samples_ns.iter().copied()).collect();
    all.sort_unstable();
    println!(
        "  {:<9} {:>10} {:>8} {:>8} {:>8} {:>10}",
        name,
        grouped(all.len() as u64),
        quantile(&all, 0.50),
        quantile(&all, 0.99),
        quantile(&all, 0.999),
        all.last().copied().unwrap_or(0),
    );
}

/// A bar of up to `width` marks for `value` out of `max`.
fn bar(value: u64, max: u64, width: u64) -> String {
    let marks = if max == 0 {
        0
    } else {
        (u128::from(value) * u128::from(width)).div_ceil(u128::from(max))
    };
    "#".repeat(marks as usize)
}

fn print_deferred_series(samples: &[Sample], sample_every: Duration) {
    const ROWS: usize = 30;
    let every = samples.len().div_ceil(ROWS).max(1);
    let max = samples.iter().map(|s| s.deferred_blocks).max().unwrap_or(0);
    let shown = if every == 1 {
        String::new()
    } else {
        format!(", one row per {every} samples")
    };
    println!(
        "\nDeferred blocks over time (sampled every {} ms{shown}; peak {}):",
        sample_every.as_millis(),
        grouped(max),
    );
    for s in samples.iter().step_by(every) {
        println!(
            "  {:6.2} s {:>9} {}",
            s.at.as_secs_f64(),
            grouped(s.deferred_blocks),
            bar(s.deferred_blocks, max, 40),
        );
    }
}

fn print_fragmentation(s: &Stats) {
    println!("\nFree space the threads left (after the device finished):");
    println!(
        "  {} free blocks in {} free extents (counted per group); the largest is {} blocks",
        grouped(s.free_blocks),
        grouped(s.free_extents),
        grouped(s.largest_free_blocks),
    );
    let last = s.free_histogram.iter().rposition(|&n| n > 0).unwrap_or(0);
    let max = s.free_histogram.iter().copied().max().unwrap_or(0);
    println!("  free extents by length:");
    for (i, &n) in s.free_histogram.iter().enumerate().take(last + 1) {
        let (lo, hi) = (1u64 << i, (1u64 << i) * 2 - 1);
        println!(
            "  {:>15} {:>9} {}",
            format!("{lo}..={hi}"),
            grouped(n),
            bar(n, max, 40)
        );
    }
}

fn main() -> ExitCode {
    // `cargo bench` adds `--bench`, and passes a filter given to every bench
    // (`cargo bench -- churn`) as a first bare word: this program runs only when the
    // filter is part of its name.
    let mut args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().is_some_and(|a| !a.starts_with('-')) {
        let filter = args.remove(0);
        if !"pin_contention".contains(filter.as_str()) {
            return ExitCode::SUCCESS;
        }
    }
    let options = match parse_args(args.into_iter()) {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("error: {msg}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let alloc = build_allocator(&options);
    if let Err(msg) = validate(&options, &alloc) {
        eprintln!("error: {msg}\n\n{USAGE}");
        return ExitCode::from(2);
    }
    print_header(&options, &alloc);
    let report = run(&alloc, &options);
    print_throughput(&report);
    print_latency(&report);
    print_deferred_series(&report.samples, options.sample_every);
    print_fragmentation(&report.end);
    release_and_check(&alloc, &report.workers);
    ExitCode::SUCCESS
}
