//! Runs each device on its own thread and keeps it running: open, serve, and after a failure
//! wait (exponential backoff with jitter, reset once the device worked for a while) and reopen.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::camera::Camera;
use super::card_reader::CardReader;
use super::config::DevicesSection;
use super::nfc_reader::NfcReader;
use super::printer::Printer;
use super::scanner::SerialScanner;
use super::wedge::KeyboardWedge;
use super::{DeviceCommand, DeviceContext, DeviceEvent, DeviceState, DeviceStatus, Driver, Stop};
use crate::backoff::Backoff;
use crate::metrics::Metrics;

/// First and longest pause before reopening a failed device.
const REOPEN_MIN: Duration = Duration::from_millis(200);
const REOPEN_MAX: Duration = Duration::from_secs(10);
/// A device that served this long before failing starts its backoff afresh.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);
/// Events waiting for the daemon before devices block.
const EVENT_QUEUE: usize = 256;

/// Cheap to clone: what the API and the daemon's router need.
#[derive(Clone, Default)]
pub struct DeviceHandle {
    statuses: Vec<Arc<Mutex<DeviceStatus>>>,
    commands: Arc<HashMap<String, std::sync::mpsc::Sender<DeviceCommand>>>,
}

impl DeviceHandle {
    /// Every device and its state.
    pub fn statuses(&self) -> Vec<DeviceStatus> {
        self.statuses
            .iter()
            .filter_map(|status| status.lock().ok().map(|s| s.clone()))
            .collect()
    }

    /// Queues a command; a device that is down gets it when it is back (commands are few and
    /// small: a beep, an LED).
    pub fn command(&self, device: &str, command: DeviceCommand) {
        if let Some(sender) = self.commands.get(device) {
            let _ = sender.send(command);
        }
    }
}

/// The running devices.
pub struct Devices {
    handle: DeviceHandle,
    stop: Arc<Stop>,
    threads: Vec<JoinHandle<()>>,
}

impl Devices {
    /// Starts a thread per configured device. Events arrive on the returned receiver.
    /// Printers take their jobs from `journal`'s print queue and their receipts' header,
    /// footer and URL from `settings`, per receipt.
    pub fn start(
        config: &DevicesSection,
        journal: &crate::journal::Journal,
        settings: &crate::config::live::Live,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Devices, tokio::sync::mpsc::Receiver<DeviceEvent>)> {
        let readers = config
            .card_readers
            .iter()
            .map(|reader| Box::new(CardReader::new(reader.clone())) as Box<dyn Driver>);
        let spi_readers = config
            .nfc_readers
            .iter()
            .map(|reader| Box::new(NfcReader::new(reader.clone())) as Box<dyn Driver>);
        let cameras = config
            .cameras
            .iter()
            .map(|camera| Box::new(Camera::new(camera.clone())) as Box<dyn Driver>);
        let scanners = config
            .scanners
            .iter()
            .map(|scanner| Box::new(SerialScanner::new(scanner.clone())) as Box<dyn Driver>);
        let printers = config.printers.iter().map(|printer| {
            Box::new(Printer::new(
                printer.clone(),
                journal.clone(),
                settings.clone(),
            )) as Box<dyn Driver>
        });
        let wedges = config
            .keyboard_wedges
            .iter()
            .map(|wedge| Box::new(KeyboardWedge::new(wedge.clone())) as Box<dyn Driver>);
        let drivers: Vec<Box<dyn Driver>> = readers
            .chain(spi_readers)
            .chain(scanners)
            .chain(wedges)
            .chain(printers)
            .chain(cameras)
            .collect();
        Self::start_drivers(drivers, metrics)
    }

