//! Central's rpc answers and acks as a gateway reads them (`…/rpc/res`, `…/ack`), and any
//! payload on any of its topics, retained or not. Never a panic; a retained message is only
//! ever accepted on a config topic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storegate::sync::check_inbound;

const TOPICS: [&str; 7] = [
    "storegate/v1/s-1/gw-1/rpc/res",
    "storegate/v1/s-1/gw-1/ack",
    "storegate/v1/s-1/gw-1/orders",
    "storegate/v1/s-1/gw-1/config",
    "storegate/v1/s-1/config",
    "storegate/v1/config/fleet",
    "storegate/v1/s-1/gw-2/ack",
];

fuzz_target!(|input: &[u8]| {
    let Some((&selector, payload)) = input.split_first() else {
        return;
    };
    let topic = TOPICS[usize::from(selector) % TOPICS.len()];
    let retain = selector & 0x80 != 0;
    if let Ok(family) = check_inbound("s-1", "gw-1", topic, payload, retain) {
        assert!(!retain || family == "config", "retained {family} accepted");
    }
});
