//! Record a workload and replay it anywhere (the `trace` feature): choose a policy for
//! your own workload, and turn a production trace into a regression test.
//!
//! A [`Recorder`] wraps an [`ExtentAllocator`] and logs every call with its result;
//! a [`SharedRecorder`] does the same for a [`SharedAllocator`], in the order its
//! calls returned. [`encode`] writes a log in the varint style of
//! [`persist`](crate::persist), in blocks of records each with its own CRC-32C, so a
//! torn log is told from a corrupted one. [`replay`] plays a log against a fresh
//! allocator: with the recorded policies it checks that every result is the same;
//! with another policy it reports ns per call, the free extents and largest free
//! extent at the end, and the allocations that failed.
//!
//! # Format (version 1)
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `PATR` |
//! | 1 | version, 1 |
//! | varint | capacity in blocks |
//! | varint | the shared allocator's groups, or 0 for a core allocator's log |
//! | 4 | CRC-32C of the header so far, little-endian |
//! | blocks | each: varint record count, varint payload length, a CRC-32C of those two, the records, and a CRC-32C of the records (CRCs 4 bytes, little-endian); a count of 0 ends the log |
//!
//! A record is a tag byte, its arguments as varints, and its result: `0` and the
//! success's fields, or `1` and a 32-bit code of the error (a CRC-32C of its
//! `Debug` form, so that a replay can tell the same error from another).
//!
//! ```
//! use pinalloc::{ExtentAllocator, Request};
//! use pinalloc::trace::{self, Recorder};
//!
//! let mut rec = Recorder::new(ExtentAllocator::new(1 << 20));
//! let a = rec.allocate(Request::new(100))?;
//! let b = rec.allocate(Request::new(7))?;
//! rec.free(a)?;
//! let log = trace::encode(&rec.into_trace());
//! let report = trace::replay(&trace::decode(&log)?, None)?;   // same results, or an error
//! assert_eq!((report.calls, report.failures), (3, 0));
//! # let _ = b;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::boxed::Box;
use std::collections::BTreeMap;
use std::format;
use std::string::String;
use std::time::Instant;
use std::vec::Vec;

use crate::{
    AllocError, EpochError, Extent, ExtentAllocator, FreeError, FreeOutcome, PinError, PinId,
    Policy, ReaderId, ReleaseOutcome, Request, SharedAllocError, SharedAllocator, SharedFreeError,
    SharedPinError, SharedPinId,
};
use std::sync::Mutex;

/// The log's first four bytes.
pub const MAGIC: [u8; 4] = *b"PATR";
/// The version this build writes and reads.
pub const VERSION: u8 = 1;
/// Records per block.
const BLOCK_RECORDS: usize = 4096;

/// One recorded call and its result; an error is kept as a code (see the module
/// docs). Pins and readers are numbered in the order the log made them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `allocate(request)`.
    Allocate {
        /// The request.
        request: Request,
        /// The extent, or the error's code.
        result: Result<Extent, u32>,
    },
    /// `free(extent)`, or `free_on_commit(extent)`.
    Free {
        /// The extent.
        extent: Extent,
        /// Whether it was `free_on_commit`.
        on_commit: bool,
        /// The error's code, if it failed.
        result: Result<(), u32>,
    },
    /// `pin(extent)`.
    Pin {
        /// The extent.
        extent: Extent,
        /// The pin's number, or the error's code.
        result: Result<u64, u32>,
    },
    /// `unpin(pin)`.
    Unpin {
        /// The pin's number.
        pin: u64,
        /// The error's code, if it failed.
        result: Result<(), u32>,
    },
    /// `commit(epoch)`.
    Commit {
        /// The epoch.
        epoch: u64,
        /// The error's code, if it failed.
        result: Result<(), u32>,
    },
    /// `begin_read()`: the reader's number.
    BeginRead {
        /// The reader's number.
        reader: u64,
    },
    /// `end_read(reader)`.
    EndRead {
        /// The reader's number.
        reader: u64,
        /// The error's code, if it failed.
        result: Result<(), u32>,
    },
}

/// A recorded workload: the space's capacity and the calls, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Trace {
    /// Blocks in the space the log was recorded on.
    pub capacity: u64,
    /// The shared allocator's groups, or 0 for a core allocator's log.
    pub groups: u64,
    /// The calls, in the order they returned.
    pub calls: Vec<Call>,
}

/// Why a log could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TraceError {
    /// Not a log: the magic is wrong.
    #[error("not a pinalloc trace (bad magic)")]
    BadMagic,
    /// A version this build does not read.
    #[error("trace version {found}, this build reads {VERSION}")]
    Version {
        /// The log's version.
        found: u8,
    },
    /// The log ends inside a block, or before its end marker: a torn write. The
    /// complete blocks before it hold `calls` calls, which [`decode_prefix`] gives.
    #[error("the trace is torn after {calls} complete calls")]
    Torn {
        /// Calls in the complete blocks.
        calls: usize,
    },
    /// The header's or a block's checksum does not match, or its records do not
    /// parse: corruption.
    #[error("block {block} of the trace is corrupt")]
    Corrupt {
        /// The block's index, from 1 (0: the header).
        block: usize,
    },
}

