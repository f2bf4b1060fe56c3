//! Central's identity changes on a real gateway: merges broadcast on `storegate/v1/identity`
//! and merges missed while the gateway was away (asked with `identity.since` after a restart)
//! both reach the alias table, only those that concern refs the box has seen are kept, and a
//! personal coupon follows its customer through the merges.
//!
//! The first test publishes and stores changes in central's place, to choose which arrive live
//! and which are missed; the convergence test runs the reference central's own resolution and
//! points ledger with two boxes that met one card offline.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use common::scenarios::wait_connected;
use common::*;
use serialport::{SerialPort, TTYPort};
use storegate::codes::coupon;

fn redeem(api: SocketAddr, token: &str, receipt: &str, customer: &str) -> (u16, serde_json::Value) {
    redeem_coupon(api, token, receipt, Some(customer))
}

/// The root a ref resolves to at central (its merge table, followed to the end).
fn central_root(db: &std::path::Path, profile: &str) -> String {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut current = profile.to_string();
    for _ in 0..16 {
        let next: Option<String> = conn
            .query_row(
                "SELECT to_ref FROM profile_aliases WHERE from_ref = ?1",
                [&current],
                |r| r.get(0),
            )
            .ok();
        match next {
            Some(next) => current = next,
            None => break,
        }
    }
    current
}

fn gateway_home(dir: &std::path::Path, name: &str, url: &str, extra: &str) -> (Proc, SocketAddr) {
    let home = dir.join(name);
    std::fs::create_dir_all(&home).unwrap();
    let config = gateway_config(&home, url, 0, &format!("{IDENTITY_KEY}{extra}"));
    start_gateway(&home, &config)
}

const IDENTITY_KEY: &str =
    "[identity]\nhmac_key = \"c3RvcmVnYXRlLXRlc3QtaWRlbnRpdHkta2V5IQ==\"\nlookup_timeout_ms = 200\n";

/// Central's resolution reaches the boxes: live (a card scanned at the till, its provisional
/// ref merged into a new profile, and a personal coupon for that profile accepted for it) and
/// missed (changes made while the box was off, asked for with `identity.since` after its
/// restart), keeping only merges that concern this box's customers.
#[test]
fn merges_live_and_missed_reach_the_alias_table_and_a_personal_coupon_follows_them() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = start_broker(BrokerKind::Embedded, dir.path(), port);
    let url = format!("mqtt://127.0.0.1:{port}");
    let (_central, central_db) = start_central(dir.path(), &url);
    let key = coupon::generate_key().unwrap();
    let (mut scanner, slave) = TTYPort::pair().unwrap();
    let one_home = dir.path().join("one");
    std::fs::create_dir_all(&one_home).unwrap();
    let extra = format!(
        "{IDENTITY_KEY}[coupons]\npublic_keys = [\"{}\"]\n[[devices.scanners]]\nname = \"s0\"\nport = \"{}\"\ntill = \"t1\"\ncard_number = {{ barcode_prefixes = [\"2790\"] }}\n",
        key.public_key,
        slave.name().unwrap()
    );
    let one_config = gateway_config(&one_home, &url, free_port(), &extra);
    let (mut one, api) = start_gateway(&one_home, &one_config);
    wait_connected(&http(), api);

    // A loyalty card at the till: a provisional ref; central makes it a profile.
    let live = LiveEvents::subscribe(api, "?till=t1");
    write!(scanner, "2790000012345\r").unwrap();
    let customer = loop {
        let (name, event) = live.next(Duration::from_secs(10));
        if name == "identified" {
            break event["customer"].as_str().unwrap().to_string();
        }
    };
    assert!(customer.starts_with("prov:gw-1:"), "{customer}");
    eventually("central resolved the card", Duration::from_secs(10), || {
        central_root(&central_db, &customer).starts_with("p:")
    });
    let profile = central_root(&central_db, &customer);
    let personal = coupon::issue(
        &key.private_key,
        &serde_json::json!({"id": "c-1", "kind": "amount", "value": 100, "customer": profile, "offline": true}),
    )
    .unwrap();
    let mut attempt = 0;
    eventually(
        "the coupon follows the live merge",
        Duration::from_secs(10),
        || {
            attempt += 1;
            redeem(api, &personal, &format!("r-{attempt}"), &customer).0 == 200
        },
    );

    // While box one is off, box two meets the customer's email alone (a new profile), then
    // the email beside the same card: central merges the newer profile into the card's.
    assert_eq!(one.terminate(Duration::from_secs(10)), Some(0));
    let (_two, two) = gateway_home(dir.path(), "two", &url, "[gateway]\nid = \"gw-2\"\n");
    wait_connected(&http(), two);
    let email = serde_json::json!({"kind": "email", "value": "anna@example.org", "verified": true});
    // Someone else entirely, met only at box two.
    let (_, stranger) = identify(
        two,
        serde_json::json!([{"kind": "card", "value": "5550001234567"}]),
    );
    let stranger = stranger["customer"].as_str().unwrap().to_string();
    identify(two, serde_json::json!([email]));
    let (_, both) = identify(
        two,
        serde_json::json!([{"kind": "card", "value": "2790000012345"}, email]),
    );
    // Box two answered at once with what it knew (the email's provisional ref); central then
    // merges that profile into the card's older one.
    let at_two = both["customer"].as_str().unwrap().to_string();
    eventually(
        "central merged box two's profile into the older one",
        Duration::from_secs(10),
        || central_root(&central_db, &at_two) == profile,
    );

    // Box one comes back, asks for what it missed and keeps what concerns its customer.
    let (_one, api) = start_gateway(&one_home, &one_config);
    wait_connected(&http(), api);
    let journal_path = one_home.join("journal.db");
    let aliases = || -> Vec<(String, String)> {
        let journal = rusqlite::Connection::open_with_flags(
            &journal_path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        let mut statement = journal
            .prepare("SELECT from_ref, to_ref FROM aliases ORDER BY from_ref")
            .unwrap();
        let rows = statement
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<Vec<(String, String)>, _>>()
            .unwrap();
        rows
    };
    eventually(
        "the missed merge caught up",
        Duration::from_secs(10),
        || {
            let kept = aliases();
            kept.iter()
                .any(|(from, to)| from.starts_with("p:") && *to == profile)
        },
    );
    let kept = aliases();
    assert!(
        kept.contains(&(customer.clone(), profile.clone())),
        "{kept:?}"
    );
    // Everything kept is this customer's: it all resolves to the one profile ...
    let mut table = storegate::identity::alias::Aliases::default();
    for (from, to) in &kept {
        table.merge(from, to);
    }
    assert!(
        kept.iter().all(|(from, _)| table.resolve(from) == profile),
        "{kept:?}"
    );
    // ... and the stranger box two met is not this box's business.
    let stranger_profile = central_root(&central_db, &stranger);
    assert!(
        kept.iter().all(|(from, to)| *from != stranger
            && *from != stranger_profile
            && *to != stranger_profile),
        "{kept:?}"
    );
}

