//! Regression tests for the ways a hostile broker client, a full disk or a second daemon could
//! lose data or stop sync silently. Each is named after the defect it pins; each runs real
//! processes (embedded broker, reference central, gateway) on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::scenarios::wait_connected;
use common::*;
use rumqttc::QoS;

const ACK_TOPIC: &str = "storegate/v1/s-test/gw-1/ack";
const EVENTS_TOPIC: &str = "storegate/v1/s-test/gw-1/events";
const STATUS_TOPIC: &str = "storegate/v1/s-test/gw-1/status";

fn last_seq_of(batch: &serde_json::Value) -> Option<u64> {
    batch["events"].as_array()?.last()?["seq"].as_u64()
}

/// A 26-byte forged ack made a gateway count 350 unsent events as delivered, delete them and
/// number new events from 10^12 + 1; an ack of u64::MAX wrapped seq to 0.
#[test]
fn a_forged_ack_beyond_the_journal_deletes_nothing_moves_no_seq_and_raises_an_alarm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = start_broker(BrokerKind::Embedded, dir.path(), port);
    let url = format!("mqtt://127.0.0.1:{port}");
    let config = gateway_config(dir.path(), &url, 0, "");
    let (_gateway, api) = start_gateway(dir.path(), &config);
    let agent = http();
    wait_connected(&agent, api);
    // No central yet: whatever the gateway publishes stays unacked.
    let published = Subscription::start(port, EVENTS_TOPIC);
    let mut acknowledged = HashMap::new();
    for n in 0..20 {
        let (seq, id) = post_purchase(&agent, api, &format!("r-{n}")).unwrap();
        acknowledged.insert(id, seq);
    }
    published.next_matching(Duration::from_secs(10), |b| last_seq_of(b) == Some(20));

    let status = Subscription::start(port, STATUS_TOPIC);
    let (forger, _thread) = publisher(port);
    forger
        .publish(
            ACK_TOPIC,
            QoS::AtLeastOnce,
            false,
            br#"{"upto_seq": 1000000000000}"#.to_vec(),
        )
        .unwrap();
    let alarmed = status.next_matching(Duration::from_secs(10), |s| {
        s["alarms"]
            .as_array()
            .is_some_and(|a| a.contains(&"ack_beyond_journal".into()))
    });
    assert_eq!(alarmed["state"], "online");
    let h = health(&agent, api);
    assert_eq!(h["journal"]["acked_upto"], 0, "{h}");
    assert_eq!(h["journal"]["last_seq"], 20, "{h}");
    assert_eq!(
        h["alarms"],
        serde_json::json!(["ack_beyond_journal"]),
        "{h}"
    );
    assert!(metric(&agent, api, "storegate_sync_acks_beyond_journal_total") >= 1.0);

    forger
        .publish(
            ACK_TOPIC,
            QoS::AtLeastOnce,
            false,
            br#"{"upto_seq": 18446744073709551615}"#.to_vec(),
        )
        .unwrap();
    eventually(
        "the u64::MAX ack counted as invalid",
        Duration::from_secs(10),
        || metric(&agent, api, "storegate_mqtt_inbound_invalid_total") >= 1.0,
    );
    let (next, id) = post_purchase(&agent, api, "r-after").unwrap();
    assert_eq!(next, 21, "numbering goes on from the journal");
    acknowledged.insert(id, next);

    // Central arrives: every event, none lost to the forged ack, reaches it exactly once.
    let acks = AckWatcher::start(port);
    let (_central, db) = start_central(dir.path(), &url);
    assert!(
        acks.wait_for(21, Duration::from_secs(20)),
        "central never acked 21"
    );
    assert_central_exact(&db, 21, &acknowledged);
}