/// Why a replay stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// With the recorded policies, a call's result differed from the log's.
    #[error("call {index} gave {replayed:?}, the log says {recorded:?}")]
    Mismatch {
        /// The call's index in the log.
        index: usize,
        /// The call as the log has it.
        recorded: Box<Call>,
        /// The call as the replay made it.
        replayed: Box<Call>,
    },
}

/// What a replay measured.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ReplayReport {
    /// The policy every allocation used, or `None` for the recorded ones.
    pub policy: Option<Policy>,
    /// Calls replayed.
    pub calls: usize,
    /// Wall-clock nanoseconds per call, the replay's own bookkeeping included (the
    /// same for every policy).
    pub ns_per_call: f64,
    /// Free extents at the end.
    pub free_extents: u64,
    /// The largest free extent at the end, in blocks.
    pub largest_free_blocks: u64,
    /// The allocator's metadata at the end, in bytes.
    pub metadata_bytes: u64,
    /// Allocations that failed.
    pub failures: u64,
    /// Calls whose result equals the log's.
    pub equal_results: usize,
}

/// What a replay answers for a call on blocks whose allocation failed in it.
const SKIPPED: &str = "skipped: its allocation failed in the replay";

/// The code an error is logged as.
fn code(e: &impl core::fmt::Debug) -> u32 {
    crate::persist::crc32c(format!("{e:?}").as_bytes())
}

/// A new pin's number in the log (remembered under its id), or its error's code.
fn numbered<K: Ord + Copy, E: core::fmt::Debug>(
    r: &Result<K, E>,
    pins: &mut BTreeMap<K, u64>,
    next: &mut u64,
) -> Result<u64, u32> {
    match r {
        Ok(id) => {
            let n = *next;
            *next += 1;
            pins.insert(*id, n);
            Ok(n)
        }
        Err(e) => Err(code(e)),
    }
}

/// Logs a core allocator's calls; see the module docs.
#[derive(Debug)]
pub struct Recorder {
    alloc: ExtentAllocator,
    trace: Trace,
    pins: BTreeMap<PinId, u64>,
    next_pin: u64,
    readers: BTreeMap<ReaderId, u64>,
    next_reader: u64,
}

impl Recorder {
    /// Records the calls made through it on `alloc`, which should be fresh: the log
    /// does not hold the state it starts from, and a replay starts from a fresh
    /// allocator of the same capacity.
    pub fn new(alloc: ExtentAllocator) -> Self {
        Self {
            trace: Trace {
                capacity: alloc.capacity_blocks(),
                groups: 0,
                calls: Vec::new(),
            },
            alloc,
            pins: BTreeMap::new(),
            next_pin: 0,
            readers: BTreeMap::new(),
            next_reader: 0,
        }
    }

    /// The allocator, to look at.
    pub fn allocator(&self) -> &ExtentAllocator {
        &self.alloc
    }

    /// The log so far.
    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// The log, and the allocator back.
    pub fn into_parts(self) -> (Trace, ExtentAllocator) {
        (self.trace, self.alloc)
    }

    /// The log.
    pub fn into_trace(self) -> Trace {
        self.trace
    }

    /// [`ExtentAllocator::allocate`], logged.
    ///
    /// # Errors
    ///
    /// The allocator's.
    pub fn allocate(&mut self, request: Request) -> Result<Extent, AllocError> {
        let r = self.alloc.allocate(request);
        self.trace.calls.push(Call::Allocate {
            request,
            result: r.as_ref().map(|e| *e).map_err(code),
        });
        r
    }

    /// [`ExtentAllocator::free`], logged.
    ///
    /// # Errors
    ///
    /// The allocator's.
    pub fn free(&mut self, extent: Extent) -> Result<FreeOutcome, FreeError> {
        let r = self.alloc.free(extent);
        self.log_free(extent, false, &r);
        r
    }

    /// [`ExtentAllocator::free_on_commit`], logged.
    ///
    /// # Errors
    ///
    /// The allocator's.
    pub fn free_on_commit(&mut self, extent: Extent) -> Result<FreeOutcome, FreeError> {
        let r = self.alloc.free_on_commit(extent);
        self.log_free(extent, true, &r);
        r
    }

    fn log_free(&mut self, extent: Extent, on_commit: bool, r: &Result<FreeOutcome, FreeError>) {
        self.trace.calls.push(Call::Free {
            extent,
            on_commit,
            result: r.as_ref().map(drop).map_err(code),
        });
    }

