//! [`Checked`]: an allocator and the model in lockstep.

use std::format;
use std::string::String;
use std::vec::Vec;

use super::Model;
use crate::{
    AbortOutcome, AllocError, BlockState, EpochError, Extent, ExtentAllocator, FreeError,
    FreeOutcome, PinError, PinId, PinMode, ReaderId, ReleaseOutcome, Request, Reservation,
    ReservationError, ResizeError,
};

/// An [`ExtentAllocator`] and the reference [`Model`] side by side: every call goes
/// to both, and returns the allocator's answer after checking that
///
/// - both gave the same answer, errors included;
/// - a call that failed left the allocator equal, field by field, to its state before
///   the call (invariant 6);
/// - afterwards, both agree on the whole state: free extents, the durable view, every
///   figure in [`Stats`](crate::Stats), every block's state and pin count (for spaces
///   of up to [`per_block_limit`](Self::per_block_limit) blocks), and the allocator's
///   own [`check_invariants`](ExtentAllocator::check_invariants).
///
/// Use it in place of an `ExtentAllocator` in the tests of code built on pinalloc
/// (see `examples/toyfs_truncate.rs`). The model is O(capacity) per call: keep the
/// space to a few thousand blocks.
///
/// # Panics
///
/// Every method panics, with what differed, when the allocator and the model
/// disagree: that is its purpose. proptest reports such a panic as a failing case
/// and shrinks it.
///
/// ```
/// use pinalloc::testing::Checked;
/// use pinalloc::{Extent, Request};
///
/// let mut alloc = Checked::new(64);
/// let file = alloc.allocate(Request::new(16))?;
/// let dma = alloc.pin(Extent::new(file.start, 4))?;
/// alloc.free(file)?; // 12 blocks Free, 4 Deferred under the pin
/// alloc.unpin(dma)?;
/// assert_eq!(alloc.allocator().stats().free_blocks, 64);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Checked {
    real: ExtentAllocator,
    model: Model,
    per_block_limit: u64,
}

impl Checked {
    /// `capacity` Free blocks in both.
    ///
    /// ```
    /// let alloc = pinalloc::testing::Checked::new(8);
    /// assert_eq!(alloc.model().capacity(), 8);
    /// ```
    #[must_use]
    pub fn new(capacity: u64) -> Self {
        Self::from_parts(ExtentAllocator::new(capacity), Model::new(capacity))
    }

    /// As [`ExtentAllocator::from_allocated_extents`]: `allocated` are Allocated at
    /// mount time, the rest Free.
    ///
    /// ```
    /// use pinalloc::Extent;
    /// let alloc = pinalloc::testing::Checked::from_allocated_extents(8, [Extent::new(2, 2)])?;
    /// assert_eq!(alloc.model().allocated_blocks(), 2);
    /// # Ok::<(), pinalloc::BuildError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As `from_allocated_extents`.
    pub fn from_allocated_extents(
        capacity: u64,
        allocated: impl IntoIterator<Item = Extent>,
    ) -> Result<Self, crate::BuildError> {
        let allocated: Vec<Extent> = allocated.into_iter().collect();
        let real = ExtentAllocator::from_allocated_extents(capacity, allocated.iter().copied())?;
        let mut model = Model::new(capacity);
        for &e in &allocated {
            model.mount_allocated(e);
        }
        Ok(Self::from_parts(real, model))
    }

    fn from_parts(real: ExtentAllocator, model: Model) -> Self {
        let checked = Checked {
            real,
            model,
            per_block_limit: 512,
        };
        checked.compare("construction");
        checked
    }

    /// Compares every block's state and pin count only in spaces of up to `blocks`
    /// blocks (512 unless set); everything else is compared whatever the size.
    ///
    /// ```
    /// let alloc = pinalloc::testing::Checked::new(4096).per_block_limit(4096);
    /// ```
    #[must_use]
    pub fn per_block_limit(mut self, blocks: u64) -> Self {
        self.per_block_limit = blocks;
        self
    }

    /// The allocator, for queries.
    ///
    /// ```
    /// let alloc = pinalloc::testing::Checked::new(8);
    /// assert_eq!(alloc.allocator().capacity_blocks(), 8);
    /// ```
    #[must_use]
    pub fn allocator(&self) -> &ExtentAllocator {
        &self.real
    }

