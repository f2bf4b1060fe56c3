//! Metrics and the log lines that go with them. Every refusal or failure kind has one function
//! here that both logs and counts, so `/metrics` and the journald log never disagree.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// The gateway's (or central's) counters; shared by `Arc`, every field is atomic.
pub struct Metrics {
    registry: Registry,
    events_committed: Family<Labels, Counter>,
    intake_refused: Family<Labels, Counter>,
    inbound_invalid: Family<Labels, Counter>,
    batches_sent: Counter,
    events_sent: Counter,
    resends: Counter,
    reconnects: Counter,
    journal_restored: Counter,
    device_up: Family<Labels, Gauge>,
    device_failures: Family<Labels, Counter>,
    device_input_invalid: Family<Labels, Counter>,
    device_frames: Family<Labels, Counter>,
    receipts_printed: Family<Labels, Counter>,
    printer_ready: Family<Labels, Gauge>,
    connected: Gauge,
    last_seq: Gauge,
    acked_seq: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("storegate");
        let m = Metrics {
            events_committed: Family::default(),
            intake_refused: Family::default(),
            inbound_invalid: Family::default(),
            batches_sent: Counter::default(),
            events_sent: Counter::default(),
            resends: Counter::default(),
            reconnects: Counter::default(),
            journal_restored: Counter::default(),
            device_up: Family::default(),
            device_failures: Family::default(),
            device_input_invalid: Family::default(),
            device_frames: Family::default(),
            receipts_printed: Family::default(),
            printer_ready: Family::default(),
            connected: Gauge::default(),
            last_seq: Gauge::default(),
            acked_seq: Gauge::default(),
            registry: Registry::default(),
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
            "Broker connections lost",
            m.reconnects.clone(),
        );
        registry.register(
            "journal_restored",
            "Acks above the journal's last seq (journal restored from an older copy)",
            m.journal_restored.clone(),
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

    pub fn event_committed(&self, kind: &str, seq: u64) {
        self.events_committed
            .get_or_create(&vec![("kind".into(), kind.into())])
            .inc();
        self.last_seq.set(seq as i64);
    }

    pub fn intake_refused(&self, reason: &str, detail: &str) {
        tracing::warn!(reason, detail, "intake refused");
        self.intake_refused
            .get_or_create(&vec![("reason".into(), reason.into())])
            .inc();
    }

    /// An inbound MQTT message that breaks PROTOCOL.md: logged, counted, ignored.
    pub fn inbound_invalid(&self, family: &str, reason: &str, detail: &str) {
        tracing::warn!(
            topic = family,
            reason,
            detail,
            "inbound MQTT message refused"
        );
        self.inbound_invalid
            .get_or_create(&vec![
                ("topic".into(), family.into()),
                ("reason".into(), reason.into()),
            ])
            .inc();
    }

    pub fn device_up(&self, device: &str, up: bool) {
        self.device_up
            .get_or_create(&vec![("device".into(), device.into())])
            .set(i64::from(up));
    }

    pub fn device_failed(&self, device: &str, error: &str) {
        tracing::warn!(device, error, "device failed; reopening after a pause");
        self.device_failures
            .get_or_create(&vec![("device".into(), device.into())])
            .inc();
    }

    pub fn device_input_invalid(&self, device: &str, reason: &str, detail: &str) {
        tracing::warn!(device, reason, detail, "device input refused");
        self.device_input_invalid
            .get_or_create(&vec![
                ("device".into(), device.into()),
                ("reason".into(), reason.into()),
            ])
            .inc();
    }

    pub fn device_frame(&self, device: &str, outcome: &str) {
        self.device_frames
            .get_or_create(&vec![
                ("device".into(), device.into()),
                ("outcome".into(), outcome.into()),
            ])
            .inc();
    }

    pub fn receipt_printed(&self, device: &str) {
        self.receipts_printed
            .get_or_create(&vec![("device".into(), device.into())])
            .inc();
    }

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

    pub fn batch_sent(&self, events: usize) {
        self.batches_sent.inc();
        self.events_sent.inc_by(events as u64);
    }

    pub fn resend(&self, from_seq: u64, why: &str) {
        tracing::info!(from_seq, why, "re-sending unacked events");
        self.resends.inc();
    }

    pub fn connection_changed(&self, connected: bool) {
        if !connected {
            self.reconnects.inc();
        }
        self.connected.set(i64::from(connected));
    }

    pub fn acked(&self, upto: u64) {
        self.acked_seq.set(upto as i64);
    }

    pub fn journal_restored(&self, acked: u64) {
        tracing::error!(
            acked,
            "central acked beyond this journal's last seq: the journal was restored from an older copy; seq moved past the ack"
        );
        self.journal_restored.inc();
    }

    pub fn set_last_seq(&self, seq: u64) {
        self.last_seq.set(seq as i64);
    }
}
