//! Central's MQTT side: batches in, acks out; rpc requests in, responses out.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, LastWill, MqttOptions, QoS, Transport};
use tokio::sync::mpsc;

use super::health::Health;
use super::store::{Store, StoreError};
use crate::backoff::Backoff;
use crate::config::CentralConfig;
use crate::metrics::Metrics;
use crate::mqtt::{Reconnect, SessionEvent};
use crate::protocol::is_topic_id;
use crate::protocol::topics::{self, split_gateway_topic, GatewayTopics};
use crate::protocol::{
    Ack, CentralStatus, EventBatch, RpcError, RpcRequest, RpcResponse, MAX_PAYLOAD_BYTES,
};

/// Why central stopped.
#[derive(Debug, thiserror::Error)]
pub enum CentralError {
    /// Its store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Its MQTT settings are invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Its TLS files could not be read.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// The online channel's address could not be bound.
    #[error("central.api_listen {0}: {1}")]
    Api(std::net::SocketAddr, std::io::Error),
    /// The MQTT session task stopped on its own.
    #[error("central's MQTT session task ended unexpectedly")]
    SessionEnded,
    /// A writer or the resolver stopped on its own.
    #[error("central's writer or resolver task ended unexpectedly")]
    WorkerEnded,
}

/// Runs the reference central until `shutdown` resolves; `ready` is called once its store is
/// open and its online channel listening (the MQTT session connects, and reconnects, on its
/// own).
pub async fn run(
    config: CentralConfig,
    ready: impl FnOnce(),
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), CentralError> {
    let store = Store::open(&config.central.db).await?;
    let options = options(&config)?;
    // Acks and identity changes wait here for the connection. Publishing never waits on it:
    // the session task that drains it also hands central its incoming messages, so a handler
    // waiting for room would wait on itself. A full queue drops the message instead (the
    // gateway re-sends, boxes catch up with `identity.since`), counted and logged.
    let (client, eventloop) = crate::mqtt::client(options, OUTGOING_QUEUE);
    let health = Arc::new(Health::default());
    // Room for every message the broker sends ahead of central's PUBACKs (its in-flight limit
    // per client), so the session task never waits for the intake.
    let (net_tx, mut net_rx) = mpsc::channel(INTAKE_QUEUE);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
    // Central's will never changes: every attempt keeps it.
    let keep_will = || async {
        Ok(Reconnect {
            session: 0,
            will: None,
        })
    };
    let driver = tokio::spawn(crate::mqtt::drive(
        eventloop,
        client.clone(),
        backoff,
        0,
        net_tx,
        stop_rx,
        keep_will,
    ));
    let api = match config.central.api_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| CentralError::Api(addr, e))?;
            tracing::info!(%addr, "central online channel listening");
            let channel = super::api::OnlineChannel::new(
                store.clone(),
                &config,
                client.clone(),
                health.clone(),
            );
            let (stop_api, api_stopped) = tokio::sync::watch::channel(false);
            let limits = crate::api::Limits {
                header_timeout: Duration::from_secs(10),
                per_peer: crate::api::MAX_CONNECTIONS,
            };
            let task = tokio::spawn(crate::api::serve_router(
                listener,
                super::api::router(channel),
                limits,
                Arc::new(Metrics::new()),
                async move {
                    let mut stopped = api_stopped;
                    let _ = stopped.wait_for(|s| *s).await;
                },
            ));
            Some((stop_api, task))
        }
        None => None,
    };
    // Batches go to writers: one for SQLite (its single writer), `[central] writers` for
    // PostgreSQL. A gateway always goes to the same writer, so this instance's transactions
    // never wait on each other's gateway locks (only on another instance's, which a shared
    // subscription makes brief); each writer stores what has queued up for it in one
    // transaction. Rpcs run beside them, as many as the store takes.
    let parallel = store.parallelism();
    let writer_count = parallel.min(config.central.writers).max(1);
    let rpcs_in_flight = Arc::new(tokio::sync::Semaphore::new(parallel));
    let service = Arc::new(Service {
        client,
        store,
        share_group: config.central.share_group.clone(),
        metrics: Arc::new(Metrics::new()),
        health,
        effects_queued: tokio::sync::Notify::new(),
    });
    let mut tasks = tokio::task::JoinSet::new();
    let mut writers = Vec::with_capacity(writer_count);
    for _ in 0..writer_count {
        let (queue, queued) = mpsc::channel(WRITER_QUEUE);
        writers.push(queue);
        tasks.spawn(write_batches(service.clone(), queued));
    }
    let (stop_resolver, resolver_stop) = tokio::sync::watch::channel(false);
    tasks.spawn(resolve_effects(service.clone(), resolver_stop));
    ready();
    tokio::pin!(shutdown);
    let mut ended = Ok(());
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            // Writers and the resolver return only when central stops: one that ends before
            // stops central with an error (exit 1, restarted by its service manager) rather
            // than leaving gateways unacked or effects unapplied.
            Some(_) = tasks.join_next() => {
                ended = Err(CentralError::WorkerEnded);
                break;
            }
            message = net_rx.recv() => match message {
                Some(SessionEvent::Connected { .. }) => service.on_connected(),
                Some(SessionEvent::Disconnected { error }) => service.health.disconnected(error),
                // Each message is acked to the broker when its receipt is dropped: a batch once
                // stored (or failed), an rpc once answered, anything refused at once.
                Some(SessionEvent::Message { topic, payload, retain, receipt }) => {
                    match service.classify(&topic, &payload, retain) {
                        Some(Inbound::Batch(batch)) => {
                            let writer = &writers[writer_of(&batch.store, &batch.gateway, writer_count)];
                            // A full queue holds the intake back; the broker holds the rest,
                            // since central has not acked them.
                            if writer.send((batch, receipt)).await.is_err() {
                                ended = Err(CentralError::WorkerEnded);
                                break;
                            }
                        }
                        Some(Inbound::Rpc { store, gateway, payload }) => {
                            let Ok(permit) = rpcs_in_flight.clone().acquire_owned().await else {
                                break;
                            };
                            let service = service.clone();
                            tokio::spawn(async move {
                                service.on_rpc(&store, &gateway, &payload).await;
                                drop(permit);
                                drop(receipt);
                            });
                        }
                        None => {}
                    }
                }
                // The session task ended by itself: central stops with an error (exit 1), so
                // its service manager restarts it, rather than running on deaf.
                None => {
                    ended = Err(CentralError::SessionEnded);
                    break;
                }
            },
        }
    }
    // What is queued is stored (and acked), and the resolver finishes its round, before
    // central says it is offline.
    drop(writers);
    let _ = stop_resolver.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        rpcs_in_flight.acquire_many(u32::try_from(parallel).unwrap_or(u32::MAX)),
    )
    .await;
    let offline = serde_json::to_vec(&CentralStatus {
        state: "offline".into(),
    })
    .unwrap_or_default();
    let _ = service
        .client
        .try_publish(topics::CENTRAL_STATUS, QoS::AtLeastOnce, true, offline);
    let _ = service.client.try_disconnect();
    if let Some((stop_api, task)) = api {
        let _ = stop_api.send(true);
        let _ = task.await;
    }
    let _ = stop_tx.send(true);
    let mut driver = driver;
    if tokio::time::timeout(Duration::from_secs(3), &mut driver)
        .await
        .is_err()
    {
        // Stopped, not dropped: a detached session task would keep the connection open.
        tracing::warn!("central's MQTT connection did not close within 3 s; closing it");
        driver.abort();
        let _ = driver.await;
    }
    ended
}

