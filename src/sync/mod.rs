//! Sync (`Syncer`): the MQTT session that moves the journal's outbox to central and brings back acks,
//! rpc answers and central's messages (docs/protocol.md).
//!
//! rumqttc is a pipe here, not a store: it keeps in-flight QoS 1 messages only in memory and
//! drops them when the broker has no session, so delivery rests on the journal and central's
//! cumulative ack. An event leaves the outbox only when central acks it; everything unacked is
//! sent again after every reconnect and after an ack timeout. Intake never waits on any of this.

mod connection;
mod inbound;
mod pump;
mod rpc;

pub use rpc::{RpcCallError, RpcClient};

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, QoS};
use tokio::sync::{mpsc, watch};

use crate::config::{GatewayConfig, MqttSection, SyncSection};
use crate::journal::{Journal, JournalError};
use crate::metrics::Metrics;
use crate::protocol::topics::GatewayTopics;
use crate::protocol::GatewayStatus;

use crate::backoff::Backoff;
use crate::mqtt::{Reconnect, SessionEvent};
use pump::Pump;

/// What the rest of the daemon may know about the broker connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncState {
    /// Connected to the broker now.
    pub connected: bool,
    /// The current (or last) session number.
    pub session: u64,
    /// Conditions an operator must act on; they stay raised until the daemon restarts, so
    /// a one-off forged ack is not forgotten before anyone looked.
    pub alarms: std::collections::BTreeSet<&'static str>,
    /// Set while sync cannot do its work although connected (the outbox cannot be read);
    /// cleared by the next success.
    pub failing: Option<String>,
}

/// Checks one inbound message exactly as the sync loop does, without acting on it: `Ok` with
/// the topic family it was accepted as, or `Err` with the refusal's reason (for fuzzing and
/// diagnostics).
pub fn check_inbound(
    store: &str,
    gateway: &str,
    topic: &str,
    payload: &[u8],
    retain: bool,
) -> Result<&'static str, &'static str> {
    let topics = GatewayTopics::new(store, gateway);
    match inbound::parse(&topics, topic, payload, retain) {
        Ok(inbound::Inbound::Ack(_)) => Ok("ack"),
        Ok(inbound::Inbound::RpcResponse(_)) => Ok("rpc_res"),
        Ok(inbound::Inbound::Identity(_)) => Ok("identity"),
        Ok(inbound::Inbound::Layer { .. }) => Ok("config"),
        Ok(inbound::Inbound::Accepted { family }) => Ok(family),
        Err(refusal) => Err(refusal.reason),
    }
}

/// Central acked a seq this journal never wrote (docs/protocol.md "Cumulative ack").
pub const ALARM_ACK_BEYOND_JOURNAL: &str = "ack_beyond_journal";

/// A sync failure that stops the sync part (not a broker outage, which is a state).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The TLS files could not be read.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// The MQTT settings are invalid.
    #[error("config: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// The MQTT session task stopped on its own.
    #[error("the MQTT session task ended unexpectedly")]
    SessionEnded,
    /// The journal's writer stopped.
    #[error("the journal writer stopped")]
    JournalStopped,
}

/// Who this gateway is on the wire: its topic segments.
#[derive(Debug, Clone)]
pub struct GatewayName {
    /// The store id.
    pub store: String,
    /// The gateway id.
    pub gateway: String,
}

/// The sync part's settings, taken from the gateway config.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// This gateway's topic segments.
    pub name: GatewayName,
    /// The broker connection.
    pub mqtt: MqttSection,
    /// Pacing of the outbox.
    pub sync: SyncSection,
}

impl SyncSettings {
    /// The settings of `config`.
    pub fn from_config(config: &GatewayConfig) -> SyncSettings {
        SyncSettings {
            name: GatewayName {
                store: config.gateway.store.clone(),
                gateway: config.gateway.id.clone(),
            },
            mqtt: config.mqtt.clone(),
            sync: config.sync.clone(),
        }
    }
}

/// The owner of the MQTT session and the outbox position.
pub struct Syncer {
    identity_changes: Option<mpsc::Sender<crate::protocol::IdentityChange>>,
    config_layers: Option<mpsc::Sender<ConfigLayer>>,
    config_report: Option<watch::Receiver<Option<serde_json::Value>>>,
    settings: SyncSettings,
    journal: Journal,
    metrics: Arc<Metrics>,
    state: watch::Sender<SyncState>,
    rpc_requests: mpsc::Receiver<rpc::Call>,
    rpc_client: RpcClient,
}

