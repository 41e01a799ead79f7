//! Shared by the examples: a one-line map of a small space.
//!
//! `.` is a Free block, a letter an Allocated block of that file, `~` a Deferred block
//! (freed, still held) and `^` a Free block kept out of reach by a pin. A second line
//! shows pin counts when there are any.

use pinalloc::{BlockState, Extent, ExtentAllocator};

/// The space as one character per block, and a line of pin counts under it.
pub fn map(alloc: &ExtentAllocator, live: &[(char, Extent)]) -> (String, String) {
    let name_of = |b: u64| live.iter().find(|(_, e)| e.contains(b)).map(|&(n, _)| n);
    let capacity = alloc.capacity_blocks();
    let cells = (0..capacity)
        .map(|b| match (alloc.state_of(b), alloc.pin_count(b)) {
            (Some(BlockState::Free), 0) => '.',
            (Some(BlockState::Free), _) => '^',
            (Some(BlockState::Deferred), _) => '~',
            (Some(BlockState::Allocated), _) => {
                name_of(b).expect("every Allocated block belongs to a live file")
            }
            (None, _) => unreachable!("inside the space"),
        })
        .collect();
    let pins = (0..capacity)
        .map(|b| match alloc.pin_count(b) {
            0 => ' ',
            n => char::from_digit(n.min(9) as u32, 10).unwrap(),
        })
        .collect();
    (cells, pins)
}

/// Prints `step`, the map and the headline figures.
pub fn show(step: &str, alloc: &ExtentAllocator, live: &[(char, Extent)]) {
    let s = alloc.stats();
    let (cells, pins) = map(alloc, live);
    if !step.is_empty() {
        println!("{step}");
    }
    println!(
        "  |{cells}|  free {:>2} ({} extent(s), largest {}), deferred {}",
        s.free_blocks, s.free_extents, s.largest_free_blocks, s.deferred_blocks
    );
    if !pins.trim().is_empty() {
        println!("  |{pins}|  pins: {}", s.live_pins);
    }
}
