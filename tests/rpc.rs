//! RPC over MQTT with deadlines: answered by the reference central, refused with its error
//! code, and failing fast (never hanging a till) when central or the broker is away.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use storegate::clock::SystemClock;
use storegate::journal::Journal;
use storegate::metrics::Metrics;
use storegate::sync::{RpcCallError, RpcClient, SyncSettings, Syncer};

struct RunningSync {
    rpc: RpcClient,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), storegate::sync::SyncError>>,
    _writer: storegate::journal::WriterThread,
}

async fn start_sync(dir: &std::path::Path, port: u16, wait_connected: bool) -> RunningSync {
    let url = format!("mqtt://127.0.0.1:{port}");
    let text = std::fs::read_to_string(gateway_config(
        dir,
        &url,
        0,
        "[sync]\nrpc_timeout_ms = 700\nreconnect_min_ms = 50\nreconnect_max_ms = 200\n",
    ))
    .unwrap();
    let config = storegate::config::parse_gateway(&text).unwrap();
    let (journal, writer) = Journal::open(&config.journal.path, Arc::new(SystemClock)).unwrap();
    let sync = Syncer::new(
        SyncSettings::from_config(&config),
        journal,
        Arc::new(Metrics::new()),
    );
    let rpc = sync.rpc();
    let mut state = sync.state();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(sync.run(storegate::daemon::signalled(stopped)));
    if wait_connected {
        tokio::time::timeout(Duration::from_secs(10), state.wait_for(|s| s.connected))
            .await
            .expect("connected in time")
            .unwrap();
    }
    RunningSync {
        rpc,
        stop,
        task,
        _writer: writer,
    }
}

impl RunningSync {
    async fn stop(self) {
        let _ = self.stop.send(true);
        self.task.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coupon_reserve_is_answered_and_a_second_receipt_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = start_broker(BrokerKind::Embedded, dir.path(), port);
    let (_central, _db) = start_central(dir.path(), &format!("mqtt://127.0.0.1:{port}"));
    let sync = start_sync(dir.path(), port, true).await;

    let params =
        |receipt: &str| serde_json::json!({"coupon": "c-42", "customer": null, "receipt": receipt});
    // Central subscribes a moment after it says ready; a first call may time out, so retry a
    // bounded number of times (each is itself bounded by the deadline).
    let mut first = Err(RpcCallError::Timeout);
    for _ in 0..10 {
        first = sync.rpc.call("coupon.reserve", params("r-1")).await;
        if first != Err(RpcCallError::Timeout) {
            break;
        }
    }
    assert_eq!(first.unwrap()["reserved"], true);
    let retried = sync
        .rpc
        .call("coupon.reserve", params("r-1"))
        .await
        .unwrap();
    assert_eq!(
        retried["reserved"], true,
        "a retried reservation of the same receipt holds"
    );
    match sync.rpc.call("coupon.reserve", params("r-2")).await {
        Err(RpcCallError::Refused(e)) => assert_eq!(e.code, "already_redeemed"),
        other => panic!("expected already_redeemed, got {other:?}"),
    }
    match sync.rpc.call("no.such.method", serde_json::json!({})).await {
        Err(RpcCallError::Refused(e)) => assert_eq!(e.code, "unknown_method"),
        other => panic!("expected unknown_method, got {other:?}"),
    }
    let changes = sync
        .rpc
        .call("identity.since", serde_json::json!({"rev": 0}))
        .await
        .unwrap();
    assert_eq!(changes["changes"], serde_json::json!([]));
    sync.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_nobody_answers_fails_at_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = start_broker(BrokerKind::Embedded, dir.path(), port);
    let sync = start_sync(dir.path(), port, true).await;
    // When exactly the deadline strikes is pinned by the unit tests in src/sync/rpc.rs on
    // paused time; here: a real session with no central answers Timeout, not Unreachable.
    let result = sync
        .rpc
        .call(
            "coupon.reserve",
            serde_json::json!({"coupon": "c", "receipt": "r"}),
        )
        .await;
    assert_eq!(result, Err(RpcCallError::Timeout));
    sync.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_a_broker_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let sync = start_sync(dir.path(), free_port(), false).await;
    // Unreachable (not Timeout) is the proof it did not wait for the deadline.
    let result = sync
        .rpc
        .call(
            "coupon.reserve",
            serde_json::json!({"coupon": "c", "receipt": "r"}),
        )
        .await;
    assert_eq!(result, Err(RpcCallError::Unreachable));
    sync.stop().await;
}
