//! `storegate fleet-sim`: many stores' gateways against one broker and central, to size
//! central. Each simulated gateway is its own MQTT session (client id
//! `storegate-<store>-gw-1`) keeping the gateway's side of docs/protocol.md: batches of events
//! in seq order on `…/events`, the cumulative ack on `…/ack`, everything unacked sent again
//! from the acked position after a reconnect or an ack timeout. Their traffic is a store's:
//! purchases (some by identified customers), loyalty identifications of cards shared across
//! the fleet (so central merges profiles), coupon redemptions and till orders.
//!
//! Some stores lose their connection for a while (`--outages`) and come back with a backlog;
//! `--storm-at` drops every store at once and reconnects them together (what a broker restart
//! does). It prints events/s acked by central, ack latency, identifications/s and the backlog
//! each second, and a summary (`--json` for scripts). Without `--broker` it starts the
//! embedded broker and a reference central on SQLite in a temporary directory.

mod store;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::watch;

use self::store::{SimStore, StorePlan};

/// `storegate fleet-sim` options.
#[derive(Debug, clap::Args)]
pub struct FleetSimArgs {
    /// The fleet's broker; without it the embedded broker is started here.
    #[arg(long)]
    broker: Option<String>,
    /// Start reference centrals here on this store (a SQLite path or `postgres://…`); without
    /// it, and without `--broker`, one central on SQLite in a temporary directory. With
    /// `--broker` and no `--central-db`, central is already running against that broker.
    #[arg(long)]
    central_db: Option<String>,
    /// How many central instances to start here (`$share/central/…` subscriptions; more than
    /// one needs PostgreSQL and a broker with shared subscriptions, such as Mosquitto).
    #[arg(long, default_value_t = 1)]
    centrals: usize,
    /// Simulated stores, one gateway each.
    #[arg(long, default_value_t = 100)]
    stores: usize,
    /// How long stores produce traffic; the backlog is then drained (at most 60 s more).
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Events per second per store.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Most events per batch.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Share of stores that lose their connection for 3-10 s during the run.
    #[arg(long, default_value_t = 0.1)]
    outages: f64,
    /// Seconds into the run at which every store disconnects at once.
    #[arg(long)]
    storm_at: Option<u64>,
    /// How long every store stays away in the storm before all reconnect together.
    #[arg(long, default_value_t = 5)]
    storm_pause: u64,
    /// Print the summary as JSON (progress still goes to stderr).
    #[arg(long)]
    json: bool,
    /// Seed of the traffic (printed, so a run can be repeated).
    #[arg(long)]
    seed: Option<u64>,
    /// Central's store (a SQLite path or `postgres://…`), read each second to follow its
    /// resolver: how many acked events still wait for their identity and points effects.
    /// Implied by `--central-db`.
    #[arg(long)]
    watch_db: Option<String>,
}

/// What every store adds to, read by the progress line and the summary.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    pub generated: AtomicU64,
    pub acked: AtomicU64,
    pub identities_acked: AtomicU64,
    /// Acked events with identity or points effects for central's resolver.
    pub effects_acked: AtomicU64,
    pub backlog: AtomicU64,
    pub connected: AtomicUsize,
    /// Stores whose events from before the storm's reconnect are all acked.
    pub storm_absorbed: AtomicUsize,
    /// Ack latencies (publish of an event's batch to the ack covering it), in microseconds.
    pub latencies_us: Mutex<Vec<u32>>,
}

/// Whether stores are connected: the storm takes them all away at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Running,
    Storm,
    /// Traffic has stopped; stores send what they hold.
    Draining,
    Stop,
}

