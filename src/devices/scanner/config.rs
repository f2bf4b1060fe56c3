//! A serial scanner's config.

use serde::Deserialize;

/// One serial or USB-CDC barcode scanner.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScannerConfig {
    /// Name in logs, metrics, events and `/v1/devices`, `[a-z0-9][a-z0-9-]{0,31}`.
    pub name: String,
    /// Serial port, by its stable `/dev/serial/by-id/...` link, or `usb:VID:PID[:SERIAL]`.
    pub port: crate::devices::port::PortSpec,
    /// The till whose event stream gets the scans.
    pub till: String,
    /// Line speed.
    #[serde(default = "default_scanner_baud")]
    pub baud: u32,
    /// What ends a scan: "\r", "\n" and "\r\n" all mean "a line" (either byte ends it);
    /// anything else (e.g. "\u0003") must match exactly.
    #[serde(default = "default_scanner_suffix")]
    pub suffix: String,
    /// What every scan starts with, if the scanner is programmed to send one; stripped.
    #[serde(default)]
    pub prefix: String,
    /// Longest scan in bytes; longer is line noise or a stuck trigger, and is dropped.
    #[serde(default = "default_scanner_max_len")]
    pub max_len: usize,
    /// For magnetic stripe readers in serial mode: the loyalty card number rule.
    #[serde(default)]
    pub card_number: crate::devices::card_number::CardNumberRule,
}

fn default_scanner_baud() -> u32 {
    9_600
}

fn default_scanner_suffix() -> String {
    "\r".into()
}

fn default_scanner_max_len() -> usize {
    1_024
}
