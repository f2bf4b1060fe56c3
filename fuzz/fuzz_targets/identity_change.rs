//! Central's identity changes as a gateway reads them: live on `storegate/v1/identity`, and in
//! an `identity.since` answer. Never a panic; an accepted change always has a rev the protocol
//! allows and refs that are profile refs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storegate::protocol::{check_profile_ref, is_valid_seq, IdentityChange};
use storegate::sync::check_inbound;

fuzz_target!(|payload: &[u8]| {
    if check_inbound("s-1", "gw-1", "storegate/v1/identity", payload, false) == Ok("identity") {
        let change: IdentityChange =
            serde_json::from_slice(payload).expect("accepted, so it parses");
        assert!(is_valid_seq(change.rev));
        for merge in &change.merges {
            assert!(check_profile_ref("from", &merge.from).is_ok());
            assert!(check_profile_ref("to", &merge.to).is_ok());
        }
    }
    // The catch-up path reads the same type out of an rpc answer.
    if let Ok(answer) = serde_json::from_slice::<serde_json::Value>(payload) {
        if let Some(changes) = answer.get("changes").and_then(|c| c.as_array()) {
            for change in changes {
                let _ = serde_json::from_value::<IdentityChange>(change.clone());
            }
        }
    }
});
