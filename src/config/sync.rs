//! `[sync]`: how the journal is pumped to central.

use serde::Deserialize;

use super::ConfigError;

/// How the journal is pumped to central.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSection {
    /// Most events in one batch message.
    #[serde(default = "default_batch_events")]
    pub batch_events: usize,
    /// Most payload bytes in one batch message (docs/protocol.md caps payloads at 256 KiB).
    #[serde(default = "default_batch_bytes")]
    pub batch_bytes: usize,
    /// Most batches published and not yet acked by central.
    #[serde(default = "default_window_batches")]
    pub window_batches: usize,
    /// Re-send everything unacked when central has acked nothing for this long.
    #[serde(default = "default_ack_timeout_ms")]
    pub ack_timeout_ms: u64,
    /// First pause after a failed connection attempt; doubles up to `reconnect_max_ms`.
    #[serde(default = "default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    /// Longest pause between connection attempts (jitter is added on top of the doubling).
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// How often the retained status (backlog) is refreshed while connected.
    #[serde(default = "default_status_interval_ms")]
    pub status_interval_ms: u64,
    /// How long an rpc to central may take before central counts as unreachable for it.
    #[serde(default = "default_rpc_timeout_ms")]
    pub rpc_timeout_ms: u64,
}

impl Default for SyncSection {
    fn default() -> Self {
        SyncSection {
            batch_events: default_batch_events(),
            batch_bytes: default_batch_bytes(),
            window_batches: default_window_batches(),
            ack_timeout_ms: default_ack_timeout_ms(),
            reconnect_min_ms: default_reconnect_min_ms(),
            reconnect_max_ms: default_reconnect_max_ms(),
            status_interval_ms: default_status_interval_ms(),
            rpc_timeout_ms: default_rpc_timeout_ms(),
        }
    }
}

fn default_batch_events() -> usize {
    500
}
fn default_batch_bytes() -> usize {
    192 * 1024
}
fn default_window_batches() -> usize {
    8
}
fn default_ack_timeout_ms() -> u64 {
    10_000
}
fn default_reconnect_min_ms() -> u64 {
    250
}
fn default_reconnect_max_ms() -> u64 {
    30_000
}
fn default_status_interval_ms() -> u64 {
    30_000
}
fn default_rpc_timeout_ms() -> u64 {
    2_000
}

impl SyncSection {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=10_000).contains(&self.batch_events) {
            return Err(ConfigError::key(
                "sync.batch_events",
                "must be between 1 and 10000",
            ));
        }
        if !(1024..=crate::protocol::MAX_PAYLOAD_BYTES - 1024).contains(&self.batch_bytes) {
            return Err(ConfigError::key(
                "sync.batch_bytes",
                "must be between 1024 and 261120 (the protocol caps a payload at 256 KiB)",
            ));
        }
        if !(1..=64).contains(&self.window_batches) {
            return Err(ConfigError::key(
                "sync.window_batches",
                "must be between 1 and 64",
            ));
        }
        if self.reconnect_min_ms == 0 || self.reconnect_min_ms > self.reconnect_max_ms {
            return Err(ConfigError::key(
                "sync.reconnect_min_ms",
                "must be above 0 and not above sync.reconnect_max_ms",
            ));
        }
        if self.ack_timeout_ms < 100 {
            return Err(ConfigError::key(
                "sync.ack_timeout_ms",
                "must be at least 100",
            ));
        }
        Ok(())
    }
}
