//! A generated corpus of 640x480 camera frames with known QR contents, in the classes a kiosk
//! camera meets: sizes, rotations, perspective skew, blur, sensor noise, low contrast, two
//! codes at once, and full-size signed coupons (dense codes). Deterministic for a seed, so the
//! decode-rate test and the benchmark (which writes the frames as PNG for zbar) judge the same
//! pixels.

use super::frame::LumaFrame;
use super::geometry::Homography;

/// Frame width.
pub const WIDTH: usize = 640;
/// Frame height.
pub const HEIGHT: usize = 480;
/// Frames per class.
pub const PER_CLASS: usize = 12;
/// The difficulty classes, one name each.
pub const CLASSES: [&str; 9] = [
    "plain",
    "small",
    "rotated",
    "skewed",
    "blurred",
    "noisy",
    "low_contrast",
    "two_codes",
    "dense",
];

/// One generated frame and what is in it.
#[derive(Debug, Clone)]
pub struct CorpusFrame {
    /// Its class, one of `CLASSES`.
    pub class: &'static str,
    /// A name for reports.
    pub name: String,
    /// The frame.
    pub frame: LumaFrame,
    /// The texts of the codes in the frame, sorted.
    pub texts: Vec<String>,
}

/// How a code is drawn.
struct Placement {
    /// Frame corners of the code's top-left, top-right, bottom-right, bottom-left (quiet zone
    /// included).
    quad: [(f64, f64); 4],
    dark: f64,
    light: f64,
}

/// The corpus for `seed`: the same frames for the same seed, on any machine.
pub fn generate(seed: u64) -> Vec<CorpusFrame> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out = Vec::new();
    for class in CLASSES {
        for i in 0..PER_CLASS {
            let (frame, mut texts) = render(class, i, &mut rng);
            texts.sort();
            out.push(CorpusFrame {
                class,
                name: format!("{class}-{i:02}"),
                frame,
                texts,
            });
        }
    }
    out
}

/// Kiosk-like payloads: coupon and app tokens, Digital Links, plain text, of varying length.
fn payload(rng: &mut fastrand::Rng, n: usize) -> String {
    let len = rng.usize(12..48);
    let token = random_base64url(rng, len);
    match n % 4 {
        0 => format!("SGA1.{token}"),
        1 => format!("SGC1.{token}.{token}{token}"),
        2 => format!("https://id.gs1.org/01/09506000134352/10/{}", &token[..8]),
        _ => format!("kiosk order {token}"),
    }
}

/// A full-size signed coupon as central issues it (docs/protocol.md: `SGC1.<payload>.<signature>`,
/// base64url JSON and a 64-byte signature): about 370 characters, a version 14-15 code, the
/// densest a kiosk camera reads.
fn coupon_token(rng: &mut fastrand::Rng) -> String {
    let payload_len = 260 + rng.usize(..40);
    let payload = random_base64url(rng, payload_len);
    format!("SGC1.{payload}.{}", random_base64url(rng, 86))
}

fn random_base64url(rng: &mut fastrand::Rng, len: usize) -> String {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..len)
        .map(|_| alphabet[rng.usize(..alphabet.len())] as char)
        .collect()
}

