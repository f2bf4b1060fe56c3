//! The daemon under systemd's notify protocol (`Type=notify`, `WatchdogSec`), with a unix
//! datagram socket this test owns standing in for systemd: `READY=1` once the API answers,
//! `WATCHDOG=1` at half the watchdog interval with a `STATUS=` line (backlog, central),
//! `STOPPING=1` when it is told to stop.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::*;

fn next(socket: &UnixDatagram, within: Duration) -> String {
    socket.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    let n = socket
        .recv(&mut buf)
        .expect("a notification within the time");
    String::from_utf8_lossy(&buf[..n]).to_string()
}

#[test]
fn ready_watchdog_and_stopping_reach_the_service_manager() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let unused = free_port();
    let config = gateway_config(dir.path(), &format!("mqtt://127.0.0.1:{unused}"), 0, "");
    let config = config.display().to_string();
    // systemd sets WATCHDOG_PID to the service's pid; the shell's pid is the daemon's after exec.
    let mut gateway = Proc::spawn_with_env(
        "gateway",
        "/bin/sh",
        &[
            "-c",
            "export WATCHDOG_PID=$$; exec \"$0\" \"$@\"",
            bin(),
            "run",
            "--config",
            &config,
        ],
        dir.path(),
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );

    let ready = next(&socket, Duration::from_secs(10));
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(
        ready.contains("STATUS=backlog 0, central unreachable"),
        "{ready:?}"
    );
    let api = gateway.ready(Duration::from_secs(5))["api"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(health(&http(), api)["status"], "ok", "ready means serving");

    // Pings at half of WATCHDOG_USEC (200 ms): five within two seconds, each with a status.
    let started = Instant::now();
    let mut pings = 0;
    while pings < 5 {
        let message = next(&socket, Duration::from_secs(2));
        if message.lines().any(|l| l == "WATCHDOG=1") {
            assert!(message.contains("STATUS=backlog"), "{message:?}");
            pings += 1;
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?} for 5 pings",
        started.elapsed()
    );
    post_purchase(&http(), api, "r-1").unwrap();
    let with_backlog = loop {
        let message = next(&socket, Duration::from_secs(2));
        if message.contains("STATUS=backlog 1") {
            break message;
        }
    };
    assert!(
        with_backlog.contains("central unreachable"),
        "{with_backlog:?}"
    );

    assert_eq!(gateway.terminate(Duration::from_secs(10)), Some(0));
    let stopping = loop {
        let message = next(&socket, Duration::from_secs(5));
        if message.contains("STOPPING=1") {
            break message;
        }
    };
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
}