/// A 2 MiB retained message on `config/fleet` made every gateway reconnect 14 times a second;
/// one on a gateway's events topic disconnected central 70 times in 16 s.
#[test]
fn an_oversized_or_misplaced_retained_message_costs_no_one_their_session() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = start_broker(BrokerKind::Embedded, dir.path(), port);
    let url = format!("mqtt://127.0.0.1:{port}");
    // Left on the broker before anyone connects: each comes back at every subscribe.
    // 1.5 MB is above rumqttc's default and our old 1 MiB client limit, under the broker's cap.
    let big = vec![b' '; 1_500_000];
    let (prober, _thread) = publisher(port);
    let retained = Subscription::start(port, ACK_TOPIC);
    prober
        .publish(
            "storegate/v1/config/fleet",
            QoS::AtLeastOnce,
            true,
            big.clone(),
        )
        .unwrap();
    prober
        .publish(EVENTS_TOPIC, QoS::AtLeastOnce, true, big)
        .unwrap();
    prober
        .publish(
            ACK_TOPIC,
            QoS::AtLeastOnce,
            true,
            br#"{"upto_seq":1}"#.to_vec(),
        )
        .unwrap();
    retained.next_matching(Duration::from_secs(10), |m| m["upto_seq"] == 1);
    let (central, _db) = start_central(dir.path(), &url);
    let config = gateway_config(dir.path(), &url, 0, "");
    let (_gateway, api) = start_gateway(dir.path(), &config);
    let agent = http();
    wait_connected(&agent, api);
    let session = health(&agent, api)["sync"]["session"].clone();
    // The oversized layer and the retained ack (the events topic is not one it reads).
    eventually("both refusals counted", Duration::from_secs(10), || {
        metric(&agent, api, "storegate_mqtt_inbound_invalid_total") >= 2.0
    });

    let acks = AckWatcher::start(port);
    post_purchase(&agent, api, "r-1").unwrap();
    assert!(acks.wait_for(1, Duration::from_secs(10)), "sync stalled");
    let h = health(&agent, api);
    assert_eq!(
        h["sync"]["session"], session,
        "the gateway reconnected: {h}"
    );
    assert_eq!(metric(&agent, api, "storegate_mqtt_reconnects_total"), 0.0);
    let log = central.log_text();
    assert!(log.contains("retained_not_allowed"), "central log:\n{log}");
    assert!(
        !log.contains("lost the MQTT broker") && !log.contains("closed a connection"),
        "central lost its session:\n{log}"
    );
}

/// Two daemons on one journal knocked each other off the broker every 200 ms with no hint.
#[test]
fn a_second_daemon_on_the_same_journal_exits_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("mqtt://127.0.0.1:{}", free_port());
    let config = gateway_config(dir.path(), &url, 0, "");
    let (first, _api) = start_gateway(dir.path(), &config);
    let mut second = Proc::spawn(
        "second",
        bin(),
        &["run", "--config", &config.display().to_string()],
        dir.path(),
    );
    let code = second.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(1), "the second daemon kept running");
    let log = second.log_text();
    assert!(
        log.contains("in use by another storegate")
            && log.contains(&format!("pid {}", first.pid())),
        "{log}"
    );
}

/// ~1,000 idle sockets made the API unreachable for every till; 8,000 half-sent headers grew
/// memory to 259 MB.
#[test]
fn idle_and_half_sent_connections_from_one_host_neither_starve_tills_nor_grow_memory() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("mqtt://127.0.0.1:{}", free_port());
    let extra = "[api]\nheader_timeout_ms = 500\nconnections_per_peer = 8\n";
    let config = gateway_config(dir.path(), &url, 0, extra);
    let (gateway, api) = start_gateway(dir.path(), &config);
    let agent = http();

    // Another loopback address stands for a misbehaving host on the store LAN.
    let attacker = |n: usize| -> Vec<TcpStream> {
        (0..n)
            .filter_map(|_| {
                let socket = socket_from([127, 0, 0, 2], api)?;
                let mut stream = socket;
                let _ = stream.write_all(b"POST /v1/purchases HTTP/1.1\r\nHost: x\r\nX-Slow: ");
                Some(stream)
            })
            .collect()
    };
    let held = attacker(600);
    assert!(held.len() > 500, "could not open the attack sockets");
    // A till on its own address is served while the attack holds its sockets.
    post_purchase(&agent, api, "r-during-attack").unwrap();
    assert!(metric(&agent, api, "storegate_api_connections_refused_total") >= 500.0);
    assert!(
        rss_bytes(gateway.pid()) < 64 * 1024 * 1024,
        "RSS {} under attack",
        rss_bytes(gateway.pid())
    );

    // A half-sent header is cut off after header_timeout_ms, and so is an idle socket.
    for mut stream in held.into_iter().take(8) {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 512];
        let read = stream.read(&mut buf);
        assert!(
            read.is_ok()
                || matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "the server kept a half-sent request open: {read:?}"
        );
    }
    let mut idle = socket_from([127, 0, 0, 3], api).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 64];
    let read = idle.read(&mut buf);
    assert!(
        !matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut),
        "an idle socket was kept open: {read:?}"
    );
}

