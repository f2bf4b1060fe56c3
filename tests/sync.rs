//! The spine's guarantees end to end: real `storegate` processes, the embedded broker, real
//! SQLite files. The same scenarios run against Mosquitto in `tests/interop.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use common::{scenarios, BrokerKind};

#[test]
fn offline_10000_purchases_reach_central_exactly_once_in_order() {
    scenarios::offline_backlog_drains_exactly_once(BrokerKind::Embedded, 10_000);
}

/// 20 trials in the suite; a soak runs more with
/// `SOAK_KILL_TRIALS=500 cargo test --test sync kill_9`.
#[test]
fn kill_9_during_intake_and_sync_loses_no_acknowledged_event_20_trials() {
    let trials = std::env::var("SOAK_KILL_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    scenarios::kill9_loses_nothing_acknowledged(BrokerKind::Embedded, trials);
}

#[test]
fn broker_restart_without_persistence_mid_sync_loses_nothing() {
    scenarios::broker_restart_mid_sync_loses_nothing(BrokerKind::Embedded);
}

#[test]
fn malformed_payloads_on_every_inbound_topic_are_counted_and_ignored() {
    scenarios::malformed_inbound_is_counted_and_ignored(BrokerKind::Embedded);
}

#[test]
fn status_is_retained_and_the_last_will_names_the_session() {
    scenarios::status_and_last_will_carry_the_session(BrokerKind::Embedded);
}

#[test]
fn a_central_whose_store_stalls_past_its_keep_alive_keeps_its_session_and_loses_nothing() {
    scenarios::a_stalled_central_keeps_its_session_and_stores_everything_after(
        BrokerKind::Embedded,
    );
}
