//! Serial scanners in the loop: pseudo-terminal pairs stand in for four scanners (each framed
//! differently, with AIM identifiers and noise), the real gateway reads them, and every scan
//! reaches the live event stream once, in order per scanner.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use serialport::{SerialPort, TTYPort};

/// The scanners' framing: (config suffix as TOML, bytes the "scanner" appends, prefix).
const FRAMING: [(&str, &str, &str); 4] = [
    ("\\r", "\r", ""),
    ("\\n", "\r\n", ""),
    ("\\r\\n", "\r\n", ""),
    ("\\u0003", "\u{3}", "\u{2}"),
];

struct Scanners {
    masters: Vec<TTYPort>,
    // The pty's other side stays open so the line keeps its settings between gateway opens.
    _slaves: Vec<TTYPort>,
    config: String,
}

fn scanners(count: usize) -> Scanners {
    let mut masters = Vec::new();
    let mut slaves = Vec::new();
    let mut config = String::new();
    for (i, (suffix, _, prefix)) in FRAMING.iter().enumerate().take(count) {
        let (master, slave) = TTYPort::pair().expect("pseudo-terminal pair");
        let path = slave.name().expect("pty name");
        config.push_str(&format!(
            "[[devices.scanners]]\nname = \"scanner-{i}\"\nport = \"{path}\"\ntill = \"till-{i}\"\nsuffix = \"{suffix}\"\nprefix = \"{}\"\nmax_len = 64\n",
            prefix.replace('\u{2}', "\\u0002")
        ));
        masters.push(master);
        slaves.push(slave);
    }
    Scanners {
        masters,
        _slaves: slaves,
        config,
    }
}

/// An EAN-13 with a valid check digit, unique per (scanner, n).
fn ean13(scanner: usize, n: usize) -> String {
    let body = format!("2{scanner}{n:010}");
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| u32::from(b - b'0') * if i % 2 == 0 { 3 } else { 1 })
        .sum();
    format!("{body}{}", (10 - sum % 10) % 10)
}

fn start(dir: &std::path::Path, config: &str) -> (Proc, std::net::SocketAddr, ureq::Agent) {
    let path = gateway_config(
        dir,
        &format!("mqtt://127.0.0.1:{}", free_port()),
        free_port(),
        config,
    );
    let (gateway, api) = start_gateway(dir, &path);
    let agent = http();
    for i in 0..4 {
        wait_device(&agent, api, i, Duration::from_secs(10), |d| {
            d.is_null() || d["state"] == "up"
        });
    }
    (gateway, api, agent)
}

#[test]
fn a_burst_of_1000_scans_across_4_scanners_lands_in_order_per_scanner() {
    let dir = tempfile::tempdir().unwrap();
    let Scanners {
        masters,
        _slaves,
        config,
    } = scanners(4);
    let (_gateway, api, agent) = start(dir.path(), &config);
    let live = LiveEvents::subscribe(api, "");

    const PER_SCANNER: usize = 250;
    let writers: Vec<_> = masters
        .into_iter()
        .enumerate()
        .map(|(i, mut port)| {
            std::thread::spawn(move || {
                let (_, suffix, prefix) = FRAMING[i];
                for n in 0..PER_SCANNER {
                    if i == 1 && n % 50 == 25 {
                        // Noise: a terminal escape sequence (BadBarcode-style) and line junk.
                        write!(port, "\u{1b}[2J{suffix}").unwrap();
                    }
                    write!(port, "{prefix}]E0{}{suffix}", ean13(i, n)).unwrap();
                }
                port.flush().unwrap();
                port
            })
        })
        .collect();

    let mut per_scanner: HashMap<String, Vec<String>> = HashMap::new();
    let mut refused = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while per_scanner.values().map(Vec::len).sum::<usize>() < 4 * PER_SCANNER {
        let left = deadline.saturating_duration_since(Instant::now());
        let (name, event) = live.next(left);
        match name.as_str() {
            "scan" => {
                assert_eq!(event["interpretation"]["kind"], "product", "{event}");
                assert_eq!(event["symbology"], "ean13");
                per_scanner
                    .entry(event["device"].as_str().unwrap().to_string())
                    .or_default()
                    .push(event["text"].as_str().unwrap().to_string());
            }
            "scan_refused" => refused += 1,
            other => panic!("unexpected {other} event: {event}"),
        }
    }
    let _ports: Vec<TTYPort> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    for i in 0..4 {
        let expected: Vec<String> = (0..PER_SCANNER).map(|n| ean13(i, n)).collect();
        assert_eq!(
            per_scanner[&format!("scanner-{i}")],
            expected,
            "scanner-{i}"
        );
    }
    assert_eq!(
        refused,
        PER_SCANNER / 50,
        "each escape sequence is refused once"
    );
    assert_eq!(
        metric(&agent, api, "storegate_device_input_invalid_total"),
        (PER_SCANNER / 50) as f64
    );
}

