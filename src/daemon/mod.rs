//! `storegate run`: the gateway daemon. Opens the journal, serves the API, runs sync, and on
//! shutdown stops intake first, then sync, then lets the journal writer finish its last group.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

mod device_events;
pub mod service_manager;

use crate::api::{self, ApiState, LiveEvents};
use crate::clock::Clock;
use crate::config::GatewayConfig;
use crate::devices::Devices;
use crate::identity::Identity;
use crate::journal::{Journal, JournalError};
use crate::metrics::Metrics;
use crate::sync::{SyncError, SyncSettings, Syncer};

/// Why the daemon could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The journal could not be opened.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The API's address is taken or not allowed.
    #[error("cannot listen on {addr} for the API: {source}")]
    Listen {
        /// The configured address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The API server failed.
    #[error("API server: {0}")]
    Api(std::io::Error),
    /// Sync could not start or stopped.
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// Device threads could not start.
    #[error("cannot start device threads: {0}")]
    Devices(std::io::Error),
    /// A part's task could not be joined.
    #[error("a daemon task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// A long-lived part stopped on its own: the daemon stops too and exits non-zero, so
    /// systemd (`Restart=on-failure`) starts it afresh instead of it running on half-dead.
    #[error("{part} stopped unexpectedly ({reason}); shutting down so the service manager restarts storegate")]
    PartEnded {
        /// Which part.
        part: &'static str,
        /// How it ended.
        reason: String,
    },
}

