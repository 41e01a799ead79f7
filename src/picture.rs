//! Pictures of the space, as SVG (the `svg` feature): where the blocks are Free,
//! Allocated, Deferred (by pins, or by epochs and readers) and pinned Free, with the
//! pins drawn over them, a legend with the totals, and the histogram of free extent
//! sizes. Held space is what users take for a leak; a picture shows what holds it.
//!
//! [`Picture`] draws from [`runs`](crate::ExtentAllocator::runs), never block by
//! block: the space is cut into at most `width_px * rows` cells, each run adds its
//! blocks to the cells it covers, and a cell that holds several kinds of block is
//! drawn as a stack of their shares. A space of 2^60 blocks draws in time
//! proportional to its runs plus the cells, and in a bounded number of shapes.
//! [`Timeline`] draws how fragmented a space became over a workload.
//!
//! No dependency: the SVG is written by hand, and a viewer (or `resvg`) draws it.
//!
//! ```
//! use pinalloc::{Extent, ExtentAllocator, Request};
//! use pinalloc::picture::Picture;
//!
//! let mut alloc = ExtentAllocator::new(1 << 40);
//! let e = alloc.allocate(Request::new(1 << 30))?;
//! let dma = alloc.pin(Extent::new(e.start, 1 << 20))?;
//! alloc.free(e)?;
//! let svg = alloc.picture(&Picture::new().title("after the truncate"));
//! assert!(svg.starts_with("<svg"));
//! # std::hint::black_box(dma);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt::Write;

use crate::{BlockRun, BlockState, HISTOGRAM_BUCKETS, Stats};

/// Free blocks that no pin holds.
pub const FREE_COLOUR: &str = "#e4e4e4";
/// Allocated blocks.
pub const ALLOCATED_COLOUR: &str = "#4c72b0";
/// Deferred blocks that only pins hold.
pub const DEFERRED_BY_PINS_COLOUR: &str = "#dd8452";
/// Deferred blocks that an open or unfinished commit, or a reader, holds (and perhaps
/// pins too).
pub const DEFERRED_BY_EPOCHS_COLOUR: &str = "#8172b3";
/// Free blocks that a pin keeps out of reach.
pub const PINNED_FREE_COLOUR: &str = "#55a868";
/// The band drawn over the top of cells that hold pinned blocks.
pub const PIN_COLOUR: &str = "#c44e52";

/// Kinds of block, in the order a mixed cell stacks them.
const KINDS: [(&str, &str); 5] = [
    ("Allocated", ALLOCATED_COLOUR),
    ("Deferred by pins only", DEFERRED_BY_PINS_COLOUR),
    ("Deferred by epochs or readers", DEFERRED_BY_EPOCHS_COLOUR),
    ("Pinned Free", PINNED_FREE_COLOUR),
    ("Free", FREE_COLOUR),
];

const MARGIN: u32 = 10;
const ROW_PX: u32 = 24;
const ROW_GAP_PX: u32 = 4;
const PIN_BAND_PX: u32 = 4;
const TITLE_PX: u32 = 24;
const LEGEND_ROW_PX: u32 = 18;
const HISTOGRAM_PX: u32 = 80;

/// How to draw a space: the map's width in pixels and its most rows, and a title.
///
/// ```
/// use pinalloc::picture::Picture;
/// let p = Picture::new().width_px(512).rows(4).title("pool 3");
/// assert_eq!(p.cells(1 << 60), 2048);
/// assert_eq!(p.cells(100), 100);
/// ```
#[derive(Debug, Clone)]
pub struct Picture {
    width_px: u32,
    rows: u32,
    title: Option<String>,
}

impl Default for Picture {
    fn default() -> Self {
        Self::new()
    }
}

/// Where the cells of a space lie on the map.
#[derive(Debug, Clone, Copy)]
struct Layout {
    /// Blocks per cell (the last cell may have fewer).
    per_cell: u64,
    cells: u64,
    /// Cells per row, and each cell's width in pixels.
    columns: u64,
    cell_px: u32,
    rows: u32,
}

impl Picture {
    /// A map 1024 pixels wide of at most 16 rows, untitled.
    pub fn new() -> Self {
        Self {
            width_px: 1024,
            rows: 16,
            title: None,
        }
    }

    /// The map's width in pixels, from 128 to 16,384.
    pub fn width_px(mut self, width_px: u32) -> Self {
        self.width_px = width_px.clamp(128, 1 << 14);
        self
    }

    /// The most rows the map wraps onto, from 1 to 1,024; and never so many that the
    /// map has more than 2^20 cells.
    pub fn rows(mut self, rows: u32) -> Self {
        self.rows = rows.clamp(1, 1 << 10);
        self
    }

