//! A region's epochs: the transaction and reader verbs of its allocator, with the
//! gates of blocks freed on commit through a handle swept after each (see
//! `span::Gate`), so that those blocks are discarded just before they become Free.

use std::sync::Arc;
use std::vec::Vec;

use super::space::Space;
use super::span::{Sweep, sweep};
use super::{Region, RegionError};
use crate::backing::Backing;
use crate::{AbortOutcome, Extent, ReaderId, ReaderInfo, ReleaseOutcome};

impl<B: Backing> Region<B> {
    /// The open epoch: [`SharedAllocator::epoch`](crate::SharedAllocator::epoch).
    ///
    /// ```
    /// # use pinalloc::{HeapBacking, Region};
    /// let region = Region::new(HeapBacking::new(4096)?, 512)?;
    /// assert_eq!(region.epoch(), 1);
    /// region.commit(1)?;
    /// assert_eq!(region.epoch(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.space.allocator.epoch()
    }

    /// Commits the open epoch
    /// ([`SharedAllocator::commit`](crate::SharedAllocator::commit)): the blocks
    /// [freed on commit](crate::Allocation::free_on_commit) in it that nothing else
    /// holds are discarded and become Free. The outcome counts them.
    ///
    /// # Errors
    ///
    /// [`RegionError::Epoch`] unless `epoch` is the open one; nothing changes.
    ///
    /// ```
    /// # use pinalloc::{HeapBacking, Region, Request};
    /// let region = Region::new(HeapBacking::new(8 * 512)?, 512)?;
    /// let page = region.allocate(Request::new(2))?;
    /// region.commit(1)?;
    /// page.free_on_commit()?;
    /// assert_eq!(region.commit(2)?.released_blocks, 2);
    /// assert!(region.commit(2).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn commit(&self, epoch: u64) -> Result<ReleaseOutcome, RegionError> {
        let out = self.space.allocator.commit(epoch)?;
        Ok(self.swept(out))
    }

    /// The first half of a durable commit
    /// ([`SharedAllocator::prepare_commit`](crate::SharedAllocator::prepare_commit)):
    /// closes the open epoch and returns the free list as of its commit. Its blocks
    /// freed on commit stay Deferred, bytes intact, until
    /// [`finish_commit`](Self::finish_commit).
    ///
    /// # Errors
    ///
    /// [`RegionError::Epoch`] unless `epoch` is the open one; nothing changes.
    ///
    /// ```
    /// # use pinalloc::{BlockState, Extent, HeapBacking, Region, Request};
    /// let region = Region::new(HeapBacking::new(4 * 512)?, 512)?;
    /// let page = region.allocate(Request::new(4))?;
    /// region.commit(1)?;
    /// page.free_on_commit()?;
    /// let list = region.prepare_commit(2)?;
    /// assert_eq!(list, [Extent::new(0, 4)]);     // write it, fsync it...
    /// assert_eq!(region.state_of(0), Some(BlockState::Deferred));
    /// region.finish_commit(2)?;                  // ...then let the blocks go
    /// assert_eq!(region.state_of(0), Some(BlockState::Free));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn prepare_commit(&self, epoch: u64) -> Result<Vec<Extent>, RegionError> {
        Ok(self.space.allocator.prepare_commit(epoch)?)
    }

    /// The second half of a durable commit
    /// ([`SharedAllocator::finish_commit`](crate::SharedAllocator::finish_commit)):
    /// the list is on disk, and the blocks it freed that nothing else holds are
    /// discarded and become Free.
    ///
    /// # Errors
    ///
    /// [`RegionError::Epoch`] unless `epoch` is prepared and unfinished; nothing
    /// changes.
    ///
    /// ```
    /// # use pinalloc::{HeapBacking, Region};
    /// let region = Region::new(HeapBacking::new(4096)?, 512)?;
    /// region.prepare_commit(1)?;
    /// region.finish_commit(1)?;
    /// assert!(region.finish_commit(1).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn finish_commit(&self, epoch: u64) -> Result<ReleaseOutcome, RegionError> {
        let out = self.space.allocator.finish_commit(epoch)?;
        Ok(self.swept(out))
    }

    /// Undoes the open epoch's frees on commit
    /// ([`SharedAllocator::abort`](crate::SharedAllocator::abort)): their blocks are
    /// Allocated again, with their bytes as they were, and detached once no pin guard
    /// holds them: [`attach`](Self::attach) takes them back. A free on commit of
    /// blocks allocated in the epoch itself is a plain free, which no abort undoes:
    /// those go Free, as without a region. Blocks allocated in the epoch and still
    /// held stay with their handles (a region has no `abort_all`: a handle's blocks
    /// are its own to free).
    ///
    /// # Errors
    ///
    /// [`RegionError::Epoch`] unless `epoch` is the open one; nothing changes.
    ///
    /// ```
    /// # use pinalloc::{HeapBacking, Region, Request};
    /// let region = Region::new(HeapBacking::new(8 * 512)?, 512)?;
    /// let mut page = region.allocate(Request::new(2))?;
    /// page.write_at(0, b"kept")?;
    /// region.commit(1)?;
    /// let e = page.extent();
    /// page.free_on_commit()?;
    /// assert_eq!(region.abort(2)?.restored_blocks, 2);
    /// let page = region.attach(e)?;             // the transaction never happened
    /// let mut out = [0; 4];
    /// page.read_at(0, &mut out)?;
    /// assert_eq!(&out, b"kept");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn abort(&self, epoch: u64) -> Result<AbortOutcome, RegionError> {
        let out = self.space.allocator.abort(epoch)?;
        sweep(&self.space, Sweep::All);
        Ok(out)
    }

    /// Starts a snapshot reader
    /// ([`SharedAllocator::begin_read`](crate::SharedAllocator::begin_read)): blocks
    /// freed in this epoch or later stay Deferred until it ends, and the bytes of
    /// those freed after it began stay intact. (The allocator counts by epoch, so a
    /// block freed earlier in the same epoch may be Deferred for it too, but its
    /// bytes may already have been discarded: the reader never had a claim on them.)
    /// [`read`](Self::read) gives one that ends when dropped.
    ///
    /// ```
    /// # use pinalloc::{HeapBacking, Region, Request};
    /// let region = Region::new(HeapBacking::new(8 * 512)?, 512)?;
    /// let page = region.allocate(Request::new(2))?;
    /// region.commit(1)?;
    /// let reader = region.begin_read();          // sees page
    /// page.free_on_commit()?;
    /// assert_eq!(region.commit(2)?.released_blocks, 0);
    /// assert_eq!(region.end_read(reader)?.released_blocks, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "a reader holds blocks until `end_read`"]
    pub fn begin_read(&self) -> ReaderId {
        self.space.allocator.begin_read()
    }

    /// A snapshot reader that ends when its guard drops: see [`RegionReadGuard`].
    ///
    /// ```
    /// # use pinalloc::{HeapBacking, Region, Request};
    /// let region = Region::new(HeapBacking::new(8 * 512)?, 512)?;
    /// let page = region.allocate(Request::new(2))?;
    /// region.commit(1)?;
    /// {
    ///     let _snapshot = region.read();
    ///     page.free_on_commit()?;
    ///     region.commit(2)?;
    ///     assert_eq!(region.stats().space.deferred_blocks, 2);
    /// }
    /// assert_eq!(region.stats().space.free_blocks, 8);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read(&self) -> RegionReadGuard<B> {
        RegionReadGuard {
            space: Arc::clone(&self.space),
            id: Some(self.begin_read()),
        }
    }

    /// Ends a reader ([`SharedAllocator::end_read`](crate::SharedAllocator::end_read)):
    /// blocks only it held are discarded and become Free. The outcome counts them.
    ///
    /// # Errors
    ///
    /// [`RegionError::Epoch`] for a reader of another region, or one already ended;
    /// nothing changes.
    ///
    /// ```
    /// # use pinalloc::{HeapBacking, Region};
    /// let region = Region::new(HeapBacking::new(4096)?, 512)?;
    /// let r = region.begin_read();
    /// region.end_read(r)?;
    /// assert!(region.end_read(r).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn end_read(&self, reader: ReaderId) -> Result<ReleaseOutcome, RegionError> {
        end_read(&self.space, reader)
    }

    /// The live readers, with their epochs and what each alone holds back:
    /// [`SharedAllocator::readers`](crate::SharedAllocator::readers).
    ///
    /// ```
    /// # use pinalloc::{HeapBacking, Region};
    /// let region = Region::new(HeapBacking::new(4096)?, 512)?;
    /// let guard = region.read();
    /// assert_eq!(region.readers()[0].id, guard.id());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn readers(&self) -> Vec<ReaderInfo> {
        self.space.allocator.readers()
    }

    /// `out` with the blocks that a sweep of every gate released added.
    fn swept(&self, mut out: ReleaseOutcome) -> ReleaseOutcome {
        out.released_blocks += sweep(&self.space, Sweep::All);
        out
    }
}