fn render(class: &str, i: usize, rng: &mut fastrand::Rng) -> (LumaFrame, Vec<String>) {
    let mut canvas = background(rng);
    let text = if class == "dense" {
        coupon_token(rng)
    } else {
        payload(rng, i)
    };
    let Ok(code) = qrcode::QrCode::new(text.as_bytes()) else {
        return (frame_of(&canvas), Vec::new());
    };
    let modules = code.width() as f64 + 8.0; // with a 4-module quiet zone each side
    let module_px = match class {
        "small" => 1.8 + rng.f64() * 0.5,
        "plain" => 3.0 + rng.f64() * 4.0,
        // 77 modules with the quiet zone: at most 354 pixels, inside a 480-pixel frame.
        "dense" => 3.0 + rng.f64() * 1.6,
        _ => 3.0 + rng.f64() * 2.5,
    };
    let side = modules * module_px;
    let mut texts = vec![text];
    let centre = |rng: &mut fastrand::Rng, side: f64| {
        let margin = side * 0.75;
        (
            margin + rng.f64() * (WIDTH as f64 - 2.0 * margin).max(1.0),
            margin + rng.f64() * (HEIGHT as f64 - 2.0 * margin).max(1.0),
        )
    };
    let (dark, light) = if class == "low_contrast" {
        let mid = 110.0 + rng.f64() * 40.0;
        (mid - 22.0, mid + 22.0)
    } else {
        (20.0 + rng.f64() * 30.0, 215.0 + rng.f64() * 30.0)
    };
    match class {
        "two_codes" => {
            let side = side.min(250.0);
            let left = square((160.0, 240.0), side, rng.f64() * 0.3 - 0.15);
            draw(
                &mut canvas,
                &code,
                &Placement {
                    quad: left,
                    dark,
                    light,
                },
            );
            let other = payload(rng, i + 1);
            if let Ok(second) = qrcode::QrCode::new(other.as_bytes()) {
                let side = (second.width() as f64 + 8.0) * module_px;
                let right = square((480.0, 240.0), side.min(250.0), rng.f64() * 0.3 - 0.15);
                draw(
                    &mut canvas,
                    &second,
                    &Placement {
                        quad: right,
                        dark,
                        light,
                    },
                );
                texts.push(other);
            }
        }
        "rotated" => {
            let angle = (10.0 + rng.f64() * 340.0).to_radians();
            let quad = square(centre(rng, side * 1.5), side, angle);
            draw(&mut canvas, &code, &Placement { quad, dark, light });
        }
        "skewed" => {
            let c = centre(rng, side * 1.3);
            let mut quad = square(c, side, rng.f64() * 0.4 - 0.2);
            // Tilt: one side nearer the camera than the other.
            let squeeze = 0.12 + rng.f64() * 0.15;
            let (a, b) = if rng.bool() { (1, 2) } else { (2, 3) };
            for k in [a, b] {
                quad[k].0 += (c.0 - quad[k].0) * squeeze;
                quad[k].1 += (c.1 - quad[k].1) * squeeze;
            }
            draw(&mut canvas, &code, &Placement { quad, dark, light });
        }
        _ => {
            let quad = square(centre(rng, side), side, rng.f64() * 0.2 - 0.1);
            draw(&mut canvas, &code, &Placement { quad, dark, light });
        }
    }
    match class {
        "blurred" => box_blur(&mut canvas, 1 + rng.usize(..2)),
        "noisy" => {
            let amplitude = 28.0 + rng.f64() * 20.0;
            add_noise(&mut canvas, rng, amplitude)
        }
        _ => add_noise(&mut canvas, rng, 4.0),
    }
    (frame_of(&canvas), texts)
}

/// A plain 640x480 scene with `texts` as QR codes side by side (at most two fit), or an empty
/// scene for no texts; `seed` varies the background and sensor noise. For tests that need a
/// specific code in front of the camera.
pub fn scene(texts: &[&str], seed: u64) -> LumaFrame {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut canvas = background(&mut fastrand::Rng::with_seed(1));
    let slots = texts.len().max(1) as f64;
    for (i, text) in texts.iter().enumerate() {
        let Ok(code) = qrcode::QrCode::new(text.as_bytes()) else {
            continue;
        };
        let side = ((code.width() as f64 + 8.0) * 4.0).min(WIDTH as f64 / slots - 20.0);
        let centre = (WIDTH as f64 * (i as f64 + 0.5) / slots, HEIGHT as f64 / 2.0);
        let quad = square(centre, side, 0.0);
        draw(
            &mut canvas,
            &code,
            &Placement {
                quad,
                dark: 30.0,
                light: 230.0,
            },
        );
    }
    add_noise(&mut canvas, &mut rng, 4.0);
    frame_of(&canvas)
}

fn background(rng: &mut fastrand::Rng) -> Vec<f64> {
    let base = 120.0 + rng.f64() * 60.0;
    let (gx, gy) = (rng.f64() * 0.12 - 0.06, rng.f64() * 0.12 - 0.06);
    let mut canvas: Vec<f64> = (0..WIDTH * HEIGHT)
        .map(|i| base + gx * (i % WIDTH) as f64 + gy * (i / WIDTH) as f64)
        .collect();
    // A few flat shapes: a counter edge, a sleeve, a shadow.
    for _ in 0..3 {
        let (x0, y0) = (rng.usize(..WIDTH), rng.usize(..HEIGHT));
        let (w, h) = (rng.usize(40..200), rng.usize(40..200));
        let shade = rng.f64() * 60.0 - 30.0;
        for y in y0..(y0 + h).min(HEIGHT) {
            for x in x0..(x0 + w).min(WIDTH) {
                canvas[y * WIDTH + x] += shade;
            }
        }
    }
    canvas
}

