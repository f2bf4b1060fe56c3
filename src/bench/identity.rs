//! Customer identification, at central and at the till (targets: ≥ 5,000 identifications/s
//! resolved at central; identify p99 < 20 ms offline and < 300 ms online at the till).
//!
//! - Central: `identity_seen` events from many gateways, stored and resolved through central's
//!   store (`store_batch`: dedup, ack, resolution, changes recorded) on a SQLite file — a third
//!   of them cards central already knows, some with a verified phone that merges two profiles.
//!   Baseline in the same run: the same number of purchases without a customer through the same
//!   path (storage and ack without resolution).
//! - The till: `POST /v1/customers/identify` on the real daemon (`storegate run`, a process of
//!   its own), one call at a time. Offline (no broker): half new cards (a provisional ref),
//!   half cards the box knows. Online (embedded broker, the reference central in this process):
//!   cards only central knows, answered by `profile.lookup`. Baseline: `GET /healthz` on the
//!   same daemon (the HTTP round trip alone).

use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use serde_json::{json, Value};

use storegate::central::Store;
use storegate::identity::HmacKey;
use storegate::protocol::{IdentifierKind, WireEvent};

use super::{spawn_gateway, write_gateway_config};

const KEY: &str = "c3RvcmVnYXRlLWJlbmNoLWlkZW50aXR5LWtleQ==";
/// Events per batch, as a gateway sends them.
const BATCH: usize = 100;
const GATEWAYS: usize = 20;
const WARM_UP: usize = 20;

pub(super) fn run(
    identifications: usize,
    calls: usize,
    broker: Option<&str>,
) -> anyhow::Result<Value> {
    let key = HmacKey::try_from(KEY.to_string()).map_err(|e| anyhow::anyhow!(e))?;
    eprintln!("bench: {identifications} identifications resolved at central");
    let central = central_throughput(&key, identifications)?;
    eprintln!("bench: {calls} identify calls at the till, offline and online");
    let till = till_latency(&key, calls, broker)?;
    Ok(json!({ "central": central, "till": till }))
}

/// A wire event of `kind` at `seq`, committed now at till `t1` (the fleet simulator's too).
pub(crate) fn event(seq: u64, kind: &str, body: Value) -> anyhow::Result<WireEvent> {
    Ok(WireEvent {
        seq,
        id: ulid::Ulid::new().to_string(),
        kind: kind.into(),
        at: storegate::protocol::timestamp(std::time::SystemTime::now()),
        clock_synced: true,
        till: "t1".into(),
        body: RawValue::from_string(body.to_string())?,
    })
}

fn card(key: &HmacKey, n: usize) -> anyhow::Result<Value> {
    let identifier = key
        .identifier(IdentifierKind::Card, &format!("7{n:011}"), None)
        .map_err(|e| anyhow::anyhow!(e))?;
    Ok(serde_json::to_value(identifier)?)
}

/// Events per second through central's store, with and without resolution.
fn central_throughput(key: &HmacKey, total: usize) -> anyhow::Result<Value> {
    let per_gateway = total.div_ceil(GATEWAYS);
    let mut seen = Vec::with_capacity(GATEWAYS);
    let mut plain = Vec::with_capacity(GATEWAYS);
    for g in 0..GATEWAYS {
        let mut identities = Vec::with_capacity(per_gateway);
        let mut purchases = Vec::with_capacity(per_gateway);
        for i in 0..per_gateway {
            let n = g * per_gateway + i;
            let seq = i as u64 + 1;
            // A third of the cards were met before (at another gateway); every tenth comes
            // with a verified phone shared by two cards, which merges their profiles.
            let card_no = if n.is_multiple_of(3) { n / 3 } else { n };
            let mut identifiers = vec![card(key, card_no)?];
            if n.is_multiple_of(10) {
                let phone = key
                    .identifier(
                        IdentifierKind::Phone,
                        &format!("+4915{:09}", n / 20),
                        Some(true),
                    )
                    .map_err(|e| anyhow::anyhow!(e))?;
                identifiers.push(serde_json::to_value(phone)?);
            }
            let customer = format!("prov:gw-{g}:{}", ulid::Ulid::new());
            identities.push(event(
                seq,
                "identity_seen",
                json!({ "customer": customer, "identifiers": identifiers }),
            )?);
            purchases.push(event(
                seq,
                "purchase",
                json!({ "receipt": format!("r-{seq}"), "lines": [{ "sku": "a", "qty": 1, "unit_minor": 100 }],
                        "total_minor": 100, "currency": "EUR", "customer": null }),
            )?);
        }
        seen.push(identities);
        plain.push(purchases);
    }
    let dir = tempfile::tempdir()?;
    let plain_rate = store_all(&dir.path().join("plain.db"), &plain)?;
    let resolved_rate = store_all(&dir.path().join("seen.db"), &seen)?;
    Ok(json!({
        "identifications": per_gateway * GATEWAYS,
        "gateways": GATEWAYS,
        "identifications_per_s": resolved_rate.round(),
        "baseline_plain_events_per_s": plain_rate.round(),
        "ratio_to_baseline": (resolved_rate / plain_rate * 100.0).round() / 100.0,
    }))
}

