//! Central's `/healthz`: whether it is really serving gateways, for the fleet's monitoring.
//! Each part says its own state: the MQTT session (connected, or acks and changes go nowhere),
//! the store (answering), the writers (the last group stored, or why not), the resolver (its
//! rounds applying, and how many effects wait), and publishes the full outgoing queue dropped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::store::Store;

/// How long the report waits for the store to count the resolver's queue before it calls the
/// store broken: a database that cannot answer one count in this time is not storing batches.
const STORE_ANSWER: Duration = Duration::from_secs(5);

/// Effects waiting past which the report raises `effects_backlog`: about a quarter of a minute
/// of one resolver's work on PostgreSQL (README, "Running central at scale"). Acks do not wait
/// on the resolver, but identities and balances at the tills lag by that much.
pub const EFFECTS_BACKLOG_ALARM: u64 = 100_000;

/// What the session, the writers and the resolver last did, shared with the online channel.
#[derive(Default)]
pub struct Health {
    mqtt_connected: AtomicBool,
    /// Connections the broker accepted since start: more than one means central lost its
    /// session at least once (and, with a clean session, what the broker held for it).
    mqtt_connects: AtomicU64,
    mqtt_last_loss: Mutex<Option<String>>,
    writers_failing: Mutex<Option<String>>,
    resolver: Mutex<ResolverState>,
    not_queued: AtomicU64,
}

#[derive(Default)]
struct ResolverState {
    failing: Option<String>,
    failures: u64,
    last_round: Option<SystemTime>,
}

/// The report and the parts that are broken (empty when healthy).
pub struct Report {
    pub detail: serde_json::Value,
    pub broken: Vec<&'static str>,
}

impl Health {
    /// The broker accepted a connection.
    pub fn connected(&self) {
        self.mqtt_connects.fetch_add(1, Ordering::Relaxed);
        self.mqtt_connected.store(true, Ordering::Relaxed);
    }

    /// A connection was lost or an attempt failed: why.
    pub fn disconnected(&self, error: String) {
        self.mqtt_connected.store(false, Ordering::Relaxed);
        if let Ok(mut last) = self.mqtt_last_loss.lock() {
            *last = Some(error);
        }
    }

    /// A writer's transaction committed (`None`) or failed (why).
    pub fn writers(&self, failing: Option<String>) {
        if let Ok(mut state) = self.writers_failing.lock() {
            *state = failing;
        }
    }

    /// A resolver round committed.
    pub fn resolver_applied(&self) {
        if let Ok(mut state) = self.resolver.lock() {
            state.failing = None;
            state.failures = 0;
            state.last_round = Some(SystemTime::now());
        }
    }

    /// A resolver round failed; returns how many in a row have.
    pub fn resolver_failed(&self, error: String) -> u64 {
        match self.resolver.lock() {
            Ok(mut state) => {
                state.failing = Some(error);
                state.failures += 1;
                state.failures
            }
            Err(_) => 0,
        }
    }

    /// Counts a publish the full outgoing queue refused; returns the count so far.
    pub fn not_queued(&self) -> u64 {
        self.not_queued.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Every part's state, asking the store for the resolver's queue.
    pub async fn report(&self, store: &Store) -> Report {
        let mut broken = Vec::new();
        let mut alarms = Vec::new();
        let connected = self.mqtt_connected.load(Ordering::Relaxed);
        if !connected {
            broken.push("mqtt");
        }
        let pending = match tokio::time::timeout(STORE_ANSWER, store.pending_effects()).await {
            Ok(Ok(pending)) => Ok(pending),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {STORE_ANSWER:?}")),
        };
        if pending.is_err() {
            broken.push("store");
        }
        if matches!(pending, Ok(n) if n > EFFECTS_BACKLOG_ALARM) {
            alarms.push("effects_backlog");
        }
        let writers = self
            .writers_failing
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        if writers.is_some() {
            broken.push("writers");
        }
        let (resolver_error, failures, last_round) = self
            .resolver
            .lock()
            .map(|s| (s.failing.clone(), s.failures, s.last_round))
            .unwrap_or_default();
        if resolver_error.is_some() {
            broken.push("resolver");
        }
        let last_loss = self
            .mqtt_last_loss
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        let part = |ok: bool| if ok { "ok" } else { "broken" };
        let detail = serde_json::json!({
            "status": if broken.is_empty() { "ok" } else { "broken" },
            "broken": broken,
            "alarms": alarms,
            "mqtt": {
                "state": part(connected),
                "connected": connected,
                "connects": self.mqtt_connects.load(Ordering::Relaxed),
                "last_loss": last_loss,
            },
            "store": {
                "state": part(pending.is_ok()),
                "error": pending.as_ref().err(),
            },
            "writers": { "state": part(writers.is_none()), "error": writers },
            "resolver": {
                "state": part(resolver_error.is_none()),
                "error": resolver_error,
                "failures_in_a_row": failures,
                "pending_effects": pending.as_ref().ok(),
                "last_round_unix_ms": last_round
                    .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                    .map(|d| d.as_millis() as u64),
            },
            "outgoing_dropped": self.not_queued.load(Ordering::Relaxed),
        });
        Report { detail, broken }
    }
}
