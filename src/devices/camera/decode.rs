//! QR decoding that keeps up with a camera. rqrr alone spends 6-10 ms on a 640x480 frame: about
//! 2.5 ms preparing (thresholding) the whole image, 4 ms fitting the grid it finds by trial. A
//! kiosk camera mostly sees the same scene again, and a code covers a small part of the frame.
//! So:
//! 1. a frame whose sparse luma signature matches the previous one is "unchanged": nothing
//!    new, nothing decoded (a few microseconds);
//! 2. otherwise, blocks dense with edges are clustered into candidate regions (a fraction of a
//!    millisecond); a frame without any costs nothing more;
//! 3. each region's crop is binarized with local block averages (which keeps low-contrast,
//!    unevenly lit and noisy codes) and searched by the finder-pattern locator
//!    ([`super::locate`]), which reads most codes in well under a millisecond;
//! 4. what that misses goes to rqrr's own detector: on rqrr's threshold, on the binarized crop,
//!    and for tiny codes on a 2x upscaled crop. Several regions (two codes at once) are decoded
//!    on parallel threads.
//!
//! rqrr can panic on odd images (rqrr#54, open); a camera frame is device input, so every call
//! into it is isolated with `catch_unwind` and a panic counts as "nothing decoded".

use std::panic::{catch_unwind, AssertUnwindSafe};

use super::frame::LumaFrame;
use super::locate::{locate_and_decode, Bitmap};

/// Signature grid step: every 8th pixel of every 8th row (4,800 samples at 640x480).
const SIGNATURE_STEP: usize = 8;
/// A sample that moved more than this counts as changed (sensor noise stays well below).
const CHANGED_SAMPLE: u8 = 32;
/// A frame is new when more than 1 in this many samples changed. A code entering the view
/// changes far more; noise and auto-exposure flicker far fewer.
const CHANGED_FRACTION: usize = 500;

/// Detects and decodes every grid of a prepared image, mapping corners back to the frame. A
/// macro because rqrr's image buffer type is not nameable outside the crate.
macro_rules! collect {
    ($image:expr, $to_frame:expr) => {{
        let mut scan = Scan::default();
        for grid in $image.detect_grids() {
            if let Ok((_, text)) = grid.decode() {
                let corners = grid.bounds.map(|p| $to_frame((p.x, p.y)));
                scan.found.push(Detected { text, corners });
            }
        }
        scan
    }};
}

/// What one pass over a region decoded.
#[derive(Debug, Default)]
struct Scan {
    found: Vec<Detected>,
    /// Read by the finder-pattern locator, not by rqrr's detector.
    located: bool,
}

/// A decoded code and where it is in the frame (corners in pixels: top-left, top-right,
/// bottom-right, bottom-left).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    /// The code's text.
    pub text: String,
    /// Its corners in the frame's pixels.
    pub corners: [(i32, i32); 4],
}

/// What one frame gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The scene did not change since the previous frame: nothing was decoded, nothing is new.
    Unchanged,
    /// The scene changed; these codes are in it (maybe none).
    Decoded(Vec<Detected>),
}

/// Counters for the benchmark and `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DecodeStats {
    /// Frames looked at.
    pub frames: u64,
    /// Frames skipped as nothing new.
    pub unchanged: u64,
    /// Frames in which a code was read.
    pub with_code: u64,
    /// Frames whose codes the finder-pattern locator read (the rest needed rqrr's detector).
    pub located: u64,
    /// Times rqrr panicked on a frame (caught; rqrr#54).
    pub decoder_panics: u64,
}

#[derive(Debug, Clone, Copy)]
struct Region {
    x: usize,
    y: usize,
    w: usize,
    h: usize,
}

/// The stateful fast decoder; one per camera.
#[derive(Debug, Default)]
pub struct QrDecoder {
    signature: Vec<u8>,
    signature_size: (usize, usize),
    stats: DecodeStats,
}

