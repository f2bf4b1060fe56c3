//! Serial scan to event on the API stream (target: p99 < 5 ms). A pseudo-terminal stands in
//! for a scanner on the real daemon (`storegate run` as a process of its own, as on a box); each
//! scan is written to the pty and timed until its `scan` event arrives on `GET /v1/events`, one
//! scan at a time so each measures latency, not queueing. Baseline in the same run: the same
//! lines through a second pty pair to a blocking reader in this process (the transport alone).

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serialport::{SerialPort, TTYPort};

use super::{spawn_gateway, write_gateway_config};

/// Scans before the measured ones: the first ones pay for page faults and lazy setup.
const WARM_UP: usize = 20;
const EVENT_WITHIN: Duration = Duration::from_secs(2);

pub(super) fn run(scans: usize) -> anyhow::Result<serde_json::Value> {
    let (mut scanner, scanner_end) = TTYPort::pair().context("a pseudo-terminal pair")?;
    let port = scanner_end.name().context("the pty's name")?;
    // The daemon opens the pty by its name; this end is not needed (the master keeps it alive).
    drop(scanner_end);
    let dir = tempfile::tempdir()?;
    let unused_port = storegate::broker::free_loopback_addr()?.port();
    let config = write_gateway_config(
        &dir.path().join("gateway.toml"),
        &format!("mqtt://127.0.0.1:{unused_port}"),
        &dir.path().join("journal.db"),
        &format!("[[devices.scanners]]\nname = \"bench-scanner\"\nport = \"{port}\"\ntill = \"bench-till\"\n"),
    )?;
    let (daemon, api) = spawn_gateway(&std::env::current_exe()?, &config)?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    wait_scanner_up(&agent, &api)?;
    let arrivals = subscribe(&api)?;

    let mut send = |text: &str| -> anyhow::Result<Duration> {
        let started = Instant::now();
        scanner.write_all(format!("{text}\r\n").as_bytes())?;
        loop {
            let (seen, at) = arrivals
                .recv_timeout(EVENT_WITHIN)
                .with_context(|| format!("no scan event for {text} within {EVENT_WITHIN:?}"))?;
            if seen == text {
                return Ok(at.duration_since(started));
            }
        }
    };
    for i in 0..WARM_UP {
        send(&format!("WARMUP{i:04}"))?;
    }
    let mut gateway = Vec::with_capacity(scans);
    for i in 0..scans {
        gateway.push(send(&format!("BENCH{i:06}"))?);
    }
    drop(daemon);

    let transport = pty_alone(scans)?;
    Ok(serde_json::json!({
        "scans": scans,
        "scan_to_event_ms": percentiles(gateway),
        "pty_alone_ms": percentiles(transport),
    }))
}

fn wait_scanner_up(agent: &ureq::Agent, api: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let devices: serde_json::Value = agent
            .get(&format!("http://{api}/v1/devices"))
            .call()?
            .body_mut()
            .read_json()?;
        if devices["devices"][0]["state"] == "up" {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the bench scanner never came up: {devices}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The text of each `scan` event and when it arrived, from a reader thread.
fn subscribe(api: &str) -> anyhow::Result<mpsc::Receiver<(String, Instant)>> {
    let response = ureq::get(&format!("http://{api}/v1/events?till=bench-till")).call()?;
    let mut lines = BufReader::new(response.into_body().into_reader()).lines();
    // The stream opens with `ready`; after it every scan is seen.
    loop {
        match lines.next() {
            Some(Ok(line)) if line == "event: ready" => break,
            Some(Ok(_)) => continue,
            _ => anyhow::bail!("the event stream closed before it was ready"),
        }
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let Some(data) = line.strip_prefix("data: ") else {
                continue;
            };
            let at = Instant::now();
            let Ok(event) = serde_json::from_str::<serde_json::Value>(data) else {
                continue;
            };
            if let Some(text) = event["text"].as_str() {
                if tx.send((text.to_string(), at)).is_err() {
                    return;
                }
            }
        }
    });
    Ok(rx)
}

/// The same lines through a pty pair to a blocking reader in this process.
fn pty_alone(scans: usize) -> anyhow::Result<Vec<Duration>> {
    let (mut writer, mut reader) = TTYPort::pair().context("a pseudo-terminal pair")?;
    reader.set_timeout(EVENT_WITHIN)?;
    let mut times = Vec::with_capacity(scans);
    let mut buf = [0u8; 64];
    for i in 0..WARM_UP + scans {
        let line = format!("BENCH{i:06}\r\n");
        let started = Instant::now();
        writer.write_all(line.as_bytes())?;
        let mut got = 0;
        while got < line.len() {
            let n = reader.read(&mut buf[got..])?;
            anyhow::ensure!(n > 0, "the pty closed");
            got += n;
        }
        if i >= WARM_UP {
            times.push(started.elapsed());
        }
    }
    Ok(times)
}

pub(super) fn percentiles(mut times: Vec<Duration>) -> serde_json::Value {
    times.sort();
    let at = |q: f64| {
        let i = ((times.len() as f64 * q).ceil() as usize).clamp(1, times.len().max(1)) - 1;
        times.get(i).map_or(0.0, |t| {
            (t.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
        })
    };
    serde_json::json!({ "p50": at(0.50), "p99": at(0.99), "max": at(1.0) })
}
