//! Central at fleet scale: three `storegate central` instances share one PostgreSQL database and
//! one Mosquitto (`$share/central/…` subscriptions) while a fleet of gateways sends its events;
//! one instance is killed with SIGKILL in the middle of the load. Every event is stored exactly
//! once, every gateway's ack reaches its last seq, and the identity merges and points come out
//! as one central on SQLite makes of the same input.
//!
//! Needs Mosquitto and a PostgreSQL server (`STOREGATE_TEST_POSTGRES`): `.ci/postgres-suite`
//! installs and starts both and runs this with `--include-ignored`.
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::value::RawValue;
use storegate::protocol::{Ack, EventBatch, WireEvent};

const GATEWAYS: usize = 12;
const EVENTS: u64 = 400;
const BATCH: u64 = 25;
const WINDOW: u64 = 4 * BATCH;
const CARDS: usize = 30;

/// One store's events: every fourth an identification of one of the fleet's cards (under the
/// provisional ref this store gave it), the rest purchases, some by a customer met before.
fn store_events(store: usize, rng: &mut fastrand::Rng) -> Vec<WireEvent> {
    let mut refs: HashMap<usize, String> = HashMap::new();
    (1..=EVENTS)
        .map(|seq| {
            let (kind, body) = if seq % 4 == 1 {
                let card = rng.usize(..CARDS);
                let customer = refs
                    .entry(card)
                    .or_insert_with(|| format!("prov:gw-1:{}", ulid::Ulid::new()))
                    .clone();
                (
                    "identity_seen",
                    serde_json::json!({
                        "customer": customer,
                        "identifiers": [{ "kind": "card", "hash": format!("{card:064x}") }],
                    }),
                )
            } else {
                let customer = (!refs.is_empty() && rng.bool()).then(|| {
                    let known: Vec<&String> = refs.values().collect();
                    known[rng.usize(..known.len())].clone()
                });
                let points = if customer.is_some() {
                    rng.i64(1..20)
                } else {
                    0
                };
                (
                    "purchase",
                    serde_json::json!({
                        "receipt": format!("r-{store}-{seq}"),
                        "lines": [{ "sku": "a", "qty": 1, "unit_minor": 100 }],
                        "total_minor": 100, "currency": "EUR",
                        "customer": customer, "points": points,
                    }),
                )
            };
            WireEvent {
                seq,
                id: ulid::Ulid::new().to_string(),
                kind: kind.into(),
                at: "2026-11-26T10:00:00.000Z".into(),
                clock_synced: true,
                till: "t1".into(),
                body: RawValue::from_string(body.to_string()).unwrap(),
            }
        })
        .collect()
}

fn store_name(index: usize) -> String {
    format!("s-{index:03}")
}

/// A gateway's side of docs/protocol.md: batches in seq order within a window, the cumulative
/// ack, everything unacked sent again from the acked position when acks stop coming.
fn run_gateway(port: u16, store: String, events: Vec<WireEvent>, acked_total: Arc<AtomicU64>) {
    let mut options = MqttOptions::new(format!("storegate-{store}-gw-1"), "127.0.0.1", port);
    options.set_clean_session(true);
    options.set_keep_alive(Duration::from_secs(10));
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut connection) = Client::new(options, 256);
    let ack_topic = format!("storegate/v1/{store}/gw-1/ack");
    let events_topic = format!("storegate/v1/{store}/gw-1/events");
    let mut acked = 0u64;
    let mut sent = 0u64;
    let mut progress = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(240);
    while acked < EVENTS {
        assert!(
            Instant::now() < deadline,
            "{store}: acked only {acked} of {EVENTS}"
        );
        while sent < EVENTS && sent < acked + WINDOW {
            let upto = (sent + BATCH).min(EVENTS);
            let batch = EventBatch {
                gateway: "gw-1".into(),
                store: store.clone(),
                sent_at: "2026-11-26T10:00:00.000Z".into(),
                events: events[sent as usize..upto as usize].to_vec(),
            };
            client
                .publish(
                    &events_topic,
                    QoS::AtLeastOnce,
                    false,
                    serde_json::to_vec(&batch).unwrap(),
                )
                .unwrap();
            sent = upto;
        }
        match connection.recv_timeout(Duration::from_millis(100)) {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                client.subscribe(&ack_topic, QoS::AtLeastOnce).unwrap();
            }
            Ok(Ok(Event::Incoming(Packet::Publish(publish)))) => {
                if let Ok(ack) = serde_json::from_slice::<Ack>(&publish.payload) {
                    if ack.upto_seq > acked {
                        acked_total.fetch_add(ack.upto_seq - acked, Ordering::Relaxed);
                        acked = ack.upto_seq;
                        progress = Instant::now();
                    }
                }
            }
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(_)) => std::thread::sleep(Duration::from_millis(200)),
        }
        // A batch that went to the instance that died is never acked: send again.
        if sent > acked && progress.elapsed() > Duration::from_secs(3) {
            sent = acked;
            progress = Instant::now();
        }
    }
    assert_eq!(acked, EVENTS, "{store}: an ack beyond the last seq");
}