/// What the daemon tells its caller once it accepts requests.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Ready {
    /// Where the API listens.
    pub api: SocketAddr,
    /// The store id.
    pub store: String,
    /// The gateway id.
    pub gateway: String,
    /// The journal's newest seq at start.
    pub last_seq: u64,
    /// Central's ack at start.
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
    let (journal, writer) = Journal::open_with(
        &config.journal.path,
        clock.clone(),
        config.journal.retention(),
        config.journal.disk_limits(),
    )?;
    let listener = TcpListener::bind(config.api.listen)
        .await
        .map_err(|source| DaemonError::Listen {
            addr: config.api.listen,
            source,
        })?;
    let api_addr = listener.local_addr().map_err(DaemonError::Api)?;
    let mut sync = Syncer::new(
        SyncSettings::from_config(&config),
        journal.clone(),
        metrics.clone(),
    );
    let (identity_changes_tx, identity_changes_rx) = tokio::sync::mpsc::channel(256);
    sync.send_identity_changes_to(identity_changes_tx);
    let (identity_changes, aliases) = crate::identity::changes::IdentityChanges::load(
        journal.clone(),
        sync.rpc(),
        identity_changes_rx,
        sync.state(),
    )?;
    let identity = Arc::new(
        Identity::new(
            config.identity.hmac_key.as_ref(),
            &config.gateway.id,
            journal.clone(),
        )?
        .with_central(
            sync.rpc(),
            std::time::Duration::from_millis(config.identity.lookup_timeout_ms),
            aliases.clone(),
        ),
    );
    // The settings a signed remote layer may change while the daemon runs.
    let (layers_tx, layers_rx) = tokio::sync::mpsc::channel(16);
    sync.send_config_layers_to(layers_tx);
    let (remote_config, settings, config_reports) =
        crate::remote_config::RemoteConfig::load(&config, journal.clone(), layers_rx)?;
    sync.publish_config_state_from(config_reports);
    let printing = api::Printing::new(journal.clone(), &config.devices.printers);
    let (devices, device_events) =
        Devices::start(&config.devices, &journal, &settings, metrics.clone())
            .map_err(DaemonError::Devices)?;
    let beeps: std::collections::HashMap<String, u16> = config
        .devices
        .card_readers
        .iter()
        .map(|reader| (reader.name.clone(), reader.beep_ms))
        .collect();
    let live = LiveEvents::new();
    let router = device_events::Router {
        identity: identity.clone(),
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
        settings: settings.clone(),
        metrics: metrics.clone(),
    };
    let router_task = tokio::spawn(router.run(device_events));
    let loyalty = Arc::new(crate::loyalty::Loyalty::new(
        settings.clone(),
        crate::journal::AsyncOutbox::new(journal.outbox()?),
        aliases.clone(),
        sync.state(),
    ));
    let coupons = crate::coupons::Redeemer::new(
        settings.clone(),
        &config.gateway.store,
        journal.clone(),
        Some(sync.rpc()),
        aliases,
        clock,
    )?;
    let state = ApiState {
        journal: journal.clone(),
        metrics: metrics.clone(),
        sync: sync.state(),
        tokens: Arc::new(config.api.tokens.clone()),
        devices: devices.handle(),
        live,
        printing,
        coupons,
        identity,
        loyalty,
    };
    let position = *journal.position().borrow();
    let sync_state = sync.state();

    let (stop_api, api_stopped) = watch::channel(false);
    let (stop_sync, sync_stopped) = watch::channel(false);
    let limits = api::Limits {
        header_timeout: std::time::Duration::from_millis(config.api.header_timeout_ms),
        per_peer: config.api.connections_per_peer,
    };
    let (stop_identity, identity_stopped) = watch::channel(false);
    let (stop_remote_config, remote_config_stopped) = watch::channel(false);
    let mut parts = Parts {
        remote_config: Some(tokio::spawn(
            remote_config.run(signalled(remote_config_stopped)),
        )),
        api: Some(tokio::spawn(api::serve(
            listener,
            state,
            limits,
            signalled(api_stopped),
        ))),
        sync: Some(tokio::spawn(sync.run(signalled(sync_stopped)))),
        router: Some(router_task),
        identity: Some(tokio::spawn(
            identity_changes.run(signalled(identity_stopped)),
        )),
    };
    on_ready(Ready {
        api: api_addr,
        store: config.gateway.store.clone(),
        gateway: config.gateway.id.clone(),
        last_seq: position.last_seq,
        acked_upto: position.acked_upto,
    });
    tracing::info!(%api_addr, last_seq = position.last_seq, acked = position.acked_upto, "gateway ready");
    let manager = service_manager::ServiceManager::from_env();
    manager.ready(&position, &sync_state.borrow());

    let failure = supervise(shutdown, &journal, &mut parts, &manager, &sync_state).await;
    manager.stopping();
    drop(journal);
    if let Some(failure) = &failure {
        tracing::error!(%failure, "a part of the daemon failed");
    }
    tracing::info!("shutting down: intake first (devices, API), then sync");
    tokio::task::spawn_blocking(move || devices.stop()).await?;
    // The devices' event senders are gone with their threads: the router drains and ends.
    if let Some(task) = parts.router {
        task.await?;
    }
    let _ = stop_api.send(true);
    if let Some(task) = parts.api {
        task.await?.map_err(DaemonError::Api)?;
    }
    let _ = stop_remote_config.send(true);
    if let Some(task) = parts.remote_config {
        task.await??;
    }
    // The identity part calls central through sync: it stops first.
    let _ = stop_identity.send(true);
    if let Some(task) = parts.identity {
        task.await??;
    }
    let _ = stop_sync.send(true);
    if let Some(task) = parts.sync {
        task.await??;
    }
    // Every Journal handle is gone now; the writer commits what is queued and exits.
    tokio::task::spawn_blocking(move || writer.join()).await?;
    failure.map_or(Ok(()), Err)
}

type Task<T> = Option<tokio::task::JoinHandle<T>>;

/// The daemon's long-lived parts; a part's handle is taken once it has finished.
struct Parts {
    api: Task<std::io::Result<()>>,
    sync: Task<Result<(), SyncError>>,
    router: Task<()>,
    identity: Task<Result<(), JournalError>>,
    remote_config: Task<Result<(), JournalError>>,
}

