//! Locating a QR grid the way dedicated scanners do (ZXing's finder-pattern method), because
//! rqrr fits its grid by trial: 81 fitness passes over every module, about 4 ms per code, the
//! bulk of a frame's budget. Here, on a binarized crop:
//! 1. finder patterns are runs of dark-light-dark-light-dark in the ratio 1:1:3:1:1 along a
//!    row, confirmed by the same ratio down and across their centre;
//! 2. the three that form a right isosceles triangle are one code: the corner is the top-left,
//!    the turn of the other two tells top-right from bottom-left;
//! 3. the module size is measured along the lines between them (a row through a rotated
//!    finder would overstate it), which gives the grid size;
//! 4. the bottom-right alignment pattern is searched for near where the three predict it, and
//!    a homography through the four points samples one bit per module.
//!
//! rqrr still does the standard part of reading the grid: format, error correction, data. A
//! code this misses goes on to rqrr's own detector in the caller, so this only ever adds speed.

use super::geometry::Homography;

/// A binarized crop: `dark[y * width + x]`.
pub struct Bitmap<'a> {
    dark: &'a [bool],
    width: usize,
    height: usize,
}

impl<'a> Bitmap<'a> {
    /// None unless `dark` holds exactly `width` x `height` pixels.
    pub fn new(dark: &'a [bool], width: usize, height: usize) -> Option<Bitmap<'a>> {
        (width.checked_mul(height) == Some(dark.len())).then_some(Bitmap {
            dark,
            width,
            height,
        })
    }

    fn at(&self, x: f64, y: f64) -> Option<bool> {
        if !(x >= 0.0 && y >= 0.0) {
            return None;
        }
        let (x, y) = (x as usize, y as usize);
        if x >= self.width || y >= self.height {
            return None;
        }
        Some(self.dark[y * self.width + x])
    }
}

/// A decoded code and its corners in crop pixels (top-left, top-right, bottom-right,
/// bottom-left of the grid, quiet zone excluded).
#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    /// The decoded text.
    pub text: String,
    /// Its corners in the crop.
    pub corners: [(f64, f64); 4],
}

/// A finder pattern's centre (continuous pixel coordinates), its module size along the rows,
/// and on how many rows it was seen.
#[derive(Debug, Clone, Copy)]
struct Finder {
    x: f64,
    y: f64,
    module: f64,
    hits: u32,
}

impl Finder {
    fn distance(&self, other: &Finder) -> f64 {
        (self.x - other.x).hypot(self.y - other.y)
    }
}

/// Bounds on the work a busy crop full of false candidates can cause.
const MAX_FINDERS: usize = 12;
const MAX_ATTEMPTS: usize = 12;

/// Every code this method can find and read in the crop.
pub fn locate_and_decode(image: &Bitmap) -> Vec<Located> {
    let mut finders = find_finders(image);
    // A real finder is three modules tall at its centre, so it shows on several rows; a
    // chance 1:1:3:1:1 in the data area rarely survives two.
    finders.retain(|f| f.hits >= 2);
    finders.sort_by_key(|f| std::cmp::Reverse(f.hits));
    finders.truncate(MAX_FINDERS);

    let mut triples = Vec::new();
    for i in 0..finders.len() {
        for j in i + 1..finders.len() {
            for k in j + 1..finders.len() {
                if let Some(score) = triangle_score(&finders[i], &finders[j], &finders[k]) {
                    triples.push((score, [i, j, k]));
                }
            }
        }
    }
    triples.sort_by(|a, b| a.0.total_cmp(&b.0));

    let mut used = vec![false; finders.len()];
    let mut found: Vec<Located> = Vec::new();
    let mut attempts = 0;
    for (_, triple) in triples {
        if triple.iter().any(|&i| used[i]) {
            continue;
        }
        let [top_left, top_right, bottom_left] = order(triple.map(|i| finders[i]));
        for dimension in grid_sizes(image, &top_left, &top_right, &bottom_left) {
            if attempts == MAX_ATTEMPTS {
                return found;
            }
            attempts += 1;
            if let Some(located) = read_grid(image, &top_left, &top_right, &bottom_left, dimension)
            {
                if !found.iter().any(|f| f.text == located.text) {
                    found.push(located);
                }
                triple.iter().for_each(|&i| used[i] = true);
                break;
            }
        }
    }
    found
}