fn options(config: &CentralConfig) -> Result<MqttOptions, CentralError> {
    let broker = config.mqtt.broker()?;
    let mut options = MqttOptions::new(
        config.central.client_id.clone(),
        broker.host.clone(),
        broker.port,
    );
    options.set_keep_alive(Duration::from_secs(config.mqtt.keep_alive_secs));
    options.set_clean_session(true);
    // PUBACK once a message is dealt with, not on arrival: the broker's in-flight limit holds
    // back what central has no room for (crate::mqtt::Receipt).
    options.set_manual_acks(true);
    crate::mqtt::set_packet_limits(&mut options);
    options.set_inflight(256);
    let will = serde_json::to_vec(&CentralStatus {
        state: "offline".into(),
    })
    .unwrap_or_default();
    options.set_last_will(LastWill::new(
        topics::CENTRAL_STATUS,
        will,
        QoS::AtLeastOnce,
        true,
    ));
    if broker.tls {
        let tls = crate::mqtt::tls_configuration(&config.mqtt).map_err(CentralError::Tls)?;
        options.set_transport(Transport::Tls(tls));
    }
    Ok(options)
}

struct Service {
    client: AsyncClient,
    store: Store,
    share_group: Option<String>,
    /// Counts refused inbound messages; its rate-limited log lines say which.
    metrics: Arc<Metrics>,
    /// What `/healthz` reports (`health.rs`).
    health: Arc<Health>,
    /// Told when a transaction queued effects for the resolver.
    effects_queued: tokio::sync::Notify,
}