/// Waits for `shutdown`, or for the first long-lived part to end on its own; that part's
/// handle is taken (it has finished) and its failure returned.
async fn supervise(
    shutdown: impl std::future::Future<Output = ()>,
    journal: &Journal,
    parts: &mut Parts,
    manager: &service_manager::ServiceManager,
    sync_state: &watch::Receiver<crate::sync::SyncState>,
) -> Option<DaemonError> {
    let every = manager.tick();
    let mut ticks = tokio::time::interval(every.unwrap_or(std::time::Duration::from_secs(3600)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ended = |part: &'static str, reason: String| Some(DaemonError::PartEnded { part, reason });
    let joined = |result: Result<String, tokio::task::JoinError>| match result {
        Ok(reason) => reason,
        Err(error) if error.is_panic() => "it panicked".to_string(),
        Err(error) => error.to_string(),
    };
    tokio::pin!(shutdown);
    loop {
        return tokio::select! {
            _ = &mut shutdown => None,
            _ = journal.closed() => ended("the journal writer", "its thread ended".into()),
            result = join(&mut parts.api) => ended("the API server", joined(result.map(|r| match r {
                Ok(()) => "it returned".to_string(),
                Err(error) => error.to_string(),
            }))),
            result = join(&mut parts.sync) => ended("sync", joined(result.map(|r| match r {
                Ok(()) => "it returned".to_string(),
                Err(error) => error.to_string(),
            }))),
            // The router ends by itself once no device can send (none configured): only a
            // panic is a failure.
            result = join(&mut parts.identity) => ended("the identity part", joined(result.map(|r| match r {
                Ok(()) => "it returned".to_string(),
                Err(error) => error.to_string(),
            }))),
            result = join(&mut parts.remote_config) => ended("the remote config part", joined(result.map(|r| match r {
                Ok(()) => "it returned".to_string(),
                Err(error) => error.to_string(),
            }))),
            result = join(&mut parts.router) => match result {
                Ok(()) => continue,
                Err(error) => ended("the device event router", joined(Err(error))),
            },
            // The watchdog is fed from this loop, and only once the journal writer answered:
            // a hung writer or a wedged loop both stop the pings.
            _ = ticks.tick(), if every.is_some() => {
                let wait = every.unwrap_or_default();
                match tokio::time::timeout(wait, journal.ping()).await {
                    Ok(Ok(())) => manager.alive(&journal.position().borrow(), &sync_state.borrow()),
                    Ok(Err(error)) => tracing::warn!(%error, "journal writer refused the watchdog ping"),
                    Err(_) => tracing::warn!(?wait, "journal writer did not answer the watchdog ping in time"),
                }
                continue;
            }
        };
    }
}

/// Awaits a task once and forgets its handle (a finished `JoinHandle` must not be polled
/// again); a task already taken never resolves.
async fn join<T>(task: &mut Task<T>) -> Result<T, tokio::task::JoinError> {
    match task.as_mut() {
        Some(handle) => {
            let result = handle.await;
            *task = None;
            result
        }
        None => std::future::pending().await,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn journal() -> (tempfile::TempDir, Journal, crate::journal::WriterThread) {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(crate::clock::SystemClock);
        let (journal, writer) = Journal::open(&dir.path().join("j.db"), clock).unwrap();
        (dir, journal, writer)
    }

    /// Not under systemd: the supervision loop never ticks.
    fn no_manager() -> service_manager::ServiceManager {
        service_manager::ServiceManager::disabled()
    }

    fn no_sync() -> watch::Receiver<crate::sync::SyncState> {
        watch::channel(crate::sync::SyncState::default()).1
    }

    fn idle<T: Send + 'static>() -> Task<T> {
        Some(tokio::spawn(std::future::pending()))
    }

    #[tokio::test]
    async fn a_part_that_ends_on_its_own_ends_the_daemon_naming_it() {
        let (_dir, journal, _writer) = journal();
        let mut parts = Parts {
            api: idle(),
            sync: Some(tokio::spawn(async { Err(SyncError::SessionEnded) })),
            // A router with no devices ends at once: that is not a failure.
            router: Some(tokio::spawn(async {})),
            identity: idle(),
            remote_config: idle(),
        };
        let failure = supervise(
            std::future::pending(),
            &journal,
            &mut parts,
            &no_manager(),
            &no_sync(),
        )
        .await;
        match failure {
            Some(DaemonError::PartEnded { part, reason }) => {
                assert_eq!(part, "sync");
                assert!(reason.contains("MQTT session"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            parts.sync.is_none() && parts.api.is_some(),
            "only the finished handle is taken"
        );
    }

    #[tokio::test]
    async fn a_panicking_part_is_reported_and_shutdown_is_not_a_failure() {
        let (_dir, journal, _writer) = journal();
        let mut parts = Parts {
            api: Some(tokio::spawn(async { panic!("a handler bug") })),
            sync: idle(),
            router: idle(),
            identity: idle(),
            remote_config: idle(),
        };
        let failure = supervise(
            std::future::pending(),
            &journal,
            &mut parts,
            &no_manager(),
            &no_sync(),
        )
        .await;
        assert!(
            matches!(&failure, Some(DaemonError::PartEnded { part: "the API server", reason }) if reason == "it panicked"),
            "{failure:?}"
        );
        let clean = supervise(async {}, &journal, &mut parts, &no_manager(), &no_sync()).await;
        assert!(clean.is_none());
    }
}
