//! USB HID keyboard-wedge scanners, the most common kind in stores: the scanner is a keyboard
//! that types each barcode and presses Enter. Read through Linux evdev with an exclusive grab
//! (EVIOCGRAB), so the keystrokes never reach a desktop, a terminal or a browser on the box;
//! decoded in the scanner's layout (US or DE) by [`decoder::WedgeDecoder`], which refuses
//! hotkeys; scans then go the way of every scanner's.

pub mod config;
pub mod decoder;
pub mod keymap;

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use self::config::WedgeConfig;
use self::decoder::WedgeDecoder;
use super::{DeviceContext, DeviceError, DeviceEvent, Driver};
use crate::codes::Aim;

/// How long one wait for key events lasts, so a stop is noticed.
const WAIT_MS: u16 = 100;

/// A USB keyboard-wedge scanner, read through evdev and grabbed exclusively.
pub struct KeyboardWedge {
    config: WedgeConfig,
}

impl KeyboardWedge {
    /// The wedge of `config`.
    pub fn new(config: WedgeConfig) -> KeyboardWedge {
        KeyboardWedge { config }
    }
}

/// The event device for a configured name: a path (`/dev/input/by-id/...-event-kbd`), or
/// `usb:VID:PID` matched against every `/dev/input/event*` (resolved on each open).
pub fn resolve_device(configured: &str) -> Result<PathBuf, String> {
    let Some(usb) = configured.strip_prefix("usb:") else {
        return Ok(PathBuf::from(configured));
    };
    let hex = |part: Option<&str>| part.and_then(|p| u16::from_str_radix(p, 16).ok());
    let mut parts = usb.split(':');
    let (Some(vid), Some(pid)) = (hex(parts.next()), hex(parts.next())) else {
        return Err(format!("{configured:?}: expected usb:VID:PID (hex)"));
    };
    let mut matching: Vec<PathBuf> = std::fs::read_dir("/dev/input")
        .map_err(|e| format!("cannot list /dev/input: {e}"))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("event"))
        })
        .filter(|path| {
            evdev::Device::open(path).is_ok_and(|device| {
                let id = device.input_id();
                id.vendor() == vid
                    && id.product() == pid
                    && device
                        .supported_keys()
                        .is_some_and(|keys| keys.contains(evdev::KeyCode::KEY_ENTER))
            })
        })
        .collect();
    matching.sort();
    matching
        .into_iter()
        .next()
        .ok_or_else(|| format!("no keyboard device {vid:04x}:{pid:04x} is plugged in"))
}

impl Driver for KeyboardWedge {
    fn kind(&self) -> &'static str {
        "keyboard_wedge"
    }

    fn name(&self) -> &str {
        &self.config.name
    }

    fn port(&self) -> String {
        self.config.device.clone()
    }

    fn serve(&mut self, context: &DeviceContext) -> Result<(), DeviceError> {
        let configured = self.config.device.clone();
        let open_error = |message: String| DeviceError::Open {
            port: configured.clone(),
            message,
        };
        let path = resolve_device(&configured).map_err(open_error)?;
        let mut device = evdev::Device::open(&path)
            .map_err(|e| open_error(format!("{}: {e}", path.display())))?;
        device
            .grab()
            .map_err(|e| open_error(format!("cannot grab {} exclusively: {e}", path.display())))?;
        device
            .set_nonblocking(true)
            .map_err(|e| open_error(e.to_string()))?;
        context.up();
        let io_error = |source: std::io::Error| DeviceError::Io {
            port: path_string(&path),
            source,
        };
        let mut decoder = WedgeDecoder::new(self.config.layout);
        while !context.stopping() {
            let ready = {
                let mut fds = [PollFd::new(device.as_fd(), PollFlags::POLLIN)];
                poll(&mut fds, PollTimeout::from(WAIT_MS))
                    .map_err(|e| io_error(std::io::Error::from(e)))?
            };
            if ready == 0 {
                continue;
            }
            let events: Vec<(u16, i32)> = match device.fetch_events() {
                Ok(events) => events
                    .filter(|e| e.event_type() == evdev::EventType::KEY)
                    .map(|e| (e.code(), e.value()))
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                // ENODEV: unplugged. The supervisor reopens it when it is back.
                Err(e) => return Err(io_error(e)),
            };
            for (code, value) in events {
                match decoder.key(code, value) {
                    Some(Ok(scan)) => {
                        let (aim, data) = Aim::split(&scan);
                        context.emit(DeviceEvent::Scanned {
                            device: self.config.name.clone(),
                            till: self.config.till.clone(),
                            aim,
                            text: data.to_string(),
                        });
                    }
                    Some(Err(error)) => context.input_invalid("hotkey", &error.to_string()),
                    None => {}
                }
            }
        }
        Ok(())
    }
}

fn path_string(path: &Path) -> String {
    path.display().to_string()
}