    /// The model, for queries.
    ///
    /// ```
    /// let alloc = pinalloc::testing::Checked::new(8);
    /// assert_eq!(alloc.model().free_blocks(), 8);
    /// ```
    #[must_use]
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Runs `call` on the allocator and `mirror` on the model, checks they agree,
    /// that a failure changed nothing, and then the whole state.
    #[track_caller]
    fn step<T, E, M>(
        &mut self,
        what: &dyn Fn() -> String,
        call: impl FnOnce(&mut ExtentAllocator) -> Result<T, E>,
        mirror: impl FnOnce(&mut Model, &Result<T, E>) -> M,
        same: impl FnOnce(&Result<T, E>, &M) -> bool,
    ) -> Result<T, E>
    where
        T: core::fmt::Debug,
        E: core::fmt::Debug,
        M: core::fmt::Debug,
    {
        let before = self.real.clone();
        // Stats too: they count the heap's metadata bytes, which a clone does not copy.
        let stats_before = self.real.stats();
        let got = call(&mut self.real);
        let want = mirror(&mut self.model, &got);
        assert!(
            same(&got, &want),
            "{}: pinalloc gave {got:?}, the model {want:?}",
            what()
        );
        if got.is_err() {
            if let Some(field) = before.first_difference(&self.real) {
                panic!("{}: failed with {got:?} but changed `{field}`", what());
            }
            assert_eq!(
                self.real.stats(),
                stats_before,
                "{}: failed with {got:?} but changed the stats",
                what()
            );
        }
        self.compare(&what());
        got
    }

    /// `allocate`.
    ///
    /// # Errors
    ///
    /// As [`ExtentAllocator::allocate`].
    #[track_caller]
    pub fn allocate(&mut self, request: Request) -> Result<Extent, AllocError> {
        self.step(
            &|| format!("allocate({request:?})"),
            |a| a.allocate(request),
            |m, got| m.allocate_as(&request, None, got.as_ref().ok().copied()),
            |got, want| got == want,
        )
    }

    /// `allocate_reserved`. A reservation of another allocator is refused by both.
    ///
    /// # Errors
    ///
    /// As [`ExtentAllocator::allocate_reserved`].
    #[track_caller]
    pub fn allocate_reserved(
        &mut self,
        reservation: &mut Reservation,
        request: Request,
    ) -> Result<Extent, AllocError> {
        let id = reservation.id();
        let known = self.real.made(reservation).then_some(id);
        let got = self.step(
            &|| format!("allocate_reserved({id}, {request:?})"),
            |a| a.allocate_reserved(reservation, request),
            |m, got| match known {
                Some(id) => m.allocate_as(&request, Some(id), got.as_ref().ok().copied()),
                None => Err(AllocError::UnknownReservation { id }),
            },
            |got, want| got == want,
        );
        self.check_remaining(reservation);
        got
    }

    /// `allocate_many`.
    ///
    /// # Errors
    ///
    /// As [`ExtentAllocator::allocate_many`].
    #[track_caller]
    pub fn allocate_many(&mut self, total_blocks: u64) -> Result<Vec<Extent>, AllocError> {
        self.step(
            &|| format!("allocate_many({total_blocks})"),
            |a| a.allocate_many(total_blocks),
            |m, got| m.allocate_many_as(total_blocks, None, got.as_deref().unwrap_or(&[])),
            |got, want| got == want,
        )
    }

    /// `allocate_many_reserved`.
    ///
    /// # Errors
    ///
    /// As [`ExtentAllocator::allocate_many_reserved`].
    #[track_caller]
    pub fn allocate_many_reserved(
        &mut self,
        reservation: &mut Reservation,
        total_blocks: u64,
    ) -> Result<Vec<Extent>, AllocError> {
        let id = reservation.id();
        let known = self.real.made(reservation).then_some(id);
        let got = self.step(
            &|| format!("allocate_many_reserved({id}, {total_blocks})"),
            |a| a.allocate_many_reserved(reservation, total_blocks),
            |m, got| match known {
                Some(id) => {
                    m.allocate_many_as(total_blocks, Some(id), got.as_deref().unwrap_or(&[]))
                }
                None => Err(AllocError::UnknownReservation { id }),
            },
            |got, want| got == want,
        );
        self.check_remaining(reservation);
        got
    }

    #[track_caller]
    fn check_remaining(&self, reservation: &Reservation) {
        if let Some(&left) = self.model.reservations.get(&reservation.id()) {
            if self.real.made(reservation) {
                assert_eq!(
                    reservation.remaining_blocks(),
                    left,
                    "reservation {}: blocks left",
                    reservation.id()
                );
            }
        }
    }

