//! Hardware in the loop: the reader firmware runs in `storegate-reader-sim` against a simulated
//! MFRC522 and talks over a real pseudo-terminal; the real gateway reads it through a
//! `/dev/serial/by-id`-style link, records taps through a real broker at the reference central,
//! and drives the simulated buzzer and LEDs back.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// base64 of "storegate-hil-identity-key!!" (28 bytes).
const HMAC_KEY: &str = "c3RvcmVnYXRlLWhpbC1pZGVudGl0eS1rZXkhIQ==";
const SEVEN_BYTE: &str = "04A1B2C3D4E5F6";
const TEN_BYTE: &str = "08112233445566778899";

fn start_reader_sim(dir: &Path, name: &str) -> (Proc, String) {
    let program = Path::new(bin()).with_file_name("storegate-reader-sim");
    assert!(
        program.exists(),
        "{} is missing: `cargo test` at the workspace root builds it (or `cargo build -p storegate-firmware`)",
        program.display()
    );
    let mut sim = Proc::spawn_interactive(name, &program.display().to_string(), &[], dir);
    let ready = sim.line_where("ready event", Duration::from_secs(10), |v| {
        v["event"] == "ready"
    });
    let port = ready["port"]
        .as_str()
        .expect("ready names the port")
        .to_string();
    (sim, port)
}

/// Points the stable link at the simulator's pty, as udev re-points /dev/serial/by-id on replug.
fn link_port(link: &Path, pty: &str) {
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(pty, link).expect("symlink");
}

fn command(sim: &mut Proc, line: &str) {
    sim.send_line(line);
    let answer = sim.line_where("answer", Duration::from_secs(5), |v| {
        v["event"] == "ok" || v["event"] == "error"
    });
    assert_eq!(answer["event"], "ok", "{line}: {answer}");
}

fn wait_pin(sim: &mut Proc, event: &str, on: bool, within: Duration) {
    sim.line_where(&format!("{event} on={on}"), within, |v| {
        v["event"] == event && v["on"] == on
    });
}

fn reader_config(dir: &Path, link: &Path, broker_url: &str) -> PathBuf {
    let extra = format!(
        "[identity]\nhmac_key = \"{HMAC_KEY}\"\n[[devices.card_readers]]\nname = \"front\"\nport = \"{}\"\ntill = \"till-7\"\nbeep_ms = 90\nsilence_timeout_ms = 3000\n",
        link.display()
    );
    gateway_config(dir, broker_url, free_port(), &extra)
}

