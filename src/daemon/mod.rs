//! `storegate run`: the gateway daemon. Opens the journal, serves the API, runs sync, and on
//! shutdown stops intake first, then sync, then lets the journal writer finish its last group.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

mod device_events;

use crate::api::{self, ApiState, LiveEvents};
use crate::clock::Clock;
use crate::config::GatewayConfig;
use crate::devices::Devices;
use crate::identity::Identity;
use crate::journal::{Journal, JournalError};
use crate::metrics::Metrics;
use crate::sync::{Sync, SyncError, SyncSettings};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("cannot listen on {addr} for the API: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("API server: {0}")]
    Api(std::io::Error),
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error("cannot start device threads: {0}")]
    Devices(std::io::Error),
    #[error("a daemon task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error(transparent)]
    CouponKeys(#[from] crate::codes::coupon::KeyError),
}

/// What the daemon tells its caller once it accepts requests.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Ready {
    pub api: SocketAddr,
    pub store: String,
    pub gateway: String,
    pub last_seq: u64,
    pub acked_upto: u64,
}

/// Runs the gateway until `shutdown` resolves. `on_ready` is called once the API listens.
pub async fn run(
    config: GatewayConfig,
    clock: Arc<dyn Clock>,
    on_ready: impl FnOnce(Ready),
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    let metrics = Arc::new(Metrics::new());
    let (journal, writer) =
        Journal::open_with_retention(&config.journal.path, clock, config.journal.keep_acked)?;
    let listener = TcpListener::bind(config.api.listen)
        .await
        .map_err(|source| DaemonError::Listen {
            addr: config.api.listen,
            source,
        })?;
    let api_addr = listener.local_addr().map_err(DaemonError::Api)?;
    let sync = Sync::new(
        SyncSettings::from_config(&config),
        journal.clone(),
        metrics.clone(),
    );
    let identity = Arc::new(Identity::new(
        config.identity.hmac_key.as_deref(),
        &config.gateway.id,
        journal.clone(),
    )?);
    let print_queue = crate::journal::print_queue::queue_path(&config.journal.path);
    let printing = api::Printing::open(&print_queue, &config.devices.printers)?;
    let (devices, device_events) = Devices::start(&config.devices, &print_queue, metrics.clone())
        .map_err(DaemonError::Devices)?;
    let beeps: std::collections::HashMap<String, u16> = config
        .devices
        .card_readers
        .iter()
        .map(|reader| (reader.name.clone(), reader.beep_ms))
        .collect();
    let live = LiveEvents::new();
    let router = device_events::Router {
        identity,
        devices: devices.handle(),
        live: live.clone(),
        beep_ms: Box::new(move |device| beeps.get(device).copied().unwrap_or(0)),
        card_rules: config
            .devices
            .scanners
            .iter()
            .map(|s| (s.name.clone(), s.card_number.clone()))
            .chain(
                config
                    .devices
                    .keyboard_wedges
                    .iter()
                    .map(|w| (w.name.clone(), w.card_number.clone())),
            )
            .collect(),
        coupon_keys: crate::codes::coupon::CouponKeys::from_base64(&config.coupons.public_keys)?,
        metrics: metrics.clone(),
    };
    let router_task = tokio::spawn(router.run(device_events));
    let state = ApiState {
        journal: journal.clone(),
        metrics: metrics.clone(),
        sync: sync.state(),
        tokens: Arc::new(config.api.tokens.clone()),
        devices: devices.handle(),
        live,
        printing,
    };
    let position = *journal.position().borrow();
    drop(journal);

    let (stop_api, api_stopped) = watch::channel(false);
    let (stop_sync, sync_stopped) = watch::channel(false);
    let api_task = tokio::spawn(api::serve(listener, state, signalled(api_stopped)));
    let sync_task = tokio::spawn(sync.run(signalled(sync_stopped)));
    on_ready(Ready {
        api: api_addr,
        store: config.gateway.store.clone(),
        gateway: config.gateway.id.clone(),
        last_seq: position.last_seq,
        acked_upto: position.acked_upto,
    });
    tracing::info!(%api_addr, last_seq = position.last_seq, acked = position.acked_upto, "gateway ready");

    shutdown.await;
    tracing::info!("shutting down: intake first (devices, API), then sync");
    tokio::task::spawn_blocking(move || devices.stop()).await?;
    // The devices' event senders are gone with their threads: the router drains and ends.
    router_task.await?;
    let _ = stop_api.send(true);
    api_task.await?.map_err(DaemonError::Api)?;
    let _ = stop_sync.send(true);
    sync_task.await??;
    // Every Journal handle is gone now; the writer commits what is queued and exits.
    tokio::task::spawn_blocking(move || writer.join()).await?;
    Ok(())
}

/// A future that resolves when the watch flips to true (or its sender is gone).
pub async fn signalled(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM (systemd's stop).
pub async fn terminate_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