fn socket_from(source: [u8; 4], api: SocketAddr) -> Option<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    socket.bind(&SocketAddr::from((source, 0)).into()).ok()?;
    socket.connect(&api.into()).ok()?;
    Some(socket.into())
}

/// A small filesystem of the test's own (tmpfs), unmounted when dropped.
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    /// `None` where this machine does not let the test mount (not root, no CAP_SYS_ADMIN).
    fn mount(path: &std::path::Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(path).ok()?;
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then(|| SmallDisk {
            path: path.to_path_buf(),
        })
    }

    /// Free bytes on the disk now.
    fn free(&self) -> u64 {
        let stat = nix::sys::statvfs::statvfs(&self.path).unwrap();
        #[allow(clippy::useless_conversion)] // u32 on some 32-bit targets
        let free = u64::from(stat.blocks_available()) * u64::from(stat.fragment_size());
        free
    }

    /// Grows the filler file at `filler` until at most `left` bytes are free.
    fn fill_leaving(&self, filler: &std::path::Path, left: u64) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(filler)
            .unwrap();
        let block = vec![0u8; 64 * 1024];
        while self.free() > left {
            file.write_all(&block).unwrap();
        }
    }

    /// Writes a filler file until the disk is full.
    fn fill(&self) -> std::path::PathBuf {
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 4096];
        while file.write_all(&block).is_ok() {}
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// A full disk answered 503 "journal shut down" instead of 507; after a journal write failed
/// during a reconnect (full disk, then a broker restart) sync stopped for good while the
/// process and /healthz said "ok". Mounting the small disk needs root: `cargo test` lists it
/// as ignored, `.ci/run` runs it (as root) or says SKIPPED.
#[test]
#[ignore = "mounts a tmpfs (needs root); .ci/run runs it"]
fn a_full_disk_answers_507_and_once_space_is_back_intake_and_sync_resume() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(&dir.path().join("small"), "3m")
        .expect("cannot mount a tmpfs here: run as root");
    let port = free_port();
    let mut broker = start_broker(BrokerKind::Embedded, dir.path(), port);
    let url = format!("mqtt://127.0.0.1:{port}");
    let (_central, db) = start_central(dir.path(), &url);
    // No thresholds: this is SQLite's own full disk (the reserve is the next test's).
    let config = gateway_config(
        &disk.path,
        &url,
        0,
        "[journal]\nlow_space_mb = 0\nreserve_mb = 0\n",
    );
    let (mut gateway, api) = start_gateway(dir.path(), &config);
    let agent = http();
    wait_connected(&agent, api);
    let acks = AckWatcher::start(port);
    let mut acknowledged = HashMap::new();
    let (seq, id) = post_purchase(&agent, api, "r-before").unwrap();
    acknowledged.insert(id, seq);
    assert!(acks.wait_for(seq, Duration::from_secs(10)));

    let filler = disk.fill();
    let mut refusal = None;
    for n in 0..5_000 {
        match post_purchase(&agent, api, &format!("r-full-{n}")) {
            Ok((seq, id)) => {
                acknowledged.insert(id, seq);
            }
            Err(error) => {
                refusal = Some(error);
                break;
            }
        }
    }
    let refusal = refusal.expect("the disk never filled");
    assert!(
        refusal.starts_with("507") && refusal.contains("storage_full"),
        "{refusal}"
    );
    let h = health(&agent, api);
    assert_eq!(h["journal"]["state"], "broken", "{h}");
    assert!(
        h["alarms"]
            .as_array()
            .unwrap()
            .contains(&"storage_full".into()),
        "{h}"
    );

    // The broker restarts while the disk is full: the session counter cannot be written.
    broker.kill9();
    eventually("gateway saw the broker go", Duration::from_secs(10), || {
        health(&agent, api)["sync"]["connected"] == false
    });
    let _broker = start_broker(BrokerKind::Embedded, dir.path(), port);
    assert!(gateway.is_running(), "the gateway died on a full disk");

    std::fs::remove_file(&filler).unwrap();
    let (seq, id) = post_purchase(&agent, api, "r-after").expect("intake resumed by itself");
    acknowledged.insert(id, seq);
    let acks = AckWatcher::start(port);
    assert!(
        acks.wait_for(seq, Duration::from_secs(30)),
        "sync did not resume after space came back; gateway log:\n{}",
        gateway.log_text()
    );
    assert_eq!(health(&agent, api)["status"], "ok");
    assert_central_exact(&db, seq, &acknowledged);

    assert_eq!(gateway.terminate(Duration::from_secs(10)), Some(0));
    let journal = rusqlite::Connection::open(disk.path.join("journal.db")).unwrap();
    let check: String = journal
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