pub fn run(args: FleetSimArgs) -> anyhow::Result<()> {
    if !(args.rate > 0.0 && args.rate <= 10_000.0) {
        anyhow::bail!("--rate must be between 0 and 10000 events per second per store");
    }
    if !(1..=20_000).contains(&args.stores) {
        anyhow::bail!("--stores must be between 1 and 20000");
    }
    if !(1..=1_000).contains(&args.batch) {
        anyhow::bail!("--batch must be between 1 and 1000");
    }
    if !(0.0..=1.0).contains(&args.outages) {
        anyhow::bail!("--outages must be a share between 0 and 1");
    }
    if !(1..=16).contains(&args.centrals) {
        anyhow::bail!("--centrals must be between 1 and 16");
    }
    if args.storm_at.is_some_and(|at| at >= args.seconds) {
        anyhow::bail!("--storm-at must be within --seconds");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let summary = runtime.block_on(simulate(&args))?;
    if args.json {
        crate::cli::print_json(&summary);
    } else {
        print_summary(&summary);
    }
    Ok(())
}

async fn simulate(args: &FleetSimArgs) -> anyhow::Result<serde_json::Value> {
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));
    eprintln!("fleet-sim: seed {seed} (--seed {seed} repeats this traffic)");
    let (stop_central, central_stopped) = watch::channel(false);
    let dir = tempfile::Builder::new()
        .prefix("storegate-fleet-sim-")
        .tempdir()?;
    let url = match &args.broker {
        Some(url) => url.clone(),
        None => {
            let broker = storegate::broker::free_loopback_addr()?;
            tokio::task::spawn_blocking(move || storegate::broker::start_embedded(broker))
                .await??;
            eprintln!("fleet-sim: embedded broker on mqtt://{broker}");
            format!("mqtt://{broker}")
        }
    };
    let central_db = match (&args.central_db, &args.broker) {
        (Some(db), _) => Some(db.clone()),
        (None, None) => Some(dir.path().join("central.db").display().to_string()),
        (None, Some(_)) => None,
    };
    let mut centrals = Vec::new();
    if let Some(db) = &central_db {
        for n in 0..args.centrals {
            centrals.push(start_central(
                &url,
                db,
                n,
                args.centrals,
                central_stopped.clone(),
            )?);
        }
        eprintln!(
            "fleet-sim: {} reference central(s) on {}",
            args.centrals,
            if db.starts_with("postgres") {
                "PostgreSQL"
            } else {
                "SQLite"
            }
        );
    }
    let address = storegate::config::BrokerAddress::parse(&url).map_err(anyhow::Error::msg)?;
    wait_for_central(&address).await?;
    let watched = match args.watch_db.as_ref().or(central_db.as_ref()) {
        Some(db) => Some(
            storegate::central::Store::open(db)
                .await
                .context("--watch-db")?,
        ),
        None => None,
    };

    let totals = Arc::new(Totals::default());
    let (phase_tx, phase) = watch::channel(Phase::Running);
    let mut rng = fastrand::Rng::with_seed(seed);
    let cards = Arc::new(
        (0..(args.stores * 50).max(100))
            .map(|_| {
                format!(
                    "{:016x}{:016x}{:016x}{:016x}",
                    rng.u64(..),
                    rng.u64(..),
                    rng.u64(..),
                    rng.u64(..)
                )
            })
            .collect::<Vec<_>>(),
    );
    let run_for = Duration::from_secs(args.seconds);
    let mut stores = Vec::with_capacity(args.stores);
    for index in 0..args.stores {
        let outage = (rng.f64() < args.outages).then(|| {
            let start = run_for.mul_f64(0.1 + rng.f64() * 0.6);
            (start, Duration::from_millis(rng.u64(3_000..=10_000)))
        });
        let plan = StorePlan {
            store: format!("sim-{index:05}"),
            rate: args.rate,
            batch: args.batch,
            outage,
            seed: rng.u64(..),
            cards: cards.clone(),
        };
        stores.push(tokio::spawn(
            SimStore::new(plan, &address, totals.clone()).run(phase.clone()),
        ));
    }

    let started = Instant::now();
    let mut series = Vec::new();
    let mut storm = serde_json::Value::Null;
    let mut storm_reconnected: Option<Instant> = None;
    let mut last_acked = 0;
    let mut last_identities = 0;
    let mut last_applied = 0;
    let mut effects_in_run = None;
    let mut effects_drained = None;
    let mut acked_in_run = None;
    let mut peak = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let drain_limit = run_for + Duration::from_secs(60);
    loop {
        tick.tick().await;
        let elapsed = started.elapsed();
        let second = elapsed.as_secs();
        if let Some(at) = args.storm_at {
            if second == at && *phase_tx.borrow() == Phase::Running {
                eprintln!(
                    "fleet-sim: storm: every store disconnects for {} s",
                    args.storm_pause
                );
                phase_tx.send_replace(Phase::Storm);
            }
            if second == at + args.storm_pause && *phase_tx.borrow() == Phase::Storm {
                eprintln!("fleet-sim: storm: every store reconnects at once");
                storm_reconnected = Some(Instant::now());
                phase_tx.send_replace(Phase::Running);
            }
        }
        if elapsed >= run_for && matches!(*phase_tx.borrow(), Phase::Running | Phase::Storm) {
            phase_tx.send_replace(Phase::Draining);
            acked_in_run = Some((totals.acked.load(Ordering::Relaxed), elapsed));
        }
        let acked = totals.acked.load(Ordering::Relaxed);
        let identities = totals.identities_acked.load(Ordering::Relaxed);
        let backlog = totals.backlog.load(Ordering::Relaxed);
        let connected = totals.connected.load(Ordering::Relaxed);
        let recent_p99 = percentile_ms(&recent_latencies(&totals), 0.99);
        // Acked events whose effects central has applied: acked with effects, less what its
        // queue still holds.
        let pending = match &watched {
            Some(store) => {
                tokio::time::timeout(Duration::from_millis(500), store.pending_effects())
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            None => None,
        };
        let applied = pending.map(|pending| {
            totals
                .effects_acked
                .load(Ordering::Relaxed)
                .saturating_sub(pending)
        });
        let applied_now = applied.map(|a| a.saturating_sub(last_applied));
        series.push(serde_json::json!({
            "second": second, "acked_per_sec": acked - last_acked, "backlog": backlog,
            "connected": connected, "ack_p99_ms": recent_p99,
            "effects_applied_per_sec": applied_now, "effects_pending": pending,
        }));
        let effects = match (applied_now, pending) {
            (Some(applied), Some(pending)) => {
                format!("effects {applied:>6}/s (pending {pending:>7})")
            }
            _ => format!("identities {:>6}/s", identities - last_identities),
        };
        eprintln!(
            "{} {second:>4} s  acked {:>7}/s  {effects}  backlog {backlog:>8}  connected {connected}/{}  ack p99 {}",
            bar(elapsed, run_for),
            acked - last_acked,
            args.stores,
            recent_p99.map_or("-".into(), |ms| format!("{ms:.0} ms")),
        );
        if let Some(applied) = applied {
            last_applied = applied;
            if acked_in_run.is_some() && effects_in_run.is_none() {
                effects_in_run = Some((applied, elapsed));
            }
        }
        peak = peak.max(acked - last_acked);
        last_acked = acked;
        last_identities = identities;
        if let Some(reconnected) = storm_reconnected {
            if storm.is_null() && totals.storm_absorbed.load(Ordering::Relaxed) == args.stores {
                let secs = reconnected.elapsed().as_secs_f64();
                eprintln!("fleet-sim: storm absorbed: every store's backlog acked {secs:.1} s after the reconnect");
                storm = serde_json::json!({ "absorbed_secs": round1(secs) });
            }
        }
        let draining = *phase_tx.borrow() == Phase::Draining;
        let all_acked = backlog == 0 && acked == totals.generated.load(Ordering::Relaxed);
        if draining && all_acked && effects_drained.is_none() && pending.is_some_and(|p| p == 0) {
            effects_drained = acked_in_run.map(|(_, during): (u64, Duration)| elapsed - during);
        }
        // With central's store watched, the run ends once its resolver has caught up too.
        if draining && all_acked && (watched.is_none() || effects_drained.is_some()) {
            break;
        }
        if elapsed >= drain_limit {
            eprintln!("fleet-sim: the backlog did not drain within 60 s of the run's end");
            break;
        }
    }
    let elapsed = started.elapsed();
    phase_tx.send_replace(Phase::Stop);
    for store in stores {
        let _ = tokio::time::timeout(Duration::from_secs(5), store).await;
    }
    let _ = stop_central.send(true);
    for central in centrals {
        central.await?.context("central")?;
    }
    // What an embedded SQLite central holds, checked: each event once.
    let mut stored = serde_json::Value::Null;
    if let Some(db) = central_db.filter(|db| !db.starts_with("postgres")) {
        stored = central_counts(std::path::Path::new(&db))?;
    }
    drop(dir);

    let mut latencies = std::mem::take(
        &mut *totals
            .latencies_us
            .lock()
            .map_err(|_| anyhow::anyhow!("latency lock poisoned"))?,
    );
    latencies.sort_unstable();
    let acked = totals.acked.load(Ordering::Relaxed);
    let generated = totals.generated.load(Ordering::Relaxed);
    if args.storm_at.is_some() && storm.is_null() {
        storm = serde_json::json!({ "absorbed_secs": null });
    }
    Ok(serde_json::json!({
        "seed": seed,
        "stores": args.stores,
        "seconds": args.seconds,
        "offered_events_per_sec": args.rate * args.stores as f64,
        "events_generated": generated,
        "events_acked": acked,
        "unacked_at_end": generated - acked.min(generated),
        "acked_per_sec": acked_in_run.map(|(acked, during): (u64, Duration)| round1(acked as f64 / during.as_secs_f64())),
        "peak_acked_per_sec": peak,
        "drained_secs": acked_in_run.map(|(_, during)| round1((elapsed - during).as_secs_f64())),
        "identities_per_sec": round1(totals.identities_acked.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64()),
        "effects": watched.as_ref().map(|_| serde_json::json!({
            "applied_per_sec": effects_in_run.map(|(applied, during): (u64, Duration)| round1(applied as f64 / during.as_secs_f64())),
            "drained_secs": effects_drained.map(|d| round1(d.as_secs_f64())),
        })),
        "ack_latency_ms": {
            "p50": percentile_ms(&latencies, 0.5),
            "p99": percentile_ms(&latencies, 0.99),
            "max": latencies.last().map(|us| round1(f64::from(*us) / 1000.0)),
        },
        "storm": storm,
        "central": stored,
        "series": series,
    }))
}

