//! A truncate under DMA, on real memory: a region over a file-backed mmap, a simulated
//! device thread that writes into pinned buffers, and a main thread that truncates,
//! frees and reallocates as fast as it can meanwhile.
//!
//! ```sh
//! cargo run --release --example dma_region              # 3,000 I/Os
//! cargo run --release --example dma_region -- --jobs 20000
//! ```
//!
//! Every I/O's buffer is freed or truncated by the main thread right after it is
//! submitted, so its blocks are Deferred while the device still writes them. When the
//! device completes, the main thread checks that the buffer holds exactly what the
//! device wrote (no reallocation landed on it), then drops the guard: the blocks become
//! Free and their pages are discarded. The example prints when blocks were deferred
//! and released, and ends by checking that nothing leaked.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use pinalloc::{Allocation, MmapBacking, PinnedMut, Policy, Region, RegionError, Request};

const BLOCK_BYTES: u64 = 4096;
const REGION_BYTES: u64 = 64 << 20; // 16,384 blocks of 4 KiB

/// One I/O in flight: the pinned buffer, and what the device is to write.
struct Io {
    id: u64,
    buf: PinnedMut<MmapBacking>,
    submitted: Instant,
}

/// Bytes the device writes for I/O `id` (never zero, so a discard would show).
fn device_bytes(id: u64, len: usize) -> impl Iterator<Item = u8> {
    (0..len as u64).map(move |i| ((id.wrapping_mul(97) + i * 13 + i / 4093) % 255 + 1) as u8)
}