/// docs/protocol.md's card identifier for a UID, computed here independently of the gateway: the
/// UID as a big-endian number, zero-padded to the digits of the largest UID of its length,
/// HMAC-SHA256 under the fleet key, hex.
fn expected_card_hash(uid_hex: &str) -> String {
    let bytes: Vec<u8> = (0..uid_hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&uid_hex[i..i + 2], 16).unwrap())
        .collect();
    let number = bytes.iter().fold(0u128, |n, b| (n << 8) | u128::from(*b));
    let width = ((1u128 << (8 * bytes.len())) - 1).to_string().len();
    let digits = format!("{number:0width$}");
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD
        .decode(HMAC_KEY)
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(digits.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn central_rows(db: &Path) -> Vec<(String, String, serde_json::Value)> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT kind, till, body FROM events WHERE store = ?1 AND gateway = ?2 ORDER BY seq",
        )
        .unwrap();
    stmt.query_map([STORE, GATEWAY], |r| {
        let body: String = r.get(2)?;
        Ok((r.get(0)?, r.get(1)?, serde_json::from_str(&body).unwrap()))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

fn devices(agent: &ureq::Agent, api: std::net::SocketAddr) -> serde_json::Value {
    agent
        .get(&format!("http://{api}/v1/devices"))
        .call()
        .expect("GET /v1/devices")
        .body_mut()
        .read_json::<serde_json::Value>()
        .expect("json")["devices"][0]
        .clone()
}

fn wait_device_state(
    agent: &ureq::Agent,
    api: std::net::SocketAddr,
    state: &str,
    within: Duration,
) -> serde_json::Value {
    wait_device(agent, api, 0, within, |d| d["state"] == state)
}

#[test]
fn card_taps_become_identity_seen_at_central_and_the_reader_beeps_after_each() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sim, pty) = start_reader_sim(dir.path(), "reader-sim");
    let link = dir.path().join("usb-storegate_reader-if00");
    link_port(&link, &pty);
    let broker_port = free_port();
    let _broker = start_broker(BrokerKind::Embedded, dir.path(), broker_port);
    let url = format!("mqtt://127.0.0.1:{broker_port}");
    let (_central, db) = start_central(dir.path(), &url);
    let acks = AckWatcher::start(broker_port);
    let config = reader_config(dir.path(), &link, &url);
    let (_gateway, api) = start_gateway(dir.path(), &config);

    // A seven-byte card, a ten-byte card, then the first card again.
    for (i, uid) in [SEVEN_BYTE, TEN_BYTE, SEVEN_BYTE].iter().enumerate() {
        command(&mut sim, &format!("present {uid}"));
        // The beep is sent only after the identification was committed.
        wait_pin(&mut sim, "buzzer", true, Duration::from_secs(10));
        wait_pin(&mut sim, "buzzer", false, Duration::from_secs(2));
        assert!(
            acks.wait_for(i as u64 + 1, Duration::from_secs(10)),
            "central did not ack tap {}",
            i + 1
        );
        command(&mut sim, &format!("remove {uid}"));
        // Card gone: the gateway turns the green LED off again.
        wait_pin(&mut sim, "led", false, Duration::from_secs(5));
    }

    let rows = central_rows(&db);
    assert_eq!(rows.len(), 3, "{rows:?}");
    for ((kind, till, body), uid) in rows.iter().zip([SEVEN_BYTE, TEN_BYTE, SEVEN_BYTE]) {
        assert_eq!(kind, "identity_seen");
        assert_eq!(till, "till-7");
        assert_eq!(
            body["identifiers"],
            serde_json::json!([{ "kind": "card", "hash": expected_card_hash(uid) }]),
            "no raw UID, only its HMAC"
        );
        assert!(!body.to_string().contains(uid));
    }
    let customer = |i: usize| rows[i].2["customer"].as_str().unwrap().to_string();
    assert!(customer(0).starts_with(&format!("prov:{GATEWAY}:")));
    assert_eq!(
        customer(0),
        customer(2),
        "the same card is the same customer"
    );
    assert_ne!(customer(0), customer(1));

    let agent = http();
    let device = devices(&agent, api);
    assert_eq!(device["state"], "up");
    assert_eq!(device["kind"], "card_reader");
    assert_eq!(
        device["firmware"],
        format!("{} (protocol 1)", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_reader_that_is_unplugged_is_reported_down_and_reopened_when_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let (mut first, pty) = start_reader_sim(dir.path(), "reader-sim-1");
    let link = dir.path().join("usb-storegate_reader-if00");
    link_port(&link, &pty);
    // No broker at all: identification is offline-first.
    let config = reader_config(
        dir.path(),
        &link,
        &format!("mqtt://127.0.0.1:{}", free_port()),
    );
    let (_gateway, api) = start_gateway(dir.path(), &config);
    let agent = http();
    wait_device_state(&agent, api, "up", Duration::from_secs(10));
    assert_eq!(metric(&agent, api, "storegate_device_up"), 1.0);

    // Unplug: the simulator (and its pty) is gone.
    first.kill9();
    let down = wait_device_state(&agent, api, "down", Duration::from_secs(10));
    assert!(
        down["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{down}"
    );
    assert_eq!(metric(&agent, api, "storegate_device_up"), 0.0);

    // Plug back in: a new pty behind the same stable name.
    let (mut second, pty) = start_reader_sim(dir.path(), "reader-sim-2");
    link_port(&link, &pty);
    let up = wait_device_state(&agent, api, "up", Duration::from_secs(15));
    assert!(up["reconnects"].as_u64().unwrap() >= 1, "{up}");

    // Line noise (a start byte with a bad length, then junk) is counted and survived.
    command(&mut second, "noise 7E40FFFF0102037E0501");
    command(&mut second, &format!("present {SEVEN_BYTE}"));
    wait_pin(&mut second, "buzzer", true, Duration::from_secs(10));
    assert!(metric(&agent, api, "storegate_device_input_invalid_total") >= 1.0);
    assert!(metric(&agent, api, "storegate_events_committed_total") >= 1.0);
}

/// A reader configured on the Pi's SPI header where this machine has none: the device is down
/// with the reason on `/v1/devices`, retried, and the rest of the daemon serves on.
#[test]
fn an_spi_reader_without_its_spidev_is_down_with_the_reason_and_sales_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let unused = free_port();
    let config = gateway_config(
        dir.path(),
        &format!("mqtt://127.0.0.1:{unused}"),
        0,
        "[identity]\nhmac_key = \"c3RvcmVnYXRlLXRlc3QtaWRlbnRpdHkta2V5IQ==\"\n[[devices.nfc_readers]]\nname = \"pi-reader\"\nspi = \"/dev/spidev-not-here.0\"\ntill = \"t1\"\n[[devices.nfc_readers]]\nname = \"reset-reader\"\nspi = \"/dev/spidev0.0\"\ntill = \"t2\"\nreset_gpio = \"/dev/gpiochip-not-here:25\"\n[[devices.nfc_readers]]\nname = \"irq-reader\"\nspi = \"/dev/spidev0.0\"\ntill = \"t3\"\nirq_gpio = \"/dev/gpiochip-irq-not-here:24\"\n",
    );
    let (_gateway, api) = start_gateway(dir.path(), &config);
    let agent = http();
    let device = wait_device(&agent, api, 0, Duration::from_secs(10), |d| {
        d["state"] == "down" && d["reconnects"].as_u64() >= Some(1)
    });
    assert_eq!(device["kind"], "nfc_reader");
    assert!(
        device["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("/dev/spidev-not-here.0")),
        "{device}"
    );
    // The reset line is pulsed before the SPI device is opened: its chip is named.
    let reset = wait_device(&agent, api, 1, Duration::from_secs(10), |d| {
        d["state"] == "down"
    });
    assert!(
        reset["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("/dev/gpiochip-not-here:25")),
        "{reset}"
    );
    // So is the IRQ line's, requested before the SPI device too.
    let irq = wait_device(&agent, api, 2, Duration::from_secs(10), |d| {
        d["state"] == "down"
    });
    assert!(
        irq["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("/dev/gpiochip-irq-not-here:24")),
        "{irq}"
    );
    post_purchase(&agent, api, "r-1").expect("sales go on");
}