fn square(centre: (f64, f64), side: f64, angle: f64) -> [(f64, f64); 4] {
    let (s, c) = angle.sin_cos();
    let h = side / 2.0;
    [(-h, -h), (h, -h), (h, h), (-h, h)]
        .map(|(x, y)| (centre.0 + x * c - y * s, centre.1 + x * s + y * c))
}

/// Draws the code through the homography mapping the code square onto `quad`, with 3x3
/// supersampling so edges are anti-aliased like an optical image.
fn draw(canvas: &mut [f64], code: &qrcode::QrCode, placement: &Placement) {
    let n = code.width();
    let colors = code.to_colors();
    let modules = n as f64 + 8.0;
    let Some(inverse) = Homography::square_to_quad(placement.quad).and_then(|m| m.inverse()) else {
        return;
    };
    let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    for (x, y) in placement.quad {
        x0 = x0.min(x);
        y0 = y0.min(y);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    let clamp = |v: f64, max: usize| (v.max(0.0) as usize).min(max);
    for py in clamp(y0.floor(), HEIGHT)..clamp(y1.ceil() + 1.0, HEIGHT) {
        for px in clamp(x0.floor(), WIDTH)..clamp(x1.ceil() + 1.0, WIDTH) {
            let mut sum = 0.0;
            let mut inside = 0;
            for sy in 0..3 {
                for sx in 0..3 {
                    let (fx, fy) = (
                        px as f64 + (sx as f64 + 0.5) / 3.0,
                        py as f64 + (sy as f64 + 0.5) / 3.0,
                    );
                    let (u, v) = inverse.apply(fx, fy);
                    if !(0.0..1.0).contains(&u) || !(0.0..1.0).contains(&v) {
                        continue;
                    }
                    inside += 1;
                    let (mx, my) = ((u * modules) as isize - 4, (v * modules) as isize - 4);
                    let dark = mx >= 0
                        && my >= 0
                        && (mx as usize) < n
                        && (my as usize) < n
                        && colors[my as usize * n + mx as usize] == qrcode::Color::Dark;
                    sum += if dark {
                        placement.dark
                    } else {
                        placement.light
                    };
                }
            }
            if inside > 0 {
                let i = py * WIDTH + px;
                let coverage = f64::from(inside) / 9.0;
                canvas[i] = canvas[i] * (1.0 - coverage) + sum / 9.0;
            }
        }
    }
}

fn box_blur(canvas: &mut [f64], radius: usize) {
    let mut tmp = canvas.to_vec();
    let r = radius as isize;
    for y in 0..HEIGHT {
        for x in 0..WIDTH {
            let (mut sum, mut n) = (0.0, 0.0);
            for dx in -r..=r {
                let xx = x as isize + dx;
                if (0..WIDTH as isize).contains(&xx) {
                    sum += canvas[y * WIDTH + xx as usize];
                    n += 1.0;
                }
            }
            tmp[y * WIDTH + x] = sum / n;
        }
    }
    for y in 0..HEIGHT {
        for x in 0..WIDTH {
            let (mut sum, mut n) = (0.0, 0.0);
            for dy in -r..=r {
                let yy = y as isize + dy;
                if (0..HEIGHT as isize).contains(&yy) {
                    sum += tmp[yy as usize * WIDTH + x];
                    n += 1.0;
                }
            }
            canvas[y * WIDTH + x] = sum / n;
        }
    }
}

fn add_noise(canvas: &mut [f64], rng: &mut fastrand::Rng, amplitude: f64) {
    for value in canvas.iter_mut() {
        // The sum of two uniforms: a cheap bell-shaped sensor noise.
        *value += (rng.f64() + rng.f64() - 1.0) * amplitude;
    }
}

fn frame_of(canvas: &[f64]) -> LumaFrame {
    let pixels = canvas
        .iter()
        .map(|v| v.round().clamp(0.0, 255.0) as u8)
        .collect();
    // WIDTH x HEIGHT pixels by construction.
    LumaFrame::new(WIDTH, HEIGHT, pixels).unwrap_or_else(|_| unreachable!())
}
