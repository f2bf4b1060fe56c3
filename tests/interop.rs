//! The spine's scenarios against a real Mosquitto. Ignored by plain `cargo test` (Mosquitto is
//! not part of a fresh machine); `.ci/mosquitto-suite` installs it and runs them with
//! `--include-ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use common::{scenarios, BrokerKind};

#[test]
#[ignore = "needs mosquitto; run by .ci/mosquitto-suite"]
fn mosquitto_offline_10000_purchases_reach_central_exactly_once_in_order() {
    scenarios::offline_backlog_drains_exactly_once(BrokerKind::Mosquitto, 10_000);
}

#[test]
#[ignore = "needs mosquitto; run by .ci/mosquitto-suite"]
fn mosquitto_kill_9_during_intake_and_sync_loses_no_acknowledged_event() {
    scenarios::kill9_loses_nothing_acknowledged(BrokerKind::Mosquitto, 20);
}

#[test]
#[ignore = "needs mosquitto; run by .ci/mosquitto-suite"]
fn mosquitto_restart_without_persistence_mid_sync_loses_nothing() {
    scenarios::broker_restart_mid_sync_loses_nothing(BrokerKind::Mosquitto);
}

#[test]
#[ignore = "needs mosquitto; run by .ci/mosquitto-suite"]
fn mosquitto_malformed_payloads_are_counted_and_ignored() {
    scenarios::malformed_inbound_is_counted_and_ignored(BrokerKind::Mosquitto);
}

#[test]
#[ignore = "needs mosquitto; run by .ci/mosquitto-suite"]
fn mosquitto_status_is_retained_and_the_last_will_names_the_session() {
    scenarios::status_and_last_will_carry_the_session(BrokerKind::Mosquitto);
}

#[test]
#[ignore = "needs mosquitto; run by .ci/mosquitto-suite"]
fn mosquitto_a_central_whose_store_stalls_past_its_keep_alive_keeps_its_session() {
    scenarios::a_stalled_central_keeps_its_session_and_stores_everything_after(
        BrokerKind::Mosquitto,
    );
}