    /// [`ExtentAllocator::pin`], logged.
    ///
    /// # Errors
    ///
    /// The allocator's.
    pub fn pin(&mut self, extent: Extent) -> Result<PinId, PinError> {
        let r = self.alloc.pin(extent);
        let result = numbered(&r, &mut self.pins, &mut self.next_pin);
        self.trace.calls.push(Call::Pin { extent, result });
        r
    }

    /// [`ExtentAllocator::unpin`], logged. A pin this recorder did not make is
    /// passed on, and logged as number `u64::MAX`.
    ///
    /// # Errors
    ///
    /// The allocator's.
    pub fn unpin(&mut self, id: PinId) -> Result<ReleaseOutcome, PinError> {
        let r = self.alloc.unpin(id);
        let pin = self.pins.get(&id).copied().unwrap_or(u64::MAX);
        if r.is_ok() {
            self.pins.remove(&id);
        }
        self.trace.calls.push(Call::Unpin {
            pin,
            result: r.as_ref().map(drop).map_err(code),
        });
        r
    }

    /// [`ExtentAllocator::commit`], logged.
    ///
    /// # Errors
    ///
    /// The allocator's.
    pub fn commit(&mut self, epoch: u64) -> Result<ReleaseOutcome, EpochError> {
        let r = self.alloc.commit(epoch);
        self.trace.calls.push(Call::Commit {
            epoch,
            result: r.as_ref().map(drop).map_err(code),
        });
        r
    }

    /// [`ExtentAllocator::begin_read`], logged.
    pub fn begin_read(&mut self) -> ReaderId {
        let id = self.alloc.begin_read();
        let reader = self.next_reader;
        self.next_reader += 1;
        self.readers.insert(id, reader);
        self.trace.calls.push(Call::BeginRead { reader });
        id
    }

    /// [`ExtentAllocator::end_read`], logged.
    ///
    /// # Errors
    ///
    /// The allocator's.
    pub fn end_read(&mut self, id: ReaderId) -> Result<ReleaseOutcome, EpochError> {
        let r = self.alloc.end_read(id);
        let reader = self.readers.get(&id).copied().unwrap_or(u64::MAX);
        if r.is_ok() {
            self.readers.remove(&id);
        }
        self.trace.calls.push(Call::EndRead {
            reader,
            result: r.as_ref().map(drop).map_err(code),
        });
        r
    }
}

/// Logs a shared allocator's calls, from any thread, in the order they returned
/// (each call and its record are made under one lock, so the log's order is an
/// order the allocator really went through). A replay on one thread places by the
/// same rules, but the shared allocator's per-thread rotor may place differently:
/// replay a shared log to compare policies, and expect equal results only from a
/// log of one thread.
#[derive(Debug)]
pub struct SharedRecorder<'a> {
    alloc: &'a SharedAllocator,
    state: Mutex<SharedLog>,
}

#[derive(Debug, Default)]
struct SharedLog {
    trace: Trace,
    pins: BTreeMap<SharedPinId, u64>,
    next_pin: u64,
}

impl<'a> SharedRecorder<'a> {
    /// Records the calls made through it on `alloc`.
    pub fn new(alloc: &'a SharedAllocator) -> Self {
        Self {
            alloc,
            state: Mutex::new(SharedLog {
                trace: Trace {
                    capacity: alloc.capacity_blocks(),
                    groups: alloc.group_count() as u64,
                    calls: Vec::new(),
                },
                ..SharedLog::default()
            }),
        }
    }

    /// The log.
    pub fn into_trace(self) -> Trace {
        self.state
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .trace
    }

    /// The log, locked: a panic in another recording call does not lose it.
    fn log(&self) -> std::sync::MutexGuard<'_, SharedLog> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// [`SharedAllocator::allocate`], logged.
    ///
    /// # Errors
    ///
    /// The allocator's.
    pub fn allocate(&self, request: Request) -> Result<Extent, SharedAllocError> {
        let mut log = self.log();
        let r = self.alloc.allocate(request);
        log.trace.calls.push(Call::Allocate {
            request,
            result: r.as_ref().map(|e| *e).map_err(code),
        });
        r
    }

    /// [`SharedAllocator::free`] (or `free_on_commit`), logged.
    ///
    /// # Errors
    ///
    /// The allocator's.
    pub fn free(&self, extent: Extent, on_commit: bool) -> Result<FreeOutcome, SharedFreeError> {
        let mut log = self.log();
        let r = if on_commit {
            self.alloc.free_on_commit(extent)
        } else {
            self.alloc.free(extent)
        };
        log.trace.calls.push(Call::Free {
            extent,
            on_commit,
            result: r.as_ref().map(drop).map_err(code),
        });
        r
    }

    /// [`SharedAllocator::pin_owned`] with default options, logged.
    ///
    /// # Errors
    ///
    /// The allocator's.
    pub fn pin(&self, extent: Extent) -> Result<SharedPinId, SharedPinError> {
        let mut log = self.log();
        let r = self.alloc.pin_owned(extent, crate::PinOptions::new());
        let log = &mut *log;
        let result = numbered(&r, &mut log.pins, &mut log.next_pin);
        log.trace.calls.push(Call::Pin { extent, result });
        r
    }

