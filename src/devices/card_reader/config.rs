//! A loyalty card reader's config.

use serde::Deserialize;

/// One loyalty card reader running the storegate firmware.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardReaderConfig {
    /// Name in logs, metrics and `/v1/devices`, `[a-z0-9][a-z0-9-]{0,31}`.
    pub name: String,
    /// Serial port. Use the stable `/dev/serial/by-id/...` link, not `/dev/ttyACM0`, whose
    /// number changes on replug.
    pub port: crate::devices::port::PortSpec,
    /// The till whose customer a card identifies (the `till` of its `identity_seen`).
    pub till: String,
    /// Line speed; USB-CDC ignores it, a UART bridge needs it.
    #[serde(default = "default_reader_baud")]
    pub baud: u32,
    /// Beep after an identification was recorded, in ms; 0 for silence.
    #[serde(default = "default_reader_beep_ms")]
    pub beep_ms: u16,
    /// A reader silent this long (it sends a heartbeat every second) is reopened.
    #[serde(default = "default_reader_silence_ms")]
    pub silence_timeout_ms: u64,
}

fn default_reader_baud() -> u32 {
    115_200
}

fn default_reader_beep_ms() -> u16 {
    80
}

fn default_reader_silence_ms() -> u64 {
    5_000
}
