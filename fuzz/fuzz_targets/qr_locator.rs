//! The finder-pattern locator on crops a camera could produce: a real code (so the search gets
//! past finders, triangles, grid sizes and alignment patterns into decoding) at a fuzzed scale,
//! with fuzzed pixels flipped. Never a panic, never an unbounded search.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storegate::devices::camera::locate::{locate_and_decode, Bitmap};

fuzz_target!(|data: &[u8]| {
    let [scale, text_len, rest @ ..] = data else {
        return;
    };
    let text_len = usize::from(text_len % 64).min(rest.len());
    let (text, flips) = rest.split_at(text_len);
    let Ok(code) = qrcode::QrCode::new(text) else {
        return;
    };
    let (mut dark, side) = drawn(&code, 1 + usize::from(scale % 4));
    for pair in flips.chunks_exact(2) {
        let at = usize::from(u16::from_le_bytes([pair[0], pair[1]])) % dark.len();
        dark[at] = !dark[at];
    }
    if let Some(image) = Bitmap::new(&dark, side, side) {
        let _ = locate_and_decode(&image);
    }
});

/// The code at `scale` pixels per module with a 4-module quiet zone, and its side.
fn drawn(code: &qrcode::QrCode, scale: usize) -> (Vec<bool>, usize) {
    let n = code.width();
    let colors = code.to_colors();
    let side = (n + 8) * scale;
    let mut dark = vec![false; side * side];
    for y in 0..n * scale {
        for x in 0..n * scale {
            dark[(y + 4 * scale) * side + x + 4 * scale] =
                colors[(y / scale) * n + x / scale] == qrcode::Color::Dark;
        }
    }
    (dark, side)
}
