//! The customer across channels, end to end over a real broker with the reference central:
//! loyalty points earned and spent at the till (within the balance, offline within the cap)
//! and reconciled exactly at central; the online channel (registration, app tokens, online
//! purchases, coupons, reports); and the right to erasure, checked in the database files'
//! bytes on the box and at central.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::scenarios::wait_connected;
use common::*;
use serde_json::{json, Value};
use storegate::identity::HmacKey;
use storegate::protocol::IdentifierKind;

const KEY: &str = "c3RvcmVnYXRlLXRlc3QtaWRlbnRpdHkta2V5IQ==";
const TOKEN: &str = "online-channel-test-token";

fn identity_section() -> String {
    format!("[identity]\nhmac_key = \"{KEY}\"\nlookup_timeout_ms = 300\n")
}

/// Central with its online channel on `api`.
fn central_with_api(
    dir: &Path,
    url: &str,
    api: SocketAddr,
    sections: &str,
) -> (Proc, std::path::PathBuf) {
    start_central_with(
        dir,
        url,
        &format!("api_listen = \"{api}\"\napi_tokens = [\"{TOKEN}\"]\n"),
        &format!("[identity]\nhmac_key = \"{KEY}\"\n{sections}"),
    )
}

fn call(method: &str, url: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let agent = http();
    let mut response = match (method, body) {
        ("GET", _) => {
            let mut request = agent.get(url);
            if let Some(token) = token {
                request = request.header("Authorization", &format!("Bearer {token}"));
            }
            request.call().unwrap()
        }
        ("DELETE", _) => {
            let mut request = agent.delete(url);
            if let Some(token) = token {
                request = request.header("Authorization", &format!("Bearer {token}"));
            }
            request.call().unwrap()
        }
        (_, body) => {
            let mut request = agent.post(url);
            if let Some(token) = token {
                request = request.header("Authorization", &format!("Bearer {token}"));
            }
            request.send_json(body.unwrap_or(json!({}))).unwrap()
        }
    };
    let status = response.status().as_u16();
    (
        status,
        response.body_mut().read_json().unwrap_or(Value::Null),
    )
}

fn identify(api: SocketAddr, identifiers: Value) -> Value {
    let (status, answer) = call(
        "POST",
        &format!("http://{api}/v1/customers/identify"),
        None,
        Some(json!({ "till": "t1", "identifiers": identifiers })),
    );
    assert_eq!(status, 200, "{answer}");
    answer
}

/// A purchase of `total_minor` by `customer`, spending `redeem` points.
fn buy(
    api: SocketAddr,
    receipt: &str,
    customer: &str,
    total_minor: i64,
    redeem: i64,
) -> (u16, Value) {
    call(
        "POST",
        &format!("http://{api}/v1/purchases"),
        None,
        Some(json!({
            "till": "t1", "receipt": receipt, "customer": customer,
            "lines": [{ "sku": "basket", "qty": 1, "unit_minor": total_minor }],
            "total_minor": total_minor, "currency": "EUR",
            "points": 999, "points_redeemed": redeem,
        })),
    )
}

fn balance(api: SocketAddr, customer: &str) -> Value {
    let (status, view) = call(
        "GET",
        &format!("http://{api}/v1/customers/{customer}"),
        None,
        None,
    );
    assert_eq!(status, 200, "{view}");
    view
}

fn last_seq(api: SocketAddr) -> u64 {
    health(&http(), api)["journal"]["last_seq"]
        .as_u64()
        .unwrap()
}

/// Points by the `[loyalty]` rule, never the till's own figure; spending within the balance
/// the box knows (central's view plus what it has not synced), offline only within the cap;
/// every refusal journals nothing; and after reconnect central's ledger holds exactly what
/// the box granted.
/// A box with `loyalty` (a `[loyalty]` table) syncing over the embedded broker to central with
/// its online channel, all running and connected.
struct LoyaltyFleet {
    broker: Proc,
    broker_port: u16,
    _central: Proc,
    central_db: std::path::PathBuf,
    central_api: SocketAddr,
    _gateway: Proc,
    api: SocketAddr,
}