/// Two boxes offline each meet the same new card; one also sees a verified phone central
/// already knows. After reconnecting, central and both boxes resolve every ref to the one
/// older profile, whatever order the events arrive in.
#[test]
fn two_offline_boxes_meeting_one_card_converge_on_the_older_profile() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut broker = start_broker(BrokerKind::Embedded, dir.path(), port);
    let url = format!("mqtt://127.0.0.1:{port}");
    let (_central, central_db) = start_central(dir.path(), &url);
    let loyalty = "[loyalty]\npoints_per_unit = 1\nunit_minor = 100\n";
    let (_one_process, one) = gateway_home(dir.path(), "one", &url, loyalty);
    let (_two_process, two) = gateway_home(
        dir.path(),
        "two",
        &url,
        &format!("{loyalty}[gateway]\nid = \"gw-2\"\n"),
    );
    wait_connected(&http(), one);
    wait_connected(&http(), two);
    let phone = serde_json::json!({"kind": "phone", "value": "+4915199999999", "verified": true});
    let (_, known) = identify(one, serde_json::json!([phone]));
    let phone_ref = known["customer"].as_str().unwrap().to_string();
    eventually(
        "central made the phone a profile",
        Duration::from_secs(10),
        || central_root(&central_db, &phone_ref).starts_with("p:"),
    );
    let older = central_root(&central_db, &phone_ref);
    assert_eq!(sell(one, "r-before", &phone_ref, 1200), 12);

    broker.kill9();
    for api in [one, two] {
        eventually("offline", Duration::from_secs(10), || {
            health(&http(), api)["sync"]["connected"] == false
        });
    }
    let card = serde_json::json!({"kind": "card", "value": "4000123456789"});
    let (_, at_one) = identify(one, serde_json::json!([card]));
    let (_, at_two) = identify(two, serde_json::json!([card, phone]));
    let (ref_one, ref_two) = (
        at_one["customer"].as_str().unwrap().to_string(),
        at_two["customer"].as_str().unwrap().to_string(),
    );
    assert_ne!(ref_one, ref_two, "offline, each box has its own ref");
    assert_eq!(sell(one, "r-one", &ref_one, 3050), 30);
    assert_eq!(sell(two, "r-two", &ref_two, 999), 9);
    let expected = 12 + 30 + 9;

    let _broker = start_broker(BrokerKind::Embedded, dir.path(), port);
    eventually("central converged", Duration::from_secs(20), || {
        central_root(&central_db, &ref_one) == older && central_root(&central_db, &ref_two) == older
    });
    for api in [one, two] {
        eventually("the box converged", Duration::from_secs(20), || {
            let (_, answer) = identify(api, serde_json::json!([card]));
            answer["customer"] == older.as_str() && answer["points"] == expected
        });
    }
    // Central's ledger holds each sale once, re-sends and all.
    let conn = rusqlite::Connection::open(&central_db).unwrap();
    let (entries, total): (i64, i64) = conn
        .query_row("SELECT COUNT(*), SUM(points) FROM points_ledger", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((entries, total), (3, expected));
}

