//! `storegate bench`: the project's benchmark. Every figure is printed next to a baseline
//! measured in the same run on the same machine, as the performance targets ask:
//! - journal ingest vs raw rusqlite inserts at the same durability (WAL, synchronous=FULL) and
//!   the same rows per transaction;
//! - backlog drain of a pre-filled journal through a broker (Mosquitto when installed) to the
//!   reference central, vs the broker's raw QoS 1 pipe for the same payload sizes, with the
//!   gateway process's peak RSS;
//! - QR decoding of 640x480 camera frames: the kiosk decoder vs plain rqrr, and zbar on the
//!   same frames when installed;
//! - serial scan to event on the API stream, vs the pseudo-terminal transport alone;
//! - customer identification: resolved at central vs plain events through the same store, and
//!   the till's identify latency offline and online vs the HTTP round trip alone;
//! - cold start to ready and idle RSS of `storegate run`, and the binary's size (absolute
//!   figures: a process start has no meaningful in-run baseline).
//!
//! Output: one JSON object on stdout; progress on stderr.

mod drain;
pub(crate) mod identity;
mod ingest;
mod qr;
mod scan_latency;
mod startup;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context;
use clap::Args;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Events in the backlog to drain.
    #[arg(long, default_value_t = 1_000_000)]
    pub drain_events: u64,
    /// Rows for the one-row-per-transaction comparison.
    #[arg(long, default_value_t = 2_000)]
    pub single_rows: u64,
    /// Rows for the 100-rows-per-transaction / concurrent-callers comparison.
    #[arg(long, default_value_t = 200_000)]
    pub grouped_rows: u64,
    /// Broker for the drain (`mqtt://host:port`); default: a private Mosquitto if installed,
    /// else the embedded broker.
    #[arg(long)]
    pub broker: Option<String>,
    /// Skip the drain part.
    #[arg(long)]
    pub skip_drain: bool,
    /// Scans timed from a pseudo-terminal scanner to the API event stream.
    #[arg(long, default_value_t = 1_000)]
    pub scans: usize,
    /// `identity_seen` events resolved at central.
    #[arg(long, default_value_t = 20_000)]
    pub identifications: usize,
    /// Identify calls timed at the till, offline and online each.
    #[arg(long, default_value_t = 500)]
    pub identify_calls: usize,
    /// Run only the QR decoding part.
    #[arg(long)]
    pub qr_only: bool,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let qr = qr::run()?;
    if args.qr_only {
        crate::cli::print_json(&serde_json::json!({ "qr": qr }));
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    eprintln!("bench: cold start and idle memory of storegate run");
    let startup = startup::run(10)?;
    eprintln!("bench: serial scan to API event, {} scans", args.scans);
    let scan = scan_latency::run(args.scans)?;
    let identity = identity::run(
        args.identifications,
        args.identify_calls,
        args.broker.as_deref(),
    )?;
    let ingest = runtime.block_on(ingest::run(args.single_rows, args.grouped_rows))?;
    let drain = if args.skip_drain {
        serde_json::Value::Null
    } else {
        runtime.block_on(drain::run(args.drain_events, args.broker.as_deref()))?
    };
    crate::cli::print_json(
        &serde_json::json!({ "startup": startup, "scan": scan, "identity": identity, "ingest": ingest, "drain": drain, "qr": qr }),
    );
    Ok(())
}

/// A memory figure of a process in KiB from /proc/<pid>/status: `VmHWM` (peak resident set)
/// or `VmRSS` (current).
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| {
            l.strip_prefix(field)
                .is_some_and(|rest| rest.starts_with(':'))
        })?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A child process killed when dropped, whatever happens to the bench.
pub(super) struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes the config of a bench gateway (store `bench`, gateway `gw-1`, the API on a free
/// port) to `path`; `extra` is appended after the `[api]` table. Plaintext MQTT is allowed since
/// `--broker` may name another host.
pub(super) fn write_gateway_config(
    path: &Path,
    broker_url: &str,
    journal: &Path,
    extra: &str,
) -> anyhow::Result<PathBuf> {
    std::fs::write(
        path,
        format!(
            "[gateway]\nstore = \"bench\"\nid = \"gw-1\"\n[mqtt]\nurl = \"{broker_url}\"\nallow_plaintext = true\n[journal]\npath = \"{}\"\n[api]\nlisten = \"127.0.0.1:0\"\n{extra}",
            journal.display()
        ),
    )?;
    Ok(path.to_path_buf())
}

/// Starts `storegate run` on `config` and waits until it is ready; its API address.
pub(super) fn spawn_gateway(exe: &Path, config: &Path) -> anyhow::Result<(Guard, String)> {
    let (daemon, ready) = spawn_ready(exe, &["run", "--config", &config.display().to_string()])?;
    let api = ready["ready"]["api"]
        .as_str()
        .context("the ready line names no API address")?
        .to_string();
    Ok((daemon, api))
}

/// Starts `storegate ARGS` and waits for its first stdout line (the ready line), as JSON.
pub(super) fn spawn_ready(exe: &Path, args: &[&str]) -> anyhow::Result<(Guard, serde_json::Value)> {
    let mut child = Command::new(exe)
        .args(args)
        .env("STOREGATE_LOG", "warn,rumqttd=off")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().context("child stdout")?;
    let guard = Guard(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let value: serde_json::Value =
        serde_json::from_str(&line).with_context(|| format!("{args:?} printed no ready line"))?;
    Ok((guard, value))
}
