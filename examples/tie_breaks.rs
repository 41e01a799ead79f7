//! How much best fit's choice among equally short free extents matters: the design
//! doc's churn trace (`benches/common`) replayed on a plain exact best fit with four
//! tie-breaks, printing the free extents left after 200,000, 1,000,000 and 3,000,000
//! operations. pinalloc's fast form takes the most recently changed extent of a length;
//! the ordered form, and exact best-fit peers, the lowest.
//!
//! ```text
//! cargo run --release --example tie_breaks
//! ```

#[allow(unused_imports)]
#[path = "../benches/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Op, Trace, Workload};

#[derive(Clone, Copy, Debug)]
enum Tie {
    LowestAddress,
    MostRecent,
    Oldest,
    HighestAddress,
}

/// Exact best fit over `(len, tie key, start)`, coalescing on free.
struct BestFit {
    by_addr: BTreeMap<u64, (u64, u64)>,
    by_size: BTreeSet<(u64, i128, u64)>,
    stamp: u64,
    tie: Tie,
}

impl BestFit {
    fn new(capacity: u64, tie: Tie) -> Self {
        let mut a = BestFit {
            by_addr: BTreeMap::new(),
            by_size: BTreeSet::new(),
            stamp: 0,
            tie,
        };
        a.add(0, capacity);
        a
    }

    fn key(&self, start: u64, len: u64, stamp: u64) -> (u64, i128, u64) {
        let t = match self.tie {
            Tie::LowestAddress => i128::from(start),
            Tie::MostRecent => -i128::from(stamp),
            Tie::Oldest => i128::from(stamp),
            Tie::HighestAddress => -i128::from(start),
        };
        (len, t, start)
    }

    fn add(&mut self, start: u64, len: u64) {
        self.stamp += 1;
        self.by_addr.insert(start, (len, self.stamp));
        self.by_size.insert(self.key(start, len, self.stamp));
    }

    fn remove(&mut self, start: u64) -> u64 {
        let (len, stamp) = self.by_addr.remove(&start).expect("a free extent");
        self.by_size.remove(&self.key(start, len, stamp));
        len
    }

    fn alloc(&mut self, need: u64) -> Option<u64> {
        let &(len, _, start) = self.by_size.range((need, i128::MIN, 0)..).next()?;
        self.remove(start);
        if len > need {
            self.add(start + need, len - need);
        }
        Some(start)
    }

    fn free(&mut self, mut start: u64, mut len: u64) {
        if let Some((&s, &(l, _))) = self.by_addr.range(..start).next_back() {
            if s + l == start {
                self.remove(s);
                start = s;
                len += l;
            }
        }
        if self.by_addr.contains_key(&(start + len)) {
            len += self.remove(start + len);
        }
        self.add(start, len);
    }
}

fn main() {
    let ties = [
        Tie::LowestAddress,
        Tie::MostRecent,
        Tie::Oldest,
        Tie::HighestAddress,
    ];
    println!("| operations | lowest address | most recent | oldest | highest address |");
    println!("|---:|---:|---:|---:|---:|");
    for ops in [200_000usize, 1_000_000, 3_000_000] {
        let trace = Trace::generate(&Workload::design_doc(ops));
        let counts: Vec<usize> = ties
            .iter()
            .map(|&tie| {
                let mut a = BestFit::new(trace.capacity, tie);
                let mut live: Vec<Option<(u64, u64)>> = Vec::new();
                for &len in &trace.fill {
                    let len = u64::from(len);
                    live.push(a.alloc(len).map(|s| (s, len)));
                }
                for &op in &trace.churn {
                    match op {
                        Op::Alloc { len } => {
                            let len = u64::from(len);
                            live.push(a.alloc(len).map(|s| (s, len)));
                        }
                        Op::Free { slot } => {
                            if let Some((s, l)) = live.swap_remove(slot as usize) {
                                a.free(s, l);
                            }
                        }
                    }
                }
                a.by_addr.len()
            })
            .collect();
        println!(
            "| {ops} | {} | {} | {} | {} |",
            counts[0], counts[1], counts[2], counts[3]
        );
    }
}
