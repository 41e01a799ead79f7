//! The pictures (the `svg` feature), tested by drawing them: each SVG is rendered
//! with `resvg`, and pixels at positions whose state the test knows are read back
//! and compared with the documented colours. A space of 2^60 blocks renders from its
//! runs in a bounded number of shapes.
#![cfg(feature = "svg")]

use pinalloc::picture::{
    ALLOCATED_COLOUR, DEFERRED_BY_EPOCHS_COLOUR, DEFERRED_BY_PINS_COLOUR, FREE_COLOUR, PIN_COLOUR,
    PINNED_FREE_COLOUR, Picture, Timeline,
};
use pinalloc::testing::SplitMix;
use pinalloc::{BlockState, Extent, ExtentAllocator, Policy, Request, SharedAllocator};
use resvg::tiny_skia::{Pixmap, Transform};
use resvg::usvg;

/// The SVG drawn into pixels.
fn draw(svg: &str) -> Pixmap {
    let tree = usvg::Tree::from_str(svg, &usvg::Options::default()).expect("valid SVG");
    let size = tree.size().to_int_size();
    let mut pixmap = Pixmap::new(size.width(), size.height()).unwrap();
    resvg::render(&tree, Transform::default(), &mut pixmap.as_mut());
    pixmap
}

/// The colour at `(x, y)` as `#rrggbb`.
fn colour(p: &Pixmap, (x, y): (u32, u32)) -> String {
    let c = p.pixel(x, y).expect("inside the picture");
    assert_eq!(c.alpha(), 255, "opaque at ({x}, {y})");
    format!("#{:02x}{:02x}{:02x}", c.red(), c.green(), c.blue())
}

/// One block of every kind, at known places, in a space of one cell per block:
/// each is drawn in its colour, and the pin band lies over the pinned ones only.
#[test]
fn every_kind_of_block_is_drawn_in_its_colour() {
    let mut a = ExtentAllocator::new(1024);
    let take = |a: &mut ExtentAllocator, start, len| {
        a.allocate(Request::new(len).policy(Policy::Exact(start)))
            .unwrap()
    };
    let allocated = take(&mut a, 0, 100);
    let by_pins = take(&mut a, 200, 50);
    let pin = a.pin(by_pins).unwrap();
    a.free(by_pins).unwrap();
    let by_epoch = take(&mut a, 300, 50);
    a.commit(1).unwrap();
    a.free_on_commit(by_epoch).unwrap();
    let pinned_free = a.pin(Extent::new(500, 20)).unwrap();
    let picture = Picture::new().width_px(256).rows(4).title("every kind");
    let svg = a.picture(&picture);
    let p = draw(&svg);
    let at = |b: u64| picture.position_of(1024, b);
    for (block, state, want) in [
        (50, BlockState::Allocated, ALLOCATED_COLOUR),
        (220, BlockState::Deferred, DEFERRED_BY_PINS_COLOUR),
        (320, BlockState::Deferred, DEFERRED_BY_EPOCHS_COLOUR),
        (510, BlockState::Free, PINNED_FREE_COLOUR),
        (800, BlockState::Free, FREE_COLOUR),
    ] {
        assert_eq!(a.state_of(block), Some(state));
        assert_eq!(colour(&p, at(block)), want, "block {block}");
    }
    // The pin band: a few pixels above the centre's row top, over pinned cells only.
    let band = |b: u64| {
        let (x, y) = at(b);
        (x, y - 12)
    };
    assert_eq!(colour(&p, band(220)), PIN_COLOUR);
    assert_eq!(colour(&p, band(510)), PIN_COLOUR);
    assert_eq!(colour(&p, band(50)), "#ffffff");
    assert_eq!(colour(&p, band(800)), "#ffffff");
    a.unpin(pin).unwrap();
    a.unpin(pinned_free).unwrap();
    a.free(allocated).unwrap();
}

