//! Coupon tokens: `SGC1.` followed by anything (base64url, JSON, signature length checks).
#![no_main]

use libfuzzer_sys::fuzz_target;
use storegate::codes::interpret;

fuzz_target!(|rest: &str| {
    let _ = interpret(&format!("SGC1.{rest}"));
});
