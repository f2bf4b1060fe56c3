//! (f) A wall clock at 1970, jumping forward a day and back an hour while offline, changes
//! nothing but the `at` stamps: order is seq, and `clock_synced` tells central which stamps
//! not to believe. The gateway runs in-process with an injected clock; broker and central are
//! real processes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use storegate::clock::Clock;

/// A clock the test sets by hand, with a settable NTP state.
struct ManualClock(Mutex<(SystemTime, bool)>);

impl ManualClock {
    fn set(&self, at: SystemTime, synchronised: bool) {
        *self.0.lock().unwrap() = (at, synchronised);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        self.0.lock().unwrap().0
    }
    fn synchronised(&self) -> bool {
        self.0.lock().unwrap().1
    }
}

#[test]
fn clock_at_1970_or_jumping_changes_no_order_and_is_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("mqtt://127.0.0.1:{port}");
    let config = storegate::config::parse_gateway(
        &std::fs::read_to_string(gateway_config(dir.path(), &url, 0, "")).unwrap(),
    )
    .unwrap();

    // A Pi that booted without network: 1970, but the kernel claims sync (it is still wrong).
    let clock = Arc::new(ManualClock(Mutex::new((
        UNIX_EPOCH + Duration::from_secs(3600),
        true,
    ))));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let gateway = runtime.spawn(storegate::daemon::run(
        config,
        clock.clone(),
        move |ready| {
            let _ = ready_tx.send(ready.api);
        },
        storegate::daemon::signalled(stop_rx),
    ));
    let api = ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let agent = http();
    let post = |receipt: &str| post_purchase(&agent, api, receipt).unwrap().0;

    let mut seqs = vec![post("boot-1"), post("boot-2")];
    clock.set(UNIX_EPOCH + Duration::from_secs(3600 + 86_400), true); // jumps a day, still 1970
    seqs.push(post("boot-3"));
    let real = SystemTime::now();
    clock.set(real, true); // NTP arrives
    seqs.push(post("synced-1"));
    seqs.push(post("synced-2"));
    clock.set(real - Duration::from_secs(3600), true); // steps back an hour
    seqs.push(post("stepped-back"));
    clock.set(real + Duration::from_secs(60), false); // NTP lost
    seqs.push(post("unsynced"));
    assert_eq!(
        seqs,
        (1..=7).collect::<Vec<u64>>(),
        "seq follows commit order whatever the clock says"
    );

    let _broker = start_broker(BrokerKind::Embedded, dir.path(), port);
    let watcher = AckWatcher::start(port);
    let (_central, db) = start_central(dir.path(), &url);
    assert!(
        watcher.wait_for(7, Duration::from_secs(30)),
        "acked {}",
        watcher.highest()
    );
    let events = central_events(&db);
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<u64>>()
    );
    let flags: Vec<bool> = events.iter().map(|e| e.clock_synced).collect();
    assert_eq!(flags, [false, false, false, true, true, false, false]);
    assert!(
        events[0].at.starts_with("1970-01-01T01:00:00"),
        "{}",
        events[0].at
    );
    assert!(
        events[2].at.starts_with("1970-01-02T01:00:00"),
        "{}",
        events[2].at
    );
    let mut applied: Vec<(i64, u64)> = events.iter().map(|e| (e.applied.unwrap(), e.seq)).collect();
    applied.sort();
    assert!(
        applied.windows(2).all(|w| w[0].1 < w[1].1),
        "central applied in seq order"
    );

    let _ = stop_tx.send(true);
    runtime.block_on(gateway).unwrap().unwrap();
}