    /// A title drawn above the map.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// How many cells a space of `capacity_blocks` is cut into: one per block up to
    /// `width_px * rows`, and never more.
    pub fn cells(&self, capacity_blocks: u64) -> u64 {
        self.layout(capacity_blocks).cells
    }

    fn layout(&self, capacity_blocks: u64) -> Layout {
        // At most 2^20 cells, whatever the settings: the cells' memory stays bounded.
        let most = (u64::from(self.width_px) * u64::from(self.rows)).min(1 << 20);
        let per_cell = capacity_blocks.div_ceil(most).max(1);
        let cells = capacity_blocks.div_ceil(per_cell);
        let columns = cells.clamp(1, u64::from(self.width_px));
        // Fewer cells than pixels: wider cells (columns <= width_px, so this fits).
        let cell_px = (u64::from(self.width_px) / columns) as u32;
        let rows = cells.div_ceil(columns).max(1) as u32;
        Layout {
            per_cell,
            cells,
            columns,
            cell_px,
            rows,
        }
    }

    /// The map's top: below the margin and the title.
    fn map_top(&self) -> u32 {
        MARGIN + if self.title.is_some() { TITLE_PX } else { 0 }
    }

    /// The centre of the cell that draws `block`, in pixels from the picture's
    /// top-left corner (below its pin band): where a test, or a tooltip, finds it.
    ///
    /// ```
    /// use pinalloc::picture::Picture;
    /// let p = Picture::new().width_px(128).rows(2);
    /// let (x, y) = p.position_of(256, 200); // block 200 of 256: row 1, cell 72
    /// assert_eq!((x, y), (10 + 72, 10 + 28 + 14));
    /// ```
    pub fn position_of(&self, capacity_blocks: u64, block: u64) -> (u32, u32) {
        let l = self.layout(capacity_blocks);
        let cell = (block / l.per_cell).min(l.cells.saturating_sub(1));
        let (row, column) = ((cell / l.columns) as u32, (cell % l.columns) as u32);
        let x = MARGIN + column * l.cell_px + l.cell_px / 2;
        let y = self.map_top() + row * (ROW_PX + ROW_GAP_PX) + (ROW_PX + PIN_BAND_PX) / 2;
        (x, y)
    }

    /// Draws a space of `capacity_blocks` from its runs (in address order, as
    /// `runs(0..capacity)` lists them) and its stats, as an SVG document.
    ///
    /// ```
    /// use pinalloc::{ExtentAllocator, Request};
    /// use pinalloc::picture::{Picture, ALLOCATED_COLOUR};
    ///
    /// let mut alloc = ExtentAllocator::new(64);
    /// alloc.allocate(Request::new(16))?;
    /// let svg = Picture::new().render(64, alloc.runs(0..64), &alloc.stats());
    /// assert!(svg.contains(ALLOCATED_COLOUR));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn render(
        &self,
        capacity_blocks: u64,
        runs: impl IntoIterator<Item = BlockRun>,
        stats: &Stats,
    ) -> String {
        let l = self.layout(capacity_blocks);
        let mix = cell_mix(&l, capacity_blocks, runs);
        let map_px = l.rows * (ROW_PX + ROW_GAP_PX);
        let legend_top = self.map_top() + map_px + MARGIN;
        let legend_px = LEGEND_ROW_PX * (KINDS.len() as u32 + 2);
        let histogram_top = legend_top + legend_px + MARGIN;
        let width = self.width_px + 2 * MARGIN;
        let height = histogram_top + HISTOGRAM_PX + 2 * MARGIN + LEGEND_ROW_PX;

        let mut svg = String::new();
        let _ = write!(
            svg,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
             viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"{width}\" height=\"{height}\" fill=\"#ffffff\"/>\n"
        );
        if let Some(title) = &self.title {
            let _ = writeln!(
                svg,
                "<text x=\"{MARGIN}\" y=\"{}\" font-size=\"16\">{}</text>",
                MARGIN + 16,
                escape(title)
            );
        }
        self.draw_map(&mut svg, &l, &mix);
        draw_legend(&mut svg, legend_top, capacity_blocks, &l, stats);
        draw_histogram(&mut svg, histogram_top, self.width_px, stats);
        svg.push_str("</svg>\n");
        svg
    }

    /// The cells, row by row: runs of pure cells of one kind as one rectangle, mixed
    /// cells as stacks, and the pin band over cells with pinned blocks.
    fn draw_map(&self, svg: &mut String, l: &Layout, mix: &[Mix]) {
        let top = self.map_top();
        for row in 0..l.rows {
            let first = u64::from(row) * l.columns;
            let last = (first + l.columns).min(l.cells);
            let y = top + row * (ROW_PX + ROW_GAP_PX);
            let x_of = |cell: u64| MARGIN + (cell - first) as u32 * l.cell_px;
            // Pure cells: one rectangle per stretch of one kind.
            let mut cell = first;
            while cell < last {
                let m = &mix[cell as usize];
                let Some(kind) = m.pure() else {
                    draw_stack(svg, x_of(cell), y + PIN_BAND_PX, l.cell_px, m);
                    cell += 1;
                    continue;
                };
                let mut end = cell + 1;
                while end < last && mix[end as usize].pure() == Some(kind) {
                    end += 1;
                }
                rect(
                    svg,
                    x_of(cell),
                    y + PIN_BAND_PX,
                    (end - cell) as u32 * l.cell_px,
                    ROW_PX - PIN_BAND_PX,
                    KINDS[kind].1,
                );
                cell = end;
            }
            // The pin band.
            let mut cell = first;
            while cell < last {
                if mix[cell as usize].pinned == 0 {
                    cell += 1;
                    continue;
                }
                let mut end = cell + 1;
                while end < last && mix[end as usize].pinned > 0 {
                    end += 1;
                }
                rect(
                    svg,
                    x_of(cell),
                    y,
                    (end - cell) as u32 * l.cell_px,
                    PIN_BAND_PX,
                    PIN_COLOUR,
                );
                cell = end;
            }
        }
    }
}

