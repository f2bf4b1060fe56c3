//! Coupon redemption at the till against real gateways, central and broker: every refusal has
//! its own code and journals nothing; online a coupon is reserved at central first and is
//! single-use across the fleet; offline the token's `offline` flag, "never here before" and the
//! discount budget decide, and a single-use coupon redeemed offline at two stores becomes one
//! conflict at central with both events kept.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use common::scenarios::wait_connected;
use common::*;
use storegate::codes::coupon;

struct Keys {
    private: String,
    public: String,
}

fn keys() -> Keys {
    let key = coupon::generate_key().unwrap();
    Keys {
        private: key.private_key,
        public: key.public_key,
    }
}

/// A coupon payload as docs/protocol.md defines it, with `changes` applied.
fn token(keys: &Keys, id: &str, changes: serde_json::Value) -> String {
    let mut payload = serde_json::json!({
        "id": id, "campaign": "test", "kind": "amount", "value": 200, "min_basket_minor": 0,
        "valid_from": "2020-01-01T00:00:00.000Z", "valid_to": "2099-01-01T00:00:00.000Z",
        "uses": 1, "customer": null, "offline": true, "stores": null
    });
    for (k, v) in changes.as_object().unwrap() {
        payload[k] = v.clone();
    }
    coupon::issue(&keys.private, &payload).unwrap()
}

fn coupon_config(keys: &Keys, extra: &str) -> String {
    format!(
        "[coupons]\npublic_keys = [\"{}\"]\noffline_budget_hour_minor = 300\noffline_budget_day_minor = 1000\n{extra}",
        keys.public
    )
}

fn redeem(
    api: SocketAddr,
    token: &str,
    receipt: &str,
    customer: Option<&str>,
) -> (u16, serde_json::Value) {
    redeem_coupon(api, token, receipt, customer)
}

fn code(answer: &serde_json::Value) -> &str {
    answer["error"]["code"].as_str().unwrap_or("<accepted>")
}

fn last_seq(api: SocketAddr) -> u64 {
    health(&http(), api)["journal"]["last_seq"]
        .as_u64()
        .unwrap()
}

#[test]
fn every_refusal_has_its_own_code_and_journals_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys();
    // No broker: central is unreachable, so the offline policy decides.
    let url = format!("mqtt://127.0.0.1:{}", free_port());
    let config = gateway_config(dir.path(), &url, 0, &coupon_config(&keys, ""));
    let (_gateway, api) = start_gateway(dir.path(), &config);

    let (status, accepted) = redeem(api, &token(&keys, "c-a", serde_json::json!({})), "r1", None);
    assert_eq!(status, 200, "{accepted}");
    assert_eq!(
        accepted,
        serde_json::json!({"discount_minor": 200, "mode": "offline"})
    );
    assert_eq!(last_seq(api), 1);

    let genuine = token(&keys, "c-b", serde_json::json!({}));
    let (payload, signature) = genuine["SGC1.".len()..].split_once('.').unwrap();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut altered: serde_json::Value =
        serde_json::from_slice(&b64.decode(payload).unwrap()).unwrap();
    altered["value"] = serde_json::json!(999);
    let forged = format!(
        "SGC1.{}.{signature}",
        b64.encode(serde_json::to_vec(&altered).unwrap())
    );
    let cases = [
        (forged, None, "bad_signature"),
        (
            token(&self::keys(), "c-b", serde_json::json!({})),
            None,
            "bad_signature",
        ),
        (genuine[..genuine.len() - 20].to_string(), None, "malformed"),
        (
            token(
                &keys,
                "c-c",
                serde_json::json!({"valid_to": "2021-01-01T00:00:00.000Z"}),
            ),
            None,
            "expired",
        ),
        (
            token(
                &keys,
                "c-d",
                serde_json::json!({"valid_from": "2098-01-01T00:00:00.000Z"}),
            ),
            None,
            "not_yet_valid",
        ),
        (
            token(&keys, "c-e", serde_json::json!({"stores": ["s-other"]})),
            None,
            "wrong_store",
        ),
        (
            token(
                &keys,
                "c-f",
                serde_json::json!({"customer": "p:0b5e1c3a-1d2f-4c1a-9f2e-0123456789ab"}),
            ),
            Some("p:11111111-1d2f-4c1a-9f2e-0123456789ab"),
            "wrong_customer",
        ),
        (
            token(&keys, "c-g", serde_json::json!({"min_basket_minor": 5000})),
            None,
            "basket_too_small",
        ),
        (
            token(&keys, "c-h", serde_json::json!({"offline": false})),
            None,
            "offline_not_allowed",
        ),
        // The hour's offline budget is 300; 200 of it went to c-a.
        (
            token(&keys, "c-i", serde_json::json!({})),
            None,
            "offline_budget_spent",
        ),
        // Single-use and already redeemed here, for another receipt.
        (
            token(&keys, "c-a", serde_json::json!({})),
            None,
            "already_redeemed",
        ),
    ];
    for (n, (token, customer, expected)) in cases.iter().enumerate() {
        let (status, answer) = redeem(api, token, &format!("r-refused-{n}"), *customer);
        assert_eq!(code(&answer), *expected, "case {n}: {answer}");
        assert!(status >= 400, "case {n}: {status}");
    }
    assert_eq!(last_seq(api), 1, "a refusal journals nothing");

    // A retry of the accepted redemption (same coupon, same receipt) is the same answer.
    let (status, again) = redeem(api, &token(&keys, "c-a", serde_json::json!({})), "r1", None);
    assert_eq!((status, again), (200, accepted));
    assert_eq!(last_seq(api), 1);

    // A personal coupon for the identified customer passes.
    let personal = token(
        &keys,
        "c-j",
        serde_json::json!({"customer": "p:0b5e1c3a-1d2f-4c1a-9f2e-0123456789ab", "value": 50}),
    );
    let (status, answer) = redeem(
        api,
        &personal,
        "r2",
        Some("p:0b5e1c3a-1d2f-4c1a-9f2e-0123456789ab"),
    );
    assert_eq!(status, 200, "{answer}");
}

