//! Wall clock and whether to believe it. Order never depends on it (seq does); it only fills
//! the `at` stamp and the `clock_synced` flag central uses to distrust that stamp.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The earliest instant a believable clock can show: this code did not exist before it, so a
/// Pi that booted without its network (no battery clock, it starts at 1970) shows earlier.
pub const PLAUSIBLE_FLOOR: Duration = Duration::from_secs(1_735_689_600); // 2025-01-01T00:00:00Z

/// A source of wall-clock time. Injected so tests can set it to 1970 or make it jump.
pub trait Clock: Send + Sync + 'static {
    /// The wall clock now.
    fn now(&self) -> SystemTime;
    /// Whether the system reports its clock as synchronised (NTP).
    fn synchronised(&self) -> bool;
}

/// The kernel's clock; synchronisation as the kernel reports it (adjtimex, as `timedatectl`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn synchronised(&self) -> bool {
        kernel_reports_synchronised()
    }
}

#[cfg(target_os = "linux")]
fn kernel_reports_synchronised() -> bool {
    // SAFETY: adjtimex with modes = 0 only reads the kernel's time state into the zeroed struct.
    #[allow(unsafe_code)]
    let (state, status) = unsafe {
        let mut tx: libc::timex = std::mem::zeroed();
        let state = libc::adjtimex(&mut tx);
        (state, tx.status)
    };
    state >= 0 && state != libc::TIME_ERROR && status & libc::STA_UNSYNC == 0
}

#[cfg(not(target_os = "linux"))]
fn kernel_reports_synchronised() -> bool {
    false
}

/// Whether `at` is a time this code could really be running at.
pub fn plausible(at: SystemTime) -> bool {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d >= PLAUSIBLE_FLOOR)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_is_not_plausible_and_now_is() {
        assert!(!plausible(UNIX_EPOCH));
        assert!(!plausible(UNIX_EPOCH + Duration::from_secs(86_400 * 365)));
        assert!(plausible(SystemTime::now()));
    }
}
