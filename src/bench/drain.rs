//! Backlog drain: a journal pre-filled offline is drained by a real gateway process through a
//! broker to a real central process; the baseline is the same broker carrying the same number
//! of batch-sized QoS 1 messages between two bare clients.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use super::ingest::{journal_appends, round2};
use super::{proc_status_kib, spawn_ready, write_gateway_config, Guard};

const EVENTS_PER_BATCH: u64 = 500;

pub(super) async fn run(events: u64, broker: Option<&str>) -> anyhow::Result<serde_json::Value> {
    let dir = tempfile::Builder::new()
        .prefix("storegate-bench-")
        .tempdir()?;
    let (url, _broker, broker_name) = start_broker(broker, dir.path())?;
    let address = storegate::config::BrokerAddress::parse(&url).map_err(anyhow::Error::msg)?;

    eprintln!("bench: filling a journal with {events} events (offline intake, 256 callers)");
    let journal = dir.path().join("journal.db");
    let fill_rate = journal_appends(&journal, events, 256).await?;

    let exe = std::env::current_exe()?;
    let central_config = dir.path().join("central.toml");
    std::fs::write(
        &central_config,
        format!(
            "[mqtt]\nurl = \"{url}\"\n[central]\ndb = \"{}\"\nclient_id = \"bench-central\"\n",
            dir.path().join("central.db").display()
        ),
    )?;
    let (central, _) = spawn_ready(
        &exe,
        &["central", "--config", &central_config.display().to_string()],
    )?;
    let central_pid = central.0.id();

    let (acks, mut ack_loop) =
        subscriber(&address, "bench-acks", "storegate/v1/bench/gw-1/ack").await?;
    let gateway_config = write_gateway_config(
        &dir.path().join("gateway.toml"),
        &url,
        &journal,
        &format!("[sync]\nbatch_events = {EVENTS_PER_BATCH}\n"),
    )?;
    eprintln!("bench: draining {events} events through {broker_name}");
    let started = Instant::now();
    let (gateway, _) = spawn_ready(
        &exe,
        &["run", "--config", &gateway_config.display().to_string()],
    )?;
    let gateway_pid = gateway.0.id();
    // rumqttc's poll is not cancel-safe (a large packet cut mid-read desyncs the stream), so
    // the event loop is polled on its own and RSS is sampled by a separate task.
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = tokio::spawn(sample_rss(gateway_pid, sampling.clone()));
    let drained = tokio::time::timeout(Duration::from_secs(900), async {
        let mut acked = 0u64;
        while acked < events {
            if let Event::Incoming(Packet::Publish(p)) = ack_loop.poll().await? {
                if let Ok(ack) = serde_json::from_slice::<storegate::protocol::Ack>(&p.payload) {
                    acked = acked.max(ack.upto_seq);
                }
            }
        }
        Ok::<(), rumqttc::ConnectionError>(())
    })
    .await;
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let sampled_rss_kib = sampler.await?;
    drained.context("drain did not finish in 15 minutes")??;
    let drain_secs = started.elapsed().as_secs_f64();
    let gateway_peak = proc_status_kib(gateway_pid, "VmHWM");
    let central_peak = proc_status_kib(central_pid, "VmHWM");
    drop((gateway, central));
    drop(acks);
    // A drain that central stored as conflicts would measure the wrong thing: every event
    // must have been applied.
    let unapplied: i64 = rusqlite::Connection::open(dir.path().join("central.db"))?.query_row(
        "SELECT COUNT(*) FROM events WHERE applied IS NULL",
        [],
        |r| r.get(0),
    )?;
    anyhow::ensure!(
        unapplied == 0,
        "central applied {} of {events} events",
        events as i64 - unapplied
    );

    let batch_bytes = sample_batch_bytes(&journal)?;
    // A few hundred messages give a steady rate; the baseline is a rate, not a second drain.
    let messages = events.div_ceil(EVENTS_PER_BATCH).min(300);
    eprintln!("bench: baseline, {messages} bare QoS 1 messages of {batch_bytes} bytes through {broker_name}");
    let pipe_secs = tokio::time::timeout(
        Duration::from_secs(120),
        raw_pipe(&address, messages, batch_bytes),
    )
    .await
    .context("the raw broker pipe baseline did not finish in 120 s")??;
    let drain_rate = events as f64 / drain_secs;
    let pipe_rate = (messages * EVENTS_PER_BATCH) as f64 / pipe_secs;
    Ok(serde_json::json!({
        "broker": broker_name,
        "events": events,
        "offline_fill_events_per_s": fill_rate.round(),
        "drain_events_per_s": drain_rate.round(),
        "raw_broker_pipe_events_per_s": pipe_rate.round(),
        "ratio": round2(drain_rate / pipe_rate),
        "gateway_peak_rss_mib": gateway_peak.map(|k| round2(k as f64 / 1024.0)),
        "gateway_peak_rss_while_draining_mib": round2(sampled_rss_kib as f64 / 1024.0),
        "central_peak_rss_mib": central_peak.map(|k| round2(k as f64 / 1024.0)),
    }))
}

