//! GS1 element strings with GS separators, and the bracketed form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storegate::codes::{from_bracketed, parse_element_strings};

fuzz_target!(|text: &str| {
    let _ = parse_element_strings(text);
    if let Some(strings) = from_bracketed(text) {
        let _ = parse_element_strings(&strings);
    }
});
