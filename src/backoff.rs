//! Retry pacing, shared by the MQTT session, the device supervisor and the daemon's task
//! supervisor. rumqttc's event loop retries at once by itself; a fleet of boxes retrying in
//! lockstep after a broker restart is a thundering herd, so each attempt waits an
//! exponentially growing delay with half of it randomised ("equal jitter").
//!
//! The delay goes back to the minimum only after something stayed up for a while
//! (`settled`): a connection that a broker drops at once (an oversized retained message, an
//! ACL refusal) must not turn the backoff into a reconnect loop.

use std::time::Duration;

/// Exponential backoff with equal jitter between `min` and `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Starts at `min`, never waits longer than `max`.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            attempt: 0,
        }
    }

    /// The pause before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let factor = 1u32 << self.attempt.min(16);
        let full = self.min.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = full / 2;
        half + half.mul_f64(fastrand::f64())
    }

    /// Back to `min`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Something that had come up has gone down again after `lasted`: start over from the
    /// minimum only if it stayed up at least `SETTLED`, else keep growing.
    pub fn ended_after(&mut self, lasted: Duration) {
        if lasted >= SETTLED {
            self.reset();
        }
    }
}

/// How long a connection or device must stay up before its backoff starts over.
pub const SETTLED: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..10 {
            b.next_delay();
        }
        let capped = b.next_delay();
        assert!(capped >= Duration::from_millis(500) && capped <= Duration::from_millis(1000));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn a_connection_that_dies_at_once_keeps_the_backoff_growing() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        for _ in 0..5 {
            b.next_delay();
        }
        b.ended_after(Duration::from_millis(5));
        assert!(b.next_delay() >= Duration::from_millis(500));
        b.ended_after(SETTLED);
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
