//! The `async` feature's futures under real tokio runtimes: hundreds of tasks
//! waiting for room while others free and unpin, on a multi-threaded runtime; a
//! single-threaded runtime whose one task reaps its own completions (where the
//! blocking `allocate_wait` would deadlock); cancellation that loses no wake-up;
//! and releases that cannot satisfy a waiter do not wake it.
#![cfg(feature = "async")]

use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use pinalloc::testing::SplitMix;
use pinalloc::{Extent, Request, SharedAllocator};

/// A waker that counts its wakes.
struct Counting(AtomicU64);

impl Wake for Counting {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counting() -> (std::sync::Arc<Counting>, Waker) {
    let c = std::sync::Arc::new(Counting(AtomicU64::new(0)));
    let w = Waker::from(std::sync::Arc::clone(&c));
    (c, w)
}

/// 300 tasks wait for room in a full space, on four worker threads; other tasks
/// free the space piece by piece, and unpin pieces a "device" held. Every waiter
/// gets its blocks, each block goes to one owner at a time, and all is Free after.
#[test]
fn hundreds_of_tasks_wait_for_room_on_a_multi_threaded_runtime() {
    let alloc: &'static SharedAllocator =
        Box::leak(Box::new(SharedAllocator::builder(256).groups(4).build()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async move {
        // The space is full: 64 extents of 4 blocks, a quarter of them pinned.
        let held: Vec<Extent> = (0..64)
            .map(|_| alloc.allocate(Request::new(4)).unwrap())
            .collect();
        let pins: Vec<_> = held
            .iter()
            .step_by(4)
            .map(|&e| alloc.pin_owned(e, Default::default()).unwrap())
            .collect();
        let owned = std::sync::Arc::new(std::sync::Mutex::new(vec![0u32; 256]));
        let waiters: Vec<_> = (0..300u64)
            .map(|i| {
                let owned = std::sync::Arc::clone(&owned);
                tokio::spawn(async move {
                    let len = 1 + i % 3;
                    let e = alloc.allocate_when_fits(Request::new(len)).await.unwrap();
                    for b in e.start..e.start + e.len {
                        let mut o = owned.lock().unwrap();
                        assert_eq!(o[b as usize], 0, "block {b} has two owners");
                        o[b as usize] = 1;
                    }
                    tokio::task::yield_now().await;
                    for b in e.start..e.start + e.len {
                        owned.lock().unwrap()[b as usize] = 0;
                    }
                    alloc.free(e).unwrap();
                })
            })
            .collect();
        // The releases: frees (Deferred under the pins), then the unpins.
        let releaser = tokio::spawn(async move {
            let mut rng = SplitMix::new(3);
            let mut held = held;
            while !held.is_empty() {
                let e = held.swap_remove(rng.below(held.len() as u64) as usize);
                alloc.free(e).unwrap();
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            for p in pins {
                alloc.unpin(p).unwrap();
                tokio::task::yield_now().await;
            }
        });
        let all = async {
            releaser.await.unwrap();
            for w in waiters {
                w.await.unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(60), all)
            .await
            .expect("every waiter was woken");
    });
    assert_eq!(alloc.stats().space.free_blocks, 256);
    alloc.check_invariants().unwrap();
}

/// One task both waits for room and reaps the completions that make it: on a
/// single-threaded runtime, the blocking wait would never return. The future
/// waits, the completion is reaped, and the future gets its blocks.
#[test]
fn a_single_threaded_reactor_reaps_its_own_completions() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let alloc = SharedAllocator::new(16);
    rt.block_on(async {
        let buf = alloc.allocate(Request::new(16)).unwrap();
        let dma = alloc.pin_owned(buf, Default::default()).unwrap();
        alloc.free(buf).unwrap(); // truncated while the device writes
        // The "completion queue": the device finishes after a while.
        let (done, completion) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            let _ = done.send(());
        });
        let reap = async {
            completion.await.unwrap();
            alloc.unpin(dma).unwrap(); // the reactor reaps the completion
        };
        let want = alloc.allocate_when_fits(Request::new(8));
        let (got, ()) =
            tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(want, reap) })
                .await
                .expect("no deadlock");
        assert_eq!(got.unwrap().len, 8);
        let waits = alloc.when_released(buf).unwrap();
        tokio::time::timeout(Duration::from_secs(30), waits)
            .await
            .expect("nothing Deferred is left");
    });
}