/// Do these run lengths read dark, light, dark, light, dark in the ratio 1:1:3:1:1 (each
/// within half a module, as ZXing allows for blur and print gain)?
fn is_finder_run(runs: &[usize; 5]) -> bool {
    let total: usize = runs.iter().sum();
    if total < 7 || runs.contains(&0) {
        return false;
    }
    let module = total as f64 / 7.0;
    let tolerance = module / 2.0;
    runs.iter()
        .zip([1.0, 1.0, 3.0, 1.0, 1.0])
        .all(|(&run, modules)| (run as f64 - modules * module).abs() < modules * tolerance)
}

fn find_finders(image: &Bitmap) -> Vec<Finder> {
    let mut finders: Vec<Finder> = Vec::new();
    for y in 0..image.height {
        let row = &image.dark[y * image.width..(y + 1) * image.width];
        // runs[state]: even states count dark pixels, odd states light.
        let mut runs = [0usize; 5];
        let mut state = 0;
        for (x, &dark) in row.iter().enumerate() {
            if dark == (state % 2 == 0) {
                runs[state] += 1;
            } else if state < 4 {
                state += 1;
                runs[state] = 1;
            } else {
                if is_finder_run(&runs) {
                    confirm_finder(image, &mut finders, &runs, x, y);
                }
                // Slide on: the last dark-light-dark may begin the next pattern.
                runs = [runs[2], runs[3], runs[4], 1, 0];
                state = 3;
            }
        }
        if state == 4 && is_finder_run(&runs) {
            confirm_finder(image, &mut finders, &runs, image.width, y);
        }
    }
    finders
}

/// A row run ending just before `end_x` looked like a finder: check it down and across its
/// centre, then merge it with the same finder seen on earlier rows.
fn confirm_finder(
    image: &Bitmap,
    finders: &mut Vec<Finder>,
    runs: &[usize; 5],
    end_x: usize,
    y: usize,
) {
    let total: usize = runs.iter().sum();
    let x = end_x as f64 - (runs[4] + runs[3]) as f64 - runs[2] as f64 / 2.0;
    let Some((y, _)) = cross_check(image, x, y as f64 + 0.5, Axis::Down, total) else {
        return;
    };
    let Some((x, across)) = cross_check(image, x, y, Axis::Across, total) else {
        return;
    };
    let module = across as f64 / 7.0;
    let same = finders.iter_mut().find(|f| {
        (f.x - x).abs() <= f.module
            && (f.y - y).abs() <= f.module
            && (f.module - module).abs() <= f.module.max(1.0)
    });
    match same {
        Some(f) => {
            let n = f64::from(f.hits);
            f.x = (f.x * n + x) / (n + 1.0);
            f.y = (f.y * n + y) / (n + 1.0);
            f.module = (f.module * n + module) / (n + 1.0);
            f.hits += 1;
        }
        None => finders.push(Finder {
            x,
            y,
            module,
            hits: 1,
        }),
    }
}

#[derive(Clone, Copy)]
enum Axis {
    Down,
    Across,
}