fn loyalty_fleet(dir: &Path, loyalty: &str) -> LoyaltyFleet {
    let broker_port = free_port();
    let broker = start_broker(BrokerKind::Embedded, dir, broker_port);
    let url = format!("mqtt://127.0.0.1:{broker_port}");
    let central_api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (central, central_db) = central_with_api(dir, &url, central_api, "");
    let config = gateway_config(dir, &url, 0, &format!("{}{loyalty}", identity_section()));
    let (gateway, api) = start_gateway(dir, &config);
    wait_connected(&http(), api);
    LoyaltyFleet {
        broker,
        broker_port,
        _central: central,
        central_db,
        central_api,
        _gateway: gateway,
        api,
    }
}

#[test]
fn points_are_earned_by_the_rule_spent_within_the_balance_and_capped_offline() {
    let dir = tempfile::tempdir().unwrap();
    let mut fleet = loyalty_fleet(
        dir.path(),
        "[loyalty]\npoints_per_unit = 1\nunit_minor = 100\noffline_redeem_cap = 30\n",
    );
    let (api, central_api, port) = (fleet.api, fleet.central_api, fleet.broker_port);

    let card = json!([{ "kind": "card", "value": "4000 1234 5678 9" }]);
    let customer = identify(api, card.clone())["customer"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, sale) = buy(api, "r-1", &customer, 5050, 0);
    assert_eq!(status, 201, "{sale}");
    assert_eq!(
        (sale["points"].as_i64(), sale["balance"].as_i64()),
        (Some(50), Some(50)),
        "{sale}"
    );

    // Central resolves the card into a profile and shares its balance; the box's own pending
    // points go once central has acked them.
    eventually(
        "central's view reached the box",
        Duration::from_secs(20),
        || {
            let view = balance(api, &customer);
            view["central_points"] == 50
                && view["pending_earned"] == 0
                && view["customer"].as_str().unwrap().starts_with("p:")
        },
    );
    let profile = balance(api, &customer)["customer"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(identify(api, card.clone())["points"], 50);

    let before = last_seq(api);
    let (status, refused) = buy(api, "r-2", &customer, 1000, 61);
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (409, Some("insufficient_points")),
        "{refused}"
    );
    assert_eq!(refused["error"]["balance"], 50);
    assert_eq!(last_seq(api), before, "a refusal journals nothing");
    let (status, spent) = buy(api, "r-2", &customer, 1000, 20);
    assert_eq!(status, 201, "{spent}");
    assert_eq!(
        (spent["points"].as_i64(), spent["balance"].as_i64()),
        (Some(10), Some(40)),
        "{spent}"
    );

    eventually(
        "central's new balance reached the box",
        Duration::from_secs(20),
        || {
            let view = balance(api, &customer);
            view["central_points"] == 40 && view["pending_redeemed"] == 0
        },
    );

    fleet.broker.kill9();
    eventually("offline", Duration::from_secs(10), || {
        health(&http(), api)["sync"]["connected"] == false
    });
    let (status, offline) = buy(api, "r-3", &profile, 200, 25);
    assert_eq!(status, 201, "within the cap: {offline}");
    let before = last_seq(api);
    let (status, capped) = buy(api, "r-4", &profile, 200, 10);
    assert_eq!(
        (status, capped["error"]["code"].as_str()),
        (409, Some("offline_points_cap")),
        "{capped}"
    );
    assert_eq!(
        (
            capped["error"]["cap"].as_i64(),
            capped["error"]["spent"].as_i64()
        ),
        (Some(30), Some(25))
    );
    assert_eq!(last_seq(api), before, "a refusal journals nothing");
    let expected = 50 + 10 - 20 + 2 - 25;
    assert_eq!(balance(api, &customer)["points"], expected);

    let _broker = start_broker(BrokerKind::Embedded, dir.path(), port);
    eventually(
        "central's ledger matches the box",
        Duration::from_secs(20),
        || {
            let (status, view) = call(
                "GET",
                &format!("http://{central_api}/v1/customers/{profile}"),
                Some(TOKEN),
                None,
            );
            status == 200 && view["points"] == expected
        },
    );
    eventually(
        "the box shows central's balance",
        Duration::from_secs(20),
        || {
            let view = balance(api, &customer);
            view["points"] == expected && view["central_points"] == expected
        },
    );
}