/// Which provisional refs ended up as one customer, and that customer's points.
fn partition(
    refs: &BTreeSet<String>,
    aliases: &HashMap<String, String>,
    ledger: &[(String, i64)],
) -> BTreeMap<BTreeSet<String>, i64> {
    let root = |r: &str| {
        let mut current = r.to_string();
        while let Some(next) = aliases.get(&current) {
            current = next.clone();
        }
        current
    };
    let mut classes: HashMap<String, BTreeSet<String>> = HashMap::new();
    for r in refs {
        classes.entry(root(r)).or_default().insert(r.clone());
    }
    let mut points: HashMap<String, i64> = HashMap::new();
    for (profile, p) in ledger {
        *points.entry(root(profile)).or_default() += p;
    }
    classes
        .into_iter()
        .map(|(root, members)| (members, points.get(&root).copied().unwrap_or(0)))
        .collect()
}

#[test]
#[ignore = "needs Mosquitto and PostgreSQL (STOREGATE_TEST_POSTGRES): .ci/postgres-suite runs it"]
fn three_centrals_on_postgres_store_every_event_once_through_a_kill_and_merge_as_one_does() {
    let server = std::env::var("STOREGATE_TEST_POSTGRES")
        .expect("STOREGATE_TEST_POSTGRES names a PostgreSQL server (.ci/postgres-suite sets it)");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let database = format!("sg_scale_{}", ulid::Ulid::new().to_string().to_lowercase());
    let admin = runtime.block_on(async {
        let (admin, connection) = tokio_postgres::connect(&server, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        admin
            .batch_execute(&format!("CREATE DATABASE {database}"))
            .await
            .unwrap();
        admin
    });
    let url = format!("{}/{database}", server.rsplit_once('/').unwrap().0);

    let (mut rng, _seed) = scenario_rng("three centrals");
    let input: Vec<Vec<WireEvent>> = (0..GATEWAYS)
        .map(|store| store_events(store, &mut rng))
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = start_broker(BrokerKind::Mosquitto, dir.path(), port);
    let mut centrals: Vec<Proc> = (0..3)
        .map(|n| {
            let config = dir.path().join(format!("central-{n}.toml"));
            std::fs::write(
                &config,
                format!(
                    "[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\n[central]\ndb = \"{url}\"\nshare_group = \"central\"\nclient_id = \"central-{n}\"\n"
                ),
            )
            .unwrap();
            let mut p = Proc::spawn(
                &format!("central-{n}"),
                bin(),
                &["central", "--config", &config.display().to_string()],
                dir.path(),
            );
            p.ready(Duration::from_secs(20));
            p
        })
        .collect();

    let acked_total = Arc::new(AtomicU64::new(0));
    let gateways: Vec<_> = input
        .iter()
        .enumerate()
        .map(|(index, events)| {
            let (events, acked_total) = (events.clone(), acked_total.clone());
            std::thread::spawn(move || run_gateway(port, store_name(index), events, acked_total))
        })
        .collect();
    let total = GATEWAYS as u64 * EVENTS;
    eventually(
        "a third of the load acked",
        Duration::from_secs(120),
        || acked_total.load(Ordering::Relaxed) >= total / 3,
    );
    centrals[1].kill9();
    for gateway in gateways {
        gateway.join().expect("a gateway did not get all its acks");
    }
    assert!(centrals[0].is_running() && centrals[2].is_running());
    // Acked means stored; identities and points follow from the resolver, whichever living
    // instance runs it (the killed one's queue included).
    eventually(
        "every queued identity and points effect applied",
        Duration::from_secs(60),
        || {
            runtime.block_on(async {
                let (db, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(connection);
                db.query_one("SELECT COUNT(*) FROM pending_effects", &[])
                    .await
                    .unwrap()
                    .get::<_, i64>(0)
                    == 0
            })
        },
    );

    let (events, distinct, conflicts, refused, acks, aliases, ledger) = runtime.block_on(async {
        let (db, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let count = |sql: &'static str| {
            let db = &db;
            async move { db.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
        };
        let events = count("SELECT COUNT(*) FROM events").await;
        let distinct = count("SELECT COUNT(DISTINCT id) FROM events").await;
        let conflicts = count("SELECT COUNT(*) FROM seq_conflicts").await;
        let refused =
            count("SELECT COUNT(*) FROM events WHERE refused IS NOT NULL OR applied IS NULL").await;
        let acks: Vec<i64> = db
            .query("SELECT acked_upto FROM gateways", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let aliases: HashMap<String, String> = db
            .query("SELECT from_ref, to_ref FROM profile_aliases", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let ledger: Vec<(String, i64)> = db
            .query("SELECT profile, points FROM points_ledger", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        (events, distinct, conflicts, refused, acks, aliases, ledger)
    });
    assert_eq!(events, total as i64, "every event stored once");
    assert_eq!(distinct, total as i64);
    assert_eq!((conflicts, refused), (0, 0));
    assert_eq!(
        acks,
        vec![EVENTS as i64; GATEWAYS],
        "every gateway acked to its last seq"
    );

    // The same input through one central on SQLite, gateways interleaved batch by batch.
    let single = dir.path().join("single.db");
    let store = storegate::central::Store::open_sqlite(&single).unwrap();
    runtime.block_on(async {
        for chunk in 0..EVENTS.div_ceil(BATCH) as usize {
            for (index, events) in input.iter().enumerate() {
                let batch = events.chunks(BATCH as usize).nth(chunk).unwrap().to_vec();
                store
                    .store_batch(store_name(index), "gw-1".into(), batch)
                    .await
                    .unwrap();
            }
        }
        while store.apply_pending(1024).await.unwrap().events > 0 {}
    });
    let conn = rusqlite::Connection::open(&single).unwrap();
    let single_aliases: HashMap<String, String> = conn
        .prepare("SELECT from_ref, to_ref FROM profile_aliases")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let single_ledger: Vec<(String, i64)> = conn
        .prepare("SELECT profile, points FROM points_ledger")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();

    let refs: BTreeSet<String> = input
        .iter()
        .flatten()
        .filter(|e| e.kind == "identity_seen")
        .map(|e| {
            serde_json::from_str::<serde_json::Value>(e.body.get()).unwrap()["customer"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let fleet = partition(&refs, &aliases, &ledger);
    let one = partition(&refs, &single_aliases, &single_ledger);
    assert!(
        fleet.len() <= CARDS,
        "one customer per card at most: {}",
        fleet.len()
    );
    assert_eq!(fleet, one, "three instances merged as one central does");

    for central in &mut centrals {
        central.kill9();
    }
    runtime.block_on(async {
        let _ = admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
            .await;
    });
}