/// Measures the 1:1:3:1:1 runs through (x, y) along `axis`; returns the centre coordinate on
/// that axis and the total length, if they are a finder of about `expected_total` pixels.
fn cross_check(
    image: &Bitmap,
    x: f64,
    y: f64,
    axis: Axis,
    expected_total: usize,
) -> Option<(f64, usize)> {
    let start = match axis {
        Axis::Down => y.floor(),
        Axis::Across => x.floor(),
    };
    let pixel = |offset: f64| match axis {
        Axis::Down => image.at(x, start + offset),
        Axis::Across => image.at(start + offset, y),
    };
    // Longer runs than the whole expected pattern cannot be part of it.
    let run =
        |from: f64, step: f64, dark: bool| run_length(pixel, from, step, dark, expected_total);
    let mut runs = [0usize; 5];
    let (centre_up, at) = run(0.0, -1.0, true);
    let (light_up, at) = run(at, -1.0, false);
    let (dark_up, _) = run(at, -1.0, true);
    let (centre_down, at) = run(1.0, 1.0, true);
    let (light_down, at) = run(at, 1.0, false);
    let (dark_down, end) = run(at, 1.0, true);
    runs[0] = dark_up;
    runs[1] = light_up;
    runs[2] = centre_up + centre_down;
    runs[3] = light_down;
    runs[4] = dark_down;
    let total: usize = runs.iter().sum();
    // The same pattern seen the other way is about as long (ZXing's 40%).
    if 5 * total.abs_diff(expected_total) >= 2 * expected_total || !is_finder_run(&runs) {
        return None;
    }
    let centre = start + end - (runs[4] + runs[3]) as f64 - runs[2] as f64 / 2.0;
    Some((centre, total))
}

/// How far three finders are from being the corners of one code (0 is a perfect right
/// isosceles triangle), or None if they cannot be.
fn triangle_score(a: &Finder, b: &Finder, c: &Finder) -> Option<f64> {
    let smallest = a.module.min(b.module).min(c.module);
    let largest = a.module.max(b.module).max(c.module);
    if largest > 1.6 * smallest {
        return None;
    }
    let module = (a.module + b.module + c.module) / 3.0;
    let mut sides = [a.distance(b), b.distance(c), a.distance(c)];
    sides.sort_by(f64::total_cmp);
    let [short, long, hypotenuse] = sides;
    // Finder centres of the smallest code are 14 modules apart, of the largest 170.
    if short < 10.0 * module || long > 190.0 * module || long > 1.6 * short {
        return None;
    }
    let pythagoras = hypotenuse * hypotenuse / (short * short + long * long);
    if !(0.7..1.3).contains(&pythagoras) {
        return None;
    }
    Some((long / short - 1.0) + (pythagoras - 1.0).abs())
}

/// Top-left (the right angle: opposite the longest side), top-right, bottom-left. In image
/// coordinates (y down), top-left → top-right → bottom-left turns clockwise.
fn order([p, q, r]: [Finder; 3]) -> [Finder; 3] {
    let (pq, qr, pr) = (p.distance(&q), q.distance(&r), p.distance(&r));
    let (corner, a, b) = if qr >= pq && qr >= pr {
        (p, q, r)
    } else if pr >= pq && pr >= qr {
        (q, p, r)
    } else {
        (r, p, q)
    };
    let turn = (a.x - corner.x) * (b.y - corner.y) - (a.y - corner.y) * (b.x - corner.x);
    if turn > 0.0 {
        [corner, a, b]
    } else {
        [corner, b, a]
    }
}

/// From a finder's centre towards `towards` and away from it: the edges where the light ring
/// begins (1.5 modules out) and where the outer dark ring ends (3.5 modules out). Both are
/// dark-to-light, so binarization that grows or shrinks dark areas moves them alike and their
/// distance is two modules whatever the threshold. Returns the module size, if all were found.
fn module_along(image: &Bitmap, finder: &Finder, towards: &Finder) -> Option<f64> {
    const STEP: f64 = 0.25;
    let length = finder.distance(towards);
    if length < 1.0 {
        return None;
    }
    let (dx, dy) = (
        (towards.x - finder.x) / length,
        (towards.y - finder.y) / length,
    );
    let limit = 8.0 * finder.module;
    let two_modules = |sign: f64| -> Option<f64> {
        let mut expect_dark = true;
        let mut edges = [0.0; 3];
        let mut transitions = 0;
        let mut t = 0.0;
        while t <= limit {
            let dark = image.at(finder.x + sign * t * dx, finder.y + sign * t * dy)?;
            if dark != expect_dark {
                // The edge lies between this sample and the previous one.
                edges[transitions] = t - STEP / 2.0;
                transitions += 1;
                if transitions == 3 {
                    return Some(edges[2] - edges[0]);
                }
                expect_dark = dark;
            }
            t += STEP;
        }
        None
    };
    Some((two_modules(1.0)? + two_modules(-1.0)?) / 4.0)
}