/// What a message from a gateway is.
enum Inbound {
    /// Events (or a refused batch, empty, answered with the current ack).
    Batch(super::GatewayBatch),
    /// An rpc request.
    Rpc {
        store: String,
        gateway: String,
        payload: Vec<u8>,
    },
}

/// Most batches a writer stores in one transaction. Live traffic comes in small batches (a
/// store's few events since its last), where the per-transaction work dominates: 256 rather
/// than 64 cut the ack latency at 15,000 events/s by a third (README, "Running central at
/// scale").
const GROUP: usize = 256;

/// Most events a writer stores in one transaction: backlogs come in full batches (up to 500
/// events each by default), and a group stays the size 64 of them made.
const GROUP_EVENTS: usize = 32_768;

/// Batches waiting for each writer before the intake waits for it: as many as the broker sends
/// ahead of central's acks, so one writer's share never holds the intake back.
const WRITER_QUEUE: usize = 1024;

/// Messages read from the broker and not yet taken by the intake. Above the in-flight limit
/// per client of the brokers central is run with (Mosquitto's `max_inflight_messages`, 1,024
/// in config/mosquitto.conf; rumqttd's 100), so the session task never waits for the intake.
const INTAKE_QUEUE: usize = 2048;

/// A batch and the receipt that acks its message to the broker once the batch is dealt with.
type Queued = (super::GatewayBatch, crate::mqtt::Receipt);

/// The writer a gateway's batches go to.
fn writer_of(store: &str, gateway: &str, writers: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (store, gateway).hash(&mut hasher);
    (hasher.finish() % writers.max(1) as u64) as usize
}

/// Stores the batches queued for one writer, what has queued up together in one transaction,
/// until the queue closes.
async fn write_batches(service: Arc<Service>, mut queued: mpsc::Receiver<Queued>) {
    while let Some(first) = queued.recv().await {
        let mut events = first.0.events.len();
        let mut group = vec![first];
        while group.len() < GROUP && events < GROUP_EVENTS {
            let Ok(next) = queued.try_recv() else {
                break;
            };
            events += next.0.events.len();
            group.push(next);
        }
        let (batches, receipts): (Vec<_>, Vec<_>) = group.into_iter().unzip();
        service.on_batches(batches, receipts).await;
    }
}

/// Sends committed identity changes to every box. Committed first, published after: a change
/// lost here is still in the store, and every gateway asks `identity.since` on its next
/// connect. The resolver and the online channel both publish through here.
pub(super) fn publish_changes(client: &AsyncClient, health: &Health, changes: Vec<String>) {
    for change in changes {
        if client
            .try_publish(
                topics::IDENTITY,
                QoS::AtLeastOnce,
                false,
                change.into_bytes(),
            )
            .is_err()
        {
            not_queued(
                health,
                "an identity change (boxes catch up with identity.since)",
            );
        }
    }
}

