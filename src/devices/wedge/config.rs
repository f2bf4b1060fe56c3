//! A keyboard-wedge scanner's config.

use serde::Deserialize;

/// One keyboard-wedge scanner.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WedgeConfig {
    /// Name in logs, metrics, events and `/v1/devices`, `[a-z0-9][a-z0-9-]{0,31}`.
    pub name: String,
    /// `/dev/input/by-id/usb-...-event-kbd`, or `usb:VID:PID` (hex).
    pub device: String,
    /// The till whose event stream gets the scans.
    pub till: String,
    /// The keyboard layout the scanner is set to type in.
    #[serde(default = "default_wedge_layout")]
    pub layout: super::keymap::Layout,
    /// For magnetic stripe readers in keyboard mode: the loyalty card number rule.
    #[serde(default)]
    pub card_number: crate::devices::card_number::CardNumberRule,
}

fn default_wedge_layout() -> super::keymap::Layout {
    super::keymap::Layout::Us
}