/// Grid sizes to try, nearest the measured one first: 17 + 4 x version.
fn grid_sizes(
    image: &Bitmap,
    top_left: &Finder,
    top_right: &Finder,
    bottom_left: &Finder,
) -> Vec<usize> {
    let measured = [
        module_along(image, top_left, top_right),
        module_along(image, top_right, top_left),
        module_along(image, top_left, bottom_left),
        module_along(image, bottom_left, top_left),
    ];
    let measured: Vec<f64> = measured.into_iter().flatten().collect();
    let module = if measured.is_empty() {
        (top_left.module + top_right.module + bottom_left.module) / 3.0
    } else {
        measured.iter().sum::<f64>() / measured.len() as f64
    };
    let between = (top_left.distance(top_right) + top_left.distance(bottom_left)) / 2.0;
    let estimate = between / module + 7.0;
    if !estimate.is_finite() {
        return Vec::new();
    }
    let version = ((estimate - 17.0) / 4.0).round().clamp(1.0, 40.0);
    let mut versions = vec![version];
    let fraction = (estimate - 17.0) / 4.0 - version;
    let (nearer, farther) = if fraction >= 0.0 {
        (version + 1.0, version - 1.0)
    } else {
        (version - 1.0, version + 1.0)
    };
    versions.extend(
        [nearer, farther]
            .into_iter()
            .filter(|v| (1.0..=40.0).contains(v)),
    );
    versions.into_iter().map(|v| 17 + 4 * v as usize).collect()
}

/// Samples and decodes the grid of `dimension` modules whose finders are these.
fn read_grid(
    image: &Bitmap,
    top_left: &Finder,
    top_right: &Finder,
    bottom_left: &Finder,
    dimension: usize,
) -> Option<Located> {
    let d = dimension as f64;
    // Where the three finders alone (an affine map) put a point given in modules.
    let affine = |u: f64, v: f64| {
        let (s, t) = ((u - 3.5) / (d - 7.0), (v - 3.5) / (d - 7.0));
        (
            top_left.x + s * (top_right.x - top_left.x) + t * (bottom_left.x - top_left.x),
            top_left.y + s * (top_right.y - top_left.y) + t * (bottom_left.y - top_left.y),
        )
    };
    let module = (top_left.distance(top_right) + top_left.distance(bottom_left)) / 2.0 / (d - 7.0);
    // Version 2 and up have an alignment pattern 3 modules in from the bottom-right corner;
    // it corrects perspective the affine guess cannot. Without it, the parallelogram's corner.
    let alignment = (dimension > 21)
        .then(|| find_alignment(image, affine(d - 6.5, d - 6.5), module))
        .flatten();
    let fourth = match alignment {
        Some(found) => ((d - 6.5, d - 6.5), found),
        None => ((d - 3.5, d - 3.5), affine(d - 3.5, d - 3.5)),
    };
    let map = Homography::quad_to_quad(
        [(3.5, 3.5), (d - 3.5, 3.5), fourth.0, (3.5, d - 3.5)],
        [
            (top_left.x, top_left.y),
            (top_right.x, top_right.y),
            fourth.1,
            (bottom_left.x, bottom_left.y),
        ],
    )?;
    let mut bits = vec![false; dimension * dimension];
    for row in 0..dimension {
        for col in 0..dimension {
            let (x, y) = map.apply(col as f64 + 0.5, row as f64 + 0.5);
            bits[row * dimension + col] = image.at(x, y)?;
        }
    }
    let grid = rqrr::Grid::new(rqrr::SimpleGrid::from_func(dimension, |x, y| {
        bits[y * dimension + x]
    }));
    let (_, text) = grid.decode().ok()?;
    Some(Located {
        text,
        corners: [(0.0, 0.0), (d, 0.0), (d, d), (0.0, d)].map(|(u, v)| map.apply(u, v)),
    })
}