/// The online channel: a customer registered on the web, found again by a verified phone,
/// shown their app code; the code scanned at a till finds the same profile through
/// `profile.lookup`; online orders earn points once per order; coupons are signed; figures
/// are reported; every refusal has its code.
#[test]
fn the_online_channel_registers_customers_a_till_recognises() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = start_broker(BrokerKind::Embedded, dir.path(), port);
    let url = format!("mqtt://127.0.0.1:{port}");
    let api_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let key = storegate::codes::coupon::generate_key().unwrap();
    let coupons = format!("[coupons]\nsigning_key = \"{}\"\n", key.private_key);
    let (_central, _db) = central_with_api(dir.path(), &url, api_addr, &coupons);
    let config = gateway_config(
        dir.path(),
        &url,
        0,
        &format!(
            "{}[coupons]\npublic_keys = [\"{}\"]\n",
            identity_section(),
            key.public_key
        ),
    );
    let (_gateway, till) = start_gateway(dir.path(), &config);
    wait_connected(&http(), till);
    let central = format!("http://{api_addr}");

    let (status, _) = call(
        "POST",
        &format!("{central}/v1/customers"),
        None,
        Some(json!({"identifiers": []})),
    );
    assert_eq!(status, 401, "no token, no access");
    let email = json!({ "kind": "email", "value": "Lena@Example.com", "verified": true });
    let phone = json!({ "kind": "phone", "value": "+49 151 2345678", "verified": true });
    let (status, created) = call(
        "POST",
        &format!("{central}/v1/customers"),
        Some(TOKEN),
        Some(json!({ "identifiers": [email, phone] })),
    );
    assert_eq!(
        (status, created["created"].as_bool()),
        (201, Some(true)),
        "{created}"
    );
    let lena = created["customer"].as_str().unwrap().to_string();
    let (status, found) = call(
        "POST",
        &format!("{central}/v1/customers"),
        Some(TOKEN),
        Some(json!({ "identifiers": [phone] })),
    );
    assert_eq!(
        (status, found["customer"].as_str()),
        (200, Some(lena.as_str())),
        "{found}"
    );
    let unverified = json!({ "kind": "phone", "value": "+49 151 2345678", "verified": false });
    let (status, refused) = call(
        "POST",
        &format!("{central}/v1/customers"),
        Some(TOKEN),
        Some(json!({ "identifiers": [unverified] })),
    );
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (422, Some("nothing_mergeable")),
        "{refused}"
    );
    let (status, junk) = call(
        "POST",
        &format!("{central}/v1/customers"),
        Some(TOKEN),
        Some(json!({ "identifiers": [{ "kind": "card", "value": "000000000" }] })),
    );
    assert_eq!(
        (status, junk["error"]["field"].as_str()),
        (422, Some("identifiers[0].value")),
        "{junk}"
    );

    let (status, app) = call(
        "POST",
        &format!("{central}/v1/customers/{lena}/app-token"),
        Some(TOKEN),
        None,
    );
    assert_eq!(status, 200, "{app}");
    let token = app["token"].as_str().unwrap();
    assert!(token.starts_with("SGA1.") && token.len() > 40, "{token}");
    let at_till = identify(till, json!([{ "kind": "app", "value": token }]));
    assert_eq!(
        (at_till["customer"].as_str(), at_till["known"].as_str()),
        (Some(lena.as_str()), Some("central")),
        "{at_till}"
    );
    let again = identify(till, json!([{ "kind": "app", "value": token }]));
    assert_eq!(
        again["known"], "local",
        "the box keeps what it learned: {again}"
    );

    let order = json!({ "customer": lena, "order": "web-1001", "lines": [{ "sku": "shoes", "qty": 1, "unit_minor": 8999 }], "total_minor": 8999, "currency": "EUR" });
    let (status, bought) = call(
        "POST",
        &format!("{central}/v1/online-purchases"),
        Some(TOKEN),
        Some(order.clone()),
    );
    assert_eq!(
        (
            status,
            bought["points"].as_i64(),
            bought["balance"].as_i64()
        ),
        (201, Some(89), Some(89)),
        "{bought}"
    );
    let (status, replay) = call(
        "POST",
        &format!("{central}/v1/online-purchases"),
        Some(TOKEN),
        Some(order),
    );
    assert_eq!(
        (status, replay["balance"].as_i64()),
        (200, Some(89)),
        "a retried order counts once: {replay}"
    );
    let other = json!({ "customer": lena, "order": "web-1001", "lines": [{ "sku": "hat", "qty": 1, "unit_minor": 100 }], "total_minor": 100, "currency": "EUR" });
    let (status, conflict) = call(
        "POST",
        &format!("{central}/v1/online-purchases"),
        Some(TOKEN),
        Some(other),
    );
    assert_eq!(
        (status, conflict["error"]["code"].as_str()),
        (409, Some("order_conflict")),
        "{conflict}"
    );
    eventually(
        "the till sees the online points",
        Duration::from_secs(10),
        || identify(till, json!([{ "kind": "app", "value": token }]))["points"] == 89,
    );

    let (status, coupon) = call(
        "POST",
        &format!("{central}/v1/coupons"),
        Some(TOKEN),
        Some(json!({
        "id": "c-web-1", "campaign": "welcome", "kind": "amount", "value": 500, "min_basket_minor": 0,
        "valid_from": "2026-01-01T00:00:00Z", "valid_to": "2030-01-01T00:00:00Z", "uses": 1,
        "customer": lena, "offline": true, "stores": null })),
    );
    assert_eq!(status, 201, "{coupon}");
    let (status, redeemed) = redeem_coupon(
        till,
        coupon["token"].as_str().unwrap(),
        "r-coupon",
        Some(&lena),
    );
    assert_eq!(status, 200, "the till honours central's coupon: {redeemed}");
    let (status, bad) = call(
        "POST",
        &format!("{central}/v1/coupons"),
        Some(TOKEN),
        Some(json!({ "id": "c-x" })),
    );
    assert_eq!(
        (status, bad["error"]["code"].as_str()),
        (422, Some("invalid_coupon")),
        "{bad}"
    );

    let (status, profile) = call(
        "GET",
        &format!("{central}/v1/customers/{lena}"),
        Some(TOKEN),
        None,
    );
    assert_eq!(status, 200, "{profile}");
    let kinds: Vec<&str> = profile["identifiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.len(), 3, "{profile}");
    for kind in ["email", "phone", "app"] {
        assert!(kinds.contains(&kind), "{profile}");
    }
    assert!(
        !profile.to_string().contains("lena@example.com"),
        "no raw values: {profile}"
    );
    assert!(
        profile["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["channel"] == "online"),
        "{profile}"
    );

    let (status, kpis) = call(
        "GET",
        &format!("{central}/v1/reports/kpis?from=2026-01-01T00:00:00Z&to=2100-01-01T00:00:00Z"),
        Some(TOKEN),
        None,
    );
    assert_eq!(status, 200, "{kpis}");
    assert_eq!(
        (
            kpis["online"]["purchases"].as_i64(),
            kpis["online"]["revenue_minor"].as_i64()
        ),
        (Some(1), Some(8999)),
        "{kpis}"
    );
    assert!(
        kpis["store"]["identifications"].as_i64().unwrap() >= 2,
        "{kpis}"
    );
    let (status, _) = call(
        "GET",
        &format!("{central}/v1/reports/kpis?from=yesterday&to=now"),
        Some(TOKEN),
        None,
    );
    assert_eq!(status, 422);
    let (status, document) = call("GET", &format!("{central}/v1/openapi.json"), None, None);
    assert_eq!((status, document["openapi"].as_str()), (200, Some("3.0.3")));
}

/// Every place a file could keep `needle`: the SQLite file, its WAL and shared memory.
fn found_in_files(dir: &Path, prefix: &str, needle: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .filter(|e| {
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        })
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect()
}

/// The right to erasure: after `DELETE /v1/customers/{ref}` none of the customer's identifier
/// hashes is anywhere in the box's journal files or in central's store files (WAL included),
/// the box forgets them (the same card is a stranger now), and the pseudonymous events stay.
#[test]
fn an_erased_customer_leaves_no_identifier_in_any_database_file() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = start_broker(BrokerKind::Embedded, dir.path(), port);
    let url = format!("mqtt://127.0.0.1:{port}");
    let api_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let central_dir = dir.path().join("central");
    std::fs::create_dir_all(&central_dir).unwrap();
    let (_central, _db) = central_with_api(&central_dir, &url, api_addr, "");
    let box_dir = dir.path().join("box");
    std::fs::create_dir_all(&box_dir).unwrap();
    let config = gateway_config(&box_dir, &url, 0, &identity_section());
    let (_gateway, till) = start_gateway(&box_dir, &config);
    wait_connected(&http(), till);

    let key = HmacKey::try_from(KEY.to_string()).unwrap();
    let (card, email) = ("5012 3456 7890", "erase.me@example.net");
    let hashes = [
        key.identifier(IdentifierKind::Card, card, None)
            .unwrap()
            .hash,
        key.identifier(IdentifierKind::Email, email, Some(true))
            .unwrap()
            .hash,
    ];
    let seen = identify(
        till,
        json!([{ "kind": "card", "value": card }, { "kind": "email", "value": email, "verified": true }]),
    );
    let first_ref = seen["customer"].as_str().unwrap().to_string();
    let (status, _) = buy(till, "r-erase-1", &first_ref, 1500, 0);
    assert_eq!(status, 201);
    let profile = {
        let mut profile = String::new();
        eventually(
            "central made a profile and told the box",
            Duration::from_secs(20),
            || {
                profile = balance(till, &first_ref)["customer"]
                    .as_str()
                    .unwrap()
                    .to_string();
                profile.starts_with("p:")
            },
        );
        profile
    };
    // The test can fail: the hashes are in both stores' files before the erasure.
    for hash in &hashes {
        assert!(
            !found_in_files(&box_dir, "journal.db", hash).is_empty(),
            "{hash} not on the box before"
        );
        assert!(
            !found_in_files(&central_dir, "central.db", hash).is_empty(),
            "{hash} not at central before"
        );
    }

    let (status, erased) = call(
        "DELETE",
        &format!("http://{api_addr}/v1/customers/{profile}"),
        Some(TOKEN),
        None,
    );
    assert_eq!(
        (status, erased["erased"].as_bool()),
        (200, Some(true)),
        "{erased}"
    );
    for hash in &hashes {
        eventually(
            "the box's files hold no identifier of the customer",
            Duration::from_secs(20),
            || found_in_files(&box_dir, "journal.db", hash).is_empty(),
        );
        assert_eq!(
            found_in_files(&central_dir, "central.db", hash),
            Vec::<String>::new(),
            "{hash} at central"
        );
    }
    let (status, gone) = call(
        "GET",
        &format!("http://{api_addr}/v1/customers/{profile}"),
        Some(TOKEN),
        None,
    );
    assert_eq!(
        (status, gone["error"]["code"].as_str()),
        (410, Some("customer_erased"))
    );
    let again = identify(till, json!([{ "kind": "card", "value": card }]));
    assert_ne!(
        again["customer"],
        profile.as_str(),
        "the card is a stranger now: {again}"
    );
    assert_ne!(again["customer"], first_ref.as_str(), "{again}");
    // The sale stays, under its pseudonymous ref.
    assert!(!found_in_files(&box_dir, "journal.db", "r-erase-1").is_empty());
}

