//! The service manager's side channel (systemd's `sd_notify`, unit `Type=notify`): `READY=1`
//! once the journal, the API and the devices are up; `WATCHDOG=1` from the daemon's
//! supervision loop, and only after the journal writer answered a ping, so a writer stuck on a
//! dying SD card or a wedged runtime stops the pings and systemd restarts the daemon;
//! `STATUS=` with the backlog and the broker connection; `STOPPING=1` when shutdown begins.
//! Without `NOTIFY_SOCKET` (not under systemd) every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

use crate::journal::Position;
use crate::sync::SyncState;

/// How often `STATUS=` is refreshed when systemd asked for no watchdog.
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// The daemon's link to its service manager.
pub struct ServiceManager {
    /// Half of `WatchdogSec` (systemd's advice), when the unit has a watchdog for this process.
    ping_every: Option<Duration>,
    /// Whether a service manager listens at all.
    listening: bool,
}

impl ServiceManager {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` as systemd sets them.
    pub fn from_env() -> ServiceManager {
        let mut usec = 0;
        let ping_every = sd_notify::watchdog_enabled(false, &mut usec)
            .then(|| Duration::from_micros(usec / 2))
            .filter(|every| !every.is_zero());
        ServiceManager {
            ping_every,
            listening: std::env::var_os("NOTIFY_SOCKET").is_some(),
        }
    }

    /// No service manager: every call does nothing.
    pub fn disabled() -> ServiceManager {
        ServiceManager {
            ping_every: None,
            listening: false,
        }
    }

    /// How often the supervision loop should call [`ServiceManager::alive`]; `None`: never.
    pub fn tick(&self) -> Option<Duration> {
        match (self.ping_every, self.listening) {
            (Some(every), _) => Some(every),
            (None, true) => Some(STATUS_EVERY),
            (None, false) => None,
        }
    }

    /// Startup is complete.
    pub fn ready(&self, position: &Position, sync: &SyncState) {
        self.send(&[
            NotifyState::Ready,
            NotifyState::Status(&status(position, sync)),
        ]);
    }

    /// The journal writer answered and the supervision loop runs: the watchdog ping (when
    /// the unit has one) and a fresh status line.
    pub fn alive(&self, position: &Position, sync: &SyncState) {
        let status = status(position, sync);
        if self.ping_every.is_some() {
            self.send(&[NotifyState::Watchdog, NotifyState::Status(&status)]);
        } else {
            self.send(&[NotifyState::Status(&status)]);
        }
    }

    /// Shutdown has begun.
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if !self.listening {
            return;
        }
        if let Err(error) = sd_notify::notify(false, states) {
            tracing::warn!(%error, "the service manager's notify socket refused a message");
        }
    }
}

fn status(position: &Position, sync: &SyncState) -> String {
    format!(
        "backlog {}, central {}, session {}{}",
        position.backlog(),
        if sync.connected {
            "connected"
        } else {
            "unreachable"
        },
        sync.session,
        if sync.alarms.is_empty() {
            String::new()
        } else {
            let alarms: Vec<&str> = sync.alarms.iter().copied().collect();
            format!(", alarms: {}", alarms.join(" "))
        }
    )
}
