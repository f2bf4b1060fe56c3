//! Devices: the till hardware this box owns. Each kind of device is one file implementing
//! [`Driver`]; the [`supervisor`] runs every configured device on a thread of its own (serial
//! ports block), reopens it with backoff when it fails or goes silent, and keeps its state for
//! `/v1/devices` and `/metrics`. One failing device never touches another.
//!
//! Drivers turn framed bytes into typed [`DeviceEvent`]s and never decide what they mean: the
//! daemon routes a card tap to the identity part and sends the reader its beep afterwards, so
//! the beep tells the customer "recorded", not merely "read".

pub mod camera;
pub mod card_number;
pub mod card_reader;
pub mod config;
pub mod nfc_reader;
pub mod port;
pub mod printer;
pub mod scanner;
pub mod supervisor;
pub mod wedge;

pub use supervisor::{DeviceHandle, Devices};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde::Serialize;
use storegate_firmware::message::Led;

use crate::metrics::Metrics;

/// Something a device reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceEvent {
    /// A loyalty card was put on a reader.
    CardPresented {
        /// The reader's configured name.
        device: String,
        /// The till its customer is identified at.
        till: String,
        /// The card's UID, as read.
        uid: Vec<u8>,
    },
    /// The card left the reader.
    CardRemoved {
        /// The reader's configured name.
        device: String,
        /// The card's UID.
        uid: Vec<u8>,
    },
    /// A code was read (once per presentation: a code held up is not repeated).
    Scanned {
        /// The scanner's configured name.
        device: String,
        /// The till whose stream gets the scan.
        till: String,
        /// The AIM symbology identifier, when the device knows or sent one.
        aim: Option<crate::codes::Aim>,
        /// The code's text, without the AIM identifier.
        text: String,
    },
    /// A printer's status changed (paper out, cover open, offline, or back to ready).
    PrinterStatus {
        /// The printer's configured name.
        device: String,
        /// The till it prints for.
        till: String,
        /// What the printer reported.
        status: printer::escpos::PrinterStatus,
    },
}

/// Something the daemon asks a device to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceCommand {
    /// Beep for `ms` milliseconds (the identification was recorded).
    Beep {
        /// How long.
        ms: u16,
    },
    /// Set the reader's LEDs.
    Led(Led),
}

/// Where a device is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    /// Opening the port (first time or after a failure).
    Connecting,
    /// Open and heard from.
    Up,
    /// Failed; waiting for the next attempt.
    Down,
    /// The daemon is shutting down.
    Stopped,
}

/// A device's state as `/v1/devices` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceStatus {
    /// Its configured name.
    pub name: String,
    /// `scanner`, `printer`, …
    pub kind: &'static str,
    /// Its port or address as configured.
    pub port: String,
    /// Where it is in its life.
    pub state: DeviceState,
    /// Why it is down (or went down last).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Times it was reopened after a failure.
    pub reconnects: u64,
    /// What the device says about itself (firmware version), once it said it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    /// Its latest status report (a printer's paper and cover).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

