//! Stable names for serial devices. `/dev/ttyACM0` changes with plug order; a device is named
//! by its `/dev/serial/by-id/...` link (any path works), or by USB identity —
//! `usb:VID:PID` or `usb:VID:PID:SERIAL` (hex ids) — resolved to whatever tty it has now, on
//! every (re)open, so an unplugged and replugged scanner is found again.

use std::path::PathBuf;

/// How a device's port is named in config; parsed when the config loads, so a malformed one
/// is refused at start-up naming its key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum PortSpec {
    /// A device path (best a `/dev/serial/by-id` link).
    Path(PathBuf),
    /// A USB device by identity, found on every open.
    Usb {
        /// Vendor id.
        vid: u16,
        /// Product id.
        pid: u16,
        /// Its serial number, when several of one model are plugged in.
        serial: Option<String>,
    },
}

impl TryFrom<String> for PortSpec {
    type Error = String;

    fn try_from(text: String) -> Result<PortSpec, String> {
        PortSpec::parse(&text)
    }
}

impl std::fmt::Display for PortSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortSpec::Path(path) => write!(f, "{}", path.display()),
            PortSpec::Usb { vid, pid, serial } => {
                write!(f, "usb:{vid:04x}:{pid:04x}")?;
                match serial {
                    Some(serial) => write!(f, ":{serial}"),
                    None => Ok(()),
                }
            }
        }
    }
}

impl PortSpec {
    /// Parses a path or `usb:VID:PID[:SERIAL]` (hex ids).
    pub fn parse(text: &str) -> Result<PortSpec, String> {
        if text.is_empty() {
            return Err("must name the port: /dev/serial/by-id/... or usb:VID:PID[:SERIAL]".into());
        }
        let Some(usb) = text.strip_prefix("usb:") else {
            return Ok(PortSpec::Path(PathBuf::from(text)));
        };
        let mut parts = usb.splitn(3, ':');
        let hex = |part: Option<&str>, what: &str| {
            part.filter(|p| p.len() == 4)
                .and_then(|p| u16::from_str_radix(p, 16).ok())
                .ok_or_else(|| {
                    format!("{what} must be 4 hex digits in usb:VID:PID[:SERIAL], got {text:?}")
                })
        };
        let vid = hex(parts.next(), "the vendor id")?;
        let pid = hex(parts.next(), "the product id")?;
        let serial = parts.next().map(str::to_string).filter(|s| !s.is_empty());
        Ok(PortSpec::Usb { vid, pid, serial })
    }

    /// The device path to open now.
    pub fn resolve(&self) -> Result<String, String> {
        let (vid, pid, serial) = match self {
            PortSpec::Path(path) => return Ok(path.display().to_string()),
            PortSpec::Usb { vid, pid, serial } => (*vid, *pid, serial.as_deref()),
        };
        let ports =
            serialport::available_ports().map_err(|e| format!("cannot list serial ports: {e}"))?;
        let matching: Vec<String> = ports
            .into_iter()
            .filter(|port| match &port.port_type {
                serialport::SerialPortType::UsbPort(info) => {
                    info.vid == vid
                        && info.pid == pid
                        && serial.is_none_or(|s| info.serial_number.as_deref() == Some(s))
                }
                _ => false,
            })
            .map(|port| port.port_name)
            .collect();
        let wanted = match serial {
            Some(s) => format!("{vid:04x}:{pid:04x} with serial {s}"),
            None => format!("{vid:04x}:{pid:04x}"),
        };
        match matching.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(format!("no USB serial device {wanted} is plugged in")),
            several => Err(format!(
                "{} USB serial devices match {wanted} ({}); add the serial number: usb:{vid:04x}:{pid:04x}:SERIAL",
                several.len(),
                several.join(", ")
            )),
        }
    }
}

/// The path to open for a configured port (a path, or `usb:…` resolved now).
pub fn resolve_port(configured: &PortSpec) -> Result<String, super::DeviceError> {
    configured
        .resolve()
        .map_err(|message| super::DeviceError::Open {
            port: configured.to_string(),
            message,
        })
}

/// Opens a configured serial port (resolved now) with a read timeout, so a driver's loop
/// notices a stop or a command within `timeout` on a quiet line.
pub fn open_serial(
    configured: &PortSpec,
    baud: u32,
    timeout: std::time::Duration,
) -> Result<Box<dyn serialport::SerialPort>, super::DeviceError> {
    let path = resolve_port(configured)?;
    serialport::new(&path, baud)
        .timeout(timeout)
        .open()
        .map_err(|e| super::DeviceError::Open {
            port: path,
            message: e.to_string(),
        })
}

/// Reads what a serial line has; a read timeout or an interrupted call is "nothing yet" (0),
/// any other error is the device gone.
pub fn read_available(port: &mut dyn std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    match port.read(buf) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted
            ) =>
        {
            Ok(0)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths_and_usb_identities() {
        assert_eq!(
            PortSpec::parse("/dev/serial/by-id/usb-x-if00").unwrap(),
            PortSpec::Path("/dev/serial/by-id/usb-x-if00".into())
        );
        assert_eq!(
            PortSpec::parse("usb:0c2e:0b61").unwrap(),
            PortSpec::Usb {
                vid: 0x0c2e,
                pid: 0x0b61,
                serial: None
            }
        );
        assert_eq!(
            PortSpec::parse("usb:0c2e:0b61:17123A0042").unwrap(),
            PortSpec::Usb {
                vid: 0x0c2e,
                pid: 0x0b61,
                serial: Some("17123A0042".into())
            }
        );
        assert!(PortSpec::parse("usb:0c2e").is_err());
        assert!(PortSpec::parse("usb:zzzz:0b61").is_err());
        assert!(PortSpec::parse("usb:12345:0b61").is_err());
    }

    #[test]
    fn a_usb_device_that_is_not_plugged_in_is_named_in_the_error() {
        let spec = PortSpec::parse("usb:ffff:fffe:NOPE").unwrap();
        let error = spec.resolve().unwrap_err();
        assert!(error.contains("ffff:fffe with serial NOPE"), "{error}");
    }
}