/// A cell of many blocks of several kinds shows each of them, stacked.
#[test]
fn a_cell_of_several_kinds_shows_their_mix() {
    let mut a = ExtentAllocator::new(1 << 40);
    let picture = Picture::new().width_px(128).rows(1);
    let per_cell = (1u64 << 40) / 128;
    // The first cell: a quarter Allocated, a quarter Deferred by a pin, the rest Free.
    a.allocate(Request::new(per_cell / 4)).unwrap();
    let d = a
        .allocate(Request::new(per_cell / 4).policy(Policy::Exact(per_cell / 2)))
        .unwrap();
    let pin = a.pin(d).unwrap();
    a.free(d).unwrap();
    let p = draw(&a.picture(&picture));
    let (x, y) = picture.position_of(1 << 40, 0);
    let seen: std::collections::BTreeSet<String> =
        (y - 10..y + 12).map(|y| colour(&p, (x, y))).collect();
    for want in [ALLOCATED_COLOUR, DEFERRED_BY_PINS_COLOUR, FREE_COLOUR] {
        assert!(seen.contains(want), "{want} missing from {seen:?}");
    }
    // The next cell is Free through and through.
    let (x, y) = picture.position_of(1 << 40, per_cell + 1);
    assert_eq!(colour(&p, (x, y)), FREE_COLOUR);
    a.unpin(pin).unwrap();
}

/// A space of 2^60 blocks with thousands of runs scattered over it draws in at most
/// a few shapes per cell, and its pixels still tell Allocated from Free.
#[test]
fn a_space_of_2_to_the_60_blocks_draws_in_bounded_size() {
    let capacity = 1u64 << 60;
    let mut a = ExtentAllocator::new(capacity);
    // A run that fills whole cells, to find by its colour; then thousands more.
    let cell = capacity / Picture::new().cells(capacity);
    let big = a
        .allocate(Request::new(4 * cell).policy(Policy::Exact(capacity / 2)))
        .unwrap();
    let mut rng = SplitMix::new(60);
    for _ in 0..5_000 {
        let at = rng.below(capacity - (1 << 20));
        let _ = a.allocate(Request::new(1 + rng.below(1 << 20)).policy(Policy::Exact(at)));
    }
    let picture = Picture::new();
    let svg = a.picture(&picture);
    let shapes = svg.matches("<rect").count() as u64;
    let cells = picture.cells(capacity);
    assert!(cells <= 16 * 1024);
    assert!(
        shapes <= 6 * cells + 200,
        "{shapes} shapes for {cells} cells"
    );
    assert!(svg.len() < 8 << 20, "{} bytes", svg.len());
    let p = draw(&svg);
    let inside = big.start + 2 * cell;
    assert_eq!(
        colour(&p, picture.position_of(capacity, inside)),
        ALLOCATED_COLOUR
    );
}

/// The shared allocator draws the same picture as a core with the same blocks.
#[test]
fn the_shared_allocator_draws_as_the_core_does() {
    let shared = SharedAllocator::builder(4096).groups(4).build();
    let mut core = ExtentAllocator::new(4096);
    for (start, len) in [(10, 100), (1100, 800), (2100, 900), (4000, 90)] {
        let r = Request::new(len).policy(Policy::Exact(start));
        shared.allocate(r).unwrap();
        core.allocate(r).unwrap();
    }
    let picture = Picture::new().width_px(512).rows(8);
    let (s, c) = (
        draw(&shared.picture(&picture)),
        draw(&core.picture(&picture)),
    );
    for b in [0, 50, 500, 1500, 2500, 3999, 4050] {
        let at = picture.position_of(4096, b);
        assert_eq!(colour(&s, at), colour(&c, at), "block {b}");
    }
    assert_eq!(
        colour(&s, picture.position_of(4096, 1500)),
        ALLOCATED_COLOUR
    );
}

/// The timeline draws its two lines in their colours.
#[test]
fn a_timeline_draws_both_lines() {
    let mut a = ExtentAllocator::new(1 << 16);
    let mut rng = SplitMix::new(7);
    let mut live = Vec::new();
    let mut t = Timeline::new();
    for _ in 0..2_000 {
        if live.len() > 100 || (rng.below(3) == 0 && !live.is_empty()) {
            let i = rng.below(live.len() as u64) as usize;
            a.free(live.swap_remove(i)).unwrap();
        } else if let Ok(e) = a.allocate(Request::new(1 + rng.below(64))) {
            live.push(e);
        }
        t.push(&a.stats());
    }
    let p = draw(&t.render("churn"));
    let mut seen = std::collections::BTreeSet::new();
    for y in 0..p.height() {
        for x in 0..p.width() {
            let c = p.pixel(x, y).unwrap();
            seen.insert(format!("#{:02x}{:02x}{:02x}", c.red(), c.green(), c.blue()));
        }
    }
    for want in [DEFERRED_BY_PINS_COLOUR, ALLOCATED_COLOUR] {
        assert!(seen.contains(want), "{want} missing");
    }
}