    /// [`SharedAllocator::unpin`], logged.
    ///
    /// # Errors
    ///
    /// The allocator's.
    pub fn unpin(&self, id: SharedPinId) -> Result<ReleaseOutcome, PinError> {
        let mut log = self.log();
        let r = self.alloc.unpin(id);
        let pin = log.pins.get(&id).copied().unwrap_or(u64::MAX);
        if r.is_ok() {
            log.pins.remove(&id);
        }
        log.trace.calls.push(Call::Unpin {
            pin,
            result: r.as_ref().map(drop).map_err(code),
        });
        r
    }

    /// [`SharedAllocator::commit`], logged.
    ///
    /// # Errors
    ///
    /// The allocator's.
    pub fn commit(&self, epoch: u64) -> Result<ReleaseOutcome, EpochError> {
        let mut log = self.log();
        let r = self.alloc.commit(epoch);
        log.trace.calls.push(Call::Commit {
            epoch,
            result: r.as_ref().map(drop).map_err(code),
        });
        r
    }
}

// ---------------------------------------------------------------------------------
// The encoding.

fn put(out: &mut Vec<u8>, v: u64) {
    crate::persist::put_varint(out, v);
}

fn put_extent(out: &mut Vec<u8>, e: Extent) {
    put(out, e.start);
    put(out, e.len);
}

fn put_unit(out: &mut Vec<u8>, r: Result<(), u32>) {
    match r {
        Ok(()) => out.push(0),
        Err(c) => {
            out.push(1);
            put(out, u64::from(c));
        }
    }
}

fn put_call(out: &mut Vec<u8>, call: &Call) {
    match *call {
        Call::Allocate { request, result } => {
            out.push(1);
            put(out, request.min_len);
            put(out, request.max_len);
            put(out, request.align);
            match request.policy {
                Policy::BestFit => out.push(0),
                Policy::FirstFit => out.push(1),
                Policy::Near(g) => {
                    out.push(2);
                    put(out, g);
                }
                Policy::Exact(s) => {
                    out.push(3);
                    put(out, s);
                }
            }
            match result {
                Ok(e) => {
                    out.push(0);
                    put_extent(out, e);
                }
                Err(c) => {
                    out.push(1);
                    put(out, u64::from(c));
                }
            }
        }
        Call::Free {
            extent,
            on_commit,
            result,
        } => {
            out.push(if on_commit { 3 } else { 2 });
            put_extent(out, extent);
            put_unit(out, result);
        }
        Call::Pin { extent, result } => {
            out.push(4);
            put_extent(out, extent);
            match result {
                Ok(n) => {
                    out.push(0);
                    put(out, n);
                }
                Err(c) => {
                    out.push(1);
                    put(out, u64::from(c));
                }
            }
        }
        Call::Unpin { pin, result } => {
            out.push(5);
            put(out, pin);
            put_unit(out, result);
        }
        Call::Commit { epoch, result } => {
            out.push(6);
            put(out, epoch);
            put_unit(out, result);
        }
        Call::BeginRead { reader } => {
            out.push(7);
            put(out, reader);
        }
        Call::EndRead { reader, result } => {
            out.push(8);
            put(out, reader);
            put_unit(out, result);
        }
    }
}

/// The log as bytes: see the module docs for the format.
pub fn encode(trace: &Trace) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    put(&mut out, trace.capacity);
    put(&mut out, trace.groups);
    let crc = crate::persist::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    for chunk in trace.calls.chunks(BLOCK_RECORDS) {
        let mut payload = Vec::new();
        for call in chunk {
            put_call(&mut payload, call);
        }
        put_block(&mut out, chunk.len() as u64, &payload);
    }
    put_block(&mut out, 0, &[]);
    out
}