impl Syncer {
    /// Sync for `journal`; nothing runs until `run`.
    pub fn new(settings: SyncSettings, journal: Journal, metrics: Arc<Metrics>) -> Syncer {
        let (state, _) = watch::channel(SyncState::default());
        let (rpc_client, rpc_requests) =
            RpcClient::channel(Duration::from_millis(settings.sync.rpc_timeout_ms));
        Syncer {
            identity_changes: None,
            config_layers: None,
            config_report: None,
            settings,
            journal,
            metrics,
            state,
            rpc_requests,
            rpc_client,
        }
    }

    /// Connection state, for the API's health view.
    pub fn state(&self) -> watch::Receiver<SyncState> {
        self.state.subscribe()
    }

    /// Where central's identity changes go (the identity part); without it they are
    /// checked and dropped.
    pub fn send_identity_changes_to(
        &mut self,
        changes: mpsc::Sender<crate::protocol::IdentityChange>,
    ) {
        self.identity_changes = Some(changes);
    }

    /// Where signed config layers go (the remote-config part), with the layer their topic
    /// names; without it they are checked and dropped.
    pub fn send_config_layers_to(&mut self, layers: mpsc::Sender<ConfigLayer>) {
        self.config_layers = Some(layers);
    }

    /// The config report to keep published (retained) on `…/config/state`, re-published after
    /// every reconnect; its `applied` versions also go into the status message.
    pub fn publish_config_state_from(
        &mut self,
        report: watch::Receiver<Option<serde_json::Value>>,
    ) {
        self.config_report = Some(report);
    }

    /// A handle other parts use for rpc calls to central.
    pub fn rpc(&self) -> RpcClient {
        self.rpc_client.clone()
    }

    /// Runs until `shutdown` resolves; then marks the gateway offline and disconnects.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), SyncError> {
        let Syncer {
            identity_changes,
            config_layers,
            config_report,
            settings,
            journal,
            metrics,
            state,
            mut rpc_requests,
            rpc_client,
        } = self;
        drop(rpc_client);
        let topics = GatewayTopics::new(&settings.name.store, &settings.name.gateway);
        let session = journal.next_session().await?;
        let options = connection::options(&settings, &topics, session)?;
        let (client, eventloop) =
            crate::mqtt::client(options, connection::REQUEST_CHANNEL_CAPACITY);
        let (net_tx, mut net_rx) = mpsc::channel(64);
        let (stop_tx, stop_rx) = watch::channel(false);
        let backoff = Backoff::new(
            Duration::from_millis(settings.sync.reconnect_min_ms),
            Duration::from_millis(settings.sync.reconnect_max_ms),
        );
        let renew = {
            let journal = journal.clone();
            let topics = topics.clone();
            move || {
                let journal = journal.clone();
                let topics = topics.clone();
                async move {
                    let session = journal.next_session().await.map_err(|e| e.to_string())?;
                    Ok(Reconnect {
                        session,
                        will: Some(connection::will(&topics, session)),
                    })
                }
            }
        };
        let driver = tokio::spawn(crate::mqtt::drive(
            eventloop,
            client.clone(),
            backoff,
            session,
            net_tx,
            stop_rx,
            renew,
        ));

        let outbox = crate::journal::AsyncOutbox::new(journal.outbox()?);
        let mut position = journal.position();
        let start = *position.borrow_and_update();
        let mut owner = Owner {
            client,
            topics,
            settings,
            journal,
            metrics,
            state,
            pump: Pump::new(start.acked_upto),
            outbox,
            rpc: rpc::Pending::default(),
            session,
            identity_changes,
            config_layers,
            config_report,
        };
        let mut report_open = owner.config_report.is_some();
        owner.metrics.acked(start.acked_upto);
        owner.metrics.set_last_seq(start.last_seq);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut status_tick = tokio::time::interval(Duration::from_millis(
            owner.settings.sync.status_interval_ms,
        ));
        status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut rpc_open = true;
        let mut ended = Ok(());
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                event = net_rx.recv() => match event {
                    Some(event) => owner.on_net(event).await,
                    None => {
                        ended = Err(SyncError::SessionEnded);
                        break;
                    }
                },
                changed = position.changed() => {
                    if changed.is_err() {
                        ended = Err(SyncError::JournalStopped);
                        break;
                    }
                    let now = *position.borrow_and_update();
                    owner.metrics.set_last_seq(now.last_seq);
                    owner.metrics.set_storage(now.storage_low, now.disk_full);
                    owner.pump_outbox(now.last_seq).await;
                }
                // Once every RpcClient is dropped the channel yields None at once, forever; the
                // guard stops that from spinning the loop.
                call = rpc_requests.recv(), if rpc_open => match call {
                    Some(call) => owner.send_rpc(call),
                    None => rpc_open = false,
                },
                _ = tick.tick() => {
                    let last_seq = position.borrow().last_seq;
                    owner.on_tick(last_seq).await;
                }
                _ = status_tick.tick() => owner.publish_status(),
                changed = config_report_changed(&mut owner.config_report), if report_open => {
                    if changed {
                        owner.publish_config_state();
                    } else {
                        report_open = false;
                    }
                }
            }
        }
        owner.go_offline();
        let _ = stop_tx.send(true);
        let mut driver = driver;
        if tokio::time::timeout(Duration::from_secs(3), &mut driver)
            .await
            .is_err()
        {
            // Stopped, not dropped: a detached session task would keep the connection open.
            tracing::warn!("MQTT connection did not close within 3 s; closing it");
            driver.abort();
            let _ = driver.await;
        }
        ended
    }
}