/// Why a device stopped working; the supervisor reopens it.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The port could not be opened (unplugged, no permission, wrong address).
    #[error("cannot open {port}: {message}")]
    Open {
        /// The port.
        port: String,
        /// Why.
        message: String,
    },
    /// Reading or writing failed.
    #[error("{port}: {source}")]
    Io {
        /// The port.
        port: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Nothing came from the device for too long (a reader's heartbeat stopped).
    #[error("{port}: silent for {silent_ms} ms (no heartbeat)")]
    Silent {
        /// The port.
        port: String,
        /// How long it was silent.
        silent_ms: u64,
    },
    /// The device said something that breaks its protocol.
    #[error("{port}: {message}")]
    Protocol {
        /// The port.
        port: String,
        /// What was wrong.
        message: String,
    },
    /// The driver panicked (a bug, or a library that panics on input it should refuse); the
    /// supervisor caught it, reports the device down and reopens it like any failure.
    #[error("{port}: the driver panicked: {message}")]
    Panicked {
        /// The port.
        port: String,
        /// The panic's message.
        message: String,
    },
}

/// The shutdown signal every device thread watches: a flag for the serve loops (checked after
/// each short read timeout) and a condvar so backoff waits end at once.
#[derive(Default)]
pub struct Stop {
    flag: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Stop {
    /// Whether the daemon is stopping.
    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Tells every device thread to stop, waking any that waits.
    pub fn set(&self) {
        self.flag.store(true, Ordering::Release);
        let _guard = self.lock.lock();
        self.wake.notify_all();
    }

    /// Waits up to `timeout`; returns true if stopping.
    pub fn wait(&self, timeout: Duration) -> bool {
        let Ok(guard) = self.lock.lock() else {
            return self.is_set();
        };
        let _ = self
            .wake
            .wait_timeout_while(guard, timeout, |_| !self.is_set());
        self.is_set()
    }
}

/// What a driver gets while it serves its device.
pub struct DeviceContext {
    /// The device's configured name.
    pub name: String,
    events: tokio::sync::mpsc::Sender<DeviceEvent>,
    // A Mutex only so the context is Sync: a camera's decode thread borrows it too.
    commands: Mutex<std::sync::mpsc::Receiver<DeviceCommand>>,
    status: Arc<Mutex<DeviceStatus>>,
    stop: Arc<Stop>,
    metrics: Arc<Metrics>,
}

impl DeviceContext {
    /// Whether the daemon is stopping (checked after each read timeout).
    pub fn stopping(&self) -> bool {
        self.stop.is_set()
    }

    /// Hands an event to the daemon. Blocks while the daemon is behind: a device must not
    /// outrun the journal, and its own buffer (the UART, the firmware) holds meanwhile.
    pub fn emit(&self, event: DeviceEvent) {
        if self.events.blocking_send(event).is_err() {
            // Only at shutdown: the router is gone.
            self.stop.set();
        }
    }

    /// The next command for this device, if one is waiting.
    pub fn next_command(&self) -> Option<DeviceCommand> {
        self.commands.lock().ok()?.try_recv().ok()
    }

    /// The device is open and talking.
    pub fn up(&self) {
        self.update(|status| {
            status.state = DeviceState::Up;
        });
        self.metrics.device_up(&self.name, true);
    }

    /// The device's latest status report, for `/v1/devices`.
    pub fn set_detail(&self, detail: serde_json::Value) {
        self.update(|status| status.detail = Some(detail));
    }

    /// What the device says about itself (firmware version).
    pub fn set_firmware(&self, firmware: String) {
        self.update(|status| status.firmware = Some(firmware));
    }

    /// A camera frame's fate: `decoded`, `unchanged` (nothing new, not decoded) or `dropped`
    /// (replaced by a newer one before the decoder got to it).
    pub fn frame_seen(&self, outcome: &str) {
        self.metrics.device_frame(&self.name, outcome);
    }

    /// Counts a receipt the printer confirmed.
    pub fn receipt_printed(&self) {
        self.metrics.receipt_printed(&self.name);
    }

    /// Waits up to `timeout` unless stopping; true if stopping.
    pub fn pause(&self, timeout: Duration) -> bool {
        self.stop.wait(timeout)
    }

    /// Bytes or messages from the device that were refused (counted, logged, ignored).
    pub fn input_invalid(&self, reason: &str, detail: &str) {
        self.metrics
            .device_input_invalid(&self.name, reason, detail);
    }

    fn update(&self, change: impl FnOnce(&mut DeviceStatus)) {
        if let Ok(mut status) = self.status.lock() {
            change(&mut status);
        }
    }
}

/// One kind of device. `serve` opens the device and runs it until it fails (`Err`, and the
/// supervisor reopens it after a backoff) or the daemon stops (`Ok`).
pub trait Driver: Send + 'static {
    /// `card_reader`, `scanner`, …
    fn kind(&self) -> &'static str;
    /// Its configured name.
    fn name(&self) -> &str;
    /// The port or address, for the status page.
    fn port(&self) -> String;
    /// Opens the device and serves it until it fails or the daemon stops; the supervisor reopens it after a failure.
    fn serve(&mut self, context: &DeviceContext) -> Result<(), DeviceError>;
}
