//! Gateways' event batches as central reads them off `…/events`, and each event as central
//! checks it before it is stored. Never a panic; an accepted event is one the resolver reads
//! the same way, and sends to the boxes only as refs and hashes every box accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storegate::central::check_batch;
use storegate::protocol::{check_profile_ref, PurchaseBody, SeenBody};

fuzz_target!(|payload: &[u8]| {
    let Ok(batch) = check_batch("s-1", "gw-1", payload) else {
        return;
    };
    for event in &batch.events {
        let checked = event.check();
        if checked.refused.is_some() {
            continue;
        }
        let facts = checked.facts;
        if let Some(customer) = &facts.customer {
            assert!(check_profile_ref("customer", customer).is_ok());
        }
        match event.kind.as_str() {
            "purchase" => {
                let body: PurchaseBody =
                    serde_json::from_str(event.body.get()).expect("accepted, so it reads");
                assert_eq!(facts.moves_points, body.moved().is_some());
                assert!(facts.receipt.is_some_and(|r| !r.trim().is_empty()));
            }
            "identity_seen" => {
                let body: SeenBody =
                    serde_json::from_str(event.body.get()).expect("accepted, so it reads");
                assert!(body.identifiers.iter().all(|i| i.has_valid_hash()));
            }
            "coupon_redeemed" => assert!(facts.coupon.is_some()),
            _ => assert!(!facts.moves_points && facts.coupon.is_none()),
        }
    }
});
