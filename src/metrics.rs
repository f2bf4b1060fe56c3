//! Metrics and the log lines that go with them. Every refusal or failure kind has one function
//! here that both logs and counts, so `/metrics` and the journald log never disagree.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// Log lines per kind of refusal in one window; past it lines are counted, not written, so a
/// flood of garbage cannot fill the disk with WARN lines (the metrics still count every one).
const LOG_LINES_PER_WINDOW: u32 = 10;
const LOG_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// Bounds the log lines of each refusal kind; the first line of a new window says how many
/// were left out in the last.
#[derive(Default)]
pub struct LogLimiter {
    windows: std::sync::Mutex<std::collections::HashMap<&'static str, LogWindow>>,
}

struct LogWindow {
    started: std::time::Instant,
    written: u32,
    suppressed: u64,
}

impl LogLimiter {
    /// `Some(n)` when a line for `kind` may be written now (`n` lines were left out before
    /// it); `None` when this one is to be left out.
    pub fn admit(&self, kind: &'static str) -> Option<u64> {
        let Ok(mut windows) = self.windows.lock() else {
            return Some(0);
        };
        let now = std::time::Instant::now();
        let window = windows.entry(kind).or_insert(LogWindow {
            started: now,
            written: 0,
            suppressed: 0,
        });
        if now.duration_since(window.started) >= LOG_WINDOW {
            let suppressed = window.suppressed;
            *window = LogWindow {
                started: now,
                written: 1,
                suppressed: 0,
            };
            return Some(suppressed);
        }
        if window.written < LOG_LINES_PER_WINDOW {
            window.written += 1;
            Some(0)
        } else {
            window.suppressed += 1;
            None
        }
    }
}