/// A reference central instance on `db`, one of `of` sharing the load.
fn start_central(
    url: &str,
    db: &str,
    n: usize,
    of: usize,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<Result<(), storegate::central::CentralError>>> {
    let share = if of > 1 {
        "share_group = \"central\"\n"
    } else {
        ""
    };
    let config = storegate::config::parse_central(&format!(
        "[mqtt]\nurl = \"{url}\"\n[central]\ndb = \"{db}\"\nclient_id = \"storegate-central-sim-{n}\"\n{share}"
    ))?;
    Ok(tokio::spawn(storegate::central::run(
        config,
        || {},
        storegate::daemon::signalled(stopped),
    )))
}

/// Until central says it is online (its retained status): events sent before it subscribed
/// would wait out a gateway's ack timeout, which is not what is being measured.
async fn wait_for_central(broker: &storegate::config::BrokerAddress) -> anyhow::Result<()> {
    let mut options = rumqttc::MqttOptions::new(
        format!("fleet-sim-{}", ulid::Ulid::new()),
        broker.host.clone(),
        broker.port,
    );
    options.set_clean_session(true);
    let (client, mut eventloop) = storegate::mqtt::client(options, 8);
    let topic = storegate::protocol::topics::CENTRAL_STATUS;
    let online = async {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                    client.subscribe(topic, rumqttc::QoS::AtLeastOnce).await?;
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(publish))) => {
                    let status: serde_json::Value =
                        serde_json::from_slice(&publish.payload).unwrap_or_default();
                    if status["state"] == "online" {
                        return anyhow::Ok(());
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), online)
        .await
        .context("central did not report online on storegate/v1/central/status within 30 s")??;
    let _ = client.try_disconnect();
    Ok(())
}