    /// `free` (`on_commit` false) or `free_on_commit`.
    fn free_with(&mut self, extent: Extent, on_commit: bool) -> Result<FreeOutcome, FreeError> {
        self.step(
            &|| {
                format!(
                    "free{}({extent})",
                    if on_commit { "_on_commit" } else { "" }
                )
            },
            |a| {
                if on_commit {
                    a.free_on_commit(extent)
                } else {
                    a.free(extent)
                }
            },
            |m, _| m.free(extent, on_commit),
            |got, want| {
                got.as_ref().map(|o| (o.freed_blocks, o.deferred_blocks))
                    == want.as_ref().map(|f| (f.now, f.deferred))
            },
        )
    }

    /// `free`.
    ///
    /// # Errors
    ///
    /// As [`ExtentAllocator::free`].
    #[track_caller]
    pub fn free(&mut self, extent: Extent) -> Result<FreeOutcome, FreeError> {
        self.free_with(extent, false)
    }

    /// `free_on_commit`.
    ///
    /// # Errors
    ///
    /// As [`ExtentAllocator::free_on_commit`].
    #[track_caller]
    pub fn free_on_commit(&mut self, extent: Extent) -> Result<FreeOutcome, FreeError> {
        self.free_with(extent, true)
    }

    /// `pin`.
    ///
    /// # Errors
    ///
    /// As [`ExtentAllocator::pin`].
    #[track_caller]
    pub fn pin(&mut self, extent: Extent) -> Result<PinId, PinError> {
        self.pin_with(extent, PinMode::Deferring)
    }

    /// `pin_with`.
    ///
    /// # Errors
    ///
    /// As [`ExtentAllocator::pin_with`].
    #[track_caller]
    pub fn pin_with(&mut self, extent: Extent, mode: PinMode) -> Result<PinId, PinError> {
        let blocking = mode == PinMode::Blocking;
        self.step(
            &|| format!("pin_with({extent}, {mode:?})"),
            |a| a.pin_with(extent, mode),
            |m, got| {
                let want = m.check_pin(extent);
                if let (Ok(()), Ok(id)) = (&want, got) {
                    m.pin(*id, extent, blocking);
                }
                want
            },
            |got, want| match (got, want) {
                (Ok(_), Ok(())) => true,
                (Err(g), Err(w)) => g == w,
                _ => false,
            },
        )
    }

    /// `pin_token`: refused exactly when the model has no such live pin.
    ///
    /// # Errors
    ///
    /// As [`ExtentAllocator::pin_token`].
    #[track_caller]
    pub fn pin_token(&mut self, id: PinId) -> Result<u64, PinError> {
        self.step(
            &|| format!("pin_token({id})"),
            |a| a.pin_token(id),
            |m, _| m.pins.contains_key(&id),
            |got, live| got.is_ok() == *live,
        )
    }

    /// `pin_of_token`: changes nothing.
    ///
    /// # Errors
    ///
    /// As [`ExtentAllocator::pin_of_token`].
    pub fn pin_of_token(&self, token: u64) -> Result<PinId, PinError> {
        self.real.pin_of_token(token)
    }

    /// `unpin`.
    ///
    /// # Errors
    ///
    /// As [`ExtentAllocator::unpin`].
    #[track_caller]
    pub fn unpin(&mut self, id: PinId) -> Result<ReleaseOutcome, PinError> {
        self.step(
            &|| format!("unpin({id})"),
            |a| a.unpin(id),
            |m, _| m.unpin(id),
            |got, want| {
                got.as_ref()
                    .map(|o| (o.released_blocks, o.unpinned_free_blocks))
                    == want.as_ref().copied()
            },
        )
    }

    /// `commit`.
    ///
    /// # Errors
    ///
    /// As [`ExtentAllocator::commit`].
    #[track_caller]
    pub fn commit(&mut self, epoch: u64) -> Result<ReleaseOutcome, EpochError> {
        self.step(
            &|| format!("commit({epoch})"),
            |a| a.commit(epoch),
            |m, _| m.commit(epoch),
            |got, want| got.as_ref().map(|o| o.released_blocks) == want.as_ref().copied(),
        )
    }