    fn start_drivers(
        drivers: Vec<Box<dyn Driver>>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Devices, tokio::sync::mpsc::Receiver<DeviceEvent>)> {
        let (events_tx, events) = tokio::sync::mpsc::channel(EVENT_QUEUE);
        let stop = Arc::new(Stop::default());
        let mut statuses = Vec::new();
        let mut commands = HashMap::new();
        let mut threads = Vec::new();
        for driver in drivers {
            let status = Arc::new(Mutex::new(DeviceStatus {
                name: driver.name().to_string(),
                kind: driver.kind(),
                port: driver.port(),
                state: DeviceState::Connecting,
                last_error: None,
                reconnects: 0,
                firmware: None,
                detail: None,
            }));
            let (command_tx, command_rx) = std::sync::mpsc::channel();
            commands.insert(driver.name().to_string(), command_tx);
            statuses.push(status.clone());
            metrics.device_up(driver.name(), false);
            let context = DeviceContext {
                name: driver.name().to_string(),
                events: events_tx.clone(),
                commands: Mutex::new(command_rx),
                status,
                stop: stop.clone(),
                metrics: metrics.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("device-{}", driver.name()))
                .spawn(move || supervise(driver, context))?;
            threads.push(thread);
        }
        Ok((
            Devices {
                handle: DeviceHandle {
                    statuses,
                    commands: Arc::new(commands),
                },
                stop,
                threads,
            },
            events,
        ))
    }

    /// A handle for the API and the router.
    pub fn handle(&self) -> DeviceHandle {
        self.handle.clone()
    }

    /// Stops every device and waits for its thread (each notices within one read timeout).
    pub fn stop(self) {
        self.stop.set();
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// Runs `serve` and turns a panic into a device failure: one driver's bug must not freeze its
/// status at "up" or take the thread (and the device) away for good.
fn serve_catching_panics(
    driver: &mut dyn Driver,
    context: &DeviceContext,
) -> Result<(), super::DeviceError> {
    let port = driver.port();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| driver.serve(context))).unwrap_or_else(
        |panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            Err(super::DeviceError::Panicked { port, message })
        },
    )
}

fn supervise(mut driver: Box<dyn Driver>, context: DeviceContext) {
    let mut backoff = Backoff::new(REOPEN_MIN, REOPEN_MAX);
    let mut attempts = 0u64;
    while !context.stopping() {
        attempts += 1;
        context.update(|status| {
            status.state = DeviceState::Connecting;
            status.reconnects = attempts - 1;
        });
        let started = Instant::now();
        let outcome = serve_catching_panics(driver.as_mut(), &context);
        context.metrics.device_up(&context.name, false);
        match outcome {
            Ok(()) => break,
            Err(error) => {
                if started.elapsed() >= HEALTHY_AFTER {
                    backoff.reset();
                }
                context
                    .metrics
                    .device_failed(&context.name, &error.to_string());
                context.update(|status| {
                    status.state = DeviceState::Down;
                    status.last_error = Some(error.to_string());
                });
                if context.stop.wait(backoff.next_delay()) {
                    break;
                }
            }
        }
    }
    context.update(|status| status.state = DeviceState::Stopped);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Panics on its first serve, then serves until stopped.
    struct Flaky {
        served: u32,
    }

    impl Driver for Flaky {
        fn kind(&self) -> &'static str {
            "test"
        }
        fn name(&self) -> &str {
            "flaky"
        }
        fn port(&self) -> String {
            "/dev/flaky".into()
        }
        fn serve(&mut self, context: &DeviceContext) -> Result<(), super::super::DeviceError> {
            self.served += 1;
            if self.served == 1 {
                panic!("index out of bounds in a frame parser");
            }
            context.up();
            while !context.pause(Duration::from_millis(5)) {}
            Ok(())
        }
    }

    fn wait_for(handle: &DeviceHandle, wanted: impl Fn(&DeviceStatus) -> bool) -> DeviceStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = handle.statuses().remove(0);
            if wanted(&status) {
                return status;
            }
            assert!(Instant::now() < deadline, "never got there: {status:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_panicking_driver_is_reported_down_with_the_panic_and_reopened() {
        let metrics = Arc::new(Metrics::new());
        let (devices, _events) =
            Devices::start_drivers(vec![Box::new(Flaky { served: 0 })], metrics).unwrap();
        let handle = devices.handle();
        let up = wait_for(&handle, |s| s.state == DeviceState::Up);
        assert_eq!(up.reconnects, 1, "reopened after the panic");
        let error = up.last_error.unwrap_or_default();
        assert!(
            error.contains("panicked") && error.contains("frame parser"),
            "{error}"
        );
        devices.stop();
        assert_eq!(handle.statuses()[0].state, DeviceState::Stopped);
    }
}
