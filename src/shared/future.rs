//! Waiting without a thread (the `async` feature): futures for "allocate when it
//! fits" and "this extent is released", for io_uring and tokio storage engines
//! whose reactor reaps its own completions and so must never block on them.
//!
//! They need no runtime: a future registers its task's waker with the allocator's
//! signal, and a release wakes the waiters it could satisfy (see `signal`). Dropping
//! a future removes its waker and loses no wake-up for the others.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use std::vec::Vec;

use super::SharedAllocator;
use super::signal::Need;
use crate::{AllocError, Extent, Request, SharedAllocError, WaitError};

/// Checks a poll makes before it yields (waking itself) when every check is
/// overtaken by a release.
const TRIES: usize = 8;

/// Where a future is: not polled yet, waiting (counted in, perhaps registered), or
/// done.
#[derive(Debug)]
enum Stage {
    Start,
    Waiting { registration: Option<u64> },
    Done,
}

/// Allocates as a request says once a release makes room: the future of
/// [`SharedAllocator::allocate_when_fits`].
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct AllocateWhenFits<'a> {
    alloc: &'a SharedAllocator,
    request: Request,
    stage: Stage,
}

/// Completes once every block of an extent that was Deferred when the future was
/// made has been released: the future of [`SharedAllocator::when_released`].
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct WhenReleased<'a> {
    alloc: &'a SharedAllocator,
    extent: Extent,
    /// Each group's deferral mark when the future was made.
    marks: Vec<u64>,
    stage: Stage,
}

impl SharedAllocator {
    /// As [`allocate_wait`](Self::allocate_wait), as a future: allocates at once if
    /// it can, else waits, without a thread, for releases that could make room (a
    /// free, an unpin, a commit, a reader's end), and tries again after each. No
    /// timeout: wrap it in your runtime's. Dropping it stops the wait, and no other
    /// waiter misses a release for it.
    ///
    /// The first try may run the [pressure hook](Self::set_pressure_hook),
    /// as `allocate` does, on the polling thread.
    ///
    /// # Errors
    ///
    /// What [`allocate`](Self::allocate) returns, but for
    /// [`AllocError::NoSpace`], which waits; at once when the request is longer than
    /// a group (no release can make room), or inside a callback of this allocator
    /// (which must not wait on it).
    ///
    /// ```
    /// use pinalloc::{Request, SharedAllocator};
    /// use std::task::{Context, Poll, Waker};
    ///
    /// let alloc = SharedAllocator::new(8);
    /// let all = alloc.allocate(Request::new(8))?;
    /// let mut want = std::pin::pin!(alloc.allocate_when_fits(Request::new(4)));
    /// let mut cx = Context::from_waker(Waker::noop());
    /// assert!(want.as_mut().poll(&mut cx).is_pending()); // full: it waits
    /// alloc.free(all)?;                                   // a release...
    /// assert!(matches!(want.as_mut().poll(&mut cx), Poll::Ready(Ok(_)))); // ...makes room
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn allocate_when_fits(&self, request: Request) -> AllocateWhenFits<'_> {
        AllocateWhenFits {
            alloc: self,
            request,
            stage: Stage::Start,
        }
    }

    /// As [`wait_released`](Self::wait_released), as a future: completes once every
    /// block of `extent` that is Deferred now has been released (blocks deferred
    /// again later are not waited for). No timeout: wrap it in your runtime's.
    ///
    /// # Errors
    ///
    /// [`WaitError::BadExtent`] for an extent outside the space, at once.
    ///
    /// ```
    /// use pinalloc::{Extent, Request, SharedAllocator};
    /// use std::task::{Context, Waker};
    ///
    /// let alloc = SharedAllocator::new(8);
    /// let e = alloc.allocate(Request::new(4))?;
    /// let dma = alloc.pin(e)?;
    /// alloc.free(e)?;                                      // Deferred: the device has it
    /// let mut done = std::pin::pin!(alloc.when_released(e)?);
    /// let mut cx = Context::from_waker(Waker::noop());
    /// assert!(done.as_mut().poll(&mut cx).is_pending());
    /// drop(dma);                                           // the I/O completes
    /// assert!(done.as_mut().poll(&mut cx).is_ready());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn when_released(&self, extent: Extent) -> Result<WhenReleased<'_>, WaitError> {
        let r = extent.within(self.capacity).map_err(WaitError::BadExtent)?;
        // As `wait_released`: the marks under every group lock of the extent at once.
        let marks = self
            .lock_all(self.groups_of(&r))
            .iter()
            .map(|g| g.deferral_mark())
            .collect();
        Ok(WhenReleased {
            alloc: self,
            extent,
            marks,
            stage: Stage::Start,
        })
    }

    /// Blocks of `extent` (inside the space) still Deferred since `marks`.
    fn deferred_since(&self, extent: Extent, marks: &[u64]) -> u64 {
        let r = extent.start..extent.start + extent.len;
        self.groups_of(&r)
            .zip(marks)
            .map(|(g, &mark)| self.lock(g).count_deferred_before(&r, mark))
            .sum()
    }
}