/// The blocks of one cell, by kind (in [`KINDS`] order), and how many are pinned.
#[derive(Debug, Clone, Copy, Default)]
struct Mix {
    blocks: [u64; 5],
    pinned: u64,
}

impl Mix {
    /// The one kind the cell holds, if it holds one only.
    fn pure(&self) -> Option<usize> {
        let mut kinds = self.blocks.iter().enumerate().filter(|(_, n)| **n > 0);
        let (kind, _) = kinds.next()?;
        kinds.next().is_none().then_some(kind)
    }
}

/// A run's kind, as [`Held`](crate::Held) counts Deferred blocks.
fn kind_of(run: &BlockRun) -> usize {
    match run.state {
        BlockState::Allocated => 0,
        BlockState::Deferred if run.awaiting_commit || run.reader_held => 2,
        BlockState::Deferred => 1,
        BlockState::Free if run.pins > 0 => 3,
        BlockState::Free => 4,
    }
}

/// Each cell's mix: every run adds its blocks to the cells it covers, so the work is
/// the runs plus the cells, whatever the capacity.
fn cell_mix(l: &Layout, capacity: u64, runs: impl IntoIterator<Item = BlockRun>) -> Vec<Mix> {
    let mut mix = vec![Mix::default(); l.cells as usize];
    for run in runs {
        let start = run.extent.start.min(capacity);
        let end = (run.extent.start.saturating_add(run.extent.len)).min(capacity);
        if start >= end {
            continue;
        }
        let kind = kind_of(&run);
        let mut at = start;
        while at < end {
            let cell = at / l.per_cell;
            // Saturating: the last cell of a space near 2^64 may end past `u64::MAX`.
            let cell_end = (cell + 1).saturating_mul(l.per_cell).min(end);
            let m = &mut mix[cell as usize];
            // Saturating: runs that overlap (a caller's own) must not overflow.
            m.blocks[kind] = m.blocks[kind].saturating_add(cell_end - at);
            if run.pins > 0 {
                m.pinned = m.pinned.saturating_add(cell_end - at);
            }
            at = cell_end;
        }
    }
    mix
}

/// A mixed cell: its kinds stacked top to bottom, each at least one pixel tall.
fn draw_stack(svg: &mut String, x: u32, y: u32, width: u32, m: &Mix) {
    let total: u64 = m.blocks.iter().fold(0u64, |a, b| a.saturating_add(*b));
    let height = u64::from(ROW_PX - PIN_BAND_PX);
    let mut at = 0u64;
    let present = m.blocks.iter().filter(|n| **n > 0).count() as u64;
    let mut left = present;
    for (kind, &n) in m.blocks.iter().enumerate() {
        if n == 0 {
            continue;
        }
        left -= 1;
        // Its share, at least a pixel, leaving a pixel for each kind still to come.
        let share = (u128::from(height) * u128::from(n) / u128::from(total)) as u64;
        let h = share.max(1).min(height - at - left);
        rect(svg, x, y + at as u32, width, h as u32, KINDS[kind].1);
        at += h;
    }
}

