//! Guarantee scenarios, each run against the embedded broker (`tests/sync.rs`) and against
//! Mosquitto (`tests/interop.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;

/// Posts `count` purchases from `threads` concurrent tills; returns id -> seq of every 201.
pub fn post_many(api: SocketAddr, prefix: &str, count: u64, threads: u64) -> HashMap<String, u64> {
    let acknowledged = Arc::new(Mutex::new(HashMap::new()));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let acknowledged = acknowledged.clone();
            let prefix = prefix.to_string();
            std::thread::spawn(move || {
                let agent = http();
                let mut n = t;
                while n < count {
                    let (seq, id) = post_purchase(&agent, api, &format!("{prefix}-{n}"))
                        .expect("purchase recorded");
                    acknowledged.lock().unwrap().insert(id, seq);
                    n += threads;
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("poster thread");
    }
    Arc::try_unwrap(acknowledged).unwrap().into_inner().unwrap()
}

/// (a) Offline → `count` purchases → broker comes up → central has exactly those, in order.
pub fn offline_backlog_drains_exactly_once(kind: BrokerKind, count: u64) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("mqtt://127.0.0.1:{port}");
    let config = gateway_config(dir.path(), &url, 0, "");
    let (_gateway, api) = start_gateway(dir.path(), &config);

    let acknowledged = post_many(api, "offline", count, 8);
    assert_eq!(acknowledged.len() as u64, count);
    let agent = http();
    let h = health(&agent, api);
    assert_eq!(h["mqtt"]["connected"], false, "no broker yet");
    assert_eq!(h["journal"]["backlog"].as_u64(), Some(count));

    let _broker = start_broker(kind, dir.path(), port);
    let watcher = AckWatcher::start(port);
    let (_central, db) = start_central(dir.path(), &url);
    assert!(
        watcher.wait_for(count, Duration::from_secs(120)),
        "central acked only {} of {count}",
        watcher.highest()
    );
    assert_central_exact(&db, count, &acknowledged);
}

/// (b) `kill -9` of the gateway at random points during intake and sync: every event the
/// gateway acknowledged to its caller reaches central exactly once.
pub fn kill9_loses_nothing_acknowledged(kind: BrokerKind, trials: u32) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("mqtt://127.0.0.1:{port}");
    let _broker = start_broker(kind, dir.path(), port);
    let watcher = AckWatcher::start(port);
    let (_central, db) = start_central(dir.path(), &url);
    let api_port = free_port();
    // Small batches and a short window keep many batches in flight when the kill lands.
    let config = gateway_config(
        dir.path(),
        &url,
        api_port,
        "[sync]\nbatch_events = 20\nwindow_batches = 4\nreconnect_min_ms = 50\nreconnect_max_ms = 500\nack_timeout_ms = 2000\n",
    );
    let acknowledged = Arc::new(Mutex::new(HashMap::new()));
    let (mut rng, _seed) = scenario_rng("kill -9 during intake and sync");
    for trial in 0..trials {
        let (mut gateway, api) = start_gateway(dir.path(), &config);
        let kill_after = 10 + rng.u64(..150);
        let answered = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (reached_tx, reached) = std::sync::mpsc::channel::<()>();
        let posters: Vec<_> = (0..4)
            .map(|t| {
                let (acknowledged, answered, stop, reached_tx) = (
                    acknowledged.clone(),
                    answered.clone(),
                    stop.clone(),
                    reached_tx.clone(),
                );
                std::thread::spawn(move || {
                    let agent = http();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        match post_purchase(&agent, api, &format!("k{trial}-{t}-{n}")) {
                            Ok((seq, id)) => {
                                acknowledged.lock().unwrap().insert(id, seq);
                                if answered.fetch_add(1, Ordering::SeqCst) + 1 == kill_after {
                                    let _ = reached_tx.send(());
                                }
                            }
                            // The gateway was killed mid-request: this one was never acknowledged.
                            Err(_) => break,
                        }
                        n += 1;
                    }
                })
            })
            .collect();
        drop(reached_tx);
        reached
            .recv_timeout(Duration::from_secs(30))
            .expect("gateway answered enough purchases");
        gateway.kill9();
        stop.store(true, Ordering::Relaxed);
        for p in posters {
            p.join().expect("poster");
        }
    }
    let (_gateway, api) = start_gateway(dir.path(), &config);
    let last = health(&http(), api)["journal"]["last_seq"]
        .as_u64()
        .unwrap();
    assert!(
        watcher.wait_for(last, Duration::from_secs(60)),
        "central acked {} of {last}",
        watcher.highest()
    );
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() as u64 >= u64::from(trials) * 10);
    assert_central_exact(&db, last, &acknowledged);
}

