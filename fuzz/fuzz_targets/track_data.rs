//! Magnetic stripe tracks (sentinels, separators, LRC) and the loyalty number rule.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storegate::codes::magstripe::{loyalty_number, parse_tracks};

fuzz_target!(|input: (u8, u8, &str)| {
    let (skip, take, text) = input;
    if let Ok(tracks) = parse_tracks(text) {
        let _ = loyalty_number(&tracks, usize::from(skip), Some(usize::from(take)));
    }
});