/// The state the sync loop owns while it runs.
struct Owner {
    client: AsyncClient,
    topics: GatewayTopics,
    settings: SyncSettings,
    journal: Journal,
    metrics: Arc<Metrics>,
    state: watch::Sender<SyncState>,
    pump: Pump,
    outbox: crate::journal::AsyncOutbox,
    rpc: rpc::Pending,
    session: u64,
    identity_changes: Option<mpsc::Sender<crate::protocol::IdentityChange>>,
    config_layers: Option<mpsc::Sender<ConfigLayer>>,
    config_report: Option<watch::Receiver<Option<serde_json::Value>>>,
}

/// A signed config layer and the layer its topic names.
pub type ConfigLayer = (
    crate::config::layers::LayerName,
    crate::protocol::SignedLayer,
);

/// Waits for the next config report; false once its writer is gone.
async fn config_report_changed(
    report: &mut Option<watch::Receiver<Option<serde_json::Value>>>,
) -> bool {
    match report {
        Some(report) => report.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

impl Owner {
    async fn on_net(&mut self, event: SessionEvent) {
        match event {
            SessionEvent::Connected { session } => {
                self.session = session;
                self.metrics.connection_changed(true);
                self.state.send_modify(|s| {
                    s.connected = true;
                    s.session = session;
                });
                let filters = self
                    .topics
                    .inbound()
                    .into_iter()
                    .map(|path| rumqttc::SubscribeFilter::new(path, QoS::AtLeastOnce));
                if let Err(e) = self.client.try_subscribe_many(filters) {
                    tracing::warn!(error = %e, "subscribe request not queued");
                }
                self.publish_status();
                self.publish_config_state();
                let from = self.pump.restart();
                let last_seq = self.journal.position().borrow().last_seq;
                if from <= last_seq {
                    self.metrics.resend(from, "connected");
                }
                self.pump_outbox(last_seq).await;
            }
            SessionEvent::Disconnected { error } => {
                // The session task logs each change of state with the broker's address.
                tracing::debug!(%error, "broker connection down");
                self.metrics.connection_changed(false);
                self.state.send_modify(|s| s.connected = false);
                self.pump.disconnected();
                self.rpc.fail_all(RpcCallError::Unreachable);
            }
            // The gateway's session acks on receipt: each message is dealt with at once.
            SessionEvent::Message {
                topic,
                payload,
                retain,
                receipt: _,
            } => match inbound::parse(&self.topics, &topic, &payload, retain) {
                Ok(message) => self.on_message(message).await,
                Err(refusal) => {
                    self.metrics
                        .inbound_invalid(refusal.family, refusal.reason, &refusal.detail)
                }
            },
        }
    }

    async fn on_message(&mut self, message: inbound::Inbound) {
        match message {
            inbound::Inbound::Ack(ack) => self.on_ack(ack.upto_seq).await,
            inbound::Inbound::RpcResponse(response) => self.rpc.complete(response),
            inbound::Inbound::Identity(change) => {
                if let Some(changes) = &self.identity_changes {
                    // A closed receiver means the identity part is gone; the daemon's
                    // supervisor deals with that.
                    let _ = changes.send(change).await;
                }
            }
            inbound::Inbound::Layer { layer, signed } => {
                if let Some(layers) = &self.config_layers {
                    let _ = layers.send((layer, signed)).await;
                }
            }
            inbound::Inbound::Accepted { family } => {
                // Valid per docs/protocol.md; identity, orders and config layers are applied by the
                // parts that own them (identity, api/orders, config) as those land.
                tracing::debug!(family, "central message accepted");
            }
        }
    }

    /// docs/protocol.md: an ack is trusted only up to the highest seq published; one beyond the
    /// journal moves nothing, deletes nothing and raises an alarm.
    async fn on_ack(&mut self, upto: u64) {
        let last_seq = self.journal.position().borrow().last_seq;
        if upto > last_seq {
            self.ack_beyond_journal(upto, last_seq);
            return;
        }
        let trusted = upto.min(self.pump.published());
        if trusted <= self.pump.acked() {
            return;
        }
        match self.journal.record_ack(trusted).await {
            Ok(crate::journal::AckOutcome::BeyondJournal) => {
                self.ack_beyond_journal(upto, last_seq);
                return;
            }
            Ok(_) => {}
            Err(error) => {
                // Not fatal: the ack will come again (central answers every batch with it).
                tracing::error!(%error, upto, "could not record ack");
                return;
            }
        }
        self.metrics.acked(trusted);
        self.pump.acked_upto(trusted);
        self.pump_outbox(last_seq).await;
    }

    fn ack_beyond_journal(&mut self, upto: u64, last_seq: u64) {
        self.metrics
            .ack_beyond_journal(upto, last_seq, &self.settings.name.gateway);
        let raised = self
            .state
            .send_if_modified(|s| s.alarms.insert(ALARM_ACK_BEYOND_JOURNAL));
        if raised {
            self.publish_status();
        }
    }

    async fn on_tick(&mut self, last_seq: u64) {
        self.rpc.expire();
        if !self.state.borrow().connected {
            return;
        }
        let timeout = Duration::from_millis(self.settings.sync.ack_timeout_ms);
        if let Some(from) = self.pump.timed_out(timeout) {
            self.metrics.resend(from, "ack timeout");
        }
        self.pump_outbox(last_seq).await;
    }

    async fn pump_outbox(&mut self, last_seq: u64) {
        if !self.state.borrow().connected {
            return;
        }
        let limits = pump::Limits {
            batch_events: self.settings.sync.batch_events,
            batch_bytes: self.settings.sync.batch_bytes,
            window_batches: self.settings.sync.window_batches,
        };
        let name = &self.settings.name;
        let filled = self
            .pump
            .fill_window(
                &self.outbox,
                &self.client,
                &self.topics,
                name,
                limits,
                last_seq,
                &self.metrics,
            )
            .await;
        let failing = filled.err().map(|error| error.to_string());
        if let Some(error) = &failing {
            if self.state.borrow().failing.is_none() {
                tracing::error!(%error, "reading the outbox failed; retrying every tick");
            }
        }
        self.state.send_if_modified(|s| {
            let changed = s.failing != failing;
            s.failing = failing;
            changed
        });
    }

    fn send_rpc(&mut self, call: rpc::Call) {
        if !self.state.borrow().connected {
            call.fail(RpcCallError::Unreachable);
            return;
        }
        self.rpc.send(call, &self.client, &self.topics.rpc_req());
    }

    fn status(&self, state: &str) -> GatewayStatus {
        let position = *self.journal.position().borrow();
        GatewayStatus {
            state: state.to_string(),
            session: self.session,
            version: Some(env!("CARGO_PKG_VERSION").to_string()),
            backlog: Some(position.backlog()),
            config: self
                .config_report
                .as_ref()
                .and_then(|r| r.borrow().as_ref().map(|r| r["applied"].clone())),
            alarms: self
                .state
                .borrow()
                .alarms
                .iter()
                .map(|a| a.to_string())
                .chain(
                    (position.disk_full)
                        .then(|| "storage_full".to_string())
                        .or_else(|| position.storage_low.then(|| "storage_low".to_string())),
                )
                .collect(),
        }
    }

    /// The remote-config part's latest report, retained on `…/config/state`.
    fn publish_config_state(&self) {
        if !self.state.borrow().connected {
            return;
        }
        let Some(report) = self.config_report.as_ref().and_then(|r| r.borrow().clone()) else {
            return;
        };
        if let Ok(payload) = serde_json::to_vec(&report) {
            if let Err(e) =
                self.client
                    .try_publish(self.topics.config_state(), QoS::AtLeastOnce, true, payload)
            {
                tracing::debug!(error = %e, "config state not queued");
            }
        }
    }

    fn publish_status(&self) {
        if !self.state.borrow().connected {
            return;
        }
        let status = self.status("online");
        if let Ok(payload) = serde_json::to_vec(&status) {
            if let Err(e) =
                self.client
                    .try_publish(self.topics.status(), QoS::AtLeastOnce, true, payload)
            {
                tracing::debug!(error = %e, "status not queued");
            }
        }
    }

    /// A clean shutdown publishes the offline status itself: the broker sends the will only
    /// when a connection dies without a DISCONNECT.
    fn go_offline(&self) {
        if self.state.borrow().connected {
            let status = GatewayStatus {
                version: None,
                backlog: None,
                alarms: Vec::new(),
                ..self.status("offline")
            };
            if let Ok(payload) = serde_json::to_vec(&status) {
                let _ =
                    self.client
                        .try_publish(self.topics.status(), QoS::AtLeastOnce, true, payload);
            }
        }
        let _ = self.client.try_disconnect();
    }
}