fn rect(svg: &mut String, x: u32, y: u32, width: u32, height: u32, fill: &str) {
    let _ = writeln!(
        svg,
        "<rect x=\"{x}\" y=\"{y}\" width=\"{width}\" height=\"{height}\" fill=\"{fill}\"/>"
    );
}

/// The kinds with their colours and totals, and what a cell stands for.
fn draw_legend(svg: &mut String, top: u32, capacity: u64, l: &Layout, stats: &Stats) {
    let totals = [
        stats.allocated_blocks,
        stats.deferred_by.pins,
        stats.deferred_by.epochs,
        stats.pinned_free_blocks,
        stats.free_blocks.saturating_sub(stats.pinned_free_blocks),
    ];
    for (i, ((name, colour), total)) in KINDS.iter().zip(totals).enumerate() {
        let y = top + i as u32 * LEGEND_ROW_PX;
        rect(svg, MARGIN, y, 12, 12, colour);
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\">{name}: {} blocks</text>",
            MARGIN + 18,
            y + 11,
            thousands(total)
        );
    }
    let y = top + KINDS.len() as u32 * LEGEND_ROW_PX;
    rect(svg, MARGIN, y + 4, 12, PIN_BAND_PX, PIN_COLOUR);
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"{}\">pinned blocks (band): {}, {} live pins</text>",
        MARGIN + 18,
        y + 11,
        thousands(stats.pinned_blocks),
        thousands(stats.live_pins)
    );
    let _ = writeln!(
        svg,
        "<text x=\"{MARGIN}\" y=\"{}\">{} blocks; one cell = {} blocks; {} free extents, the largest {} blocks</text>",
        y + LEGEND_ROW_PX + 11,
        thousands(capacity),
        thousands(l.per_cell),
        thousands(stats.free_extents),
        thousands(stats.largest_free_blocks)
    );
}

/// The free extents by size, one bar per power of two up to the largest.
fn draw_histogram(svg: &mut String, top: u32, width_px: u32, stats: &Stats) {
    let h = &stats.free_histogram;
    let buckets = h.iter().rposition(|&n| n > 0).map_or(1, |i| i + 1);
    let most = h.iter().copied().max().unwrap_or(0).max(1);
    let bar_px = (width_px / HISTOGRAM_BUCKETS as u32).max(2);
    let _ = writeln!(
        svg,
        "<text x=\"{MARGIN}\" y=\"{}\">free extents by length (bar i: 2^i to 2^(i+1)-1 blocks)</text>",
        top + 11
    );
    let base = top + LEGEND_ROW_PX + HISTOGRAM_PX;
    for (i, &n) in h.iter().enumerate().take(buckets) {
        if n == 0 {
            continue;
        }
        let bar = ((u128::from(HISTOGRAM_PX) * u128::from(n)) / u128::from(most)).max(1) as u32;
        rect(
            svg,
            MARGIN + i as u32 * bar_px,
            base - bar,
            bar_px - 1,
            bar,
            ALLOCATED_COLOUR,
        );
    }
}

/// How fragmented a space became over a workload: the number of free extents and
/// the largest free extent, sampled from [`Stats`] after each step, drawn as two
/// lines.
///
/// ```
/// use pinalloc::{ExtentAllocator, Request};
/// use pinalloc::picture::Timeline;
///
/// let mut alloc = ExtentAllocator::new(1024);
/// let mut timeline = Timeline::new();
/// for _ in 0..10 {
///     alloc.allocate(Request::new(3))?;
///     timeline.push(&alloc.stats());
/// }
/// assert_eq!(timeline.len(), 10);
/// assert!(timeline.render("ten allocations").starts_with("<svg"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// (free extents, largest free extent) per sample.
    samples: Vec<(u64, u64)>,
}

impl Timeline {
    /// No samples yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Samples the space as it is now.
    pub fn push(&mut self, stats: &Stats) {
        self.samples
            .push((stats.free_extents, stats.largest_free_blocks));
    }