fn put_block(out: &mut Vec<u8>, count: u64, payload: &[u8]) {
    let from = out.len();
    put(out, count);
    put(out, payload.len() as u64);
    // The count and length have a checksum of their own, so that a corrupted length
    // is never taken for a log cut short.
    let crc = crate::persist::crc32c(&out[from..]);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crate::persist::crc32c(payload);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Why a varint could not be read: the bytes ran out (a torn log), or they are not
/// a varint (corruption).
enum Short {
    End,
    Malformed,
}

/// Reads from a byte slice; `None` past its end.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn varint(&mut self) -> Option<u64> {
        self.varint_or_why().ok()
    }

    fn varint_or_why(&mut self) -> Result<u64, Short> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte().ok_or(Short::End)?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(Short::Malformed);
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Short::Malformed)
    }

    /// Four bytes, little-endian.
    fn u32(&mut self) -> Option<u32> {
        let b = self.bytes.get(self.at..self.at.checked_add(4)?)?;
        self.at += 4;
        Some(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }

    fn extent(&mut self) -> Option<Extent> {
        Some(Extent::new(self.varint()?, self.varint()?))
    }

    fn code(&mut self) -> Option<u32> {
        u32::try_from(self.varint()?).ok()
    }

    fn unit(&mut self) -> Option<Result<(), u32>> {
        match self.byte()? {
            0 => Some(Ok(())),
            1 => Some(Err(self.code()?)),
            _ => None,
        }
    }

    fn call(&mut self) -> Option<Call> {
        Some(match self.byte()? {
            1 => {
                let (min, max, align) = (self.varint()?, self.varint()?, self.varint()?);
                let policy = match self.byte()? {
                    0 => Policy::BestFit,
                    1 => Policy::FirstFit,
                    2 => Policy::Near(self.varint()?),
                    3 => Policy::Exact(self.varint()?),
                    _ => return None,
                };
                let request = Request {
                    min_len: min,
                    max_len: max,
                    align,
                    policy,
                };
                let result = match self.byte()? {
                    0 => Ok(self.extent()?),
                    1 => Err(self.code()?),
                    _ => return None,
                };
                Call::Allocate { request, result }
            }
            tag @ (2 | 3) => Call::Free {
                extent: self.extent()?,
                on_commit: tag == 3,
                result: self.unit()?,
            },
            4 => {
                let extent = self.extent()?;
                let result = match self.byte()? {
                    0 => Ok(self.varint()?),
                    1 => Err(self.code()?),
                    _ => return None,
                };
                Call::Pin { extent, result }
            }
            5 => Call::Unpin {
                pin: self.varint()?,
                result: self.unit()?,
            },
            6 => Call::Commit {
                epoch: self.varint()?,
                result: self.unit()?,
            },
            7 => Call::BeginRead {
                reader: self.varint()?,
            },
            8 => Call::EndRead {
                reader: self.varint()?,
                result: self.unit()?,
            },
            _ => return None,
        })
    }
}

/// Reads a log.
///
/// # Errors
///
/// [`TraceError::BadMagic`] and [`TraceError::Version`] for what is not a log of
/// this version; [`TraceError::Torn`] when it ends early (a torn write);
/// [`TraceError::Corrupt`] when a block's checksum or records are wrong.
///
/// ```
/// use pinalloc::trace::{self, Trace, TraceError};
/// let log = trace::encode(&Trace { capacity: 64, groups: 0, calls: vec![] });
/// assert_eq!(trace::decode(&log)?.capacity, 64);
/// assert!(matches!(trace::decode(&log[..log.len() - 1]), Err(TraceError::Torn { calls: 0 })));
/// # Ok::<(), TraceError>(())
/// ```
pub fn decode(bytes: &[u8]) -> Result<Trace, TraceError> {
    let (trace, end) = read(bytes)?;
    match end {
        None => Ok(trace),
        Some(e) => Err(e),
    }
}

/// Reads the complete blocks of a log that may be torn: what a crash left.
///
/// # Errors
///
/// As [`decode`], but a log torn after its header is not one: its complete calls
/// come back. One torn inside its header is [`TraceError::Torn`] still: there is
/// no capacity to replay on.
pub fn decode_prefix(bytes: &[u8]) -> Result<Trace, TraceError> {
    match read(bytes)? {
        (trace, None | Some(TraceError::Torn { .. })) => Ok(trace),
        (_, Some(e)) => Err(e),
    }
}

