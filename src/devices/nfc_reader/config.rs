//! An NFC front end on the box's own SPI bus.

use serde::Deserialize;

/// An MFRC522 wired to the box's SPI header (a Raspberry Pi's `/dev/spidev0.0`), driven by
/// the daemon itself: no microcontroller between.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NfcReaderConfig {
    /// Name in logs, metrics and `/v1/devices`, `[a-z0-9][a-z0-9-]{0,31}`.
    pub name: String,
    /// The spidev device the chip is on, e.g. `/dev/spidev0.0` (enable SPI in the Pi's
    /// config.txt: `dtparam=spi=on`).
    pub spi: std::path::PathBuf,
    /// The till whose customer a card identifies.
    pub till: String,
    /// SPI clock; the MFRC522 takes up to 10 MHz, long wires want less.
    #[serde(default = "default_spi_hz")]
    pub spi_hz: u32,
    /// How often the chip is asked for a card.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
}

fn default_spi_hz() -> u32 {
    1_000_000
}

fn default_poll_ms() -> u64 {
    storegate_firmware::bridge::POLL_INTERVAL_MS as u64
}