/// (e) The broker restarts without persistence in the middle of a sync: nothing is lost.
pub fn broker_restart_mid_sync_loses_nothing(kind: BrokerKind) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("mqtt://127.0.0.1:{port}");
    let config = gateway_config(
        dir.path(),
        &url,
        0,
        "[sync]\nbatch_events = 25\nwindow_batches = 2\nreconnect_min_ms = 50\nreconnect_max_ms = 500\nack_timeout_ms = 2000\n",
    );
    let (_gateway, api) = start_gateway(dir.path(), &config);
    let mut acknowledged = post_many(api, "before", 3000, 8);

    let mut broker = start_broker(kind, dir.path(), port);
    let watcher = AckWatcher::start(port);
    let (_central, db) = start_central(dir.path(), &url);
    assert!(
        watcher.wait_for(200, Duration::from_secs(60)),
        "sync never started"
    );
    broker.kill9();
    let highest_before = watcher.highest();
    assert!(
        highest_before < 3000,
        "sync finished before the broker went down; make the backlog bigger"
    );

    acknowledged.extend(post_many(api, "during", 500, 4));
    let _broker = start_broker(kind, dir.path(), port);
    assert!(
        watcher.wait_for(3500, Duration::from_secs(120)),
        "central acked {} of 3500",
        watcher.highest()
    );
    assert_central_exact(&db, 3500, &acknowledged);
}

/// (d) Malformed payloads on every inbound topic of the gateway and of central are counted and
/// ignored; both keep running, the journal is untouched, and sync still works afterwards.
pub fn malformed_inbound_is_counted_and_ignored(kind: BrokerKind) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("mqtt://127.0.0.1:{port}");
    let _broker = start_broker(kind, dir.path(), port);
    let watcher = AckWatcher::start(port);
    let (mut central, db) = start_central(dir.path(), &url);
    let config = gateway_config(dir.path(), &url, 0, "");
    let (mut gateway, api) = start_gateway(dir.path(), &config);
    let agent = http();
    post_purchase(&agent, api, "first").expect("first purchase");
    assert!(watcher.wait_for(1, Duration::from_secs(30)));
    wait_connected(&agent, api);

    let base = format!("storegate/v1/{STORE}/{GATEWAY}");
    let gateway_topics = [
        format!("{base}/ack"),
        format!("{base}/rpc/res"),
        format!("{base}/orders"),
        "storegate/v1/identity".to_string(),
        "storegate/v1/config/fleet".to_string(),
        format!("storegate/v1/{STORE}/config"),
        format!("{base}/config"),
    ];
    let oversized = format!("{{\"upto_seq\":1,\"pad\":\"{}\"}}", "x".repeat(300 * 1024));
    let payloads: Vec<Vec<u8>> = vec![
        b"\xff\xfe\x00garbage".to_vec(),
        b"{}".to_vec(),
        b"{\"upto_seq\":\"ten\",\"id\":5,\"rev\":\"x\",\"order\":[],\"key_id\":1}".to_vec(),
        b"[1,2,3]".to_vec(),
        oversized.into_bytes(),
    ];
    let (client, thread) = publisher(port);
    for topic in &gateway_topics {
        for payload in &payloads {
            client
                .publish(
                    topic.as_str(),
                    rumqttc::QoS::AtLeastOnce,
                    false,
                    payload.clone(),
                )
                .unwrap();
        }
    }
    // Central's own inbound topics get the same treatment.
    for topic in [format!("{base}/events"), format!("{base}/rpc/req")] {
        for payload in &payloads {
            client
                .publish(
                    topic.as_str(),
                    rumqttc::QoS::AtLeastOnce,
                    false,
                    payload.clone(),
                )
                .unwrap();
        }
    }
    let expected = (gateway_topics.len() * payloads.len()) as f64;
    eventually(
        "every malformed message counted",
        Duration::from_secs(30),
        || metric(&agent, api, "storegate_mqtt_inbound_invalid_total") >= expected,
    );
    assert_eq!(
        metric(&agent, api, "storegate_mqtt_inbound_invalid_total"),
        expected,
        "every malformed message is counted once"
    );
    assert!(
        gateway.is_running() && central.is_running(),
        "both survive malformed input"
    );
    assert_eq!(
        health(&agent, api)["journal"]["last_seq"].as_u64(),
        Some(1),
        "journal untouched"
    );

    post_purchase(&agent, api, "after").expect("purchase after the garbage");
    assert!(
        watcher.wait_for(2, Duration::from_secs(30)),
        "sync works after the garbage"
    );
    assert_eq!(central_events(&db).len(), 2);
    let _ = client.disconnect();
    let _ = thread.join();
}

