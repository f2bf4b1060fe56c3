//! Cold start to ready and idle memory of `storegate run`, and the size of this binary.

use std::time::{Duration, Instant};

use super::{proc_status_kib, spawn_ready, write_gateway_config};

/// Starts the daemon `runs` times on a fresh journal with no broker reachable and measures the
/// time from spawn to its ready line; then its resident memory after a second of idling.
pub(super) fn run(runs: u32) -> anyhow::Result<serde_json::Value> {
    let exe = std::env::current_exe()?;
    let dir = tempfile::tempdir()?;
    let mut starts = Vec::new();
    let mut idle_rss_kib = 0;
    for run in 0..runs {
        let unused_port = storegate::broker::free_loopback_addr()?.port();
        let config = write_gateway_config(
            &dir.path().join(format!("gw-{run}.toml")),
            &format!("mqtt://127.0.0.1:{unused_port}"),
            &dir.path().join(format!("j-{run}.db")),
            "",
        )?;
        let started = Instant::now();
        let (daemon, ready) =
            spawn_ready(&exe, &["run", "--config", &config.display().to_string()])?;
        starts.push(started.elapsed());
        anyhow::ensure!(
            ready.get("ready").is_some(),
            "run {run}: no ready line: {ready}"
        );
        if run + 1 == runs {
            // Idle: API listening, broker unreachable, reconnect backoff ticking.
            std::thread::sleep(Duration::from_secs(1));
            idle_rss_kib = proc_status_kib(daemon.0.id(), "VmRSS").unwrap_or(0);
        }
    }
    starts.sort();
    let median = starts[starts.len() / 2];
    let binary_bytes = std::fs::metadata(&exe)?.len();
    Ok(serde_json::json!({
        "cold_start_to_ready_ms_median": (median.as_secs_f64() * 1000.0 * 10.0).round() / 10.0,
        "cold_start_to_ready_ms_max": (starts[starts.len() - 1].as_secs_f64() * 1000.0 * 10.0).round() / 10.0,
        "idle_rss_mib": super::ingest::round2(idle_rss_kib as f64 / 1024.0),
        "binary_mib": super::ingest::round2(binary_bytes as f64 / (1024.0 * 1024.0)),
    }))
}