/// The alignment pattern (a dark module in a light ring in a dark ring) nearest `predicted`,
/// within 8 modules of it.
fn find_alignment(image: &Bitmap, predicted: (f64, f64), module: f64) -> Option<(f64, f64)> {
    let radius = (8.0 * module).max(8.0);
    let clamp = |v: f64, max: usize| (v.max(0.0) as usize).min(max);
    let (x0, x1) = (
        clamp(predicted.0 - radius, image.width),
        clamp(predicted.0 + radius, image.width),
    );
    let (y0, y1) = (
        clamp(predicted.1 - radius, image.height),
        clamp(predicted.1 + radius, image.height),
    );
    let mut best: Option<((f64, f64), f64)> = None;
    let mut runs: Vec<(bool, usize, usize)> = Vec::new();
    for y in y0..y1 {
        runs.clear();
        for x in x0..x1 {
            let dark = image.dark[y * image.width + x];
            match runs.last_mut() {
                Some((colour, _, length)) if *colour == dark => *length += 1,
                _ => runs.push((dark, x, 1)),
            }
        }
        for window in runs.windows(5) {
            let &[(true, _, _), (false, _, light_left), (true, start, centre), (false, _, light_right), (true, _, _)] =
                window
            else {
                continue;
            };
            if ![light_left, centre, light_right]
                .iter()
                .all(|&run| about_a_module(run, module))
            {
                continue;
            }
            let x = start as f64 + centre as f64 / 2.0;
            let Some((y, centre_down)) = alignment_centre_down(image, x, y, module) else {
                continue;
            };
            // Perspective makes modules near this corner smaller or larger than the average.
            let local_module = (centre + centre_down) as f64 / 2.0;
            if !alignment_rings(image, x, y, local_module) {
                continue;
            }
            let distance = (x - predicted.0).hypot(y - predicted.1);
            if best.is_none_or(|(_, d)| distance < d) {
                best = Some(((x, y), distance));
            }
        }
    }
    best.map(|(centre, _)| centre)
}

/// The vertical centre and height of the alignment pattern's middle module through column
/// `x`, seen on row `y`, if a light run of about a module lies above and below it.
fn alignment_centre_down(image: &Bitmap, x: f64, y: usize, module: f64) -> Option<(f64, usize)> {
    let limit = (3.0 * module) as usize + 2;
    let pixel = |at: f64| image.at(x, at);
    let run = |from: f64, step: f64, dark: bool| run_length(pixel, from, step, dark, limit);
    let y = y as f64;
    let (up, at_up) = run(y, -1.0, true);
    let (light_up, _) = run(at_up, -1.0, false);
    let (down, at_down) = run(y + 1.0, 1.0, true);
    let (light_down, _) = run(at_down, 1.0, false);
    let centre = up + down;
    [centre, light_up, light_down]
        .iter()
        .all(|&run| about_a_module(run, module))
        .then(|| (at_up + 1.0 + centre as f64 / 2.0, centre))
}

/// The number of pixels of colour `dark` from offset `from` on, stepping by `step`, counted to
/// just past `limit`, and the offset of the first pixel not counted.
fn run_length(
    pixel: impl Fn(f64) -> Option<bool>,
    from: f64,
    step: f64,
    dark: bool,
    limit: usize,
) -> (usize, f64) {
    let (mut count, mut at) = (0, from);
    while count <= limit && pixel(at) == Some(dark) {
        count += 1;
        at += step;
    }
    (count, at)
}

/// Alignment pattern rings are a module wide; blur, print gain and perspective allow half to
/// twice that.
fn about_a_module(run: usize, module: f64) -> bool {
    (0.5 * module..=2.0 * module).contains(&(run as f64))
}