impl Stage {
    /// Registers the task's waker for `needs` if the generation is still `seen`
    /// (counted as a wait); `false`: it moved, check again.
    fn register(
        &mut self,
        alloc: &SharedAllocator,
        seen: u64,
        cx: &Context<'_>,
        needs: Need,
    ) -> bool {
        let Stage::Waiting { registration } = self else {
            unreachable!("registers only while waiting");
        };
        let registered = alloc.signal.register(registration, seen, cx.waker(), needs);
        if registered {
            alloc
                .counters
                .waits
                .fetch_add(1, crate::sync::Ordering::Relaxed);
        }
        registered
    }

    /// Counts out and forgets the waker, if waiting; done either way.
    fn finish(&mut self, alloc: &SharedAllocator) {
        if let Stage::Waiting { registration } = core::mem::replace(self, Stage::Done) {
            alloc.signal.unregister(registration);
            alloc.signal.count_out();
        }
    }
}

impl Future for AllocateWhenFits<'_> {
    type Output = Result<Extent, SharedAllocError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let alloc = this.alloc;
        match this.stage {
            Stage::Done => panic!("AllocateWhenFits polled after it completed"),
            Stage::Start => {
                let err = match alloc.allocate(this.request) {
                    Err(SharedAllocError::Core(err @ AllocError::NoSpace { .. })) => err,
                    done => {
                        this.stage = Stage::Done;
                        return Poll::Ready(done);
                    }
                };
                if this.request.min_len > alloc.group_blocks || super::reentry::inside(alloc.uid) {
                    this.stage = Stage::Done;
                    return Poll::Ready(Err(err.into()));
                }
                // Counted in before the tries the wait follows (see `signal`).
                alloc.signal.count_in();
                this.stage = Stage::Waiting { registration: None };
            }
            Stage::Waiting { .. } => {}
        }
        for _ in 0..TRIES {
            let seen = alloc.signal.generation();
            match alloc.place(&this.request, true) {
                Err(SharedAllocError::Core(AllocError::NoSpace { .. })) => {}
                done => {
                    this.stage.finish(alloc);
                    return Poll::Ready(done);
                }
            }
            if this
                .stage
                .register(alloc, seen, cx, Need::Run(this.request.min_len))
            {
                return Poll::Pending;
            }
        }
        // Releases keep overtaking the check (each moves the generation): let the
        // task run again later rather than hold the thread here.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Drop for AllocateWhenFits<'_> {
    fn drop(&mut self) {
        self.stage.finish(self.alloc);
    }
}

impl Future for WhenReleased<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let alloc = this.alloc;
        match this.stage {
            Stage::Done => panic!("WhenReleased polled after it completed"),
            Stage::Start => {
                alloc.signal.count_in();
                this.stage = Stage::Waiting { registration: None };
            }
            Stage::Waiting { .. } => {}
        }
        for _ in 0..TRIES {
            let seen = alloc.signal.generation();
            if alloc.deferred_since(this.extent, &this.marks) == 0 {
                this.stage.finish(alloc);
                return Poll::Ready(());
            }
            let r = this.extent.start..this.extent.start + this.extent.len;
            if this
                .stage
                .register(alloc, seen, cx, Need::ReleaseIn(alloc.groups_of(&r)))
            {
                return Poll::Pending;
            }
        }
        // As `AllocateWhenFits`: yield rather than spin.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Drop for WhenReleased<'_> {
    fn drop(&mut self) {
        self.stage.finish(self.alloc);
    }
}