/// Stores every gateway's events in batches, gateways interleaved as they arrive at central.
fn store_all(path: &std::path::Path, gateways: &[Vec<WireEvent>]) -> anyhow::Result<f64> {
    let store = Store::open_sqlite(path)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let events: usize = gateways.iter().map(Vec::len).sum();
    let started = Instant::now();
    let batches = gateways
        .iter()
        .map(|g| g.len().div_ceil(BATCH))
        .max()
        .unwrap_or(0);
    for b in 0..batches {
        for (g, events) in gateways.iter().enumerate() {
            let Some(batch) = events.chunks(BATCH).nth(b) else {
                continue;
            };
            let outcome = runtime.block_on(store.store_batch(
                "bench".into(),
                format!("gw-{g}"),
                batch.to_vec(),
            ))?;
            anyhow::ensure!(
                outcome.refused == 0,
                "central refused bench events: {outcome:?}"
            );
        }
    }
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

/// The till's identify latency on the real daemon, offline and online.
fn till_latency(key: &HmacKey, calls: usize, broker: Option<&str>) -> anyhow::Result<Value> {
    let exe = std::env::current_exe()?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let identity = format!("[identity]\nhmac_key = \"{KEY}\"\nlookup_timeout_ms = 300\n");

    // Offline: nothing listens where the broker should be.
    let dir = tempfile::tempdir()?;
    let unused = storegate::broker::free_loopback_addr()?;
    let config = write_gateway_config(
        &dir.path().join("offline.toml"),
        &format!("mqtt://{unused}"),
        &dir.path().join("offline.db"),
        &identity,
    )?;
    let (daemon, api) = spawn_gateway(&exe, &config)?;
    let mut offline = Vec::with_capacity(calls);
    for i in 0..WARM_UP + calls {
        // Even calls meet a new card, odd ones the card of the call before.
        let number = 100_000 + i - (i % 2);
        let elapsed = identify(&agent, &api, &format!("8{number:011}"))?;
        if i >= WARM_UP {
            offline.push(elapsed);
        }
    }
    let http_alone = http_alone(&agent, &api, calls)?;
    drop(daemon);

    // Online: a broker and the reference central, which knows every card asked for.
    let (broker, _broker_process, broker_name) = super::drain::start_broker(broker, dir.path())?;
    let central_db = dir.path().join("central.db");
    {
        let store = Store::open_sqlite(&central_db)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        for i in 0..WARM_UP + calls {
            let identifier = key
                .identifier(IdentifierKind::Card, &format!("9{i:011}"), None)
                .map_err(|e| anyhow::anyhow!(e))?;
            runtime.block_on(store.register(vec![identifier]))?;
        }
    }
    let central_config = storegate::config::parse_central(&format!(
        "[mqtt]\nurl = \"{broker}\"\nallow_plaintext = true\n[central]\ndb = \"{}\"\nclient_id = \"bench-central\"\n",
        central_db.display()
    ))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let central = runtime.spawn(storegate::central::run(
        central_config,
        || {},
        storegate::daemon::signalled(stopped),
    ));
    let config = write_gateway_config(
        &dir.path().join("online.toml"),
        &broker,
        &dir.path().join("online.db"),
        &identity,
    )?;
    let (daemon, api) = spawn_gateway(&exe, &config)?;
    wait_connected(&agent, &api)?;
    let mut online = Vec::with_capacity(calls);
    let mut found = 0;
    for i in 0..WARM_UP + calls {
        let started = Instant::now();
        let answer = identify_answer(&agent, &api, &format!("9{i:011}"))?;
        let elapsed = started.elapsed();
        if i >= WARM_UP {
            online.push(elapsed);
            found += usize::from(answer["known"] == "central");
        }
    }
    drop(daemon);
    let _ = stop.send(true);
    let _ = runtime.block_on(central);
    Ok(json!({
        "calls": calls,
        "offline_ms": super::scan_latency::percentiles(offline),
        "online_ms": super::scan_latency::percentiles(online),
        "online_answered_by_central": found,
        "broker": broker_name,
        "baseline_http_round_trip_ms": super::scan_latency::percentiles(http_alone),
    }))
}

fn identify_answer(agent: &ureq::Agent, api: &str, number: &str) -> anyhow::Result<Value> {
    let answer: Value = agent
        .post(&format!("http://{api}/v1/customers/identify"))
        .send_json(json!({ "till": "t1", "identifiers": [{ "kind": "card", "value": number }] }))?
        .body_mut()
        .read_json()?;
    anyhow::ensure!(answer["customer"].is_string(), "identify failed: {answer}");
    Ok(answer)
}

fn identify(agent: &ureq::Agent, api: &str, number: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    identify_answer(agent, api, number)?;
    Ok(started.elapsed())
}

fn http_alone(agent: &ureq::Agent, api: &str, calls: usize) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(calls);
    for i in 0..WARM_UP + calls {
        let started = Instant::now();
        agent.get(&format!("http://{api}/healthz")).call()?;
        if i >= WARM_UP {
            times.push(started.elapsed());
        }
    }
    Ok(times)
}

fn wait_connected(agent: &ureq::Agent, api: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let health: Value = agent
            .get(&format!("http://{api}/healthz"))
            .call()?
            .body_mut()
            .read_json()?;
        if health["sync"]["connected"] == true {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the bench gateway never connected: {health}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