/// A gateway that could not reach its broker logged nothing, not even at debug, and its
/// reconnect metric stayed 0.
#[test]
fn an_unreachable_broker_is_logged_once_with_its_address_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = gateway_config(dir.path(), &format!("mqtt://127.0.0.1:{port}"), 0, "");
    let (gateway, api) = start_gateway(dir.path(), &config);
    let agent = http();
    eventually("failed attempts counted", Duration::from_secs(10), || {
        metric(&agent, api, "storegate_mqtt_reconnects_total") >= 3.0
    });
    let log = gateway.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("cannot reach the MQTT broker"))
        .collect();
    assert_eq!(lines.len(), 1, "one line for one state change:\n{log}");
    assert!(
        lines[0].contains(&format!("127.0.0.1:{port}")),
        "{}",
        lines[0]
    );
}

/// 20,000 garbage acks wrote 3.3 MB of WARN lines.
#[test]
fn a_flood_of_garbage_is_counted_in_full_and_logged_at_a_bounded_rate() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = start_broker(BrokerKind::Embedded, dir.path(), port);
    let config = gateway_config(dir.path(), &format!("mqtt://127.0.0.1:{port}"), 0, "");
    let (gateway, api) = start_gateway(dir.path(), &config);
    let agent = http();
    wait_connected(&agent, api);
    let (flooder, _thread) = publisher(port);
    for n in 0..2_000 {
        flooder
            .publish(
                ACK_TOPIC,
                QoS::AtLeastOnce,
                false,
                format!("garbage {n}").into_bytes(),
            )
            .unwrap();
    }
    eventually("every garbage ack counted", Duration::from_secs(30), || {
        metric(&agent, api, "storegate_mqtt_inbound_invalid_total") >= 2_000.0
    });
    let refusals = gateway
        .log_text()
        .lines()
        .filter(|l| l.contains("inbound MQTT message refused"))
        .count();
    assert!(
        (1..=20).contains(&refusals),
        "{refusals} log lines for 2,000 refusals"
    );
}

/// Two boxes configured with one gateway id knocked each other off the broker every 200 ms
/// with no hint of why.
#[test]
fn two_boxes_with_one_gateway_id_say_so_in_their_logs() {
    let dir = tempfile::tempdir().unwrap();
    let (first_dir, second_dir) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&first_dir).unwrap();
    std::fs::create_dir_all(&second_dir).unwrap();
    let port = free_port();
    let _broker = start_broker(BrokerKind::Embedded, dir.path(), port);
    let url = format!("mqtt://127.0.0.1:{port}");
    let (first, first_api) = start_gateway(&first_dir, &gateway_config(&first_dir, &url, 0, ""));
    let agent = http();
    wait_connected(&agent, first_api);
    let (second, _) = start_gateway(&second_dir, &gateway_config(&second_dir, &url, 0, ""));
    let hint = "another client may be using the same client id";
    eventually(
        "a log line naming the likely cause",
        Duration::from_secs(20),
        || first.log_text().contains(hint) || second.log_text().contains(hint),
    );
}