    /// `prepare_commit`.
    ///
    /// # Errors
    ///
    /// As [`ExtentAllocator::prepare_commit`].
    #[track_caller]
    pub fn prepare_commit(&mut self, epoch: u64) -> Result<Vec<Extent>, EpochError> {
        self.step(
            &|| format!("prepare_commit({epoch})"),
            |a| a.prepare_commit(epoch),
            |m, _| m.prepare_commit(epoch),
            |got, want| got == want,
        )
    }

    /// `finish_commit`.
    ///
    /// # Errors
    ///
    /// As [`ExtentAllocator::finish_commit`].
    #[track_caller]
    pub fn finish_commit(&mut self, epoch: u64) -> Result<ReleaseOutcome, EpochError> {
        self.step(
            &|| format!("finish_commit({epoch})"),
            |a| a.finish_commit(epoch),
            |m, _| m.finish_commit(epoch),
            |got, want| got.as_ref().map(|o| o.released_blocks) == want.as_ref().copied(),
        )
    }

    /// `abort`.
    ///
    /// # Errors
    ///
    /// As [`ExtentAllocator::abort`].
    #[track_caller]
    pub fn abort(&mut self, epoch: u64) -> Result<AbortOutcome, EpochError> {
        self.step(
            &|| format!("abort({epoch})"),
            |a| a.abort(epoch),
            |m, _| m.abort(epoch),
            |got, want| got.as_ref().map(|o| o.restored_blocks) == want.as_ref().copied(),
        )
    }

    /// `abort_all`.
    ///
    /// # Errors
    ///
    /// As [`ExtentAllocator::abort_all`].
    #[track_caller]
    pub fn abort_all(&mut self, epoch: u64) -> Result<AbortOutcome, EpochError> {
        self.step(
            &|| format!("abort_all({epoch})"),
            |a| a.abort_all(epoch),
            |m, _| m.abort_all(epoch),
            |got, want| {
                got.as_ref()
                    .map(|o| (o.restored_blocks, o.freed_blocks, o.deferred_blocks))
                    == want
                        .as_ref()
                        .map(|(restored, f)| (*restored, f.now, f.deferred))
            },
        )
    }

    /// `reset`.
    #[track_caller]
    pub fn reset(&mut self) {
        self.real.reset();
        self.model.reset();
        self.compare("reset");
    }

    /// `grow`.
    ///
    /// # Errors
    ///
    /// As [`ExtentAllocator::grow`].
    #[track_caller]
    pub fn grow(&mut self, new_capacity: u64) -> Result<(), ResizeError> {
        self.step(
            &|| format!("grow({new_capacity})"),
            |a| a.grow(new_capacity),
            |m, _| m.grow(new_capacity),
            |got, want| got == want,
        )
    }

    /// `shrink`.
    ///
    /// # Errors
    ///
    /// As [`ExtentAllocator::shrink`].
    #[track_caller]
    pub fn shrink(&mut self, new_capacity: u64) -> Result<(), ResizeError> {
        self.step(
            &|| format!("shrink({new_capacity})"),
            |a| a.shrink(new_capacity),
            |m, _| m.shrink(new_capacity),
            |got, want| got == want,
        )
    }

    /// `begin_read`.
    #[track_caller]
    pub fn begin_read(&mut self) -> ReaderId {
        let id = self.real.begin_read();
        assert_eq!(
            id.epoch(),
            self.model.open,
            "a reader begins in the open epoch"
        );
        self.model.begin_read(id);
        self.compare("begin_read");
        id
    }

    /// `end_read`.
    ///
    /// # Errors
    ///
    /// As [`ExtentAllocator::end_read`].
    #[track_caller]
    pub fn end_read(&mut self, reader: ReaderId) -> Result<ReleaseOutcome, EpochError> {
        self.step(
            &|| format!("end_read({reader})"),
            |a| a.end_read(reader),
            |m, _| m.end_read(reader),
            |got, want| got.as_ref().map(|o| o.released_blocks) == want.as_ref().copied(),
        )
    }

    /// `reserve`.
    ///
    /// # Errors
    ///
    /// As [`ExtentAllocator::reserve`].
    #[track_caller]
    pub fn reserve(&mut self, len_blocks: u64) -> Result<Reservation, AllocError> {
        self.step(
            &|| format!("reserve({len_blocks})"),
            |a| a.reserve(len_blocks),
            |m, got| {
                let want = m.check_reserve(len_blocks);
                if let (Ok(()), Ok(res)) = (&want, got) {
                    m.reserve(res.id(), len_blocks);
                }
                want
            },
            |got, want| match (got, want) {
                (Ok(res), Ok(())) => res.remaining_blocks() == len_blocks,
                (Err(g), Err(w)) => g == w,
                _ => false,
            },
        )
    }

