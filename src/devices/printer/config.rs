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

/// What every receipt of the box carries (`[receipts]`), unless a printer sets its own
/// `header` or `qr_url`. A remote layer may set it: store IT changes the store's address line
/// or the receipt-lookup URL for a whole store or the fleet, and the next receipt shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptsSection {
    /// Lines at the top of every receipt (store name, address); the first is bold.
    #[serde(default)]
    pub header: Vec<String>,
    /// Lines at the bottom (opening hours, a returns policy, a thank-you).
    #[serde(default)]
    pub footer: Vec<String>,
    /// QR code on the receipt: an `https://` URL with `{receipt}` for the receipt id.
    #[serde(default)]
    pub qr_url: Option<String>,
}

/// More lines than this is a mistake (a pasted file), not a receipt.
const MAX_RECEIPT_LINES: usize = 8;
/// The widest paper's columns.
const MAX_RECEIPT_LINE_CHARS: usize = 48;

impl ReceiptsSection {
    /// Lines a printer can print and a URL a phone can open; the failing key otherwise.
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (name, lines) in [("header", &self.header), ("footer", &self.footer)] {
            if lines.len() > MAX_RECEIPT_LINES {
                return Err((
                    format!("receipts.{name}"),
                    format!("at most {MAX_RECEIPT_LINES} lines"),
                ));
            }
            if let Some(line) = lines.iter().find(|line| {
                line.chars().count() > MAX_RECEIPT_LINE_CHARS || line.chars().any(char::is_control)
            }) {
                return Err((
                    format!("receipts.{name}"),
                    format!(
                        "`{line}`: each line at most {MAX_RECEIPT_LINE_CHARS} characters, no control characters"
                    ),
                ));
            }
        }
        if let Some(url) = &self.qr_url {
            if !url.starts_with("https://") || url.len() > 200 || url.chars().any(char::is_control)
            {
                return Err((
                    "receipts.qr_url".into(),
                    "must be an https:// URL of at most 200 characters ({receipt} is replaced by the receipt id)".into(),
                ));
            }
        }
        Ok(())
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

    #[test]
    fn receipt_settings_a_printer_cannot_print_are_refused_naming_the_key() {
        let ok = ReceiptsSection {
            header: vec!["Store 042".into(), "1 Main St".into()],
            footer: vec!["Thank you".into()],
            qr_url: Some("https://shop.example/r/{receipt}".into()),
        };
        assert_eq!(ok.validate(), Ok(()));
        let too_wide = ReceiptsSection {
            header: vec!["x".repeat(49)],
            ..ok.clone()
        };
        assert_eq!(too_wide.validate().unwrap_err().0, "receipts.header");
        let escape = ReceiptsSection {
            footer: vec!["\x1b@reset".into()],
            ..ok.clone()
        };
        assert_eq!(escape.validate().unwrap_err().0, "receipts.footer");
        let too_many = ReceiptsSection {
            footer: vec!["x".into(); 9],
            ..ok.clone()
        };
        assert_eq!(too_many.validate().unwrap_err().0, "receipts.footer");
        let plain_http = ReceiptsSection {
            qr_url: Some("http://shop.example/r/{receipt}".into()),
            ..ok
        };
        assert_eq!(plain_http.validate().unwrap_err().0, "receipts.qr_url");
    }
}
