use pinalloc::{Extent, ExtentAllocator, PinMode};
use std::hint::black_box;
fn main() {
    let n = 10_000u64;
    let mut a = ExtentAllocator::from_allocated_extents(
        2 * n + 16,
        (0..n)
            .map(|i| Extent::new(2 * i, 1))
            .chain([Extent::new(2 * n + 8, 1)]),
    )
    .unwrap();
    for i in 0..n {
        a.pin_with(Extent::new(2 * i, 1), PinMode::Deferring)
            .unwrap();
    }
    let spare = Extent::new(2 * n + 8, 1);
    for _ in 0..100_000 {
        let id = a.pin(spare).unwrap();
        a.unpin(black_box(id)).unwrap();
    }
}
