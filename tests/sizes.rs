//! The sizes of the public handles, as the README's table lists them (x86-64 and
//! other 64-bit targets): a change of size fails here, so the table is kept true.

#![cfg(target_pointer_width = "64")]

use std::mem::size_of;

use pinalloc::{
    Extent, PinGuard, PinId, ReadGuard, ReaderId, Reservation, SharedPinId, SharedReservation,
};

#[test]
fn handle_sizes_match_the_readme() {
    let table = [
        ("Extent", size_of::<Extent>(), 16),
        ("PinId", size_of::<PinId>(), 24),
        ("pin token (u64)", size_of::<u64>(), 8),
        ("SharedPinId", size_of::<SharedPinId>(), 48),
        ("ReaderId", size_of::<ReaderId>(), 24),
        ("Reservation", size_of::<Reservation>(), 24),
        ("PinGuard", size_of::<PinGuard<'static>>(), 72),
        ("ReadGuard", size_of::<ReadGuard<'static>>(), 40),
        (
            "SharedReservation",
            size_of::<SharedReservation<'static>>(),
            32,
        ),
    ];
    for (name, got, listed) in table {
        assert_eq!(
            got, listed,
            "size_of::<{name}>() changed: update the README"
        );
    }
}

#[cfg(unix)]
#[test]
fn region_handle_sizes_match_the_readme() {
    use pinalloc::{Allocation, HeapBacking, Pinned, PinnedMut};
    assert_eq!(size_of::<Allocation<HeapBacking>>(), 40);
    assert_eq!(size_of::<Pinned<HeapBacking>>(), 88);
    assert_eq!(size_of::<PinnedMut<HeapBacking>>(), 88);
}