fn end_read<B: Backing>(space: &Space<B>, reader: ReaderId) -> Result<ReleaseOutcome, RegionError> {
    let mut out = space.allocator.end_read(reader)?;
    out.released_blocks += sweep(space, Sweep::All);
    Ok(out)
}

/// A snapshot reader of a [`Region`] that ends when dropped; from [`Region::read`].
/// It holds the region, as a pin guard does, so it may outlive the `Region` value.
///
/// ```
/// # use pinalloc::{HeapBacking, Region};
/// let region = Region::new(HeapBacking::new(4096)?, 512)?;
/// let guard = region.read();
/// assert_eq!(guard.id().epoch(), 1);
/// drop(region);
/// guard.end()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "dropping the guard ends the read at once"]
pub struct RegionReadGuard<B: Backing> {
    space: Arc<Space<B>>,
    /// `None` once ended or handed out.
    id: Option<ReaderId>,
}

impl<B: Backing> RegionReadGuard<B> {
    /// The reader.
    ///
    /// ```
    /// # use pinalloc::{HeapBacking, Region};
    /// let region = Region::new(HeapBacking::new(4096)?, 512)?;
    /// assert_eq!(region.read().id().epoch(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn id(&self) -> ReaderId {
        self.id
            .expect("a guard holds its reader until it is consumed")
    }

    /// Ends the read now, with what it released.
    ///
    /// # Errors
    ///
    /// [`RegionError::Epoch`] when the reader was already ended by hand (with
    /// [`Region::end_read`] of [`id`](Self::id)).
    ///
    /// ```
    /// # use pinalloc::{HeapBacking, Region, Request};
    /// let region = Region::new(HeapBacking::new(4096)?, 512)?;
    /// let page = region.allocate(Request::new(8))?;
    /// region.commit(1)?;
    /// let guard = region.read();
    /// page.free_on_commit()?;
    /// region.commit(2)?;
    /// assert_eq!(guard.end()?.released_blocks, 8);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn end(mut self) -> Result<ReleaseOutcome, RegionError> {
        let id = self
            .id
            .take()
            .expect("a guard holds its reader until it is consumed");
        end_read(&self.space, id)
    }

    /// Keeps the reader live past the guard: end it with [`Region::end_read`].
    ///
    /// ```
    /// # use pinalloc::{HeapBacking, Region};
    /// let region = Region::new(HeapBacking::new(4096)?, 512)?;
    /// let id = region.read().into_id();
    /// assert_eq!(region.readers().len(), 1);
    /// region.end_read(id)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "the reader stays live until `end_read`"]
    pub fn into_id(mut self) -> ReaderId {
        self.id
            .take()
            .expect("a guard holds its reader until it is consumed")
    }
}

impl<B: Backing> Drop for RegionReadGuard<B> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            // Ended by hand already: nothing left to end.
            let _ = end_read(&self.space, id);
        }
    }
}

impl<B: Backing> core::fmt::Debug for RegionReadGuard<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RegionReadGuard")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}
