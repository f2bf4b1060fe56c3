//! The demo's customer story, told through the real interfaces: the web shop registers a
//! customer at central's online channel and gives them an app QR code; while the stores are
//! cut off from central, a till in one store scans the app code and a till in another store
//! reads the customer's loyalty card, and both sell to them; when the broker comes back, every
//! box and central agree it was one person, with the points of all three purchases.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};

/// The customer's details as the web shop has them. A demo card number, not a real one.
const EMAIL: &str = "ana.demo@example.com";
const CARD: &str = "6001 2345 6789 0123";

/// Where the story's calls go.
pub(super) struct Story {
    /// Central's online channel.
    pub central: SocketAddr,
    /// Its bearer token.
    pub token: String,
    /// The two stores' gateway APIs.
    pub north: SocketAddr,
    pub south: SocketAddr,
}

/// What the offline half of the story left to be checked after reconnect.
pub(super) struct Offline {
    customer: String,
    north_ref: String,
    south_ref: String,
    expected_points: i64,
}

fn post(url: &str, token: Option<&str>, body: &Value) -> anyhow::Result<Value> {
    let mut request = ureq::post(url);
    if let Some(token) = token {
        request = request.header("Authorization", &format!("Bearer {token}"));
    }
    let mut response = request
        .send_json(body)
        .with_context(|| format!("POST {url}"))?;
    Ok(response.body_mut().read_json()?)
}

fn get(url: &str, token: Option<&str>) -> anyhow::Result<Value> {
    let mut request = ureq::get(url);
    if let Some(token) = token {
        request = request.header("Authorization", &format!("Bearer {token}"));
    }
    let mut response = request.call().with_context(|| format!("GET {url}"))?;
    Ok(response.body_mut().read_json()?)
}

fn points(answer: &Value, field: &str) -> i64 {
    answer[field].as_i64().unwrap_or(0)
}

impl Story {
    /// Online registration and an online order, then the two offline stores.
    pub fn offline_half(&self) -> anyhow::Result<Offline> {
        let central = format!("http://{}", self.central);
        let token = Some(self.token.as_str());
        let registered = post(
            &format!("{central}/v1/customers"),
            token,
            &json!({ "identifiers": [
                { "kind": "email", "value": EMAIL, "verified": true },
                { "kind": "card", "value": CARD },
            ] }),
        )?;
        let customer = registered["customer"]
            .as_str()
            .context("central registered no customer")?
            .to_string();
        eprintln!("demo: web shop registered {EMAIL} with their loyalty card → {customer}");
        let app = post(
            &format!("{central}/v1/customers/{customer}/app-token"),
            token,
            &json!({}),
        )?;
        let app_token = app["token"]
            .as_str()
            .context("central issued no app token")?
            .to_string();
        eprintln!("demo: the app shows the customer's QR code (an SGA1 token)");
        let online = post(
            &format!("{central}/v1/online-purchases"),
            token,
            &json!({ "customer": customer, "order": ulid::Ulid::new().to_string(),
                     "lines": [{ "sku": "coffee-500g", "qty": 1, "unit_minor": 1000 }],
                     "total_minor": 1000, "currency": "EUR" }),
        )?;
        eprintln!(
            "demo: online order of 10.00 EUR earns {} points",
            points(&online, "points")
        );

        eprintln!("demo: the stores cannot reach central (no broker yet): they sell offline");
        let (north_ref, north_points) = self.sell(self.north, "app", &app_token, 2500, "north")?;
        let (south_ref, south_points) = self.sell(self.south, "card", CARD, 4000, "south")?;
        Ok(Offline {
            customer,
            north_ref,
            south_ref,
            expected_points: points(&online, "points") + north_points + south_points,
        })
    }

    /// A till identifies the customer by `kind` and sells them `total_minor`.
    fn sell(
        &self,
        gateway: SocketAddr,
        kind: &str,
        value: &str,
        total_minor: i64,
        store: &str,
    ) -> anyhow::Result<(String, i64)> {
        let base = format!("http://{gateway}");
        let identified = post(
            &format!("{base}/v1/customers/identify"),
            None,
            &json!({ "till": "t1", "identifiers": [{ "kind": kind, "value": value }] }),
        )?;
        let reference = identified["customer"]
            .as_str()
            .context("the gateway identified no one")?
            .to_string();
        eprintln!(
            "demo: {store} store, offline: {kind} read at the till → {reference} ({})",
            identified["known"].as_str().unwrap_or("?")
        );
        let sale = post(
            &format!("{base}/v1/purchases"),
            None,
            &json!({ "till": "t1", "receipt": format!("{store}-{}", ulid::Ulid::new()),
                     "lines": [{ "sku": "basket", "qty": 1, "unit_minor": total_minor }],
                     "total_minor": total_minor, "currency": "EUR", "customer": reference }),
        )?;
        eprintln!(
            "demo: {store} store, offline: a {}.{:02} EUR sale earns {} points (balance here {})",
            total_minor / 100,
            total_minor % 100,
            points(&sale, "points"),
            points(&sale, "balance")
        );
        Ok((reference, points(&sale, "points")))
    }

    /// After reconnect: waits (at most `within`) until central holds one profile with every
    /// ref and all the points, and each store's box resolves its ref to it with those points.
    pub fn reconciled(&self, offline: &Offline, within: Duration) -> anyhow::Result<Value> {
        let deadline = Instant::now() + within;
        let central = format!("http://{}", self.central);
        loop {
            let profile = get(
                &format!("{central}/v1/customers/{}", offline.customer),
                Some(&self.token),
            )?;
            let merged: Vec<&str> = profile["merged"]
                .as_array()
                .map(|m| m.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let north = get(
                &format!("http://{}/v1/customers/{}", self.north, offline.north_ref),
                None,
            )?;
            let south = get(
                &format!("http://{}/v1/customers/{}", self.south, offline.south_ref),
                None,
            )?;
            let agreed = merged.contains(&offline.north_ref.as_str())
                && merged.contains(&offline.south_ref.as_str())
                && points(&profile, "points") == offline.expected_points
                && [&north, &south].iter().all(|view| {
                    view["customer"] == offline.customer.as_str()
                        && points(view, "points") == offline.expected_points
                });
            if agreed {
                eprintln!(
                    "demo: reconnected: central and both stores resolve {} and {} to {} with {} points",
                    offline.north_ref, offline.south_ref, offline.customer, offline.expected_points
                );
                return Ok(json!({
                    "customer": offline.customer,
                    "merged": merged,
                    "points": offline.expected_points,
                }));
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "the stores and central did not agree within {within:?}: central {profile}, north {north}, south {south}"
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