/// The calls of the complete, sound blocks, and how the log ended (`None`: at its
/// end marker).
fn read(bytes: &[u8]) -> Result<(Trace, Option<TraceError>), TraceError> {
    let header_torn = TraceError::Torn { calls: 0 };
    let seen = &bytes[..bytes.len().min(4)];
    if seen != &MAGIC[..seen.len()] {
        return Err(TraceError::BadMagic);
    }
    let mut r = Reader { bytes, at: 0 };
    if bytes.len() < 5 {
        return Err(header_torn);
    }
    r.at = 4;
    let version = r.byte().ok_or(header_torn.clone())?;
    if version != VERSION {
        return Err(TraceError::Version { found: version });
    }
    let field = |r: &mut Reader<'_>| match r.varint_or_why() {
        Ok(v) => Ok(v),
        Err(Short::End) => Err(TraceError::Torn { calls: 0 }),
        Err(Short::Malformed) => Err(TraceError::Corrupt { block: 0 }),
    };
    let capacity = field(&mut r)?;
    let groups = field(&mut r)?;
    let header = r.at;
    let crc = r.u32().ok_or(header_torn)?;
    if crate::persist::crc32c(&bytes[..header]) != crc {
        return Err(TraceError::Corrupt { block: 0 });
    }
    let mut trace = Trace {
        capacity,
        groups,
        calls: Vec::new(),
    };
    for block in 1.. {
        let torn = Some(TraceError::Torn {
            calls: trace.calls.len(),
        });
        // The block's count and length, under their own checksum.
        let from = r.at;
        let mut head =
            || -> Result<(u64, u64), Short> { Ok((r.varint_or_why()?, r.varint_or_why()?)) };
        let (count, len) = match head() {
            Ok(v) => v,
            Err(Short::End) => return Ok((trace, torn)),
            Err(Short::Malformed) => return Err(TraceError::Corrupt { block }),
        };
        let head_end = r.at;
        let Some(crc) = r.u32() else {
            return Ok((trace, torn));
        };
        if crate::persist::crc32c(&bytes[from..head_end]) != crc {
            return Err(TraceError::Corrupt { block });
        }
        // A sound length past the end: the log was cut.
        let start = r.at;
        let Some(end) = usize::try_from(len).ok().and_then(|l| start.checked_add(l)) else {
            return Ok((trace, torn));
        };
        if end.checked_add(4).is_none_or(|e| e > bytes.len()) {
            return Ok((trace, torn));
        }
        r.at = end;
        let crc = r.u32().expect("checked above");
        if crate::persist::crc32c(&bytes[start..end]) != crc {
            return Err(TraceError::Corrupt { block });
        }
        if count == 0 {
            return Ok((trace, None));
        }
        let mut records = Reader {
            bytes: &bytes[..end],
            at: start,
        };
        let mut calls = Vec::new();
        for _ in 0..count {
            calls.push(records.call().ok_or(TraceError::Corrupt { block })?);
        }
        if records.at != end {
            return Err(TraceError::Corrupt { block });
        }
        trace.calls.append(&mut calls);
    }
    unreachable!("the loop returns")
}

// ---------------------------------------------------------------------------------
// Replay.

/// Plays `trace` against a fresh allocator of its capacity. With `policy` `None`,
/// every allocation keeps its recorded request, and every result must equal the
/// log's: the first that does not stops the replay. With a policy, every allocation
/// but an exact one uses it, and the replay reports what came of that: the
/// extents it gets differ from the log's, so frees and pins are moved with the
/// allocation they fall in.
///
/// # Errors
///
/// [`ReplayError::Mismatch`], with the recorded policies, at the first result that
/// differs.
///
/// ```
/// use pinalloc::{ExtentAllocator, Policy, Request};
/// use pinalloc::trace::{self, Recorder};
///
/// let mut rec = Recorder::new(ExtentAllocator::new(64));
/// let a = rec.allocate(Request::new(8))?;
/// rec.allocate(Request::new(8))?;
/// rec.free(a)?;
/// rec.allocate(Request::new(4))?;
/// let log = rec.into_trace();
/// let same = trace::replay(&log, None)?;
/// assert_eq!(same.equal_results, 4);
/// let first_fit = trace::replay(&log, Some(Policy::FirstFit))?;
/// assert_eq!(first_fit.failures, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn replay(trace: &Trace, policy: Option<Policy>) -> Result<ReplayReport, ReplayError> {
    replay_with_progress(trace, policy, |_| {})
}

/// As [`replay`], calling `progress(calls done)` every 1% of the calls (at least
/// every 1,000): for a progress bar on a long trace.
///
/// # Errors
///
/// As [`replay`].
pub fn replay_with_progress(
    trace: &Trace,
    policy: Option<Policy>,
    mut progress: impl FnMut(usize),
) -> Result<ReplayReport, ReplayError> {
    let alloc = if trace.groups == 0 {
        Target::Core(Box::new(ExtentAllocator::new(trace.capacity)))
    } else {
        Target::Shared(Box::new(
            SharedAllocator::builder(trace.capacity)
                .groups(trace.groups)
                .build(),
        ))
    };
    let mut p = Player {
        alloc,
        moved: BTreeMap::new(),
        pins: BTreeMap::new(),
        readers: BTreeMap::new(),
        next_reader: 0,
    };
    let every = (trace.calls.len() / 100).clamp(1, 1_000);
    let mut failures = 0u64;
    let mut equal = 0usize;
    let start = Instant::now();
    for (index, recorded) in trace.calls.iter().enumerate() {
        let replayed = p.play(recorded, policy);
        if matches!(replayed, Call::Allocate { result: Err(_), .. }) {
            failures += 1;
        }
        if replayed == *recorded {
            equal += 1;
        } else if policy.is_none() {
            return Err(ReplayError::Mismatch {
                index,
                recorded: Box::new(*recorded),
                replayed: Box::new(replayed),
            });
        }
        if index % every == 0 {
            progress(index);
        }
    }
    let elapsed = start.elapsed();
    progress(trace.calls.len());
    let stats = p.alloc.stats();
    Ok(ReplayReport {
        policy,
        calls: trace.calls.len(),
        ns_per_call: elapsed.as_nanos() as f64 / trace.calls.len().max(1) as f64,
        free_extents: stats.free_extents,
        largest_free_blocks: stats.largest_free_blocks,
        metadata_bytes: stats.metadata_bytes as u64,
        failures,
        equal_results: equal,
    })
}

