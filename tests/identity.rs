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