/// What the embedded central holds at the end: each event once, none at a re-used seq.
fn central_counts(db: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let count = |sql: &str| -> anyhow::Result<i64> { Ok(conn.query_row(sql, [], |r| r.get(0))?) };
    Ok(serde_json::json!({
        "events": count("SELECT COUNT(*) FROM events")?,
        "distinct_ids": count("SELECT COUNT(DISTINCT id) FROM events")?,
        "seq_conflicts": count("SELECT COUNT(*) FROM seq_conflicts")?,
        "refused": count("SELECT COUNT(*) FROM events WHERE refused IS NOT NULL")?,
        "pending_effects": count("SELECT COUNT(*) FROM pending_effects")?,
        "identity_changes": count("SELECT COUNT(*) FROM identity_changes")?,
    }))
}

fn recent_latencies(totals: &Totals) -> Vec<u32> {
    // The newest samples stand for the last second well enough for a progress line.
    let Ok(all) = totals.latencies_us.lock() else {
        return Vec::new();
    };
    let recent = all.len().saturating_sub(20_000);
    let mut recent = all[recent..].to_vec();
    recent.sort_unstable();
    recent
}

fn percentile_ms(sorted_us: &[u32], quantile: f64) -> Option<f64> {
    if sorted_us.is_empty() {
        return None;
    }
    let index = ((sorted_us.len() - 1) as f64 * quantile).round() as usize;
    sorted_us
        .get(index)
        .map(|us| round1(f64::from(*us) / 1000.0))
}

fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

fn bar(elapsed: Duration, total: Duration) -> String {
    const WIDTH: usize = 20;
    let done = (elapsed.as_secs_f64() / total.as_secs_f64().max(1.0)).min(1.0);
    let filled = (done * WIDTH as f64).round() as usize;
    format!("[{}{}]", "#".repeat(filled), ".".repeat(WIDTH - filled))
}

fn print_summary(summary: &serde_json::Value) {
    println!(
        "{} stores, {} s at {} events/s offered: {} events acked by central ({} left unacked)",
        summary["stores"],
        summary["seconds"],
        summary["offered_events_per_sec"],
        summary["events_acked"],
        summary["unacked_at_end"]
    );
    println!(
        "acked {} events/s while the stores sold (peak {}/s), identifications {} /s; ack latency p50 {} ms, p99 {} ms, max {} ms",
        summary["acked_per_sec"],
        summary["peak_acked_per_sec"],
        summary["identities_per_sec"],
        summary["ack_latency_ms"]["p50"],
        summary["ack_latency_ms"]["p99"],
        summary["ack_latency_ms"]["max"]
    );
    if !summary["effects"].is_null() {
        println!(
            "identity and points effects applied {} events/s while the stores sold; all applied {} s after the run",
            summary["effects"]["applied_per_sec"], summary["effects"]["drained_secs"]
        );
    }
    if !summary["storm"].is_null() {
        println!(
            "reconnect storm: every store's backlog acked in {} s",
            summary["storm"]["absorbed_secs"]
        );
    }
}