/// A waiter dropped while registered counts out and leaves the others registered:
/// the next release still wakes the one that remains.
#[test]
fn a_dropped_waiter_loses_no_wake_up_for_the_others() {
    let alloc = SharedAllocator::new(8);
    let all = alloc.allocate(Request::new(8)).unwrap();
    let (a_wakes, a_waker) = counting();
    let (b_wakes, b_waker) = counting();
    let mut a = Box::pin(alloc.allocate_when_fits(Request::new(2)));
    let mut b = Box::pin(alloc.allocate_when_fits(Request::new(2)));
    assert!(
        a.as_mut()
            .poll(&mut Context::from_waker(&a_waker))
            .is_pending()
    );
    assert!(
        b.as_mut()
            .poll(&mut Context::from_waker(&b_waker))
            .is_pending()
    );
    drop(a); // cancelled
    alloc.free(all).unwrap();
    assert_eq!(a_wakes.0.load(Ordering::SeqCst), 0);
    assert_eq!(b_wakes.0.load(Ordering::SeqCst), 1, "the other is woken");
    match b.as_mut().poll(&mut Context::from_waker(&b_waker)) {
        Poll::Ready(Ok(e)) => assert_eq!(e.len, 2),
        other => panic!("{other:?}"),
    }
    drop(b);
    // Both counted out: a release with no waiter left wakes nothing and costs a load.
    let e = alloc.allocate(Request::new(1)).unwrap();
    alloc.free(e).unwrap();
    assert_eq!(b_wakes.0.load(Ordering::SeqCst), 1);
}

/// A release that leaves no free run long enough for a waiter does not wake it;
/// one that does, does.
#[test]
fn a_release_too_small_to_satisfy_does_not_wake() {
    let alloc = SharedAllocator::new(16);
    let small = alloc.allocate(Request::new(2)).unwrap();
    let rest = alloc.allocate(Request::new(14)).unwrap();
    let (wakes, waker) = counting();
    let mut want = Box::pin(alloc.allocate_when_fits(Request::new(8)));
    let mut cx = Context::from_waker(&waker);
    assert!(want.as_mut().poll(&mut cx).is_pending());
    alloc.free(small).unwrap(); // two blocks: no room for eight
    assert_eq!(wakes.0.load(Ordering::SeqCst), 0, "woken for nothing");
    alloc.free(rest).unwrap();
    assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
    assert!(matches!(want.as_mut().poll(&mut cx), Poll::Ready(Ok(_))));
}

/// A waiter for an extent's release is woken by releases in its groups only.
#[test]
fn a_release_elsewhere_does_not_wake_a_release_waiter() {
    let alloc = SharedAllocator::builder(64).groups(4).build(); // groups of 16
    let mine = alloc
        .allocate(Request::new(4).policy(pinalloc::Policy::Exact(0)))
        .unwrap();
    let other = alloc
        .allocate(Request::new(4).policy(pinalloc::Policy::Exact(40)))
        .unwrap();
    let (p, q) = (
        alloc.pin(mine).unwrap().into_id(),
        alloc.pin(other).unwrap().into_id(),
    );
    alloc.free(mine).unwrap();
    alloc.free(other).unwrap();
    let (wakes, waker) = counting();
    let mut cx = Context::from_waker(&waker);
    let mut done = Box::pin(alloc.when_released(mine).unwrap());
    assert!(done.as_mut().poll(&mut cx).is_pending());
    alloc.unpin(q).unwrap(); // group 2's blocks go: nothing of ours
    assert_eq!(wakes.0.load(Ordering::SeqCst), 0, "woken for another group");
    alloc.unpin(p).unwrap();
    assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
    assert!(done.as_mut().poll(&mut cx).is_ready());
}

/// Errors come at once: a request longer than a group can never fit, and a bad
/// extent is refused when the future is made.
#[test]
fn what_can_never_succeed_fails_at_once() {
    let alloc = SharedAllocator::builder(64).groups(4).build();
    let (_, waker) = counting();
    let mut cx = Context::from_waker(&waker);
    let mut too_long = Box::pin(alloc.allocate_when_fits(Request::new(17)));
    assert!(matches!(
        too_long.as_mut().poll(&mut cx),
        Poll::Ready(Err(_))
    ));
    assert!(alloc.when_released(Extent::new(60, 10)).is_err());
    assert!(alloc.when_released(Extent::new(0, 0)).is_err());
}
