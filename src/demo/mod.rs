//! `storegate demo`: the whole data path on one machine with nothing installed. The reference
//! central (with its online channel) and two stores' gateways start on loopback, first with no
//! broker: the customer story (`customer.rs`) registers a customer online and sells to them in
//! both stores while they are offline; then the embedded broker starts, the stores reconnect,
//! and the demo shows one profile with the summed points. After that a simulated till posts
//! purchases to a gateway's HTTP API like real POS software, and the demo prints what is
//! committed to the journal, acked by central, and still in the backlog.

mod customer;
mod till;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{oneshot, watch};

use storegate::clock::SystemClock;
use storegate::config;
use storegate::daemon::{self, signalled, terminate_signal};

/// The fleet identity key of the demo (a fixed demo value, never a production key).
const DEMO_HMAC_KEY: &str = "ZGVtby1mbGVldC1rZXktbm90LWZvci1wcm9kdWN0aW9u";

pub fn run(purchases: Option<u64>, rate: f64) -> anyhow::Result<()> {
    if !(rate > 0.0 && rate <= 10_000.0) {
        anyhow::bail!("--rate must be between 0 and 10000 purchases per second");
    }
    let dir = tempfile::Builder::new()
        .prefix("storegate-demo-")
        .tempdir()?;
    // The broker's port is chosen now and the broker started later: until then every store
    // is offline, which is how the customer story begins.
    let broker = storegate::broker::free_loopback_addr()?;
    eprintln!(
        "demo: journals and central store in {}",
        dir.path().display()
    );

    let url = format!("mqtt://{broker}");
    let api_token = ulid::Ulid::new().to_string();
    let central_api = storegate::broker::free_loopback_addr()?;
    let central = config::parse_central(&format!(
        "[mqtt]\nurl = \"{url}\"\n[central]\ndb = \"{}\"\nclient_id = \"storegate-central-demo\"\napi_listen = \"{central_api}\"\napi_tokens = [\"{api_token}\"]\n[identity]\nhmac_key = \"{DEMO_HMAC_KEY}\"\n",
        dir.path().join("central.db").display()
    ))?;
    let gateway = |store: &str| {
        config::parse_gateway(&format!(
            "[gateway]\nstore = \"{store}\"\nid = \"gw-1\"\n[mqtt]\nurl = \"{url}\"\n[journal]\npath = \"{}\"\n[api]\nlisten = \"127.0.0.1:0\"\n[sync]\nreconnect_max_ms = 1000\n[identity]\nhmac_key = \"{DEMO_HMAC_KEY}\"\n[loyalty]\npoints_per_unit = 1\nunit_minor = 100\noffline_redeem_cap = 50\n",
            dir.path().join(format!("{store}.db")).display()
        ))
    };
    let (north, south) = (gateway("demo-north")?, gateway("demo-south")?);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let (stop, stopped) = watch::channel(false);
        let central_task = tokio::spawn(storegate::central::run(
            central,
            || {},
            signalled(stopped.clone()),
        ));
        let start_gateway = |config| {
            let (ready_tx, ready_rx) = oneshot::channel();
            let task = tokio::spawn(daemon::run(
                config,
                Arc::new(SystemClock),
                move |ready| {
                    let _ = ready_tx.send(ready);
                },
                signalled(stopped.clone()),
            ));
            (task, ready_rx)
        };
        let (north_task, north_ready) = start_gateway(north);
        let (south_task, south_ready) = start_gateway(south);
        let north_api = north_ready
            .await
            .context("the north gateway did not start")?
            .api;
        let south_api = south_ready
            .await
            .context("the south gateway did not start")?
            .api;
        eprintln!("demo: gateway demo-north/gw-1 API on http://{north_api}");
        eprintln!("demo: gateway demo-south/gw-1 API on http://{south_api}");
        eprintln!("demo: central's online channel on http://{central_api}");

        let story = customer::Story {
            central: central_api,
            token: api_token,
            north: north_api,
            south: south_api,
        };
        let (north_task, south_task, central_task) = (north_task, south_task, central_task);
        let parts = async {
            let (story, offline) = tokio::task::spawn_blocking(move || {
                story.offline_half().map(|offline| (story, offline))
            })
            .await??;
            tokio::task::spawn_blocking(move || storegate::broker::start_embedded(broker))
                .await??;
            eprintln!("demo: embedded MQTT broker up on mqtt://{broker}: the stores reconnect");
            let reconciled = tokio::task::spawn_blocking(move || {
                story.reconciled(&offline, Duration::from_secs(60))
            })
            .await??;
            crate::cli::print_json(&serde_json::json!({ "customer": reconciled }));

            let sent = Arc::new(AtomicU64::new(0));
            let till_stop = Arc::new(AtomicBool::new(false));
            let till = till::start(north_api, rate, purchases, sent.clone(), till_stop.clone())?;
            let outcome = report_until_done(north_api, purchases, &sent).await;
            till_stop.store(true, Ordering::Relaxed);
            tokio::task::spawn_blocking(move || till.join()).await?;
            outcome
        };
        // The demo's parts are supervised like the daemon's: if a gateway or central stops on
        // its own, the demo stops and says which, instead of reporting a frozen backlog.
        let (mut north_task, mut south_task, mut central_task) =
            (north_task, south_task, central_task);
        let (mut north_done, mut south_done, mut central_done) = (false, false, false);
        let outcome = tokio::select! {
            outcome = parts => outcome,
            ended = &mut north_task => {
                north_done = true;
                Err(part_ended("the north gateway", ended))
            }
            ended = &mut south_task => {
                south_done = true;
                Err(part_ended("the south gateway", ended))
            }
            ended = &mut central_task => {
                central_done = true;
                Err(part_ended("central", ended))
            }
        };
        let _ = stop.send(true);
        if !north_done {
            north_task.await??;
        }
        if !south_done {
            south_task.await??;
        }
        if !central_done {
            central_task.await??;
        }
        outcome
    })
}

