//! Coupon tokens: `SGC1.` followed by anything (base64url, JSON, field and signature checks),
//! then the signature check a gateway makes. Never a panic, and never a token that verifies:
//! the key is made afresh for the run and its private half thrown away.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use storegate::codes::coupon::{generate_key, CouponKeys};
use storegate::codes::interpret;

static KEYS: OnceLock<Option<CouponKeys>> = OnceLock::new();

fuzz_target!(|rest: &str| {
    let token = format!("SGC1.{rest}");
    let _ = interpret(&token);
    let keys = KEYS.get_or_init(|| {
        let key = generate_key().ok()?;
        CouponKeys::from_base64(&[key.public_key]).ok()
    });
    if let Some(keys) = keys {
        assert!(keys.verify(&token).is_err());
    }
});