    /// How many samples were taken.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no sample was taken.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The two lines, 800 pixels wide, each scaled to its own maximum (given in the
    /// legend). Long workloads are thinned to at most one point per pixel.
    pub fn render(&self, title: &str) -> String {
        const W: u32 = 800;
        const H: u32 = 200;
        let (left, top) = (60u32, 40u32);
        let width = W + left + 20;
        let height = H + top + 20 + 3 * LEGEND_ROW_PX + 10;
        let mut svg = String::new();
        let _ = write!(
            svg,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
             viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"{width}\" height=\"{height}\" fill=\"#ffffff\"/>\n\
             <text x=\"{left}\" y=\"24\" font-size=\"16\">{}</text>\n",
            escape(title)
        );
        rect(&mut svg, left, top + H, W, 1, "#000000");
        rect(&mut svg, left, top, 1, H, "#000000");
        let n = self.samples.len();
        let lines = [
            ("free extents", DEFERRED_BY_PINS_COLOUR, 0usize),
            ("largest free extent (blocks)", ALLOCATED_COLOUR, 1),
        ];
        for (i, (name, colour, which)) in lines.iter().enumerate() {
            let value = |s: &(u64, u64)| if *which == 0 { s.0 } else { s.1 };
            let most = self.samples.iter().map(value).max().unwrap_or(0).max(1);
            let step = n.div_ceil(W as usize).max(1);
            let mut points = String::new();
            for (k, s) in self.samples.iter().enumerate().step_by(step) {
                let x = left as u64 + (k as u64 * u64::from(W)) / (n.max(2) as u64 - 1);
                let y = u64::from(top + H)
                    - (u128::from(value(s)) * u128::from(H) / u128::from(most)) as u64;
                let _ = write!(points, "{x},{y} ");
            }
            let _ = writeln!(
                svg,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"/>",
                points.trim_end()
            );
            let y = top + H + 20 + i as u32 * LEGEND_ROW_PX;
            rect(&mut svg, left, y, 12, 12, colour);
            let _ = writeln!(
                svg,
                "<text x=\"{}\" y=\"{}\">{name} (top of the scale: {})</text>",
                left + 18,
                y + 11,
                thousands(most)
            );
        }
        let _ = writeln!(
            svg,
            "<text x=\"{left}\" y=\"{}\">{} steps</text>",
            top + H + 20 + 2 * LEGEND_ROW_PX + 11,
            thousands(n as u64)
        );
        svg.push_str("</svg>\n");
        svg
    }
}

/// `n` with thousands separated by commas.
fn thousands(n: u64) -> String {
    let digits = format!("{n}");
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `text` safe inside an SVG element.
fn escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            // Not allowed in XML at all.
            c if (c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
                || matches!(c, '\u{fffe}' | '\u{ffff}') =>
            {
                out.push('\u{fffd}');
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_and_escapes() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(u64::MAX), "18,446,744,073,709,551,615");
        assert_eq!(escape("a<b>&\"c"), "a&lt;b&gt;&amp;&quot;c");
        assert_eq!(escape("a\u{1}b\u{fffe}\n"), "a\u{fffd}b\u{fffd}\n");
    }

    /// A run reaching `u64::MAX` fills the last cell without overflow.
    #[test]
    fn a_space_to_the_top_of_u64_draws() {
        let run = BlockRun {
            extent: crate::Extent::new(u64::MAX - 10, 10),
            state: BlockState::Allocated,
            pins: 0,
            freed_in: None,
            awaiting_commit: false,
            reader_held: false,
        };
        let svg = Picture::new().render(u64::MAX, [run], &Stats::zeroed(u64::MAX));
        assert!(svg.contains(ALLOCATED_COLOUR));
    }

    /// The largest settings still cut the space into at most 2^20 cells, and the
    /// picture's size fits its `u32` arithmetic.
    #[test]
    fn the_largest_settings_stay_bounded() {
        let p = Picture::new().width_px(u32::MAX).rows(u32::MAX);
        assert_eq!(p.cells(u64::MAX), 1 << 20);
        let (x, y) = p.position_of(u64::MAX, u64::MAX);
        assert!(x < (1 << 14) + 20 && y < 1 << 16, "({x}, {y})");
        let svg = p.render(1 << 20, core::iter::empty(), &Stats::zeroed(1 << 20));
        assert!(svg.len() < 1 << 24);
    }

    #[test]
    fn layouts_cover_the_space_in_bounded_cells() {
        for capacity in [1, 2, 100, 1023, 1024, 1025, 16 * 1024, 1 << 40, u64::MAX] {
            let p = Picture::new();
            let l = p.layout(capacity);
            assert!(l.cells <= 16 * 1024, "{capacity}: {l:?}");
            let (cells, per) = (u128::from(l.cells), u128::from(l.per_cell));
            assert!(cells * per >= u128::from(capacity), "{capacity}: {l:?}");
            assert!(
                (cells - 1) * per < u128::from(capacity),
                "{capacity}: {l:?}"
            );
            assert!(
                l.columns * u64::from(l.cell_px) <= 1024,
                "{capacity}: {l:?}"
            );
            assert!(
                u64::from(l.rows) * l.columns >= l.cells,
                "{capacity}: {l:?}"
            );
        }
    }
}