/// An isolated dark module in the data is common; one whose diagonal neighbours are light and
/// whose second diagonal ring is dark is the alignment pattern.
fn alignment_rings(image: &Bitmap, x: f64, y: f64, module: f64) -> bool {
    [(-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0)]
        .iter()
        .all(|(dx, dy)| {
            image.at(x + dx * module, y + dy * module) == Some(false)
                && image.at(x + 2.0 * dx * module, y + 2.0 * dy * module) == Some(true)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A code drawn straight into a bitmap: `scale` pixels per module, `margin` light pixels
    /// around it.
    fn bitmap_of(text: &str, scale: usize, margin: usize) -> (Vec<bool>, usize) {
        let code = qrcode::QrCode::new(text.as_bytes()).expect("encodable");
        let n = code.width();
        let colors = code.to_colors();
        let side = n * scale + 2 * margin;
        let mut dark = vec![false; side * side];
        for y in 0..n * scale {
            for x in 0..n * scale {
                dark[(y + margin) * side + x + margin] =
                    colors[(y / scale) * n + x / scale] == qrcode::Color::Dark;
            }
        }
        (dark, side)
    }

    #[test]
    fn reads_a_straight_code_and_reports_its_corners() {
        let text = "SGA1.kiosk-locator-test-0123456789";
        let (dark, side) = bitmap_of(text, 4, 20);
        let image = Bitmap {
            dark: &dark,
            width: side,
            height: side,
        };
        let found = locate_and_decode(&image);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].text, text);
        let far = (side - 20) as f64;
        for (corner, expected) in
            found[0]
                .corners
                .iter()
                .zip([(20.0, 20.0), (far, 20.0), (far, far), (20.0, far)])
        {
            assert!(
                (corner.0 - expected.0).abs() < 2.0 && (corner.1 - expected.1).abs() < 2.0,
                "{corner:?} vs {expected:?}"
            );
        }
    }

    #[test]
    fn reads_a_code_turned_upside_down() {
        let text = "https://id.gs1.org/01/09506000134352/10/ABC123";
        let (dark, side) = bitmap_of(text, 3, 12);
        let turned: Vec<bool> = dark.iter().rev().copied().collect();
        let image = Bitmap {
            dark: &turned,
            width: side,
            height: side,
        };
        let found = locate_and_decode(&image);
        assert_eq!(
            found.iter().map(|f| f.text.as_str()).collect::<Vec<_>>(),
            [text]
        );
    }

    #[test]
    fn finds_nothing_in_noise_or_in_an_empty_crop() {
        let mut rng = fastrand::Rng::with_seed(5);
        let noise: Vec<bool> = (0..200 * 200).map(|_| rng.bool()).collect();
        let image = Bitmap {
            dark: &noise,
            width: 200,
            height: 200,
        };
        assert!(locate_and_decode(&image).is_empty());
        let empty = Bitmap {
            dark: &[],
            width: 0,
            height: 0,
        };
        assert!(locate_and_decode(&empty).is_empty());
    }

    #[test]
    fn a_wrong_grid_size_is_not_decoded_into_text() {
        let text = "kiosk order 42";
        let (dark, side) = bitmap_of(text, 4, 16);
        let image = Bitmap {
            dark: &dark,
            width: side,
            height: side,
        };
        let mut finders = find_finders(&image);
        // The three finders lead; the alignment pattern may pass for a small fourth.
        finders.sort_by_key(|f| std::cmp::Reverse(f.hits));
        assert!(finders.len() >= 3 && finders[2].hits > 2, "{finders:?}");
        let [tl, tr, bl] = order([finders[0], finders[1], finders[2]]);
        let sizes = grid_sizes(&image, &tl, &tr, &bl);
        let right = qrcode::QrCode::new(text.as_bytes())
            .expect("encodable")
            .width();
        assert_eq!(sizes[0], right);
        assert!(read_grid(&image, &tl, &tr, &bl, right + 4).is_none());
    }
}
