//! `[journal]`: the SQLite journal and what it keeps. Local-only.

use std::path::PathBuf;

use serde::Deserialize;

/// The SQLite journal. Local-only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalSection {
    /// Path of the SQLite file; its directory must exist.
    pub path: PathBuf,
    /// Events kept after central acked them (newest first), for reprints and lookups; older
    /// acked events are deleted. Unacked events are never deleted.
    #[serde(default = "default_keep_acked")]
    pub keep_acked: u64,
    /// Idempotency keys and receipts kept, counted in acked events, so a till retrying a sale
    /// after its event was deleted is still answered as a replay or a duplicate. At least
    /// `keep_acked`.
    #[serde(default = "default_keep_keys")]
    pub keep_keys: u64,
    /// Below this much free space (MiB) on the journal's filesystem, identifications are
    /// refused (507 `storage_low`, alarm `storage_low`) and sales go on into the reserve.
    #[serde(default = "default_low_space_mb")]
    pub low_space_mb: u64,
    /// Below this much (MiB), every write is refused (507 `storage_full`) before SQLite could
    /// fail in the middle of one. 0 and 0 turn both off.
    #[serde(default = "default_reserve_mb")]
    pub reserve_mb: u64,
}

fn default_low_space_mb() -> u64 {
    64
}

fn default_reserve_mb() -> u64 {
    16
}

fn default_keep_acked() -> u64 {
    crate::journal::DEFAULT_KEEP_ACKED
}

/// The shortest window for idempotency keys and receipts, in acked events.
pub(super) const MIN_KEEP_KEYS: u64 = 1_000;

fn default_keep_keys() -> u64 {
    crate::journal::DEFAULT_KEEP_KEYS
}

impl JournalSection {
    /// The free-space thresholds.
    pub fn disk_limits(&self) -> crate::journal::DiskLimits {
        const MIB: u64 = 1024 * 1024;
        crate::journal::DiskLimits::new(
            self.low_space_mb.saturating_mul(MIB),
            self.reserve_mb.saturating_mul(MIB),
        )
    }

    /// What the journal keeps once central acked it.
    pub fn retention(&self) -> crate::journal::Retention {
        crate::journal::Retention {
            keep_acked: self.keep_acked,
            keep_keys: self.keep_keys,
        }
    }
}