/// Central's `/healthz` at a glance, per part.
fn central_health(central: SocketAddr, token: Option<&str>) -> (u16, Value) {
    call("GET", &format!("http://{central}/healthz"), token, None)
}

/// A store fault for central's SQLite file: every insert into `table` aborts until the
/// trigger is dropped, as a full disk or a broken database would fail it.
fn inject_fault(db: &Path, table: &str, on: bool) {
    let connection = rusqlite::Connection::open(db).unwrap();
    connection.busy_timeout(Duration::from_secs(10)).unwrap();
    let sql = if on {
        format!("CREATE TRIGGER fault_{table} BEFORE INSERT ON {table} BEGIN SELECT RAISE(ABORT, 'injected fault'); END")
    } else {
        format!("DROP TRIGGER fault_{table}")
    };
    connection.execute_batch(&sql).unwrap();
}

/// Central's `/healthz` names the part that is broken (writers that cannot store, a resolver
/// whose rounds fail, the MQTT session), answers 503 while one is, shows the detail only to a
/// token holder, and turns healthy again once the fault is gone, with nothing lost: the
/// purchase stored while the resolver failed is on the customer's balance afterwards.
#[test]
fn central_health_names_what_is_broken_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mut fleet = loyalty_fleet(
        dir.path(),
        "[loyalty]\npoints_per_unit = 1\nunit_minor = 100\n",
    );
    let (api, central, db) = (fleet.api, fleet.central_api, fleet.central_db.clone());
    let healthy = || {
        let (status, report) = central_health(central, Some(TOKEN));
        status == 200 && report["status"] == "ok"
    };
    eventually("central healthy", Duration::from_secs(10), healthy);
    let (_, report) = central_health(central, Some(TOKEN));
    assert_eq!(report["mqtt"]["connected"], true, "{report}");
    assert_eq!(report["resolver"]["pending_effects"], 0, "{report}");
    assert_eq!(
        central_health(central, None),
        (200, json!({ "status": "ok" })),
        "no detail without the token"
    );

    // Writers that cannot store: the batch stays unacked at the box, and central says so.
    inject_fault(&db, "events", true);
    let card = json!([{ "kind": "card", "value": "4000 5555 0000 1" }]);
    let customer = identify(api, card)["customer"]
        .as_str()
        .unwrap()
        .to_string();
    eventually("writers reported broken", Duration::from_secs(15), || {
        let (status, report) = central_health(central, Some(TOKEN));
        status == 503 && report["broken"] == json!(["writers"])
    });
    assert_eq!(
        central_health(central, None),
        (503, json!({ "status": "broken" }))
    );
    assert!(health(&http(), api)["journal"]["backlog"].as_u64().unwrap() > 0);
    inject_fault(&db, "events", false);
    eventually(
        "the box's backlog acked and central healthy",
        Duration::from_secs(15),
        || health(&http(), api)["journal"]["backlog"] == 0 && healthy(),
    );

    // A resolver whose rounds fail: acks go on, the effects wait in the queue.
    inject_fault(&db, "points_ledger", true);
    let (status, sale) = buy(api, "r-health-1", &customer, 5000, 0);
    assert_eq!(status, 201, "{sale}");
    eventually("resolver reported broken", Duration::from_secs(15), || {
        let (status, report) = central_health(central, Some(TOKEN));
        status == 503
            && report["broken"] == json!(["resolver"])
            && report["resolver"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("injected fault"))
            && report["resolver"]["pending_effects"].as_u64() >= Some(1)
    });
    eventually("acked all the same", Duration::from_secs(10), || {
        health(&http(), api)["journal"]["backlog"] == 0
    });
    assert_eq!(central_health(central, Some(TOKEN)).0, 503, "still failing");
    inject_fault(&db, "points_ledger", false);
    eventually("resolver caught up", Duration::from_secs(20), || {
        healthy() && central_health(central, Some(TOKEN)).1["resolver"]["pending_effects"] == 0
    });
    let (status, view) = call(
        "GET",
        &format!("http://{central}/v1/customers/{customer}"),
        Some(TOKEN),
        None,
    );
    assert_eq!((status, view["points"].as_i64()), (200, Some(50)), "{view}");

    // The broker away: no acks can go out.
    fleet.broker.kill9();
    eventually("mqtt reported broken", Duration::from_secs(15), || {
        let (status, report) = central_health(central, Some(TOKEN));
        status == 503 && report["broken"] == json!(["mqtt"]) && report["mqtt"]["connected"] == false
    });
    let _broker = start_broker(BrokerKind::Embedded, dir.path(), fleet.broker_port);
    eventually("central reconnected", Duration::from_secs(20), healthy);
}
