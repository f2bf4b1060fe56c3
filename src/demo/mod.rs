//! `storegate demo`: the whole data path on one machine with nothing installed. An embedded
//! broker, the reference central and a gateway start on loopback; a simulated till posts
//! purchases to the gateway's HTTP API like real POS software, and the demo prints what is
//! committed to the journal, acked by central, and still in the backlog.

mod till;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{oneshot, watch};

use storegate::clock::SystemClock;
use storegate::config::{self, CentralConfig, CentralSection, MqttSection};
use storegate::daemon::{self, signalled, terminate_signal};

pub fn run(purchases: Option<u64>, rate: f64) -> anyhow::Result<()> {
    if !(rate > 0.0 && rate <= 10_000.0) {
        anyhow::bail!("--rate must be between 0 and 10000 purchases per second");
    }
    let dir = tempfile::Builder::new()
        .prefix("storegate-demo-")
        .tempdir()?;
    let broker = storegate::broker::free_loopback_addr()?;
    storegate::broker::start_embedded(broker)?;
    eprintln!("demo: embedded MQTT broker on mqtt://{broker}");
    eprintln!(
        "demo: journal and central store in {}",
        dir.path().display()
    );

    let url = format!("mqtt://{broker}");
    let central = CentralConfig {
        mqtt: mqtt_section(&url),
        central: CentralSection {
            db: dir.path().join("central.db").display().to_string(),
            share_group: None,
            client_id: "storegate-central-demo".into(),
        },
    };
    let gateway = config::parse_gateway(&format!(
        "[gateway]\nstore = \"demo-store\"\nid = \"gw-1\"\n[mqtt]\nurl = \"{url}\"\n[journal]\npath = \"{}\"\n[api]\nlisten = \"127.0.0.1:0\"\n",
        dir.path().join("journal.db").display()
    ))?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let (stop, stopped) = watch::channel(false);
        let central_task =
            tokio::spawn(storegate::central::run(central, signalled(stopped.clone())));
        let (ready_tx, ready_rx) = oneshot::channel();
        let gateway_task = tokio::spawn(daemon::run(
            gateway,
            Arc::new(SystemClock),
            move |ready| {
                let _ = ready_tx.send(ready);
            },
            signalled(stopped.clone()),
        ));
        let ready = ready_rx.await.context("the gateway did not start")?;
        eprintln!("demo: gateway demo-store/gw-1 API on http://{}", ready.api);

        let sent = Arc::new(AtomicU64::new(0));
        let till_stop = Arc::new(AtomicBool::new(false));
        let till = till::start(ready.api, rate, purchases, sent.clone(), till_stop.clone())?;

        // The demo's parts are supervised like the daemon's: if the gateway or central stops on
        // its own, the demo stops and says which, instead of reporting a frozen backlog.
        let (mut gateway_task, mut central_task) = (gateway_task, central_task);
        let (mut gateway_done, mut central_done) = (false, false);
        let outcome = tokio::select! {
            outcome = report_until_done(ready.api, purchases, &sent) => outcome,
            ended = &mut gateway_task => {
                gateway_done = true;
                Err(part_ended("the gateway", ended))
            }
            ended = &mut central_task => {
                central_done = true;
                Err(part_ended("central", ended))
            }
        };
        till_stop.store(true, Ordering::Relaxed);
        let _ = stop.send(true);
        tokio::task::spawn_blocking(move || till.join()).await?;
        if !gateway_done {
            gateway_task.await??;
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

fn mqtt_section(url: &str) -> MqttSection {
    MqttSection {
        url: url.to_string(),
        ca: None,
        cert: None,
        key: None,
        keep_alive_secs: 15,
        allow_plaintext: false,
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
            if acked >= target {
                crate::cli::print_json(
                    &serde_json::json!({ "demo": { "purchases": target, "acked_upto": acked } }),
                );
                return Ok(());
            }
        }
    }
}
