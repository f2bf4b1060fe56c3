//! Everything a scanner can send after framing: AIM identifier, EAN/UPC, GS1, tokens, links,
//! track data, text. Never a panic; a result that serialises.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storegate::codes::{interpret_scan, Aim};

fuzz_target!(|text: &str| {
    let (aim, data) = Aim::split(text);
    if let Ok(interpretation) = interpret_scan(aim, data) {
        let _ = serde_json::to_string(&interpretation);
    }
});