#[test]
fn ten_seconds_of_random_bytes_on_one_scanner_leave_the_gateway_and_its_neighbours_well() {
    let dir = tempfile::tempdir().unwrap();
    let Scanners {
        mut masters,
        _slaves,
        config,
    } = scanners(2);
    let (_gateway, api, agent) = start(dir.path(), &config);
    let live = LiveEvents::subscribe(api, "?till=till-1");

    let mut noisy = masters.remove(0);
    let mut neighbour = masters.remove(0);
    let noise = std::thread::spawn(move || {
        let mut rng = fastrand::Rng::with_seed(42);
        let started = Instant::now();
        let mut sent = 0usize;
        while started.elapsed() < Duration::from_secs(10) {
            // About what a 115200 baud line carries: 1 KiB every 90 ms.
            let chunk: Vec<u8> = (0..1024).map(|_| rng.u8(..)).collect();
            noisy.write_all(&chunk).unwrap();
            sent += chunk.len();
            std::thread::sleep(Duration::from_millis(90));
        }
        (noisy, sent)
    });
    // The neighbour keeps scanning through the storm, every scan arriving.
    for n in 0..20 {
        write!(neighbour, "]E0{}\r\n", ean13(1, n)).unwrap();
        let (name, event) = live.next(Duration::from_secs(10));
        assert_eq!(name, "scan");
        assert_eq!(event["text"], ean13(1, n));
    }
    let (mut noisy, sent) = noise.join().unwrap();
    assert!(sent > 100_000);

    assert_eq!(health(&agent, api)["status"], "ok");
    let devices = wait_device(&agent, api, 0, Duration::from_secs(5), |d| {
        d["state"] == "up"
    });
    assert_eq!(
        devices["reconnects"], 0,
        "noise must not take the reader down"
    );
    assert!(metric(&agent, api, "storegate_device_input_invalid_total") > 0.0);
    // After a line end the noisy scanner reads cleanly again (noise still in the pipe may
    // come out first, as scans of junk text or refusals).
    let live0 = LiveEvents::subscribe(api, "?till=till-0");
    write!(noisy, "\r]E0{}\r", ean13(0, 7)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (name, event) = live0.next(deadline.saturating_duration_since(Instant::now()));
        if event["text"] == ean13(0, 7) {
            assert_eq!(name, "scan");
            assert_eq!(event["interpretation"]["kind"], "product");
            break;
        }
    }
}

#[test]
fn loyalty_cards_by_magnetic_stripe_or_barcode_identify_the_customer_and_payment_cards_are_refused()
{
    let dir = tempfile::tempdir().unwrap();
    let Scanners {
        mut masters,
        _slaves,
        config,
    } = scanners(1);
    let config = format!(
        "[identity]\nhmac_key = \"c3RvcmVnYXRlLXRlc3QtaWRlbnRpdHkta2V5IQ==\"\n{}card_number = {{ skip = 4, take = 9, barcode_prefixes = [\"2790\"] }}\n",
        config
    );
    let (_gateway, api, agent) = start(dir.path(), &config);
    let live = LiveEvents::subscribe(api, "?till=till-0");
    let reader = &mut masters[0];

    let card = "%L6001234567890^MUSTER/ANNA^2912?;6001234567890=2912101?";
    write!(reader, "{card}\r").unwrap();
    let (name, scan) = live.next(Duration::from_secs(10));
    assert_eq!(name, "scan");
    assert_eq!(scan["interpretation"]["kind"], "magnetic_stripe");
    assert_eq!(scan["text"], "*********7890");
    assert!(!scan.to_string().contains("6001234567890"), "{scan}");
    let (name, identified) = live.next(Duration::from_secs(10));
    assert_eq!(name, "identified", "{identified}");
    let customer = identified["customer"].as_str().unwrap().to_string();
    assert!(customer.starts_with("prov:gw-1:"));

    // The same card again is the same customer.
    write!(reader, "{card}\r").unwrap();
    live.next(Duration::from_secs(10));
    let (_, again) = live.next(Duration::from_secs(10));
    assert_eq!(again["customer"], customer.as_str());

    // A payment card swiped by mistake: refused, nothing recorded.
    write!(
        reader,
        "%B4111111111111111^DOE/JOHN^2912101?;4111111111111111=2912101?\r"
    )
    .unwrap();
    live.next(Duration::from_secs(10));
    let (name, refused) = live.next(Duration::from_secs(10));
    assert_eq!(name, "card_refused", "{refused}");
    assert!(refused["refused"]
        .as_str()
        .unwrap()
        .contains("payment card"));
    assert_eq!(metric(&agent, api, "storegate_events_committed_total"), 2.0);

    // A loyalty card with a barcode in the store's number range identifies too; a product
    // barcode outside the range stays a product.
    write!(reader, "]C02790123456\r").unwrap();
    let (name, scan) = live.next(Duration::from_secs(10));
    assert_eq!(
        (name.as_str(), &scan["interpretation"]["kind"]),
        ("scan", &serde_json::json!("loyalty_card"))
    );
    assert_eq!(scan["text"], "******3456");
    let (name, identified) = live.next(Duration::from_secs(10));
    assert_eq!(name, "identified", "{identified}");
    assert_ne!(identified["customer"], customer.as_str());
    write!(reader, "]E0{}\r", ean13(0, 1)).unwrap();
    let (_, product) = live.next(Duration::from_secs(10));
    assert_eq!(product["interpretation"]["kind"], "product");
    assert_eq!(metric(&agent, api, "storegate_events_committed_total"), 3.0);
}