#[test]
fn a_gateway_without_coupon_keys_trusts_no_coupon() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys();
    let url = format!("mqtt://127.0.0.1:{}", free_port());
    let (_gateway, api) = start_gateway(dir.path(), &gateway_config(dir.path(), &url, 0, ""));
    let (status, answer) = redeem(api, &token(&keys, "c-a", serde_json::json!({})), "r1", None);
    assert_eq!((status, code(&answer)), (422, "unknown_key"), "{answer}");
}

fn central_coupon_rows(db: &Path, coupon: &str) -> (i64, i64) {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let events: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM events WHERE kind = 'coupon_redeemed' AND body LIKE ?1",
            [format!("%\"coupon\":\"{coupon}\"%")],
            |r| r.get(0),
        )
        .unwrap();
    let conflicts: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM coupon_conflicts WHERE coupon = ?1",
            [coupon],
            |r| r.get(0),
        )
        .unwrap();
    (events, conflicts)
}

#[test]
fn online_a_coupon_is_single_use_across_the_fleet_and_offline_doubles_become_one_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys();
    let port = free_port();
    let mut broker = start_broker(BrokerKind::Embedded, dir.path(), port);
    let url = format!("mqtt://127.0.0.1:{port}");
    let (_central, db) = start_central(dir.path(), &url);
    let mut gateways = Vec::new();
    for (name, extra) in [("one", ""), ("two", "[gateway]\nid = \"gw-2\"\n")] {
        let home = dir.path().join(name);
        std::fs::create_dir_all(&home).unwrap();
        let config = gateway_config(&home, &url, 0, &coupon_config(&keys, extra));
        let (process, api) = start_gateway(&home, &config);
        wait_connected(&http(), api);
        gateways.push((process, api));
    }
    let (one, two) = (gateways[0].1, gateways[1].1);

    // Online: reserved at central first; the second store is refused.
    let online = token(&keys, "c-online", serde_json::json!({"offline": false}));
    let (status, answer) = redeem(one, &online, "r1", None);
    assert_eq!(
        (status, answer["mode"].as_str()),
        (200, Some("online")),
        "{answer}"
    );
    let (status, answer) = redeem(two, &online, "r9", None);
    assert_eq!(
        (status, code(&answer)),
        (409, "already_redeemed"),
        "{answer}"
    );

    // Offline at both stores: both accept under the offline policy.
    broker.kill9();
    for api in [one, two] {
        eventually("gateway saw the broker go", Duration::from_secs(10), || {
            health(&http(), api)["sync"]["connected"] == false
        });
    }
    let offline = token(&keys, "c-offline", serde_json::json!({}));
    for (api, receipt) in [(one, "r2"), (two, "r3")] {
        let (status, answer) = redeem(api, &offline, receipt, None);
        assert_eq!(
            (status, answer["mode"].as_str()),
            (200, Some("offline")),
            "{answer}"
        );
    }
    let _broker = start_broker(BrokerKind::Embedded, dir.path(), port);
    eventually(
        "both redemptions reach central",
        Duration::from_secs(30),
        || central_coupon_rows(&db, "c-offline").0 == 2,
    );
    assert_eq!(
        central_coupon_rows(&db, "c-offline"),
        (2, 1),
        "both events, one conflict"
    );
    assert_eq!(central_coupon_rows(&db, "c-online"), (1, 0));
}