/// Bytes the main thread writes into its own allocations.
fn host_bytes(id: u64, len: usize) -> impl Iterator<Item = u8> {
    device_bytes(id ^ 0xA5A5_A5A5, len)
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let jobs = parse_jobs();
    let dir = std::env::temp_dir().join(format!("pinalloc-dma-region-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("region");
    // SAFETY: the file is this example's own, in a fresh directory; nothing else opens
    // it while it is mapped.
    let backing = unsafe { MmapBacking::open(&path, REGION_BYTES)? };
    let region = Region::new(backing, BLOCK_BYTES)?;
    println!(
        "region: {} blocks of {} bytes over a mapping of {}",
        region.capacity_blocks(),
        BLOCK_BYTES,
        path.display()
    );

    let (submit, device_queue) = mpsc::channel::<Io>();
    let (complete, completions) = mpsc::channel::<Io>();
    let device = thread::spawn(move || {
        // The "device": writes each buffer through its guard, a little at a time, and
        // hands the guard back on completion.
        for mut io in device_queue {
            let len = io.buf.len_bytes() as usize;
            for (dst, src) in io
                .buf
                .as_mut_slice()
                .iter_mut()
                .zip(device_bytes(io.id, len))
            {
                *dst = src;
            }
            thread::sleep(Duration::from_micros(20));
            if complete.send(io).is_err() {
                break;
            }
        }
    });

    let start = Instant::now();
    let mut rng = Rng(0x5EED);
    let mut host: Vec<(Allocation<MmapBacking>, u64)> = Vec::new();
    let mut in_flight = 0u64;
    let mut done = 0u64;
    let mut report = Report::default();
    let mut next_id = 0u64;

    while done < jobs {
        // Submit an I/O into a fresh buffer, then truncate or free the buffer at once:
        // the file shrinks while the device still writes.
        if next_id < jobs && in_flight < 64 {
            let id = next_id;
            next_id += 1;
            let len = 1 + rng.below(32);
            match region.allocate(Request::new(len).policy(Policy::Near(rng.below(16384)))) {
                Ok(mut file) => {
                    let buf = file.pin_mut()?;
                    let extent = file.extent();
                    if len > 1 && rng.below(2) == 0 {
                        file.truncate(1 + rng.below(len - 1))?;
                        host.push((file, u64::MAX)); // the kept head; its bytes are the device's
                    } else {
                        file.free()?;
                    }
                    report.deferred(id, extent, region.stats().space.deferred_blocks, start);
                    submit.send(Io {
                        id,
                        buf,
                        submitted: Instant::now(),
                    })?;
                    in_flight += 1;
                }
                Err(RegionError::Alloc(_)) => next_id -= 1, // full: let completions free space
                Err(e) => return Err(e.into()),
            }
        }

        // Reallocate aggressively around the Deferred blocks: fill, check, free.
        for _ in 0..4 {
            let id = rng.below(u64::MAX - 1);
            if let Ok(mut a) = region.allocate(Request::new(1 + rng.below(16))) {
                let len = a.len_bytes() as usize;
                for (dst, src) in a.as_mut_slice()?.iter_mut().zip(host_bytes(id, len)) {
                    *dst = src;
                }
                host.push((a, id));
            }
        }
        while host.len() > 256 {
            let (a, id) = host.swap_remove(rng.below(host.len() as u64) as usize);
            if id != u64::MAX {
                let len = a.len_bytes() as usize;
                assert!(
                    a.as_slice()?.iter().copied().eq(host_bytes(id, len)),
                    "a host buffer at {} was overwritten",
                    a.extent()
                );
            }
            a.free()?;
        }

        // Completions: the device's bytes must be intact, then the guard drops.
        let wait = if next_id >= jobs || in_flight >= 64 {
            Duration::from_millis(50)
        } else {
            Duration::ZERO
        };
        if let Ok(io) = completions.recv_timeout(wait) {
            let len = io.buf.len_bytes() as usize;
            assert!(
                io.buf
                    .as_slice()
                    .iter()
                    .copied()
                    .eq(device_bytes(io.id, len)),
                "I/O {} at {}: the device's bytes changed while its blocks were Deferred",
                io.id,
                io.buf.extent()
            );
            let (id, extent, held) = (io.id, io.buf.extent(), io.submitted.elapsed());
            drop(io); // unpin: the freed blocks become Free and are discarded
            report.released(
                id,
                extent,
                held,
                region.stats().space.deferred_blocks,
                start,
            );
            in_flight -= 1;
            done += 1;
        }
    }
    drop(submit);
    device.join().expect("the device thread");
    drop(host);

    let stats = region.stats();
    report.summary(jobs, start.elapsed());
    println!(
        "discards: {} covering {} MiB; failed discards: {}",
        stats.discards,
        stats.discarded_bytes >> 20,
        stats.discard_failures
    );
    assert_eq!(
        stats.space.free_blocks,
        region.capacity_blocks(),
        "blocks leaked"
    );
    assert_eq!(stats.space.deferred_blocks, 0);
    region.check_invariants()?;
    println!("all {jobs} buffers verified; nothing leaked; invariants hold");
    drop(region);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Deferral and release times, printed for the first few I/Os and summarised.
#[derive(Default)]
struct Report {
    shown: u64,
    peak_deferred_blocks: u64,
    held_total: Duration,
    held_max: Duration,
}

impl Report {
    const SHOWN: u64 = 5;

    fn deferred(&mut self, id: u64, extent: pinalloc::Extent, deferred_now: u64, t0: Instant) {
        self.peak_deferred_blocks = self.peak_deferred_blocks.max(deferred_now);
        if id < Self::SHOWN {
            println!(
                "{:>9.3} ms  I/O {id}: {extent} freed while the device writes it: \
                 Deferred ({deferred_now} blocks Deferred in all)",
                ms(t0.elapsed())
            );
        }
    }

    fn released(
        &mut self,
        id: u64,
        extent: pinalloc::Extent,
        held: Duration,
        deferred_now: u64,
        t0: Instant,
    ) {
        self.held_total += held;
        self.held_max = self.held_max.max(held);
        if self.shown < Self::SHOWN {
            self.shown += 1;
            println!(
                "{:>9.3} ms  I/O {id}: device done, bytes intact; {extent} released after \
                 {:.3} ms ({deferred_now} blocks still Deferred)",
                ms(t0.elapsed()),
                ms(held)
            );
        }
    }

    fn summary(&self, jobs: u64, elapsed: Duration) {
        println!("...");
        println!(
            "{jobs} I/Os in {:.1} ms: blocks held Deferred {:.3} ms on average, {:.3} ms at \
             most; peak {} blocks Deferred at once",
            ms(elapsed),
            ms(self.held_total) / jobs.max(1) as f64,
            ms(self.held_max),
            self.peak_deferred_blocks
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn parse_jobs() -> u64 {
    let mut args = std::env::args().skip(1);
    let mut jobs = 3000;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--jobs" => jobs = args.next().and_then(|v| v.parse().ok()).unwrap_or(jobs),
            "-h" | "--help" => {
                println!("usage: dma_region [--jobs N]   (default 3000)");
                std::process::exit(0);
            }
            other => {
                eprintln!("unknown argument {other}; try --help");
                std::process::exit(2);
            }
        }
    }
    jobs
}