pub fn wait_connected(agent: &ureq::Agent, api: SocketAddr) {
    eventually(
        "gateway connected to the broker",
        Duration::from_secs(30),
        || health(agent, api)["mqtt"]["connected"] == true,
    );
}

/// Retained status with a last will: online with a session number; `kill -9` makes the broker
/// publish the will for that session; a restart comes online with a higher session; a clean
/// stop publishes offline itself, and a late subscriber sees that retained.
pub fn status_and_last_will_carry_the_session(kind: BrokerKind) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("mqtt://127.0.0.1:{port}");
    let _broker = start_broker(kind, dir.path(), port);
    let topic = format!("storegate/v1/{STORE}/{GATEWAY}/status");
    let status = Subscription::start(port, &topic);
    let config = gateway_config(dir.path(), &url, 0, "");
    let wait = Duration::from_secs(20);

    let (mut gateway, _) = start_gateway(dir.path(), &config);
    let online = status.next_matching(wait, |v| v["state"] == "online");
    let first = online["session"].as_u64().expect("session number");
    assert!(
        online["backlog"].is_u64() && online["version"].is_string(),
        "{online}"
    );
    gateway.kill9();
    let will = status.next_matching(wait, |v| v["state"] == "offline");
    assert_eq!(
        will["session"].as_u64(),
        Some(first),
        "the will names the session that died"
    );

    let (mut gateway, _) = start_gateway(dir.path(), &config);
    let again = status.next_matching(wait, |v| v["state"] == "online");
    let second = again["session"].as_u64().unwrap();
    assert!(second > first, "session {second} after {first}");
    assert_eq!(gateway.terminate(wait), Some(0), "clean exit on SIGTERM");
    let clean = status.next_matching(wait, |v| v["state"] == "offline");
    assert_eq!(clean["session"].as_u64(), Some(second));

    let late = Subscription::start(port, &topic);
    let retained = late.next_matching(wait, |_| true);
    assert_eq!(retained["state"], "offline");
    assert_eq!(
        retained["session"].as_u64(),
        Some(second),
        "the retained status is the latest session's"
    );
}