impl QrDecoder {
    /// A decoder with no frame seen yet.
    pub fn new() -> QrDecoder {
        QrDecoder::default()
    }

    /// What it did so far.
    pub fn stats(&self) -> DecodeStats {
        self.stats
    }

    /// Decodes `frame`, unless it shows nothing new since the last one.
    pub fn decode(&mut self, frame: &LumaFrame) -> Outcome {
        // A 1080p or 4K camera gives codes far more pixels than decoding needs; work on a
        // 2x2-averaged frame (repeatedly) until it is at most DOWNSCALE_ABOVE wide, and map
        // the corners back.
        let mut scale = 1;
        let mut scaled;
        let mut frame = frame;
        while frame.width() > DOWNSCALE_ABOVE && frame.height() >= 2 {
            scaled = half_size(frame);
            frame = &scaled;
            scale *= 2;
        }
        match self.decode_at_most_vga(frame) {
            Outcome::Decoded(mut found) if scale > 1 => {
                for detected in &mut found {
                    detected.corners = detected.corners.map(|(x, y)| (x * scale, y * scale));
                }
                Outcome::Decoded(found)
            }
            outcome => outcome,
        }
    }

    fn decode_at_most_vga(&mut self, frame: &LumaFrame) -> Outcome {
        self.stats.frames += 1;
        if !self.scene_changed(frame) {
            self.stats.unchanged += 1;
            return Outcome::Unchanged;
        }
        let regions = candidate_regions(frame);
        let scans: Vec<Scan> = match regions.as_slice() {
            [] => Vec::new(),
            [one] => vec![self.guarded(|| decode_candidate(frame, *one))],
            // Several candidates (two codes, or a code and a busy poster): one thread each, so
            // the frame costs its slowest region, not their sum.
            many => std::thread::scope(|scope| {
                let handles: Vec<_> = many
                    .iter()
                    .map(|region| {
                        let region = *region;
                        scope.spawn(move || {
                            catch_unwind(AssertUnwindSafe(|| decode_candidate(frame, region)))
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|handle| match handle.join() {
                        Ok(Ok(scan)) => scan,
                        _ => {
                            self.stats.decoder_panics += 1;
                            Scan::default()
                        }
                    })
                    .collect()
            }),
        };
        let mut found: Vec<Detected> = Vec::new();
        if scans
            .iter()
            .any(|scan| scan.located && !scan.found.is_empty())
        {
            self.stats.located += 1;
        }
        for scan in scans {
            for detected in scan.found {
                if !found.iter().any(|d| d.text == detected.text) {
                    found.push(detected);
                }
            }
        }
        if !found.is_empty() {
            self.stats.with_code += 1;
        }
        Outcome::Decoded(found)
    }

    /// Every code in a single still image (no previous frame to compare with).
    pub fn decode_all(&mut self, frame: &LumaFrame) -> Vec<Detected> {
        *self = QrDecoder::new();
        match self.decode(frame) {
            Outcome::Decoded(found) => found,
            Outcome::Unchanged => Vec::new(),
        }
    }

    fn guarded(&mut self, decode: impl FnOnce() -> Scan) -> Scan {
        match catch_unwind(AssertUnwindSafe(decode)) {
            Ok(scan) => scan,
            Err(_) => {
                self.stats.decoder_panics += 1;
                Scan::default()
            }
        }
    }

    fn scene_changed(&mut self, frame: &LumaFrame) -> bool {
        let size = (frame.width(), frame.height());
        let mut signature: Vec<u8> = Vec::with_capacity(
            frame.width().div_ceil(SIGNATURE_STEP) * frame.height().div_ceil(SIGNATURE_STEP),
        );
        for y in (0..frame.height()).step_by(SIGNATURE_STEP) {
            let row = &frame.pixels()[y * frame.width()..(y + 1) * frame.width()];
            signature.extend(row.iter().step_by(SIGNATURE_STEP).copied());
        }
        let changed = size != self.signature_size
            || signature
                .iter()
                .zip(&self.signature)
                .filter(|(a, b)| a.abs_diff(**b) > CHANGED_SAMPLE)
                .count()
                * CHANGED_FRACTION
                > signature.len();
        self.signature = signature;
        self.signature_size = size;
        changed
    }
}

fn whole(frame: &LumaFrame) -> Region {
    Region {
        x: 0,
        y: 0,
        w: frame.width(),
        h: frame.height(),
    }
}

/// Frames wider than this are halved before decoding.
const DOWNSCALE_ABOVE: usize = 1024;

fn half_size(frame: &LumaFrame) -> LumaFrame {
    let (w, h) = (frame.width() / 2, frame.height() / 2);
    let stride = frame.width();
    let pixels = frame.pixels();
    let mut out = Vec::with_capacity(w * h);
    for y in 0..h {
        for x in 0..w {
            let top = 2 * y * stride + 2 * x;
            let sum = u16::from(pixels[top])
                + u16::from(pixels[top + 1])
                + u16::from(pixels[top + stride])
                + u16::from(pixels[top + stride + 1]);
            out.push((sum / 4) as u8);
        }
    }
    // Both sides are at least 2 here (the caller checks), so the half frame is valid; fall
    // back to the original rather than panic if that ever changed.
    LumaFrame::new(w, h, out).unwrap_or_else(|_| frame.clone())
}

/// Plain rqrr over the whole frame, the way a caller without this module would use it: the
/// benchmark's baseline.
pub fn decode_plain(frame: &LumaFrame) -> Vec<Detected> {
    catch_unwind(AssertUnwindSafe(|| decode_region(frame, whole(frame))))
        .map(|scan| scan.found)
        .unwrap_or_default()
}

fn decode_region(frame: &LumaFrame, region: Region) -> Scan {
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(region.w, region.h, |x, y| {
        frame.at(region.x + x, region.y + y)
    });
    collect!(image, |(x, y): (i32, i32)| (
        x + region.x as i32,
        y + region.y as i32
    ))
}

/// Block size of the local threshold: small enough to follow uneven light, large enough that a
/// block inside a module is rare at kiosk distances.
const BLOCK: usize = 8;
/// Blocks whose spread is below this hold no edge; they take their threshold from neighbours.
const FLAT_BLOCK: u8 = 24;

/// Local-average binarization (as ZXing's hybrid binarizer): each 8x8 block's threshold is the
/// mean of the 5x5 blocks around it, so a code darker or lighter than its surroundings, or lit
/// from one side, still splits into dark and light modules. rqrr's own threshold loses low
/// contrast and noisy codes that this keeps.
fn binarize(width: usize, height: usize, pixel: impl Fn(usize, usize) -> u8) -> Vec<bool> {
    let (bw, bh) = (width.div_ceil(BLOCK), height.div_ceil(BLOCK));
    let mut averages = vec![0u8; bw * bh];
    for by in 0..bh {
        for bx in 0..bw {
            let (mut sum, mut count, mut min, mut max) = (0u32, 0u32, u8::MAX, 0u8);
            for y in by * BLOCK..((by + 1) * BLOCK).min(height) {
                for x in bx * BLOCK..((bx + 1) * BLOCK).min(width) {
                    let v = pixel(x, y);
                    sum += u32::from(v);
                    count += 1;
                    min = min.min(v);
                    max = max.max(v);
                }
            }
            let mut average = (sum / count.max(1)) as u8;
            if max - min <= FLAT_BLOCK {
                // A flat block: assume it is background (light), unless the block above-left
                // suggests it sits inside a dark area. Its threshold sits just under its own
                // level: ZXing's half of it dragged the averaged thresholds around a
                // low-contrast code below its dark modules, hollowing out the finders.
                average = min.saturating_sub(FLAT_BLOCK);
                if by > 0 && bx > 0 {
                    let neighbours = (u16::from(averages[(by - 1) * bw + bx])
                        + 2 * u16::from(averages[by * bw + bx - 1])
                        + u16::from(averages[(by - 1) * bw + bx - 1]))
                        / 4;
                    if u16::from(min) < neighbours {
                        average = neighbours as u8;
                    }
                }
            }
            averages[by * bw + bx] = average;
        }
    }
    let mut thresholds = vec![0u8; bw * bh];
    for by in 0..bh {
        for bx in 0..bw {
            let (mut sum, mut count) = (0u32, 0u32);
            for ny in by.saturating_sub(2)..(by + 3).min(bh) {
                for nx in bx.saturating_sub(2)..(bx + 3).min(bw) {
                    sum += u32::from(averages[ny * bw + nx]);
                    count += 1;
                }
            }
            thresholds[by * bw + bx] = (sum / count.max(1)) as u8;
        }
    }
    let mut dark = vec![false; width * height];
    for y in 0..height {
        for x in 0..width {
            dark[y * width + x] = pixel(x, y) <= thresholds[(y / BLOCK) * bw + x / BLOCK];
        }
    }
    dark
}

/// Side of a region-search block in full-resolution pixels (8x8 samples of 2x2 averages).
const SEARCH_BLOCK: usize = 16;
/// A block whose samples deviate from their mean by this much on average has edges in it.
/// 2x2 averaging first keeps sensor noise (even heavy noise) well below; a code's modules,
/// even at low contrast, stay above.
const BUSY_DEVIATION: u32 = 12;

/// Where codes may be: clusters of blocks dense with edges, as rectangles with a margin. A QR
/// code is edges all over; a shelf edge or a sleeve is a thin line of them, which the fill and
/// shape checks drop.
fn candidate_regions(frame: &LumaFrame) -> Vec<Region> {
    let (bw, bh) = (frame.width() / SEARCH_BLOCK, frame.height() / SEARCH_BLOCK);
    if bw == 0 || bh == 0 {
        return Vec::new();
    }
    let pixels = frame.pixels();
    let stride = frame.width();
    let mut busy = vec![false; bw * bh];
    let mut samples = [0u16; 64];
    for by in 0..bh {
        for bx in 0..bw {
            let mut sum = 0u32;
            for (i, sample) in samples.iter_mut().enumerate() {
                let (sx, sy) = (
                    bx * SEARCH_BLOCK + 2 * (i % 8),
                    by * SEARCH_BLOCK + 2 * (i / 8),
                );
                let top = sy * stride + sx;
                *sample = u16::from(pixels[top])
                    + u16::from(pixels[top + 1])
                    + u16::from(pixels[top + stride])
                    + u16::from(pixels[top + stride + 1]);
                sum += u32::from(*sample);
            }
            let mean = sum / 64;
            let deviation: u32 = samples
                .iter()
                .map(|s| u32::from(*s).abs_diff(mean))
                .sum::<u32>()
                / (64 * 4);
            busy[by * bw + bx] = deviation >= BUSY_DEVIATION;
        }
    }
    // Connected clusters of busy blocks (8-neighbourhood), each as a bounding box.
    let mut seen = vec![false; bw * bh];
    let mut regions = Vec::new();
    let mut stack = Vec::new();
    for start in 0..bw * bh {
        if !busy[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let (mut x0, mut y0, mut x1, mut y1, mut count) = (bw, bh, 0, 0, 0usize);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % bw, i / bw);
            count += 1;
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x);
            y1 = y1.max(y);
            for ny in y.saturating_sub(1)..(y + 2).min(bh) {
                for nx in x.saturating_sub(1)..(x + 2).min(bw) {
                    let j = ny * bw + nx;
                    if busy[j] && !seen[j] {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        let (w, h) = (x1 - x0 + 1, y1 - y0 + 1);
        let filled = count * 10 >= w * h * 3;
        let squarish = w <= 3 * h && h <= 3 * w;
        if w >= 2 && h >= 2 && filled && squarish {
            let margin = 1;
            let (rx0, ry0) = (x0.saturating_sub(margin), y0.saturating_sub(margin));
            let (rx1, ry1) = ((x1 + 1 + margin).min(bw), (y1 + 1 + margin).min(bh));
            let right = if rx1 == bw {
                frame.width()
            } else {
                rx1 * SEARCH_BLOCK
            };
            let bottom = if ry1 == bh {
                frame.height()
            } else {
                ry1 * SEARCH_BLOCK
            };
            regions.push(Region {
                x: rx0 * SEARCH_BLOCK,
                y: ry0 * SEARCH_BLOCK,
                w: right - rx0 * SEARCH_BLOCK,
                h: bottom - ry0 * SEARCH_BLOCK,
            });
        }
    }
    regions
}

fn binarize_region(frame: &LumaFrame, region: Region) -> Vec<bool> {
    binarize(region.w, region.h, |x, y| {
        frame.at(region.x + x, region.y + y)
    })
}

/// The finder-pattern locator on the binarized crop (`scale` times the region's size): no
/// trial fitting, so well under a millisecond where rqrr's detector takes four.
fn decode_region_located(dark: &[bool], region: Region, scale: usize) -> Scan {
    let Some(image) = Bitmap::new(dark, region.w * scale, region.h * scale) else {
        return Scan::default();
    };
    let found = locate_and_decode(&image)
        .into_iter()
        .map(|located| Detected {
            text: located.text,
            corners: located.corners.map(|(x, y)| {
                (
                    (x / scale as f64).round() as i32 + region.x as i32,
                    (y / scale as f64).round() as i32 + region.y as i32,
                )
            }),
        })
        .collect();
    Scan {
        found,
        located: true,
    }
}

fn decode_region_binarized(dark: &[bool], region: Region) -> Scan {
    if region.w < 21 || region.h < 21 {
        return Scan::default();
    }
    let mut image =
        rqrr::PreparedImage::prepare_from_bitmap(region.w, region.h, |x, y| dark[y * region.w + x]);
    collect!(image, |(x, y): (i32, i32)| (
        x + region.x as i32,
        y + region.y as i32
    ))
}

/// Regions with a side below this (pixels) are also tried 2x upscaled: rqrr needs about 3
/// pixels per module, and a code this small may have fewer.
const UPSCALE_BELOW: usize = 160;

/// One candidate region: the finder-pattern locator on the local-average binarization first
/// (it reads most codes, fast), and for a small region again on a 2x upscaled crop; then rqrr's
/// detector on rqrr's own threshold, on the same binarization, and for a small region on the
/// upscaled crop. Run one after the other: side by side on two cores they slow each other down
/// more than they save.
fn decode_candidate(frame: &LumaFrame, region: Region) -> Scan {
    let dark = binarize_region(frame, region);
    let located = decode_region_located(&dark, region, 1);
    if !located.found.is_empty() {
        return located;
    }
    let upscaled = (region.w.max(region.h) < UPSCALE_BELOW).then(|| upscale(frame, region));
    if let Some(pixels) = &upscaled {
        let (w, h) = (region.w * 2, region.h * 2);
        let dark = binarize(w, h, |x, y| pixels[y * w + x]);
        let located = decode_region_located(&dark, region, 2);
        if !located.found.is_empty() {
            return located;
        }
    }
    let grey = decode_region(frame, region);
    if !grey.found.is_empty() {
        return grey;
    }
    let binarized = decode_region_binarized(&dark, region);
    match upscaled {
        Some(pixels) if binarized.found.is_empty() => decode_region_upscaled(&pixels, region),
        _ => binarized,
    }
}

/// The region's crop at twice its size, bilinear: each output pixel between the four source
/// pixels around it.
fn upscale(frame: &LumaFrame, region: Region) -> Vec<u8> {
    let (w, h) = (region.w * 2, region.h * 2);
    let at = |x: usize, y: usize| f32::from(frame.at(region.x + x, region.y + y));
    let mut out = Vec::with_capacity(w * h);
    for y in 0..h {
        for x in 0..w {
            let (fx, fy) = (x as f32 / 2.0, y as f32 / 2.0);
            let (x0, y0) = (fx as usize, fy as usize);
            let (x1, y1) = ((x0 + 1).min(region.w - 1), (y0 + 1).min(region.h - 1));
            let (tx, ty) = (fx - x0 as f32, fy - y0 as f32);
            let top = at(x0, y0) * (1.0 - tx) + at(x1, y0) * tx;
            let bottom = at(x0, y1) * (1.0 - tx) + at(x1, y1) * tx;
            out.push((top * (1.0 - ty) + bottom * ty) as u8);
        }
    }
    out
}

fn decode_region_upscaled(pixels: &[u8], region: Region) -> Scan {
    let (w, h) = (region.w * 2, region.h * 2);
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| pixels[y * w + x]);
    collect!(image, |(x, y): (i32, i32)| (
        x / 2 + region.x as i32,
        y / 2 + region.y as i32
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: usize = 640;
    const H: usize = 480;

    fn frame(paint: impl Fn(usize, usize) -> u8) -> LumaFrame {
        let pixels = (0..W * H).map(|i| paint(i % W, i / W)).collect();
        LumaFrame::new(W, H, pixels).unwrap()
    }

    /// A QR-like patch: a checkerboard of `module`-pixel squares inside `(x, y, side)`.
    fn patch(
        x0: usize,
        y0: usize,
        side: usize,
        module: usize,
    ) -> impl Fn(usize, usize) -> Option<u8> {
        move |x, y| {
            let inside = (x0..x0 + side).contains(&x) && (y0..y0 + side).contains(&y);
            inside.then(|| {
                if ((x - x0) / module + (y - y0) / module).is_multiple_of(2) {
                    20
                } else {
                    230
                }
            })
        }
    }

    fn contains(region: Region, x: usize, y: usize, side: usize) -> bool {
        region.x <= x
            && region.y <= y
            && region.x + region.w >= x + side
            && region.y + region.h >= y + side
    }

    #[test]
    fn a_flat_or_merely_noisy_frame_has_no_candidates() {
        assert!(candidate_regions(&frame(|_, _| 128)).is_empty());
        let mut rng = fastrand::Rng::with_seed(3);
        let noise: Vec<u8> = (0..W * H).map(|_| 118 + rng.u8(..20)).collect();
        let noisy = LumaFrame::new(W, H, noise).unwrap();
        assert!(
            candidate_regions(&noisy).is_empty(),
            "sensor noise is not a code"
        );
    }

    #[test]
    fn a_code_sized_patch_is_one_region_that_holds_all_of_it() {
        let code = patch(200, 120, 112, 4);
        let regions = candidate_regions(&frame(|x, y| code(x, y).unwrap_or(128)));
        assert_eq!(regions.len(), 1, "{regions:?}");
        assert!(contains(regions[0], 200, 120, 112), "{:?}", regions[0]);
        assert!(
            regions[0].w < 200 && regions[0].h < 200,
            "a crop, not the frame: {:?}",
            regions[0]
        );
    }

    #[test]
    fn two_codes_are_two_regions_and_a_shelf_edge_is_none() {
        let (a, b) = (patch(40, 60, 96, 4), patch(420, 260, 128, 4));
        // A shelf edge: a long thin band of strong edges across the frame.
        let shelf = |_x: usize, y: usize| {
            ((440..448).contains(&y)).then_some(if y.is_multiple_of(2) { 10 } else { 240 })
        };
        let scene = frame(|x, y| {
            a(x, y)
                .or_else(|| b(x, y))
                .or_else(|| shelf(x, y))
                .unwrap_or(128)
        });
        let regions = candidate_regions(&scene);
        // Exactly the two codes: the shelf edge made no region of its own.
        assert_eq!(regions.len(), 2, "{regions:?}");
        assert!(regions.iter().any(|r| contains(*r, 40, 60, 96)));
        assert!(regions.iter().any(|r| contains(*r, 420, 260, 128)));
    }
}
