//! A receipt printer's config, its address parsed when the config loads.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// One ESC/POS receipt printer; it prints the receipts of its till's purchases.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrinterConfig {
    /// Name in logs, metrics, events and `/v1/devices`, `[a-z0-9][a-z0-9-]{0,31}`.
    pub name: String,
    /// `tcp:HOST:9100` (network printer), `file:/dev/usb/lp0` (USB printer class) or
    /// `serial:/dev/serial/by-id/...` (or `serial:usb:VID:PID`).
    pub address: PrinterAddress,
    /// The till whose purchases it prints.
    pub till: String,
    /// Paper width in mm: 58 (32 columns) or 80 (48 columns).
    #[serde(default = "default_paper_mm")]
    pub paper_mm: u32,
    /// Characters per line when the printer differs from the usual for its paper (42 on 80 mm
    /// printers with a wider margin or font B): 32, 42 or 48.
    pub columns: Option<usize>,
    /// The code page for text (CP858 has the euro sign).
    #[serde(default = "default_code_page")]
    pub code_page: super::escpos::CodePage,
    /// Lines at the top of every receipt (store name, address); the first is bold.
    #[serde(default)]
    pub header: Vec<String>,
    /// QR code on the receipt: a URL with `{receipt}` for the receipt id.
    pub qr_url: Option<String>,
    /// Line speed for `serial:` printers.
    #[serde(default = "default_printer_baud")]
    pub baud: u32,
}

impl PrinterConfig {
    /// Characters per line: `columns`, or what the paper width implies.
    pub fn columns(&self) -> usize {
        if let Some(columns) = self.columns {
            return columns;
        }
        if self.paper_mm <= 58 {
            32
        } else {
            48
        }
    }
}

fn default_paper_mm() -> u32 {
    80
}

fn default_code_page() -> super::escpos::CodePage {
    super::escpos::CodePage::Cp858
}

fn default_printer_baud() -> u32 {
    38_400
}

/// Where a printer is, parsed from `tcp:IP:PORT`, `file:/dev/usb/lp0` or `serial:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum PrinterAddress {
    /// A network printer's raw port (9100).
    Tcp(SocketAddr),
    /// The USB printer class device.
    File(PathBuf),
    /// A serial or USB-CDC printer.
    Serial(crate::devices::port::PortSpec),
}

impl TryFrom<String> for PrinterAddress {
    type Error = String;

    fn try_from(text: String) -> Result<PrinterAddress, String> {
        const USE: &str = "use tcp:IP:9100, file:/dev/usb/lp0 or serial:/dev/serial/by-id/...";
        if let Some(host) = text.strip_prefix("tcp:") {
            return host
                .parse()
                .map(PrinterAddress::Tcp)
                .map_err(|e| format!("`{host}` is not IP:PORT ({e}); {USE}"));
        }
        if let Some(path) = text.strip_prefix("file:") {
            if path.is_empty() {
                return Err(format!("file: needs a path; {USE}"));
            }
            return Ok(PrinterAddress::File(PathBuf::from(path)));
        }
        if let Some(port) = text.strip_prefix("serial:") {
            return crate::devices::port::PortSpec::parse(port).map(PrinterAddress::Serial);
        }
        Err(format!("`{text}`: {USE}"))
    }
}

impl std::fmt::Display for PrinterAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrinterAddress::Tcp(addr) => write!(f, "tcp:{addr}"),
            PrinterAddress::File(path) => write!(f, "file:{}", path.display()),
            PrinterAddress::Serial(port) => write!(f, "serial:{port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_once_and_print_as_written() {
        for text in [
            "tcp:127.0.0.1:9100",
            "file:/dev/usb/lp0",
            "serial:usb:0416:5011",
        ] {
            let address = PrinterAddress::try_from(text.to_string()).unwrap();
            assert_eq!(address.to_string(), text);
        }
        for bad in ["tcp:printer", "lp0", "file:", "serial:usb:xyz"] {
            assert!(PrinterAddress::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }
}