/// Central's store stalls for longer than central's MQTT keep-alive while gateways go on
/// sending: central keeps its session (it acks each message to the broker once dealt with, so
/// the broker holds back the rest and the session task keeps answering the keep-alive), and
/// once the store is back every batch is stored once and acked, the few that failed during the
/// stall through a gateway's re-send. Before central acked by hand, its intake stopped reading
/// the session, the broker dropped it for a missed keep-alive and discarded what it held.
pub fn a_stalled_central_keeps_its_session_and_stores_everything_after(kind: BrokerKind) {
    // 5,000 batches: more than central's intake and writer queues hold (about 3,300), so with
    // automatic acks its intake would stop reading the session.
    const GATEWAYS: u64 = 200;
    const BATCHES: u64 = 25;
    const KEEP_ALIVE_SECS: u64 = 5;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = start_broker(kind, dir.path(), port);
    let api = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let token = "stall-test-token";
    let db = dir.path().join("central.db");
    let config = dir.path().join("central.toml");
    std::fs::write(
        &config,
        format!(
            "[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\nkeep_alive_secs = {KEEP_ALIVE_SECS}\n[central]\ndb = \"{}\"\nclient_id = \"central-stall\"\napi_listen = \"{api}\"\napi_tokens = [\"{token}\"]\n",
            db.display()
        ),
    )
    .unwrap();
    let mut central = Proc::spawn(
        "central",
        bin(),
        &["central", "--config", &config.display().to_string()],
        dir.path(),
    );
    central.ready(Duration::from_secs(10));
    let agent = http();
    let mqtt_health = || health_with_token(&agent, api, token)["mqtt"].clone();
    eventually("central connected", Duration::from_secs(10), || {
        mqtt_health()["connected"] == true
    });

    // The acks each gateway got, by the gateway in the ack's topic.
    let acks = Subscription::start_with_topics(port, &format!("storegate/v1/{STORE}/+/ack"));
    let mut acked: HashMap<String, u64> = HashMap::new();
    let note_acks = |acked: &mut HashMap<String, u64>| {
        for ack in acks.messages.try_iter() {
            let gateway = ack["topic"].as_str().and_then(|t| t.split('/').nth(3));
            if let (Some(gateway), Some(upto)) = (gateway, ack["message"]["upto_seq"].as_u64()) {
                let at = acked.entry(gateway.to_string()).or_default();
                *at = (*at).max(upto);
            }
        }
    };

    let batch = |gateway: u64, seq: u64| {
        let gateway = format!("gw-{gateway}");
        let topic = format!("storegate/v1/{STORE}/{gateway}/events");
        let payload = serde_json::json!({
            "gateway": gateway, "store": STORE, "sent_at": "2026-11-26T10:00:00.000Z",
            "events": [{
                "seq": seq, "id": format!("ev-{gateway}-{seq}"), "kind": "purchase",
                "at": "2026-11-26T10:00:00.000Z", "clock_synced": true, "till": "t1",
                "body": { "receipt": format!("r-{gateway}-{seq}"), "total_minor": 100,
                          "currency": "EUR", "customer": null,
                          "lines": [{ "sku": "a", "qty": 1, "unit_minor": 100 }] }
            }]
        });
        (topic, payload.to_string().into_bytes())
    };
    let (gateways, publisher_thread) = publisher(port);

    // The store stalls: another connection holds SQLite's write lock, so each of central's
    // transactions waits out its busy timeout and fails.
    let mut lock = rusqlite::Connection::open(&db).unwrap();
    let stall = lock
        .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
        .unwrap();
    for seq in 1..=BATCHES {
        for gateway in 0..GATEWAYS {
            let (topic, payload) = batch(gateway, seq);
            gateways
                .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
                .unwrap();
        }
    }
    // Time itself is the condition here: the stall must outlast the broker's keep-alive
    // deadline (1.5 keep-alives without a packet from central).
    std::thread::sleep(Duration::from_secs(KEEP_ALIVE_SECS * 5 / 2));
    assert_eq!(
        mqtt_health()["connected"],
        true,
        "central lost its session during the stall"
    );
    stall.rollback().unwrap();
    drop(lock);

    // Each gateway re-sends what is unacked after its ack timeout, as a real one does.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        note_acks(&mut acked);
        let behind: Vec<(u64, u64)> = (0..GATEWAYS)
            .filter_map(|g| {
                let upto = acked.get(&format!("gw-{g}")).copied().unwrap_or(0);
                (upto < BATCHES).then_some((g, upto))
            })
            .collect();
        if behind.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} gateways still unacked after 60 s, e.g. {:?}",
            behind.len(),
            &behind[..behind.len().min(5)]
        );
        std::thread::sleep(Duration::from_secs(2));
        note_acks(&mut acked);
        let still: Vec<(u64, u64)> = behind
            .into_iter()
            .filter(|(g, upto)| acked.get(&format!("gw-{g}")).copied().unwrap_or(0) == *upto)
            .collect();
        for (gateway, upto) in still {
            for seq in upto + 1..=BATCHES {
                let (topic, payload) = batch(gateway, seq);
                gateways
                    .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
                    .unwrap();
            }
        }
    }

    let health = mqtt_health();
    assert_eq!(
        health["connects"], 1,
        "central reconnected at least once: {health}"
    );
    let stored: (i64, i64) = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT COUNT(*), COUNT(DISTINCT id) FROM events", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let expected = (GATEWAYS * BATCHES) as i64;
    assert_eq!(stored, (expected, expected), "every batch stored once");
    let _ = gateways.disconnect();
    let _ = publisher_thread.join();
}
