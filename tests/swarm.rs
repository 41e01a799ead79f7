//! Seeded swarm walks, in the manner of TigerBeetle's free-set fuzzer: per seed, the
//! operation weights are themselves drawn at random, and about a quarter of the kinds
//! of operation are off entirely. Each walk is a long deterministic sequence checked
//! against the per-block model after every event (the `testing` kit's `Checked`), and
//! ends by rebuilding from the durable view and draining everything.
//!
//! CI runs 20 seeds of 20,000 events in a release build (`cargo test --release --test
//! swarm`); a debug build (plain `cargo test`) walks 500 events per seed, since the
//! model is O(capacity) per event. A failure names its seed; replay it alone with
//! `SWARM_SEED=<seed> cargo test --release --test swarm`. Longer runs:
//! `SWARM_SEEDS=200 SWARM_EVENTS=100000 cargo test --release --test swarm`
//! (20 million events), and `SWARM_FIRST=<n>` starts at another seed.

use std::panic::{AssertUnwindSafe, catch_unwind};

use pinalloc::testing::{Op, Runner, SplitMix, Weights};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One walk: the space, the weights and every event come from `seed`.
fn walk(seed: u64, events: u64) -> (u64, Weights) {
    let mut rng = SplitMix::new(seed);
    let weights = Weights::swarm(&mut rng);
    // Small spaces fill and fragment; larger ones let the trees grow a level.
    let capacity = [16, 64, 256, 512, 2048][rng.below(5) as usize];
    let mut run = Runner::new(capacity, &[]);
    for _ in 0..events {
        run.apply(&Op::draw(&weights, &mut rng));
    }
    run.finish();
    (capacity, weights)
}

#[test]
fn swarm_walks_match_the_model() {
    let default_events = if cfg!(debug_assertions) { 500 } else { 20_000 };
    let events = env("SWARM_EVENTS", default_events);
    let seeds: Vec<u64> = match std::env::var("SWARM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(seed) => vec![seed],
        None => {
            let first = env("SWARM_FIRST", 1);
            (first..first + env("SWARM_SEEDS", 20)).collect()
        }
    };
    let mut total = 0u64;
    for &seed in &seeds {
        match catch_unwind(AssertUnwindSafe(|| walk(seed, events))) {
            Ok((capacity, weights)) => {
                total += events;
                eprintln!("seed {seed}: {events} events on {capacity} blocks, {weights}");
            }
            Err(_) => panic!(
                "swarm seed {seed} failed (the panic above says how); replay it with \
                 SWARM_SEED={seed} SWARM_EVENTS={events} cargo test --release --test swarm"
            ),
        }
    }
    eprintln!("{total} events over {} seeds", seeds.len());
}
