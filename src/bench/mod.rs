//! `storegate bench`: the project's benchmark. Every figure is printed next to a baseline
//! measured in the same run on the same machine, as DESIGN.md asks:
//! - journal ingest vs raw rusqlite inserts at the same durability (WAL, synchronous=FULL) and
//!   the same rows per transaction;
//! - backlog drain of a pre-filled journal through a broker (Mosquitto when installed) to the
//!   reference central, vs the broker's raw QoS 1 pipe for the same payload sizes, with the
//!   gateway process's peak RSS;
//! - QR decoding of 640x480 camera frames: the kiosk decoder vs plain rqrr, and zbar on the
//!   same frames when installed;
//! - cold start to ready and idle RSS of `storegate run`, and the binary's size (absolute
//!   figures: a process start has no meaningful in-run baseline).
//!
//! Output: one JSON object on stdout; progress on stderr.

mod drain;
mod ingest;
mod qr;
mod startup;

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
    let ingest = runtime.block_on(ingest::run(args.single_rows, args.grouped_rows))?;
    let drain = if args.skip_drain {
        serde_json::Value::Null
    } else {
        runtime.block_on(drain::run(args.drain_events, args.broker.as_deref()))?
    };
    crate::cli::print_json(
        &serde_json::json!({ "startup": startup, "ingest": ingest, "drain": drain, "qr": qr }),
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