/// Central never sends an ack outside the protocol's range: a batch that leaves a gap before
/// the first stored seq (the gateway's first batch was lost) is answered by nothing, and the
/// missing batch then moves the ack over both.
#[test]
fn central_sends_no_ack_of_zero_while_the_first_seq_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = start_broker(BrokerKind::Embedded, dir.path(), port);
    let central_status = Subscription::start(port, "storegate/v1/central/status");
    let (_central, _db) = start_central(dir.path(), &format!("mqtt://127.0.0.1:{port}"));
    // Central says it is online once it has subscribed.
    central_status.next_matching(Duration::from_secs(10), |s| s["state"] == "online");
    let acks = Subscription::start(port, ACK_TOPIC);
    let (gateway, _thread) = publisher(port);
    let batch = |seq: u64| {
        serde_json::json!({
            "gateway": GATEWAY, "store": STORE, "sent_at": "2026-11-26T10:00:00.000Z",
            "events": [{
                "seq": seq, "id": ulid::Ulid::new().to_string(), "kind": "purchase",
                "at": "2026-11-26T10:00:00.000Z", "clock_synced": true, "till": "t1",
                "body": { "receipt": format!("r-{seq}"), "total_minor": 100, "currency": "EUR",
                          "customer": null, "lines": [{ "sku": "a", "qty": 1, "unit_minor": 100 }] }
            }]
        })
        .to_string()
        .into_bytes()
    };
    gateway
        .publish(EVENTS_TOPIC, QoS::AtLeastOnce, false, batch(2))
        .unwrap();
    gateway
        .publish(EVENTS_TOPIC, QoS::AtLeastOnce, false, batch(1))
        .unwrap();
    let first = acks.next_matching(Duration::from_secs(10), |_| true);
    assert_eq!(first["upto_seq"], 2, "the first ack central sent: {first}");
}

/// Guarantee 7 on a small real filesystem: below `low_space_mb` identifications stop (507
/// `storage_low`, alarm, metric) while sales go on into the reserve; down to `reserve_mb` every
/// write is refused with 507 `storage_full` before SQLite could fail in the middle of one; once
/// space is freed both resume by themselves, and the journal is intact.
#[test]
#[ignore = "mounts a tmpfs (needs root); .ci/run runs it"]
fn low_space_stops_identifications_first_and_the_reserve_keeps_sales_going() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(&dir.path().join("small"), "16m")
        .expect("cannot mount a tmpfs here: run as root");
    let unused = free_port();
    let config = gateway_config(
        &disk.path,
        &format!("mqtt://127.0.0.1:{unused}"),
        0,
        "[journal]\nlow_space_mb = 8\nreserve_mb = 4\n[identity]\nhmac_key = \"c3RvcmVnYXRlLXRlc3QtaWRlbnRpdHkta2V5IQ==\"\nlookup_timeout_ms = 10\n",
    );
    let (gateway, api) = start_gateway(dir.path(), &config);
    let agent = http();
    let identify = |n: u32| -> u16 {
        agent
            .post(&format!("http://{api}/v1/customers/identify"))
            .send_json(serde_json::json!({ "till": "t1", "identifiers": [{ "kind": "card", "value": format!("6001000{n:05}") }] }))
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(identify(1), 200);
    post_purchase(&agent, api, "r-1").unwrap();
    let alarms = || health(&agent, api)["alarms"].clone();

    let filler = disk.path.join("filler");
    const MIB: u64 = 1024 * 1024;
    disk.fill_leaving(&filler, 6 * MIB);
    assert_eq!(identify(2), 507, "identifications stop below low_space_mb");
    post_purchase(&agent, api, "r-2").expect("sales go on into the reserve");
    assert!(
        alarms().as_array().unwrap().contains(&"storage_low".into()),
        "{}",
        alarms()
    );
    // The metric follows the journal's position from the sync task, a moment after the
    // refusal the API answered.
    eventually("storage_low metric at 1", Duration::from_secs(10), || {
        metric(&agent, api, "storegate_journal_storage_low") == 1.0
    });

    disk.fill_leaving(&filler, 3 * MIB);
    let refused = post_purchase(&agent, api, "r-3").unwrap_err();
    assert!(
        refused.starts_with("507") && refused.contains("storage_full"),
        "{refused}"
    );
    assert!(
        alarms()
            .as_array()
            .unwrap()
            .contains(&"storage_full".into()),
        "{}",
        alarms()
    );
    eventually("storage_low metric at 2", Duration::from_secs(10), || {
        metric(&agent, api, "storegate_journal_storage_low") == 2.0
    });

    std::fs::remove_file(&filler).unwrap();
    post_purchase(&agent, api, "r-4").expect("intake resumes by itself");
    assert_eq!(identify(3), 200);
    assert_eq!(alarms(), serde_json::json!([]));
    assert_eq!(
        health(&agent, api)["journal"]["last_seq"],
        5,
        "identify 1, r-1, r-2, r-4 and identify 3; the refused two left nothing"
    );

    drop(gateway);
    let journal = rusqlite::Connection::open(disk.path.join("journal.db")).unwrap();
    let check: String = journal
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}