/// Why a part of the demo ended before it was asked to.
fn part_ended<E: std::fmt::Display>(
    part: &str,
    ended: Result<Result<(), E>, tokio::task::JoinError>,
) -> anyhow::Error {
    match ended {
        Ok(Ok(())) => anyhow::anyhow!("{part} stopped unexpectedly"),
        Ok(Err(error)) => anyhow::anyhow!("{part} failed: {error}"),
        Err(error) => anyhow::anyhow!("{part} crashed: {error}"),
    }
}

/// Prints one line a second until Ctrl-C, or until `purchases` are all acked by central.
async fn report_until_done(
    api: std::net::SocketAddr,
    purchases: Option<u64>,
    sent: &AtomicU64,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let signal = terminate_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            _ = &mut signal => {
                eprintln!("demo: stopping");
                return Ok(());
            }
            _ = tick.tick() => {}
        }
        let health = tokio::task::spawn_blocking(move || {
            ureq::get(&format!("http://{api}/healthz"))
                .call()?
                .body_mut()
                .read_json::<serde_json::Value>()
        })
        .await?;
        let Ok(health) = health else { continue };
        let journal = &health["journal"];
        let last_seq = journal["last_seq"].as_u64().unwrap_or(0);
        let acked = journal["acked_upto"].as_u64().unwrap_or(0);
        let connected = health["mqtt"]["connected"].as_bool().unwrap_or(false);
        eprintln!(
            "demo: till posted {:>6} | journal committed {:>6} | central acked {:>6} | backlog {:>4} | broker {}",
            sent.load(Ordering::Relaxed),
            last_seq,
            acked,
            journal["backlog"].as_u64().unwrap_or(0),
            if connected { "connected" } else { "down" },
        );
        if let Some(target) = purchases {
            // Every purchase the till posted is committed, and everything committed is acked.
            if sent.load(Ordering::Relaxed) >= target && acked == last_seq {
                crate::cli::print_json(
                    &serde_json::json!({ "demo": { "purchases": target, "acked_upto": acked } }),
                );
                return Ok(());
            }
        }
    }
}
