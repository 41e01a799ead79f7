//! A GPU sub-allocator that frees behind a fence, as Vulkan and D3D12 renderers do.
//!
//! The renderer records a frame, submits it with a fence, and goes on to record the
//! next while the GPU still runs the last few. A buffer the renderer is done with may
//! still be read by a frame in flight, so it cannot be handed out again until every
//! such frame's fence has signalled. Renderers usually keep a "free later" list per
//! frame by hand; here the allocator keeps it:
//!
//! - each frame is an epoch, and each submitted frame is a reader: `begin_read` when
//!   it is submitted, `end_read` when its fence signals;
//! - a buffer is freed the moment the renderer drops it, in the epoch of the frame
//!   that used it last, and then `commit` opens the next frame's epoch. Its blocks
//!   stay Deferred while that frame or an earlier one is in flight, and become Free
//!   when the last of those fences signals: later frames' fences do not hold them.
//!
//! The heap is 256 MiB in 64 KiB blocks. Each frame allocates transient buffers
//! (uniforms, staging, vertex data), keeps a few resident ones for several frames,
//! and frees what it no longer needs. The simulated GPU keeps up to three frames in
//! flight. A shadow table records, per block, the last frame that used it; every
//! allocation checks that none of its blocks is still used by a frame in flight.
//!
//! ```text
//! cargo run --release --example gpu_fence
//! ```

use std::collections::VecDeque;

use pinalloc::testing::SplitMix;
use pinalloc::{Extent, ExtentAllocator, ReaderId, Request};

/// 64 KiB blocks.
const BLOCK: u64 = 64 << 10;
/// A 256 MiB heap.
const HEAP_BLOCKS: u64 = (256 << 20) / BLOCK;
/// The GPU may run this many frames behind the renderer.
const IN_FLIGHT: usize = 3;
const FRAMES: u64 = 600;

/// A frame the GPU has not finished: its number and the reader its fence ends.
struct InFlight {
    frame: u64,
    fence: ReaderId,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut heap = ExtentAllocator::new(HEAP_BLOCKS);
    let mut rng = SplitMix::new(0x6a09_e667_f3bc_c909);
    // `last_use[b]`: the last frame whose commands used block `b`.
    let mut last_use = vec![0u64; HEAP_BLOCKS as usize];
    let mut gpu: VecDeque<InFlight> = VecDeque::new();
    // Every frame before this one has finished on the GPU.
    let mut done_before = 1u64;
    // Resident buffers, each with the frame after which the renderer drops it.
    let mut resident: Vec<(Extent, u64)> = Vec::new();
    let (mut allocated, mut freed, mut most_deferred) = (0u64, 0u64, 0u64);

    println!("frame | in flight | live MiB | Deferred MiB (behind fences) | free MiB");
    for frame in 1..=FRAMES {
        // Record: transient buffers used only by this frame, and now and then a
        // resident one that later frames use too.
        // No frame still on the GPU may have used a block handed out again.
        let mut fresh = |e: Extent| {
            for b in e.start..e.end() {
                let last = last_use[b as usize];
                assert!(
                    last < done_before,
                    "frame {frame} got block {b}, which frame {last} may still read"
                );
            }
            allocated += 1;
            e
        };
        let mut transient = Vec::new();
        for _ in 0..(4 + rng.below(8)) {
            transient.push(fresh(heap.allocate(Request::new(1 + rng.below(32)))?));
        }
        if rng.below(4) == 0 {
            let e = fresh(heap.allocate(Request::new(16 + rng.below(64)))?);
            resident.push((e, frame + 5 + rng.below(40)));
        }
        for e in transient.iter().chain(resident.iter().map(|(e, _)| e)) {
            for b in e.start..e.end() {
                last_use[b as usize] = frame;
            }
        }

        // Submit: the frame's fence is a reader of this frame's epoch.
        let fence = heap.begin_read();
        gpu.push_back(InFlight { frame, fence });

        // The renderer is done with this frame's transient buffers, and with the
        // resident ones past their last frame: freed now, in this frame's epoch, so
        // that the fences of this frame and the ones before it hold them, and no
        // later one. Then the next frame's epoch opens.
        for e in transient {
            heap.free(e)?;
            freed += 1;
        }
        let (gone, kept): (Vec<_>, Vec<_>) =
            resident.drain(..).partition(|&(_, last)| last <= frame);
        resident = kept;
        for (e, _) in gone {
            heap.free(e)?;
            freed += 1;
        }
        heap.commit(heap.epoch())?;

        // The GPU: the oldest frame finishes now and then, and always when too many
        // are queued (the renderer would wait on its fence here).
        while gpu.len() > IN_FLIGHT || (!gpu.is_empty() && rng.below(3) == 0) {
            let oldest = gpu.pop_front().expect("a frame in flight");
            heap.end_read(oldest.fence)?;
            done_before = oldest.frame + 1;
        }

        let s = heap.stats();
        most_deferred = most_deferred.max(s.deferred_blocks);
        if frame % 100 == 0 {
            let mib = |blocks: u64| (blocks * BLOCK) >> 20;
            println!(
                "{frame:>5} | {:>9} | {:>8} | {:>28} | {:>8}",
                gpu.len(),
                mib(s.allocated_blocks),
                mib(s.deferred_by.epochs),
                mib(s.free_blocks),
            );
        }
    }

    // Shut down: wait for the GPU, then drop what is left.
    while let Some(f) = gpu.pop_front() {
        heap.end_read(f.fence)?;
    }
    for (e, _) in resident.drain(..) {
        heap.free(e)?;
        freed += 1;
    }
    heap.check_invariants()?;
    let s = heap.stats();
    assert_eq!(
        s.free_blocks, HEAP_BLOCKS,
        "everything is Free once the GPU is idle"
    );
    assert_eq!(allocated, freed);
    println!(
        "\n{FRAMES} frames, {allocated} buffers allocated and freed, none handed out while a \
         frame in flight could read it; at most {} MiB waited behind fences; the heap is \
         whole again and check_invariants() passed.",
        (most_deferred * BLOCK) >> 20
    );
    Ok(())
}