    /// `unreserve`. A reservation of another allocator comes back in the error, as
    /// from the allocator.
    ///
    /// # Errors
    ///
    /// As [`ExtentAllocator::unreserve`].
    #[track_caller]
    pub fn unreserve(&mut self, reservation: Reservation) -> Result<u64, ReservationError> {
        let id = reservation.id();
        let known = self.real.made(&reservation);
        self.step(
            &|| format!("unreserve({id})"),
            |a| a.unreserve(reservation),
            |m, _| if known { m.unreserve(id) } else { None },
            |got, want| got.as_ref().ok() == want.as_ref(),
        )
    }

    /// Checks the whole state against the model; `after` names the last call.
    ///
    /// # Panics
    ///
    /// With what differs, if anything does.
    #[track_caller]
    pub fn compare(&self, after: &str) {
        if let Err(why) = self.difference() {
            panic!("after {after}: {why}");
        }
    }

    /// What differs between the allocator and the model, if anything.
    fn difference(&self) -> Result<(), String> {
        let m = &self.model;
        let a = &self.real;
        let runs = m.free_runs();
        same("free extents", &a.free_extents().collect::<Vec<_>>(), &runs)?;
        same(
            "durable free extents",
            &a.durable_free_extents(),
            &m.durable_runs(),
        )?;
        let s = a.stats();
        same("free blocks", &s.free_blocks, &m.free_blocks())?;
        same(
            "allocated blocks",
            &s.allocated_blocks,
            &m.allocated_blocks(),
        )?;
        same("deferred blocks by hold", &s.deferred_by, &m.deferred())?;
        same("deferred blocks", &s.deferred_blocks, &m.deferred().total())?;
        same(
            "pinned free blocks",
            &s.pinned_free_blocks,
            &m.pinned_free(),
        )?;
        same("pinned blocks", &s.pinned_blocks, &m.pinned_blocks())?;
        same("pins", &s.live_pins, &(m.pins.len() as u64))?;
        let listed: Vec<(PinId, Extent, bool)> = a
            .pins()
            .iter()
            .map(|p| (p.id, p.extent, p.mode == PinMode::Blocking))
            .collect();
        let want: Vec<(PinId, Extent, bool)> =
            m.pins.iter().map(|(&id, &(e, b))| (id, e, b)).collect();
        same("pins with their extents and modes", &listed, &want)?;
        same("readers", &s.live_readers, &(m.readers.len() as u64))?;
        let listed: Vec<(ReaderId, u64)> = a
            .readers()
            .iter()
            .map(|r| (r.id, r.held_alone_blocks))
            .collect();
        same(
            "readers and the blocks each alone holds",
            &listed,
            &m.readers_held_alone(),
        )?;
        same("open epoch", &s.open_epoch, &m.open)?;
        same("reserved blocks", &s.reserved_blocks, &m.reserved())?;
        same(
            "reservations",
            &s.live_reservations,
            &(m.reservations.len() as u64),
        )?;
        same("free extents", &s.free_extents, &(runs.len() as u64))?;
        same(
            "largest free extent",
            &s.largest_free_blocks,
            &m.largest_free(),
        )?;
        same("free histogram", &s.free_histogram, &m.histogram())?;
        if m.capacity() <= self.per_block_limit {
            for (b, block) in m.blocks.iter().enumerate() {
                let b = b as u64;
                same(
                    &format!("state of block {b}"),
                    &a.state_of(b),
                    &Some(block.state),
                )?;
                same(
                    &format!("pin count of block {b}"),
                    &a.pin_count(b),
                    &u64::from(block.pins),
                )?;
            }
            same::<Option<BlockState>>("state past the end", &a.state_of(m.capacity()), &None)?;
            let runs: Vec<crate::BlockRun> = a.runs(0..u64::MAX).collect();
            same("runs", &runs, &m.block_runs())?;
        }
        a.check_invariants().map_err(|v| format!("{v}"))
    }
}

fn same<T: PartialEq + core::fmt::Debug>(what: &str, got: &T, want: &T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: pinalloc has {got:?}, the model {want:?}"))
    }
}