/// A publish the full outgoing queue refused: counted for `/healthz`, logged at the first and
/// then every 1,000th, not once per message, when the broker cannot keep up.
fn not_queued(health: &Health, what: &str) {
    let count = health.not_queued();
    if count == 1 || count.is_multiple_of(1000) {
        tracing::warn!(count, "central: outgoing MQTT queue full; dropped {what}");
    }
}

/// Outgoing publishes central queues while the broker takes them (acks are tiny, identity
/// changes under a kilobyte).
const OUTGOING_QUEUE: usize = 16_384;

/// Queued events the resolver applies per transaction.
const EFFECTS_GROUP: usize = 4096;

/// How often the resolver looks at the queue when nobody tells it: effects queued by another
/// instance, or left by one that stopped before applying them.
const EFFECTS_POLL: Duration = Duration::from_secs(1);

/// Applies queued identity and points effects (`effects.rs`) until told to stop, and
/// broadcasts the changes each round commits. A failed round is retried with backoff: the
/// queue stays in the store, so nothing is lost while the database is away.
async fn resolve_effects(service: Arc<Service>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
    while !*stop.borrow() {
        let wait = match service.store.apply_pending(EFFECTS_GROUP).await {
            Ok(resolved) => {
                backoff.reset();
                service.health.resolver_applied();
                publish_changes(&service.client, &service.health, resolved.changes);
                if resolved.events == EFFECTS_GROUP {
                    continue;
                }
                EFFECTS_POLL
            }
            Err(error) => {
                let failures = service.health.resolver_failed(error.to_string());
                if failures == 1 || failures.is_multiple_of(100) {
                    tracing::error!(%error, failures, "central: applying identity and points effects failed; retrying");
                }
                backoff.next_delay()
            }
        };
        tokio::select! {
            _ = service.effects_queued.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
    }
}

impl Service {
    fn on_connected(&self) {
        self.health.connected();
        let filter = |topic: &str| match &self.share_group {
            Some(group) => format!("$share/{group}/{topic}"),
            None => topic.to_string(),
        };
        let filters = [filter(topics::ALL_EVENTS), filter(topics::ALL_RPC_REQ)]
            .into_iter()
            .map(|path| rumqttc::SubscribeFilter::new(path, QoS::AtLeastOnce));
        if let Err(e) = self.client.try_subscribe_many(filters) {
            tracing::error!(error = %e, "central: subscribe not queued");
        }
        let online = serde_json::to_vec(&CentralStatus {
            state: "online".into(),
        })
        .unwrap_or_default();
        let _ = self
            .client
            .try_publish(topics::CENTRAL_STATUS, QoS::AtLeastOnce, true, online);
        tracing::info!("central connected and subscribed");
    }

    /// What a message is, once its topic checks out; `None` (counted) when it does not.
    fn classify(&self, topic: &str, payload: &[u8], retain: bool) -> Option<Inbound> {
        let Some((store, gateway, rest)) = split_gateway_topic(topic) else {
            self.refused("unknown", "unexpected_topic", topic);
            return None;
        };
        if !is_topic_id(store) || !is_topic_id(gateway) {
            self.refused(rest, "invalid_topic", topic);
            return None;
        }
        // Neither events nor rpc requests are retained (docs/protocol.md): a retained one was left
        // on the broker by someone else and would be replayed at every connect.
        if retain {
            self.refused(rest, "retained_not_allowed", topic);
            return None;
        }
        match rest {
            "events" => {
                let events = match check_batch(store, gateway, payload) {
                    Ok(batch) => batch.events,
                    // Refused whole: it still gets the current ack.
                    Err(reason) => {
                        self.refused("events", reason.0, &reason.1);
                        Vec::new()
                    }
                };
                Some(Inbound::Batch(super::GatewayBatch {
                    store: store.to_string(),
                    gateway: gateway.to_string(),
                    events,
                }))
            }
            "rpc/req" => Some(Inbound::Rpc {
                store: store.to_string(),
                gateway: gateway.to_string(),
                payload: payload.to_vec(),
            }),
            _ => {
                self.refused(rest, "unexpected_topic", topic);
                None
            }
        }
    }

    fn not_queued(&self, what: &str) {
        not_queued(&self.health, what);
    }

    fn refused(&self, family: &str, reason: &str, detail: &str) {
        self.metrics.inbound_invalid(family, reason, detail);
    }

    /// Stores batches that arrived together in one transaction and answers each with its ack.
    /// Each receipt is dropped once its batch is dealt with (stored and answered, or failed
    /// and left to the gateway's re-send), so the broker may send more.
    async fn on_batches(
        &self,
        batches: Vec<super::GatewayBatch>,
        receipts: Vec<crate::mqtt::Receipt>,
    ) {
        let batches = Arc::new(batches);
        match self.store.store_batches(batches.clone()).await {
            Ok(outcomes) => {
                self.health.writers(None);
                for (batch, outcome) in batches.iter().zip(&outcomes) {
                    self.answer(&batch.store, &batch.gateway, outcome.acked_upto);
                }
                if outcomes.iter().any(|o| o.effects_queued > 0) {
                    self.effects_queued.notify_one();
                }
            }
            Err(error) if batches.len() == 1 => {
                self.health.writers(Some(error.to_string()));
                tracing::error!(%error, store = %batches[0].store, gateway = %batches[0].gateway, "central: storing a batch failed; not acked");
            }
            // One batch that cannot be stored must not hold back the others it came with:
            // each goes again on its own.
            Err(error) => {
                tracing::warn!(%error, batches = batches.len(), "central: a group of batches failed; storing each alone");
                for (batch, receipt) in batches.iter().zip(receipts) {
                    let (store, gateway) = (batch.store.clone(), batch.gateway.clone());
                    match self
                        .store
                        .store_batches(Arc::new(vec![batch.clone()]))
                        .await
                    {
                        Ok(mut outcomes) => {
                            self.health.writers(None);
                            if let Some(outcome) = outcomes.pop() {
                                self.answer(&store, &gateway, outcome.acked_upto);
                                if outcome.effects_queued > 0 {
                                    self.effects_queued.notify_one();
                                }
                            }
                        }
                        Err(error) => {
                            self.health.writers(Some(error.to_string()));
                            tracing::error!(%error, store, gateway, "central: storing a batch failed; not acked")
                        }
                    }
                    drop(receipt);
                }
            }
        }
    }

    /// Central answers every batch, duplicates and refused ones too, with its current ack: a
    /// gateway whose ack was lost moves on.
    fn answer(&self, store: &str, gateway: &str, upto: u64) {
        if upto == 0 {
            // Nothing of this gateway's stored from seq 1 on (its first batch was lost, say,
            // and a later one arrived): there is no ack to send, since 0 is outside the
            // protocol's range. The gateway re-sends from its acked position after its ack
            // timeout.
            tracing::debug!(
                store,
                gateway,
                "central: nothing to ack yet (a gap before the first stored seq)"
            );
            return;
        }
        let ack = serde_json::to_vec(&Ack { upto_seq: upto }).unwrap_or_default();
        let topic = GatewayTopics::new(store, gateway).ack();
        if self
            .client
            .try_publish(topic, QoS::AtLeastOnce, false, ack)
            .is_err()
        {
            self.not_queued("an ack (the gateway re-sends after its ack timeout)");
        }
    }

    async fn on_rpc(&self, store: &str, gateway: &str, payload: &[u8]) {
        if payload.len() > MAX_PAYLOAD_BYTES {
            return self.refused("rpc/req", "oversized", &payload.len().to_string());
        }
        let request: RpcRequest = match serde_json::from_slice(payload) {
            Ok(r) => r,
            Err(e) => return self.refused("rpc/req", "invalid_message", &e.to_string()),
        };
        let outcome = handle_rpc(
            &self.store,
            store,
            gateway,
            &request.method,
            &request.params,
        )
        .await;
        let response = match outcome {
            Ok(result) => RpcResponse {
                id: request.id,
                ok: true,
                result: Some(result),
                error: None,
            },
            Err(error) => RpcResponse {
                id: request.id,
                ok: false,
                result: None,
                error: Some(error),
            },
        };
        let topic = GatewayTopics::new(store, gateway).rpc_res();
        if let Ok(bytes) = serde_json::to_vec(&response) {
            let _ = self
                .client
                .try_publish(topic, QoS::AtLeastOnce, false, bytes);
        }
    }
}

fn internal(message: &str) -> RpcError {
    RpcError {
        code: "internal".into(),
        message: message.into(),
    }
}

fn bad_params(message: &str) -> RpcError {
    RpcError {
        code: "bad_params".into(),
        message: message.into(),
    }
}

async fn handle_rpc(
    db: &Store,
    store: &str,
    gateway: &str,
    method: &str,
    params: &serde_json::Value,
) -> Result<serde_json::Value, RpcError> {
    match method {
        "coupon.reserve" => {
            let coupon = params
                .get("coupon")
                .and_then(|v| v.as_str())
                .ok_or_else(|| bad_params("coupon is required"))?;
            let receipt = params
                .get("receipt")
                .and_then(|v| v.as_str())
                .ok_or_else(|| bad_params("receipt is required"))?;
            let customer = params.get("customer").and_then(|v| v.as_str());
            db.reserve_coupon(
                store.to_string(),
                gateway.to_string(),
                coupon.to_string(),
                customer.map(str::to_string),
                receipt.to_string(),
            )
            .await
            .map_err(|e| internal(&e.to_string()))??;
            Ok(serde_json::json!({ "reserved": true }))
        }
        "identity.since" => {
            // 0 asks for everything; otherwise a rev the protocol allows.
            let rev = params
                .get("rev")
                .and_then(|v| v.as_u64())
                .filter(|rev| *rev <= crate::protocol::MAX_SEQ)
                .ok_or_else(|| bad_params("rev is required, 0 .. 2^53-1"))?;
            let changes = db
                .identity_since(rev, 1000)
                .await
                .map_err(|e| internal(&e.to_string()))?;
            Ok(serde_json::json!({ "changes": changes }))
        }
        "profile.lookup" => {
            let identifiers: Vec<crate::protocol::Identifier> = params
                .get("identifiers")
                .cloned()
                .and_then(|v| serde_json::from_value(v).ok())
                .filter(|ids: &Vec<_>| !ids.is_empty() && ids.len() <= 16)
                .ok_or_else(|| bad_params("identifiers is required: 1 to 16 identifiers"))?;
            let profile = db
                .lookup_profile(identifiers)
                .await
                .map_err(|e| internal(&e.to_string()))?;
            Ok(serde_json::json!({ "profile": profile }))
        }
        other => Err(RpcError {
            code: "unknown_method".into(),
            message: format!("central has no method {other}"),
        }),
    }
}

/// A gateway's batch as central reads it off `…/events` for `store`/`gateway`: within the size
/// limit, parsed, the topic's store and gateway, seqs valid and increasing, each event with an
/// id and a kind. Each event's body is checked when it is stored (`WireEvent::check`).
pub fn check_batch(
    store: &str,
    gateway: &str,
    payload: &[u8],
) -> Result<EventBatch, (&'static str, String)> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(("oversized", format!("{} bytes", payload.len())));
    }
    let batch: EventBatch =
        serde_json::from_slice(payload).map_err(|e| ("invalid_message", e.to_string()))?;
    if batch.store != store || batch.gateway != gateway {
        return Err((
            "invalid_message",
            "store/gateway differ from the topic".into(),
        ));
    }
    let mut previous = 0;
    for event in &batch.events {
        if !crate::protocol::is_valid_seq(event.seq) {
            return Err((
                "invalid_message",
                format!("seq {} is outside 1 .. 2^53-1", event.seq),
            ));
        }
        if event.seq <= previous {
            return Err(("invalid_message", format!("seq {} out of order", event.seq)));
        }
        if event.id.is_empty() || event.id.len() > 64 || event.kind.is_empty() {
            return Err((
                "invalid_message",
                format!("event {} lacks id or kind", event.seq),
            ));
        }
        previous = event.seq;
    }
    Ok(batch)
}