/// The gateway's (or central's) counters; shared by `Arc`, every field is atomic.
pub struct Metrics {
    registry: Registry,
    log_limiter: LogLimiter,
    events_committed: Family<Labels, Counter>,
    intake_refused: Family<Labels, Counter>,
    api_connections_refused: Family<Labels, Counter>,
    inbound_invalid: Family<Labels, Counter>,
    batches_sent: Counter,
    events_sent: Counter,
    resends: Counter,
    reconnects: Counter,
    acks_beyond_journal: Counter,
    device_up: Family<Labels, Gauge>,
    device_failures: Family<Labels, Counter>,
    device_input_invalid: Family<Labels, Counter>,
    device_frames: Family<Labels, Counter>,
    receipts_printed: Family<Labels, Counter>,
    printer_ready: Family<Labels, Gauge>,
    connected: Gauge,
    last_seq: Gauge,
    storage_low: Gauge,
    acked_seq: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every counter and gauge under the `storegate_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("storegate");
        let m = Metrics {
            events_committed: Family::default(),
            intake_refused: Family::default(),
            api_connections_refused: Family::default(),
            inbound_invalid: Family::default(),
            batches_sent: Counter::default(),
            events_sent: Counter::default(),
            resends: Counter::default(),
            reconnects: Counter::default(),
            acks_beyond_journal: Counter::default(),
            device_up: Family::default(),
            device_failures: Family::default(),
            device_input_invalid: Family::default(),
            device_frames: Family::default(),
            receipts_printed: Family::default(),
            printer_ready: Family::default(),
            connected: Gauge::default(),
            last_seq: Gauge::default(),
            storage_low: Gauge::default(),
            acked_seq: Gauge::default(),
            registry: Registry::default(),
            log_limiter: LogLimiter::default(),
        };
        registry.register(
            "events_committed",
            "Events committed to the journal, by kind",
            m.events_committed.clone(),
        );
        registry.register(
            "intake_refused",
            "Requests refused before the journal, by reason",
            m.intake_refused.clone(),
        );
        registry.register(
            "api_connections_refused",
            "API connections closed at accept (connection_limit, accept_failed)",
            m.api_connections_refused.clone(),
        );
        registry.register(
            "mqtt_inbound_invalid",
            "Inbound MQTT messages refused and ignored, by topic family and reason",
            m.inbound_invalid.clone(),
        );
        registry.register(
            "sync_batches_sent",
            "Event batches handed to the MQTT client",
            m.batches_sent.clone(),
        );
        registry.register(
            "sync_events_sent",
            "Events handed to the MQTT client (re-sends included)",
            m.events_sent.clone(),
        );
        registry.register(
            "sync_resends",
            "Times unacked events were sent again after a timeout or reconnect",
            m.resends.clone(),
        );
        registry.register(
            "mqtt_reconnects",
            "Broker connections lost or connection attempts failed",
            m.reconnects.clone(),
        );
        registry.register(
            "sync_acks_beyond_journal",
            "Acks above the journal's last seq, ignored (restored journal, duplicate gateway id, or forgery)",
            m.acks_beyond_journal.clone(),
        );
        registry.register(
            "device_up",
            "1 while a device is open and talking, by device",
            m.device_up.clone(),
        );
        registry.register(
            "device_failures",
            "Times a device failed (unplugged, silent, I/O error) and was reopened, by device",
            m.device_failures.clone(),
        );
        registry.register(
            "device_input_invalid",
            "Bytes or messages from a device refused and ignored, by device and reason",
            m.device_input_invalid.clone(),
        );
        registry.register(
            "device_frames",
            "Camera frames by outcome: decoded, unchanged (nothing new, skipped), dropped (a newer frame replaced it)",
            m.device_frames.clone(),
        );
        registry.register(
            "receipts_printed",
            "Receipts a printer confirmed (in-order status reply after the cut), by device",
            m.receipts_printed.clone(),
        );
        registry.register(
            "printer_ready",
            "1 while a printer is online with paper and its cover closed, by device",
            m.printer_ready.clone(),
        );
        registry.register(
            "mqtt_connected",
            "1 while connected to the broker",
            m.connected.clone(),
        );
        registry.register("journal_last_seq", "Last committed seq", m.last_seq.clone());
        registry.register(
            "journal_storage_low",
            "1: free space below journal.low_space_mb (identifications refused); 2: down to journal.reserve_mb or full (intake refused)",
            m.storage_low.clone(),
        );
        registry.register(
            "sync_acked_seq",
            "Highest seq central has acked",
            m.acked_seq.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            tracing::error!("metrics encoding failed");
        }
        out
    }

    /// An event was committed at `seq`.
    pub fn event_committed(&self, kind: &str, seq: u64) {
        self.events_committed
            .get_or_create(&vec![("kind".into(), kind.into())])
            .inc();
        self.last_seq.set(seq as i64);
    }

    /// A request was refused before the journal: logged (rate-limited) and counted by reason.
    pub fn intake_refused(&self, reason: &str, detail: &str) {
        if let Some(suppressed) = self.log_limiter.admit("intake_refused") {
            tracing::warn!(reason, detail, suppressed, "intake refused");
        }
        self.intake_refused
            .get_or_create(&vec![("reason".into(), reason.into())])
            .inc();
    }

    /// An API connection was closed at accept: logged (rate-limited) and counted by reason.
    pub fn api_connection_refused(&self, reason: &str, detail: &str) {
        if let Some(suppressed) = self.log_limiter.admit("api_connection_refused") {
            tracing::warn!(reason, detail, suppressed, "API connection refused");
        }
        self.api_connections_refused
            .get_or_create(&vec![("reason".into(), reason.into())])
            .inc();
    }

    /// An inbound MQTT message that breaks docs/protocol.md: logged, counted, ignored.
    pub fn inbound_invalid(&self, family: &str, reason: &str, detail: &str) {
        if let Some(suppressed) = self.log_limiter.admit("inbound_invalid") {
            tracing::warn!(
                topic = family,
                reason,
                detail,
                suppressed,
                "inbound MQTT message refused"
            );
        }
        self.inbound_invalid
            .get_or_create(&vec![
                ("topic".into(), family.into()),
                ("reason".into(), reason.into()),
            ])
            .inc();
    }

    /// A device came up or went down.
    pub fn device_up(&self, device: &str, up: bool) {
        self.device_up
            .get_or_create(&vec![("device".into(), device.into())])
            .set(i64::from(up));
    }

    /// A device failed and will be reopened.
    pub fn device_failed(&self, device: &str, error: &str) {
        tracing::warn!(device, error, "device failed; reopening after a pause");
        self.device_failures
            .get_or_create(&vec![("device".into(), device.into())])
            .inc();
    }

    /// Bytes or a message from a device were refused: logged (rate-limited) and counted.
    pub fn device_input_invalid(&self, device: &str, reason: &str, detail: &str) {
        if let Some(suppressed) = self.log_limiter.admit("device_input_invalid") {
            tracing::warn!(device, reason, detail, suppressed, "device input refused");
        }
        self.device_input_invalid
            .get_or_create(&vec![
                ("device".into(), device.into()),
                ("reason".into(), reason.into()),
            ])
            .inc();
    }

    /// A camera frame's outcome (decoded, unchanged, dropped).
    pub fn device_frame(&self, device: &str, outcome: &str) {
        self.device_frames
            .get_or_create(&vec![
                ("device".into(), device.into()),
                ("outcome".into(), outcome.into()),
            ])
            .inc();
    }

    /// A printer confirmed a receipt.
    pub fn receipt_printed(&self, device: &str) {
        self.receipts_printed
            .get_or_create(&vec![("device".into(), device.into())])
            .inc();
    }

    /// A printer's readiness changed.
    pub fn printer_ready(&self, device: &str, ready: bool, status: &str) {
        if !ready {
            tracing::warn!(
                device,
                status,
                "printer not ready; receipts wait in the queue"
            );
        }
        self.printer_ready
            .get_or_create(&vec![("device".into(), device.into())])
            .set(i64::from(ready));
    }

    /// A batch of `events` was handed to the MQTT client.
    pub fn batch_sent(&self, events: usize) {
        self.batches_sent.inc();
        self.events_sent.inc_by(events as u64);
    }

    /// Unacked events are being sent again from `from_seq`.
    pub fn resend(&self, from_seq: u64, why: &str) {
        tracing::info!(from_seq, why, "re-sending unacked events");
        self.resends.inc();
    }

    /// The broker connection came up, or a connection was lost or an attempt failed.
    pub fn connection_changed(&self, connected: bool) {
        if !connected {
            self.reconnects.inc();
        }
        self.connected.set(i64::from(connected));
    }

    /// Central's ack moved to `upto`.
    pub fn acked(&self, upto: u64) {
        self.acked_seq.set(upto as i64);
    }

    /// An ack named seqs this journal never wrote: logged (rate-limited, with the likely causes) and counted.
    pub fn ack_beyond_journal(&self, acked: u64, last_seq: u64, gateway: &str) {
        if let Some(suppressed) = self.log_limiter.admit("ack_beyond_journal") {
            tracing::error!(
                acked,
                last_seq,
                gateway,
                suppressed,
                "an ack names seqs this journal never wrote; nothing was acked or deleted and numbering goes on from the journal. Likely causes: a second box running with gateway id {gateway}, this journal restored from an older copy, or a forged ack"
            );
        }
        self.acks_beyond_journal.inc();
    }

    /// The journal's newest seq.
    pub fn set_last_seq(&self, seq: u64) {
        self.last_seq.set(seq as i64);
    }

    /// The journal's free-space state: 0 plenty, 1 low (sales only), 2 full or reserve.
    pub fn set_storage(&self, low: bool, full: bool) {
        self.storage_low.set(if full { 2 } else { i64::from(low) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_writes_a_bounded_number_of_lines_per_kind() {
        let limiter = LogLimiter::default();
        let admitted = (0..1000).filter(|_| limiter.admit("a").is_some()).count();
        assert_eq!(admitted, LOG_LINES_PER_WINDOW as usize);
        assert!(limiter.admit("b").is_some(), "kinds have separate budgets");
    }
}
