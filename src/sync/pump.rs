//! The outbox pump: publishes unacked events in seq order, at most `window_batches` batches
//! ahead of central's ack, and rewinds to the ack after a reconnect or an ack timeout.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use rumqttc::{AsyncClient, QoS};

use super::GatewayName;
use crate::journal::{AsyncOutbox, JournalError};
use crate::metrics::Metrics;
use crate::protocol::topics::GatewayTopics;
use crate::protocol::{timestamp, EventBatch};

#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub batch_events: usize,
    pub batch_bytes: usize,
    pub window_batches: usize,
}

/// Where the pump stands: what central acked, what was sent since.
#[derive(Debug)]
pub(super) struct Pump {
    acked: u64,
    /// The next seq to publish; everything in `acked+1 .. next_send` is in flight.
    next_send: u64,
    /// Last seq of each in-flight batch, oldest first.
    in_flight: VecDeque<u64>,
    /// The highest seq handed to the broker (or acked before this run started): docs/protocol.md
    /// trusts an ack only up to it, so a forged ack cannot mark an unsent event delivered.
    published: u64,
    /// When the ack last moved (or the window was last rewound).
    progress_at: Instant,
}

impl Pump {
    pub fn new(acked: u64) -> Pump {
        Pump {
            acked,
            next_send: acked + 1,
            in_flight: VecDeque::new(),
            published: acked,
            progress_at: Instant::now(),
        }
    }

    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// The highest seq published so far; acks are trusted only up to here.
    pub fn published(&self) -> u64 {
        self.published
    }

    /// After (re)connecting: everything unacked goes again. Returns the first seq re-sent.
    pub fn restart(&mut self) -> u64 {
        self.rewind();
        self.next_send
    }

    pub fn disconnected(&mut self) {
        self.in_flight.clear();
    }

    pub fn acked_upto(&mut self, upto: u64) {
        if upto <= self.acked {
            return;
        }
        self.acked = upto;
        self.progress_at = Instant::now();
        while self.in_flight.front().is_some_and(|last| *last <= upto) {
            self.in_flight.pop_front();
        }
        // Central may be ahead of what this run sent (acks of an earlier run's batches).
        if self.next_send <= upto {
            self.next_send = upto + 1;
            self.in_flight.clear();
        }
    }

    /// If batches are in flight and the ack has not moved for `timeout`, rewinds so they go
    /// again; returns the first seq to be re-sent.
    pub fn timed_out(&mut self, timeout: Duration) -> Option<u64> {
        if !self.in_flight.is_empty() && self.progress_at.elapsed() >= timeout {
            self.rewind();
            Some(self.next_send)
        } else {
            None
        }
    }

    fn rewind(&mut self) {
        self.next_send = self.acked + 1;
        self.in_flight.clear();
        self.progress_at = Instant::now();
    }

    /// Publishes batches until the window is full, the outbox is drained, or rumqttc's request
    /// queue is full (the next tick tries again).
    #[allow(clippy::too_many_arguments)]
    pub async fn fill_window(
        &mut self,
        outbox: &AsyncOutbox,
        client: &AsyncClient,
        topics: &GatewayTopics,
        name: &GatewayName,
        limits: Limits,
        last_seq: u64,
        metrics: &Metrics,
    ) -> Result<(), JournalError> {
        while self.in_flight.len() < limits.window_batches && self.next_send <= last_seq {
            let events = outbox
                .read_after(self.next_send - 1, limits.batch_events, limits.batch_bytes)
                .await?;
            let Some(last) = events.last().map(|e| e.seq) else {
                break;
            };
            let count = events.len();
            let batch = EventBatch {
                gateway: name.gateway.clone(),
                store: name.store.clone(),
                sent_at: timestamp(std::time::SystemTime::now()),
                events,
            };
            let payload = serde_json::to_vec(&batch)
                .map_err(|e| JournalError::Write(format!("cannot encode batch: {e}")))?;
            if client
                .try_publish(topics.events(), QoS::AtLeastOnce, false, payload)
                .is_err()
            {
                break;
            }
            if self.in_flight.is_empty() {
                self.progress_at = Instant::now();
            }
            self.in_flight.push_back(last);
            self.published = self.published.max(last);
            self.next_send = last + 1;
            metrics.batch_sent(count);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_free_the_window_and_rewind_resends_from_the_ack() {
        let mut pump = Pump::new(10);
        pump.in_flight.extend([20, 30, 40]);
        pump.next_send = 41;
        pump.acked_upto(25);
        assert_eq!(pump.in_flight, VecDeque::from([30, 40]));
        assert_eq!(pump.restart(), 26);
        assert!(pump.in_flight.is_empty());
        pump.acked_upto(100);
        assert_eq!(pump.next_send, 101);
    }

    #[test]
    fn published_starts_at_the_ack_and_never_shrinks() {
        let mut pump = Pump::new(7);
        assert_eq!(pump.published(), 7);
        pump.published = 40;
        pump.restart();
        assert_eq!(
            pump.published(),
            40,
            "a rewind re-sends, it does not un-publish"
        );
    }

    #[test]
    fn timeout_rewinds_only_with_batches_in_flight() {
        let mut pump = Pump::new(0);
        assert_eq!(pump.timed_out(Duration::ZERO), None);
        pump.in_flight.push_back(5);
        pump.next_send = 6;
        assert_eq!(pump.timed_out(Duration::ZERO), Some(1));
    }
}
