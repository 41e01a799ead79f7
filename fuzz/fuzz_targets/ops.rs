//! An operation sequence against the reference model: allocate under every policy,
//! free, pin, unpin, epochs, readers and reservations, with every kind of bad input,
//! checked after every operation (the `testing` kit's `Runner`). The input's bytes
//! choose the space, the operation weights (some kinds off, as in the swarm walks)
//! and every operation.
#![no_main]

use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use pinalloc::testing::{Op, Pos, Runner, Source, Weights};

/// The fuzzer's bytes as a source of numbers; zeros once they run out.
struct Bytes<'a, 'b>(&'a mut Unstructured<'b>);

impl Source for Bytes<'_, '_> {
    fn below(&mut self, n: u64) -> u64 {
        self.0.int_in_range(0..=n - 1).unwrap_or(0)
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut s = Bytes(&mut u);
    let capacity = [1, 8, 64, 300, 1024][s.below(5) as usize];
    let weights = if s.one_in(2) {
        Weights::standard()
    } else {
        Weights::swarm(&mut s)
    };
    let mount: Vec<(Pos, u64)> = (0..s.below(4))
        .map(|_| (Pos::Within(s.below(1000) as u16), 1 + s.below(32)))
        .collect();
    let mut run = Runner::new(capacity, &mount);
    while !s.0.is_empty() {
        run.apply(&Op::draw(&weights, &mut s));
    }
    run.finish();
});