/// The allocator a replay plays against: a core one for a core log, a shared one
/// with the log's groups for a shared log.
enum Target {
    Core(Box<ExtentAllocator>),
    Shared(Box<SharedAllocator>),
}

/// A pin of either.
#[derive(Clone, Copy)]
enum PinOf {
    Core(PinId),
    Shared(SharedPinId),
}

impl Target {
    fn allocate(&mut self, r: Request) -> Result<Extent, u32> {
        match self {
            Target::Core(a) => a.allocate(r).map_err(|e| code(&e)),
            Target::Shared(a) => a.allocate(r).map_err(|e| code(&e)),
        }
    }

    fn free(&mut self, e: Extent, on_commit: bool) -> Result<(), u32> {
        match (self, on_commit) {
            (Target::Core(a), false) => a.free(e).map(drop).map_err(|e| code(&e)),
            (Target::Core(a), true) => a.free_on_commit(e).map(drop).map_err(|e| code(&e)),
            (Target::Shared(a), false) => a.free(e).map(drop).map_err(|e| code(&e)),
            (Target::Shared(a), true) => a.free_on_commit(e).map(drop).map_err(|e| code(&e)),
        }
    }

    fn pin(&mut self, e: Extent) -> Result<PinOf, u32> {
        match self {
            Target::Core(a) => a.pin(e).map(PinOf::Core).map_err(|e| code(&e)),
            Target::Shared(a) => a
                .pin_owned(e, crate::PinOptions::new())
                .map(PinOf::Shared)
                .map_err(|e| code(&e)),
        }
    }

    fn unpin(&mut self, p: PinOf) -> Result<(), u32> {
        match (self, p) {
            (Target::Core(a), PinOf::Core(id)) => a.unpin(id).map(drop).map_err(|e| code(&e)),
            (Target::Shared(a), PinOf::Shared(id)) => a.unpin(id).map(drop).map_err(|e| code(&e)),
            _ => Err(code(&"a pin of another allocator")),
        }
    }

    fn commit(&mut self, epoch: u64) -> Result<(), u32> {
        match self {
            Target::Core(a) => a.commit(epoch).map(drop).map_err(|e| code(&e)),
            Target::Shared(a) => a.commit(epoch).map(drop).map_err(|e| code(&e)),
        }
    }

    fn begin_read(&mut self) -> ReaderId {
        match self {
            Target::Core(a) => a.begin_read(),
            Target::Shared(a) => a.begin_read(),
        }
    }

    fn end_read(&mut self, id: ReaderId) -> Result<(), u32> {
        match self {
            Target::Core(a) => a.end_read(id).map(drop).map_err(|e| code(&e)),
            Target::Shared(a) => a.end_read(id).map(drop).map_err(|e| code(&e)),
        }
    }

    fn stats(&self) -> crate::Stats {
        match self {
            Target::Core(a) => a.stats(),
            Target::Shared(a) => a.stats().space,
        }
    }
}

/// A replay in progress: the allocator, and where each recorded allocation landed.
struct Player {
    alloc: Target,
    /// Recorded start -> (recorded length, the replayed start and length, or `None`
    /// if it failed in the replay), for the recorded allocations that may still be
    /// live. Disjoint: an allocation replaces the entries it overlaps.
    moved: BTreeMap<u64, (u64, Option<(u64, u64)>)>,
    pins: BTreeMap<u64, PinOf>,
    readers: BTreeMap<u64, ReaderId>,
    next_reader: u64,
}

impl Player {
    /// `e`, in recorded blocks, where the replay put it: moved with the allocation
    /// it lies in, if any, else as it is; `None` if that allocation failed in the
    /// replay (the call is skipped).
    fn place(&self, e: Extent) -> Option<Extent> {
        match self.moved.range(..=e.start).next_back() {
            Some((&start, &(len, to))) if e.start - start < len => {
                // Clipped to what the replay got: a range request may get less.
                let (to, got) = to?;
                let offset = e.start - start;
                (offset < got).then(|| Extent::new(to + offset, e.len.min(got - offset)))
            }
            _ => Some(e),
        }
    }

