//! A simulated till: posts purchases over the gateway's HTTP API at a steady rate.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A small catalogue of real-looking items (GTIN-13 with valid check digits).
const CATALOGUE: &[(&str, &str, i64)] = &[
    ("milk-1l", "4006381333931", 119),
    ("bread-rye", "4012345000016", 249),
    ("coffee-500g", "4000417025005", 699),
    ("apples-1kg", "2001234000007", 279),
    ("chocolate", "7622210449283", 129),
];

pub(super) struct Till(std::thread::JoinHandle<()>);

impl Till {
    pub fn join(self) {
        let _ = self.0.join();
    }
}

pub(super) fn start(
    api: SocketAddr,
    rate: f64,
    limit: Option<u64>,
    sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<Till> {
    let handle = std::thread::Builder::new()
        .name("demo-till".into())
        .spawn(move || {
            let url = format!("http://{api}/v1/purchases");
            let run = ulid::Ulid::new().to_string();
            let interval = Duration::from_secs_f64(1.0 / rate);
            let mut next = Instant::now();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && limit.is_none_or(|l| n < l) {
                n += 1;
                let purchase = purchase(&run, n);
                // The key makes a retry after a timeout safe: the gateway records it once.
                let key = format!("{run}-{n}");
                match ureq::post(&url)
                    .header("Idempotency-Key", &key)
                    .send_json(&purchase)
                {
                    Ok(_) => {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => eprintln!("demo till: purchase {n} refused: {error}"),
                }
                next += interval;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else {
                    next = now;
                }
            }
        })?;
    Ok(Till(handle))
}

fn purchase(run: &str, n: u64) -> serde_json::Value {
    let lines: Vec<serde_json::Value> = (0..(1 + n % 3))
        .map(|i| {
            let (sku, gtin, unit) = CATALOGUE[((n + i * 7) % CATALOGUE.len() as u64) as usize];
            serde_json::json!({ "sku": sku, "gtin": gtin, "qty": 1 + (n + i) % 2, "unit_minor": unit })
        })
        .collect();
    let total: i64 = lines
        .iter()
        .map(|l| l["qty"].as_i64().unwrap_or(0) * l["unit_minor"].as_i64().unwrap_or(0))
        .sum();
    serde_json::json!({
        "till": "t1",
        "receipt": format!("{}-{n}", &run[16..]),
        "lines": lines,
        "total_minor": total,
        "currency": "EUR",
        "customer": null,
        "coupons": [],
        "points": total / 100,
    })
}
