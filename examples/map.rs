//! Pictures of the space, step by step: a file truncated while a device still reads
//! it, a transaction that frees pages on commit while a reader holds the old tree,
//! and then the commit and the reader's end. One SVG per step, and a timeline of how
//! fragmented a churning space becomes.
//!
//! ```text
//! cargo run --example map [OUT_DIR]      (default: target/map)
//! ```
//!
//! Open the SVGs in a browser. Orange is space a pin holds after its free, purple
//! space a commit or a reader holds: neither is leaked, and the pictures show it go.

use std::path::{Path, PathBuf};

use pinalloc::picture::{Picture, Timeline};
use pinalloc::testing::SplitMix;
use pinalloc::{Extent, ExtentAllocator, Policy, Request};

const CAPACITY: u64 = 1 << 20;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from("target/map"), PathBuf::from);
    std::fs::create_dir_all(&out)?;
    let mut step = Steps { out, n: 0 };
    let mut a = ExtentAllocator::new(CAPACITY);

    // A volume with some files on it, all committed.
    let exact = |start: u64, len: u64| Request::new(len).policy(Policy::Exact(start));
    let log = a.allocate(exact(0, 1 << 17))?;
    let video = a.allocate(exact(1 << 18, 1 << 18))?;
    let index = a.allocate(exact(600_000, 50_000))?;
    a.commit(a.epoch())?;
    step.save(&a, "files on the volume")?;

    // The video file is truncated to a quarter while a device still reads its tail:
    // the freed blocks under the device's pin stay Deferred (orange), the rest Free.
    let dma = a.pin(Extent::new(video.start + (1 << 17), 1 << 16))?;
    a.free(Extent::new(video.start + (1 << 16), video.len - (1 << 16)))?;
    a.commit(a.epoch())?;
    step.save(&a, "video truncated while a device reads its tail")?;

    // A transaction rewrites the index elsewhere and frees the old pages on commit,
    // while a reader still walks the old tree: purple until both let go.
    let reader = a.begin_read();
    let new_index = a.allocate(exact(800_000, 50_000))?;
    a.free_on_commit(index)?;
    step.save(
        &a,
        "index rewritten; old pages freed on commit, a reader on them",
    )?;
    a.commit(a.epoch())?;
    step.save(&a, "committed: the reader still holds the old pages")?;
    a.end_read(reader)?;
    step.save(&a, "the reader ended: the old pages are Free")?;
    a.unpin(dma)?;
    step.save(&a, "the device finished: its tail is Free")?;
    for e in [log, Extent::new(video.start, 1 << 16), new_index] {
        a.free(e)?;
    }

    // Fragmentation over a churn of small files.
    let mut timeline = Timeline::new();
    let mut rng = SplitMix::new(42);
    let mut live: Vec<Extent> = Vec::new();
    let mut churn = ExtentAllocator::new(1 << 16);
    for _ in 0..20_000 {
        if live.len() > 600 || (!live.is_empty() && rng.below(2) == 0) {
            let i = rng.below(live.len() as u64) as usize;
            churn.free(live.swap_remove(i))?;
        } else if let Ok(e) = churn.allocate(Request::new(1 + rng.below(48))) {
            live.push(e);
        }
        timeline.push(&churn.stats());
    }
    let path = step.out.join("timeline.svg");
    std::fs::write(&path, timeline.render("20,000 steps of small-file churn"))?;
    println!("{}", path.display());
    step.save(&churn, "after the churn")?;
    Ok(())
}

/// Writes numbered pictures into `out`.
struct Steps {
    out: PathBuf,
    n: u32,
}

impl Steps {
    fn save(&mut self, a: &ExtentAllocator, what: &str) -> std::io::Result<()> {
        self.n += 1;
        let title = format!("{}. {what}", self.n);
        let svg = a.picture(&Picture::new().rows(8).title(&title));
        let path = self.out.join(format!("step-{:02}.svg", self.n));
        std::fs::write(&path, svg)?;
        let s = a.stats();
        println!(
            "{}  {title}: {} deferred ({} by pins only, {} by epochs or readers)",
            short(&path),
            s.deferred_blocks,
            s.deferred_by.pins,
            s.deferred_by.epochs
        );
        Ok(())
    }
}

fn short(path: &Path) -> String {
    path.display().to_string()
}