    /// Replays one call; returns it with the replay's result, in the log's terms
    /// (extents as recorded, when the replay moved them).
    fn play(&mut self, call: &Call, policy: Option<Policy>) -> Call {
        match *call {
            Call::Allocate { request, result } => {
                let mut asked = request;
                if let Some(p) = policy.filter(|_| !matches!(request.policy, Policy::Exact(_))) {
                    asked.policy = p;
                }
                let got = self.alloc.allocate(asked);
                match (&got, &result) {
                    (_, Ok(was)) => {
                        // Where the recorded allocation went (or that it failed),
                        // forgetting what its blocks held before (freed by then).
                        // The entries are disjoint, so those that overlap are the
                        // last ones before its end: O(log n) plus what goes.
                        // (Saturating: a hostile log's extent may end past u64::MAX.)
                        let was_end = was.start.saturating_add(was.len);
                        let stale: Vec<u64> = self
                            .moved
                            .range(..was_end)
                            .rev()
                            .take_while(|(s, (l, _))| s.saturating_add(*l) > was.start)
                            .map(|(s, _)| *s)
                            .collect();
                        for s in stale {
                            self.moved.remove(&s);
                        }
                        let to = got.as_ref().ok().map(|to| (to.start, to.len));
                        self.moved.insert(was.start, (was.len, to));
                    }
                    (Ok(extra), Err(_)) => {
                        // The log never frees what it never got: give it back now.
                        let back = self.alloc.free(*extra, false);
                        debug_assert!(back.is_ok(), "{back:?}");
                    }
                    (Err(_), Err(_)) => {}
                }
                // In the log's terms: a success keeps the recorded extent when the
                // lengths agree (the replay's own start is an internal matter).
                let result = match (got, result) {
                    (Ok(to), Ok(was)) if policy.is_some() && to.len == was.len => Ok(was),
                    (r, _) => r,
                };
                Call::Allocate { request, result }
            }
            Call::Free {
                extent, on_commit, ..
            } => {
                let result = match self.place(extent) {
                    Some(at) => self.alloc.free(at, on_commit),
                    None => Err(code(&SKIPPED)),
                };
                Call::Free {
                    extent,
                    on_commit,
                    result,
                }
            }
            Call::Pin {
                extent,
                result: was,
            } => {
                let got = match self.place(extent) {
                    Some(at) => self.alloc.pin(at),
                    None => Err(code(&SKIPPED)),
                };
                // Pins go by the log's numbers, so that a pin the replay could not
                // make does not shift the ones after it.
                let result = match (got, was) {
                    (Ok(id), Ok(n)) => {
                        self.pins.insert(n, id);
                        Ok(n)
                    }
                    (Ok(id), Err(_)) => {
                        // The log never unpins what it never got: unpin it now.
                        let back = self.alloc.unpin(id);
                        debug_assert!(back.is_ok(), "{back:?}");
                        Ok(u64::MAX)
                    }
                    (Err(e), _) => Err(e),
                };
                Call::Pin { extent, result }
            }
            Call::Unpin { pin, .. } => {
                let result = match self.pins.get(&pin) {
                    Some(&id) => {
                        let r = self.alloc.unpin(id);
                        if r.is_ok() {
                            self.pins.remove(&pin);
                        }
                        r
                    }
                    // A pin the replay never made (its pin failed here).
                    None => Err(code(&"unknown pin")),
                };
                Call::Unpin { pin, result }
            }
            Call::Commit { epoch, .. } => Call::Commit {
                epoch,
                result: self.alloc.commit(epoch),
            },
            Call::BeginRead { .. } => {
                let reader = self.next_reader;
                self.next_reader += 1;
                self.readers.insert(reader, self.alloc.begin_read());
                Call::BeginRead { reader }
            }
            Call::EndRead { reader, .. } => {
                let result = match self.readers.remove(&reader) {
                    Some(id) => self.alloc.end_read(id),
                    None => Err(code(&"unknown reader")),
                };
                Call::EndRead { reader, result }
            }
        }
    }
}

/// A table row of a report, in the churn bench's columns.
impl ReplayReport {
    /// The report as a row of the table [`table_header`](Self::table_header) heads.
    ///
    /// ```
    /// use pinalloc::{ExtentAllocator, Request};
    /// use pinalloc::trace::{self, Recorder, ReplayReport};
    /// let mut rec = Recorder::new(ExtentAllocator::new(64));
    /// rec.allocate(Request::new(8))?;
    /// let r = trace::replay(&rec.into_trace(), None)?;
    /// assert!(r.table_row().starts_with("| recorded |"));
    /// assert_eq!(ReplayReport::table_header().lines().count(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn table_row(&self) -> String {
        let policy = match self.policy {
            None => String::from("recorded"),
            Some(p) => format!("{p:?}"),
        };
        format!(
            "| {policy} | {:.1} | {} | {:.1} | {} | {} | {} of {} |",
            self.ns_per_call,
            self.free_extents,
            self.metadata_bytes as f64 / self.free_extents.max(1) as f64,
            self.failures,
            self.largest_free_blocks,
            self.equal_results,
            self.calls
        )
    }

    /// The table's header and rule: the churn bench's columns (ns per operation,
    /// free extents after, metadata bytes per free extent, allocation failures),
    /// then the largest free extent and the results equal to the log's.
    pub fn table_header() -> &'static str {
        "| policy | ns/op | free extents after | metadata bytes per free extent | alloc failures | largest free extent | results equal to the log |\n|---|---:|---:|---:|---:|---:|---:|"
    }
}
