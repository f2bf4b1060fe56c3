//! The `[devices]` section: each device kind's config lives beside its driver
//! (`devices/<kind>/config.rs`); this gathers them and checks what spans kinds.

use serde::Deserialize;

pub use super::camera::config::{CameraConfig, SourceSpec};
pub use super::card_number::CardNumberRule;
pub use super::card_reader::config::CardReaderConfig;
pub use super::nfc_reader::config::NfcReaderConfig;
pub use super::printer::config::{PrinterAddress, PrinterConfig, ReceiptsSection};
pub use super::scanner::config::ScannerConfig;
pub use super::wedge::config::WedgeConfig;

/// The till hardware this box owns. Local-only, like `[gateway]`: a remote layer never
/// names device paths.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicesSection {
    /// storegate loyalty readers (`firmware/PROTOCOL.md` over a serial / USB-CDC port).
    #[serde(default)]
    pub card_readers: Vec<CardReaderConfig>,
    /// MFRC522 loyalty readers on the box's own SPI header (a Raspberry Pi), no
    /// microcontroller between.
    #[serde(default)]
    pub nfc_readers: Vec<NfcReaderConfig>,
    /// Kiosk cameras reading QR codes.
    #[serde(default)]
    pub cameras: Vec<CameraConfig>,
    /// Serial / USB-CDC barcode scanners.
    #[serde(default)]
    pub scanners: Vec<ScannerConfig>,
    /// ESC/POS receipt printers.
    #[serde(default)]
    pub printers: Vec<PrinterConfig>,
    /// USB HID keyboard-wedge scanners (read through evdev, grabbed exclusively).
    #[serde(default)]
    pub keyboard_wedges: Vec<WedgeConfig>,
}

/// A device setting that does not make sense: its full key and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidKey {
    /// The full key, e.g. `devices.printers[0].till`.
    pub key: String,
    /// What to do.
    pub message: String,
}

impl InvalidKey {
    fn new(key: impl Into<String>, message: impl Into<String>) -> InvalidKey {
        InvalidKey {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// A device's name (unique across all devices, a topic-safe id) and its till.
fn check_device<'a>(
    key: &dyn Fn(&str) -> String,
    name: &'a str,
    till: &str,
    names: &mut std::collections::HashSet<&'a str>,
) -> Result<(), InvalidKey> {
    if !crate::protocol::is_topic_id(name) {
        return Err(InvalidKey::new(
            key("name"),
            format!(
                "`{name}` must match [a-z0-9][a-z0-9-]{{0,31}} (lower-case letters, digits, dashes)"
            ),
        ));
    }
    if !names.insert(name) {
        return Err(InvalidKey::new(
            key("name"),
            format!("`{name}` names two devices; names must be unique"),
        ));
    }
    if !crate::protocol::is_till_id(till) {
        return Err(InvalidKey::new(
            key("till"),
            "must be 1-32 letters, digits, '-' or '_' (as the API's till)",
        ));
    }
    Ok(())
}

impl DevicesSection {
    /// Checks what the types alone cannot: unique names, till ids, ranges, one printer per
    /// till, and that card readers have the identity key they need.
    pub fn validate(&self, has_identity_key: bool) -> Result<(), InvalidKey> {
        let has_readers = !self.card_readers.is_empty() || !self.nfc_readers.is_empty();
        if has_readers && !has_identity_key {
            return Err(InvalidKey::new(
                "identity.hmac_key",
                "card readers identify customers, which needs the fleet identity key; set identity.hmac_key",
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, reader) in self.card_readers.iter().enumerate() {
            let key = |field: &str| format!("devices.card_readers[{i}].{field}");
            check_device(&key, &reader.name, &reader.till, &mut names)?;
            if !(500..=600_000).contains(&reader.silence_timeout_ms) {
                return Err(InvalidKey::new(
                    key("silence_timeout_ms"),
                    "must be between 500 and 600000 (the reader sends a heartbeat every second)",
                ));
            }
        }
        for (i, reader) in self.nfc_readers.iter().enumerate() {
            let key = |field: &str| format!("devices.nfc_readers[{i}].{field}");
            check_device(&key, &reader.name, &reader.till, &mut names)?;
            if !(100_000..=10_000_000).contains(&reader.spi_hz) {
                return Err(InvalidKey::new(
                    key("spi_hz"),
                    "must be between 100000 and 10000000 (the MFRC522 takes up to 10 MHz)",
                ));
            }
            if reader.irq_gpio.is_some() && reader.irq_gpio == reader.reset_gpio {
                return Err(InvalidKey::new(
                    key("irq_gpio"),
                    "is the same line as reset_gpio; the IRQ and NRSTPD pins need a line each",
                ));
            }
            if !(10..=1_000).contains(&reader.poll_ms) {
                return Err(InvalidKey::new(
                    key("poll_ms"),
                    "must be between 10 and 1000",
                ));
            }
        }
        for (i, scanner) in self.scanners.iter().enumerate() {
            let key = |field: &str| format!("devices.scanners[{i}].{field}");
            check_device(&key, &scanner.name, &scanner.till, &mut names)?;
            if scanner.suffix.is_empty() || scanner.suffix.len() > 8 {
                return Err(InvalidKey::new(
                    key("suffix"),
                    "must be 1 to 8 bytes, e.g. \"\\r\" (the factory setting of most scanners)",
                ));
            }
            if !(8..=65_536).contains(&scanner.max_len) {
                return Err(InvalidKey::new(
                    key("max_len"),
                    "must be between 8 and 65536",
                ));
            }
        }
        for (i, wedge) in self.keyboard_wedges.iter().enumerate() {
            let key = |field: &str| format!("devices.keyboard_wedges[{i}].{field}");
            check_device(&key, &wedge.name, &wedge.till, &mut names)?;
            if wedge.device.is_empty() {
                return Err(InvalidKey::new(
                    key("device"),
                    "must name the input device: /dev/input/by-id/...-event-kbd or usb:VID:PID",
                ));
            }
        }
        let mut printing_tills = std::collections::HashSet::new();
        for (i, printer) in self.printers.iter().enumerate() {
            let key = |field: &str| format!("devices.printers[{i}].{field}");
            check_device(&key, &printer.name, &printer.till, &mut names)?;
            if printer.columns.is_some_and(|c| ![32, 42, 48].contains(&c)) {
                return Err(InvalidKey::new(key("columns"), "must be 32, 42 or 48"));
            }
            if ![58, 80].contains(&printer.paper_mm) {
                return Err(InvalidKey::new(key("paper_mm"), "must be 58 or 80"));
            }
            if !printing_tills.insert(printer.till.as_str()) {
                return Err(InvalidKey::new(
                    key("till"),
                    format!(
                        "till `{}` already has a printer; one receipt printer per till",
                        printer.till
                    ),
                ));
            }
        }
        for (i, camera) in self.cameras.iter().enumerate() {
            let key = |field: &str| format!("devices.cameras[{i}].{field}");
            check_device(&key, &camera.name, &camera.till, &mut names)?;
            if !(1..=120).contains(&camera.fps) {
                return Err(InvalidKey::new(key("fps"), "must be between 1 and 120"));
            }
        }
        Ok(())
    }
}
