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
    /// The GPIO line wired to the chip's NRSTPD pin, as `<chip>:<line>` (e.g.
    /// `/dev/gpiochip0:25`, the GPIO character device): pulsed low at every open, so a chip
    /// that hangs is reset in hardware, not only re-initialised over SPI.
    #[serde(default)]
    pub reset_gpio: Option<GpioLine>,
    /// The GPIO line wired to the chip's IRQ pin, as `<chip>:<line>`: the driver then waits on
    /// it for each command's end instead of reading the chip's status over SPI until it shows.
    /// Optional; without it the reader works the same.
    #[serde(default)]
    pub irq_gpio: Option<GpioLine>,
}

/// A GPIO line by its character device and offset, checked when config loads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct GpioLine {
    /// The chip's character device.
    pub chip: std::path::PathBuf,
    /// The line's offset on the chip.
    pub line: u32,
}

impl TryFrom<String> for GpioLine {
    type Error = String;

    fn try_from(text: String) -> Result<GpioLine, String> {
        let (chip, line) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("`{text}` is not <chip>:<line>, e.g. /dev/gpiochip0:25"))?;
        let line = line
            .parse()
            .map_err(|_| format!("`{line}` in `{text}` is not a line number"))?;
        if chip.is_empty() {
            return Err(format!("`{text}` names no GPIO chip"));
        }
        Ok(GpioLine {
            chip: chip.into(),
            line,
        })
    }
}

impl std::fmt::Display for GpioLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.chip.display(), self.line)
    }
}

fn default_spi_hz() -> u32 {
    1_000_000
}

fn default_poll_ms() -> u64 {
    storegate_firmware::bridge::POLL_INTERVAL_MS as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gpio_line_is_a_chip_and_an_offset() {
        let line = GpioLine::try_from("/dev/gpiochip0:25".to_string()).unwrap();
        assert_eq!(
            (line.chip.to_str(), line.line),
            (Some("/dev/gpiochip0"), 25)
        );
        assert_eq!(line.to_string(), "/dev/gpiochip0:25");
        for bad in [
            "/dev/gpiochip0",
            "/dev/gpiochip0:x",
            ":25",
            "/dev/gpiochip0:-1",
        ] {
            assert!(GpioLine::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }
}
