//! A signed config layer as a gateway receives it on a config topic: never a panic; a layer
//! that verifies was signed by the trusted key and names no local-only section.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storegate::codes::coupon::PublicKey;
use storegate::config::layers::{verify, LOCAL_ONLY};
use storegate::protocol::SignedLayer;

fuzz_target!(|payload: &[u8]| {
    // A fixed key no input can sign for: nothing random may verify.
    let trusted = PublicKey::try_from("11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=".to_string())
        .expect("a valid key");
    if let Ok(signed) = serde_json::from_slice::<SignedLayer>(payload) {
        if let Ok(layer) = verify(&signed, std::slice::from_ref(&trusted)) {
            let body = layer
                .body
                .as_object()
                .expect("a checked layer's body is a table");
            assert!(body.keys().all(|k| !LOCAL_ONLY.contains(&k.as_str())));
        }
    }
});
