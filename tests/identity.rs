//! Central's identity changes on a real gateway: merges broadcast on `storegate/v1/identity`
//! and merges missed while the gateway was away (asked with `identity.since` after a restart)
//! both reach the alias table, only those that concern refs the box has seen are kept, and a
//! personal coupon follows its customer through the merges.
//!
//! The changes are published and stored here by the test in central's place: central's own
//! identity resolution is the part of the identity issue still to come.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use common::scenarios::wait_connected;
use common::*;
use rumqttc::QoS;
use serialport::{SerialPort, TTYPort};
use storegate::codes::coupon;

const OLD: &str = "p:0b5e1c3a-1d2f-4c1a-9f2e-0123456789ab";
const OLDER: &str = "p:00000000-1d2f-4c1a-9f2e-0123456789ab";

fn redeem(api: SocketAddr, token: &str, receipt: &str, customer: &str) -> (u16, serde_json::Value) {
    let mut response = http()
        .post(&format!("http://{api}/v1/coupons/redeem"))
        .send_json(serde_json::json!({
            "till": "t1", "token": token, "customer": customer, "receipt": receipt,
            "basket_minor": 1000
        }))
        .unwrap();
    let status = response.status().as_u16();
    (status, response.body_mut().read_json().unwrap())
}

#[test]
fn merges_live_and_missed_reach_the_alias_table_and_a_personal_coupon_follows_them() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = start_broker(BrokerKind::Embedded, dir.path(), port);
    let url = format!("mqtt://127.0.0.1:{port}");
    let (_central, central_db) = start_central(dir.path(), &url);
    let key = coupon::generate_key().unwrap();
    let personal = |id: &str, owner: &str| {
        coupon::issue(
            &key.private_key,
            &serde_json::json!({"id": id, "kind": "amount", "value": 100, "customer": owner, "offline": true}),
        )
        .unwrap()
    };
    let (mut scanner, slave) = TTYPort::pair().unwrap();
    let extra = format!(
        "[identity]\nhmac_key = \"c3RvcmVnYXRlLXRlc3QtaWRlbnRpdHkta2V5IQ==\"\n[coupons]\npublic_keys = [\"{}\"]\n[[devices.scanners]]\nname = \"s0\"\nport = \"{}\"\ntill = \"t1\"\ncard_number = {{ barcode_prefixes = [\"2790\"] }}\n",
        key.public_key,
        slave.name().unwrap()
    );
    let config = gateway_config(dir.path(), &url, free_port(), &extra);
    let (mut gateway, api) = start_gateway(dir.path(), &config);
    wait_connected(&http(), api);

    // A loyalty card at the till: a provisional ref, this box's only customer so far.
    let live = LiveEvents::subscribe(api, "?till=t1");
    write!(scanner, "2790000012345\r").unwrap();
    let customer = loop {
        let (name, event) = live.next(Duration::from_secs(10));
        if name == "identified" {
            break event["customer"].as_str().unwrap().to_string();
        }
    };
    assert!(customer.starts_with("prov:gw-1:"), "{customer}");
    let (_, refused) = redeem(api, &personal("c-1", OLD), "r1", &customer);
    assert_eq!(refused["error"]["code"], "wrong_customer", "{refused}");

    // Central merges the card's ref into an existing profile, and two strangers' profiles.
    let (central_side, _thread) = publisher(port);
    let change = |rev: u64, from: &str, to: &str| serde_json::json!({"rev": rev, "merges": [{"from": from, "to": to}], "profiles": []});
    central_side
        .publish(
            "storegate/v1/identity",
            QoS::AtLeastOnce,
            false,
            change(1, &customer, OLD).to_string().into_bytes(),
        )
        .unwrap();
    central_side
        .publish(
            "storegate/v1/identity",
            QoS::AtLeastOnce,
            false,
            change(
                2,
                "p:aaaaaaaa-0000-0000-0000-000000000001",
                "p:aaaaaaaa-0000-0000-0000-000000000002",
            )
            .to_string()
            .into_bytes(),
        )
        .unwrap();
    let mut attempt = 0;
    eventually(
        "the coupon follows the merge",
        Duration::from_secs(10),
        || {
            attempt += 1;
            redeem(
                api,
                &personal("c-1", OLD),
                &format!("r-live-{attempt}"),
                &customer,
            )
            .0 == 200
        },
    );

    // While the gateway is away, central merges that profile into an older one (rev 3).
    assert_eq!(gateway.terminate(Duration::from_secs(10)), Some(0));
    let db = rusqlite::Connection::open(&central_db).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    for rev in 1..=3u64 {
        let body = match rev {
            1 => change(1, &customer, OLD),
            2 => change(
                2,
                "p:aaaaaaaa-0000-0000-0000-000000000001",
                "p:aaaaaaaa-0000-0000-0000-000000000002",
            ),
            _ => change(3, OLD, OLDER),
        };
        db.execute(
            "INSERT OR REPLACE INTO identity_changes(rev, change) VALUES (?1, ?2)",
            rusqlite::params![rev as i64, body.to_string()],
        )
        .unwrap();
    }
    drop(db);
    let (_gateway, api) = start_gateway(dir.path(), &config);
    let mut attempt = 0;
    eventually(
        "the missed change caught up after the restart",
        Duration::from_secs(10),
        || {
            attempt += 1;
            redeem(
                api,
                &personal("c-2", OLDER),
                &format!("r-caught-{attempt}"),
                &customer,
            )
            .0 == 200
        },
    );

    // Only merges that concern this box's customers were kept; the strangers' were not.
    let journal = rusqlite::Connection::open_with_flags(
        dir.path().join("journal.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let kept: Vec<(String, String)> = journal
        .prepare("SELECT from_ref, to_ref FROM aliases ORDER BY to_ref")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        kept,
        vec![
            (OLD.to_string(), OLDER.to_string()),
            (customer.clone(), OLD.to_string())
        ]
    );
    let rev: i64 = journal
        .query_row(
            "SELECT value FROM counters WHERE name = 'identity_rev'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        rev, 3,
        "every change up to 3 applied, the strangers' included"
    );
}