/// A sale to `customer`; the points it earned.
fn sell(api: SocketAddr, receipt: &str, customer: &str, total_minor: i64) -> i64 {
    let mut response = http()
        .post(&format!("http://{api}/v1/purchases"))
        .send_json(serde_json::json!({
            "till": "t1", "receipt": receipt, "customer": customer,
            "lines": [{ "sku": "basket", "qty": 1, "unit_minor": total_minor }],
            "total_minor": total_minor, "currency": "EUR",
        }))
        .unwrap();
    let answer: serde_json::Value = response.body_mut().read_json().unwrap();
    assert_eq!(response.status().as_u16(), 201, "{answer}");
    answer["points"].as_i64().unwrap()
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

/// A box killed (`kill -9`) in the middle of a long `identity.since` catch-up (three pages of
/// changes missed while it was off) loses none of them: after its restart it asks again from
/// the rev up to which it had applied everything, and ends with every merge and the newest
/// balance.
#[test]
fn a_restart_in_the_middle_of_catch_up_loses_no_change() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = start_broker(BrokerKind::Embedded, dir.path(), port);
    let url = format!("mqtt://127.0.0.1:{port}");
    let (_central, central_db) = start_central(dir.path(), &url);
    let home = dir.path().join("box");
    std::fs::create_dir_all(&home).unwrap();
    let config = gateway_config(&home, &url, 0, IDENTITY_KEY);
    let (mut gateway, api) = start_gateway(&home, &config);
    wait_connected(&http(), api);
    // Twenty customers of this box, each a profile at central.
    let card = |n: u64| format!("40009876{n:05}");
    let profiles: Vec<String> = (0..20)
        .map(|n| {
            let (_, seen) = identify(api, serde_json::json!([{"kind": "card", "value": card(n)}]));
            let customer = seen["customer"].as_str().unwrap().to_string();
            let mut profile = String::new();
            eventually(
                "central made the card a profile",
                Duration::from_secs(10),
                || {
                    profile = central_root(&central_db, &customer);
                    profile.starts_with("p:")
                },
            );
            profile
        })
        .collect();
    let journal = home.join("journal.db");
    let box_rev = || -> u64 {
        let conn = rusqlite::Connection::open_with_flags(
            &journal,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        conn.query_row(
            "SELECT value FROM counters WHERE name = 'identity_rev'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap() as u64
    };
    eventually(
        "the box has central's change",
        Duration::from_secs(10),
        || box_rev() >= 20,
    );
    assert_eq!(gateway.terminate(Duration::from_secs(10)), Some(0));

    // While the box is off, central records 3,000 changes for its customers: older profiles
    // merged into them, each with a new balance.
    const MISSED: u64 = 3000;
    let start = {
        let mut conn = rusqlite::Connection::open(&central_db).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        let tx = conn.transaction().unwrap();
        let start: u64 = tx
            .query_row(
                "SELECT value FROM counters WHERE name = 'identity_rev'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap() as u64;
        for i in 1..=MISSED {
            let rev = start + i;
            let profile = &profiles[(i % 20) as usize];
            let change = serde_json::json!({
                "rev": rev,
                "merges": [{ "from": format!("p:missed-{i:05}"), "to": profile }],
                "profiles": [{ "ref": profile, "identifiers": [], "points": i }],
            });
            tx.execute(
                "INSERT INTO identity_changes(rev, change) VALUES (?1, ?2)",
                rusqlite::params![rev as i64, change.to_string()],
            )
            .unwrap();
        }
        tx.execute(
            "UPDATE counters SET value = ?1 WHERE name = 'identity_rev'",
            [(start + MISSED) as i64],
        )
        .unwrap();
        tx.commit().unwrap();
        start
    };

    let (mut gateway, _) = start_gateway(&home, &config);
    eventually("the catch-up is under way", Duration::from_secs(30), || {
        box_rev() > start + 10
    });
    gateway.kill9();
    let stopped_at = box_rev();
    assert!(
        stopped_at < start + MISSED,
        "the catch-up finished before the kill ({stopped_at}); the test proves nothing"
    );

    let (_gateway, api) = start_gateway(&home, &config);
    eventually("the catch-up completed", Duration::from_secs(60), || {
        box_rev() == start + MISSED
    });
    let conn = rusqlite::Connection::open_with_flags(
        home.join("journal.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let merged: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM aliases WHERE from_ref LIKE 'p:missed-%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(merged as u64, MISSED, "killed at rev {stopped_at}");
    // Customer 0's last change was the 3,000th (3000 % 20 == 0): its balance is 3000.
    let (_, again) = identify(api, serde_json::json!([{"kind": "card", "value": card(0)}]));
    assert_eq!(again["customer"], profiles[0].as_str());
    assert_eq!(again["points"], MISSED, "the newest balance: {again}");
}