/// The broker for a bench part: `broker` if given, else a private Mosquitto when installed,
/// else the embedded broker. Returns its URL, the process to stop, and its name for the report.
pub(super) fn start_broker(
    broker: Option<&str>,
    dir: &std::path::Path,
) -> anyhow::Result<(String, Option<Guard>, String)> {
    if let Some(url) = broker {
        return Ok((url.to_string(), None, url.to_string()));
    }
    let addr = storegate::broker::free_loopback_addr()?;
    let mosquitto = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    match mosquitto {
        Some(program) => {
            let conf = dir.join("mosquitto.conf");
            std::fs::write(
                &conf,
                format!("listener {} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\nset_tcp_nodelay true\n", addr.port()),
            )?;
            let child = Command::new(program)
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            let guard = Guard(child);
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(addr).is_err() {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "mosquitto did not listen on {addr}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok((format!("mqtt://{addr}"), Some(guard), "mosquitto".into()))
        }
        None => {
            storegate::broker::start_embedded(addr)?;
            Ok((
                format!("mqtt://{addr}"),
                None,
                "embedded rumqttd (mosquitto not installed)".into(),
            ))
        }
    }
}

async fn subscriber(
    address: &storegate::config::BrokerAddress,
    id: &str,
    topic: &str,
) -> anyhow::Result<(AsyncClient, rumqttc::EventLoop)> {
    let mut options = MqttOptions::new(id, address.host.clone(), address.port);
    storegate::mqtt::set_packet_limits(&mut options);
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    client.subscribe(topic, QoS::AtLeastOnce).await?;
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = eventloop.poll().await? {
            return Ok((client, eventloop));
        }
    }
}

fn sample_batch_bytes(journal: &std::path::Path) -> anyhow::Result<usize> {
    let (handle, writer) = storegate::journal::Journal::open(
        journal,
        std::sync::Arc::new(storegate::clock::SystemClock),
    )?;
    let events = handle
        .outbox()?
        .read_after(0, EVENTS_PER_BATCH as usize, usize::MAX)?;
    let batch = storegate::protocol::EventBatch {
        gateway: "gw-1".into(),
        store: "bench".into(),
        sent_at: storegate::protocol::timestamp(std::time::SystemTime::now()),
        events,
    };
    let bytes = serde_json::to_vec(&batch)?.len();
    drop(handle);
    writer.join();
    Ok(bytes)
}

/// The broker's raw QoS 1 pipe: one client publishes `messages` payloads of `bytes`, another
/// receives them all; no journal, no central, no acks beyond MQTT's own.
async fn raw_pipe(
    address: &storegate::config::BrokerAddress,
    messages: u64,
    bytes: usize,
) -> anyhow::Result<f64> {
    let (_sub, mut sub_loop) = subscriber(address, "bench-pipe-sub", "bench/pipe").await?;
    let mut options = MqttOptions::new("bench-pipe-pub", address.host.clone(), address.port);
    storegate::mqtt::set_packet_limits(&mut options);
    options.set_inflight(32);
    let (publisher, mut pub_loop) = AsyncClient::new(options, 64);
    let payload = vec![b'x'; bytes];
    let started = Instant::now();
    let sender = tokio::spawn(async move {
        for _ in 0..messages {
            if publisher
                .publish("bench/pipe", QoS::AtLeastOnce, false, payload.clone())
                .await
                .is_err()
            {
                break;
            }
        }
        publisher
    });
    let driver = tokio::spawn(async move { while pub_loop.poll().await.is_ok() {} });
    let mut received = 0u64;
    while received < messages {
        if let Event::Incoming(Packet::Publish(_)) = sub_loop.poll().await? {
            received += 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let publisher = sender.await?;
    let _ = publisher.disconnect().await;
    let _ = driver.await;
    Ok(secs)
}

async fn sample_rss(pid: u32, running: std::sync::Arc<std::sync::atomic::AtomicBool>) -> u64 {
    let mut peak = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while running.load(std::sync::atomic::Ordering::Relaxed) {
        tick.tick().await;
        peak = peak.max(proc_status_kib(pid, "VmRSS").unwrap_or(0));
    }
    peak
}