fn identify(api: SocketAddr, identifiers: serde_json::Value) -> (u16, serde_json::Value) {
    let mut response = http()
        .post(&format!("http://{api}/v1/customers/identify"))
        .send_json(serde_json::json!({ "till": "t1", "identifiers": identifiers }))
        .unwrap();
    let status = response.status().as_u16();
    (status, response.body_mut().read_json().unwrap())
}

/// The till's identification: this box's knowledge first, then central within the lookup
/// timeout (here there is a broker but no central: it never answers), else a provisional ref.
/// Mergeable identifiers alone decide; an unverified phone is only a look-up when nothing
/// mergeable was given. No raw card number, phone or email reaches the journal files, the log
/// or the broker.
#[test]
fn identification_decides_by_mergeable_identifiers_and_never_stores_raw_values() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = start_broker(BrokerKind::Embedded, dir.path(), port);
    let url = format!("mqtt://127.0.0.1:{port}");
    let everything = Subscription::start(port, "storegate/v1/#");
    let extra = "[identity]\nhmac_key = \"c3RvcmVnYXRlLXRlc3QtaWRlbnRpdHkta2V5IQ==\"\nlookup_timeout_ms = 100\n";
    let config = gateway_config(dir.path(), &url, 0, extra);
    let (gateway, api) = start_gateway(dir.path(), &config);
    wait_connected(&http(), api);
    let (card_a, phone_a, email_a, card_b) = (
        "6001 2345 6789",
        "+4915123456789",
        "Anna.Muster@Example.org",
        "7001234599",
    );

    let (status, first) = identify(
        api,
        serde_json::json!([
            {"kind": "card", "value": card_a}, {"kind": "phone", "value": phone_a, "verified": false},
            {"kind": "email", "value": email_a, "verified": true}
        ]),
    );
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        first["known"], "provisional",
        "central never answered: {first}"
    );
    let anna = first["customer"].as_str().unwrap().to_string();

    let (_, again) = identify(
        api,
        serde_json::json!([{"kind": "card", "value": "600123456789"}]),
    );
    assert_eq!(
        (again["customer"].as_str(), again["known"].as_str()),
        (Some(anna.as_str()), Some("local"))
    );
    // The unverified phone alone finds her (a look-up, no merge) ...
    let (_, by_phone) = identify(
        api,
        serde_json::json!([{"kind": "phone", "value": phone_a, "verified": false}]),
    );
    assert_eq!(by_phone["customer"], anna.as_str());
    // ... but beside a new card it decides nothing: a shared kiosk glues no one together.
    let (_, stranger) = identify(
        api,
        serde_json::json!([
            {"kind": "card", "value": card_b}, {"kind": "phone", "value": phone_a, "verified": false}
        ]),
    );
    assert_ne!(stranger["customer"], anna.as_str());
    assert_eq!(stranger["known"], "provisional");
    // Her verified email decides, whatever new card comes with it.
    let (_, verified) = identify(
        api,
        serde_json::json!([
            {"kind": "card", "value": "8001234567"}, {"kind": "email", "value": " anna.muster@example.org ", "verified": true}
        ]),
    );
    assert_eq!(verified["customer"], anna.as_str());

    let (status, junk) = identify(
        api,
        serde_json::json!([{"kind": "card", "value": "1111111"}]),
    );
    assert_eq!(
        (status, junk["error"]["code"].as_str()),
        (422, Some("junk_identifier")),
        "{junk}"
    );
    assert_eq!(junk["error"]["field"], "identifiers[0].value");

    // Nothing raw anywhere: journal files (WAL included), the log, every MQTT payload.
    let published: Vec<String> = std::iter::from_fn(|| everything.messages.try_recv().ok())
        .map(|m| m.to_string())
        .collect();
    assert!(!published.is_empty());
    let mut haystacks: Vec<(String, Vec<u8>)> = vec![
        ("log".into(), gateway.log_text().into_bytes()),
        ("mqtt".into(), published.join("\n").into_bytes()),
    ];
    for entry in std::fs::read_dir(dir.path()).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with("journal.db") {
            haystacks.push((name, std::fs::read(entry.path()).unwrap()));
        }
    }
    for raw in [
        "600123456789",
        "6001 2345 6789",
        "4915123456789",
        "anna.muster@example.org",
        "Anna.Muster",
        card_b,
    ] {
        for (place, bytes) in &haystacks {
            assert!(
                !bytes.windows(raw.len()).any(|w| w == raw.as_bytes()),
                "{raw} found in {place}"
            );
        }
    }
}
