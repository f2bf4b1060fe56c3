//! The loyalty reader straight on the box's SPI header: the reader firmware's MFRC522 driver
//! (`storegate_firmware::mfrc522`, generic over embedded-hal 1.0 `SpiDevice`) run inside the
//! daemon through linux-embedded-hal's spidev, with the firmware's debounce rules: a card is
//! reported once while it stays, as removed only after several polls without it (one bad read
//! at the edge of the field is not a new tap), and a chip that keeps failing is reopened by
//! the supervisor. A bare front end has no buzzer or LEDs: beep and LED commands are ignored.

pub mod config;

use std::time::Duration;

use storegate_firmware::bridge::{CardSource, REMOVE_AFTER_MISSES, RESET_AFTER_ERRORS};
use storegate_firmware::mfrc522::{IrqLine, Mfrc522};

use self::config::NfcReaderConfig;
use super::{DeviceContext, DeviceError, DeviceEvent, Driver};

/// What the driver needs of the chip: the firmware's `CardSource`, with errors as text.
pub trait FrontEnd: Send {
    /// (Re-)initialises the chip.
    fn reset(&mut self) -> Result<(), String>;
    /// The UID of the card in the field now, if any.
    fn poll_card(&mut self) -> Result<Option<Vec<u8>>, String>;
}

impl<S, I> FrontEnd for Mfrc522<S, I>
where
    S: embedded_hal::spi::SpiDevice + Send,
    I: IrqLine + Send,
{
    fn reset(&mut self) -> Result<(), String> {
        CardSource::reset(self).map_err(|e| format!("{e:?}"))
    }

    fn poll_card(&mut self) -> Result<Option<Vec<u8>>, String> {
        CardSource::poll_card(self)
            .map(|card| card.map(|uid| uid.as_bytes().to_vec()))
            .map_err(|e| format!("{e:?}"))
    }
}

type Opener = Box<dyn FnMut(&NfcReaderConfig) -> Result<Box<dyn FrontEnd>, String> + Send>;

/// An MFRC522 on SPI.
pub struct NfcReader {
    config: NfcReaderConfig,
    open: Opener,
}

impl NfcReader {
    /// The reader of `config`, on its spidev device.
    pub fn new(config: NfcReaderConfig) -> NfcReader {
        NfcReader::with_opener(config, Box::new(open_spidev))
    }

    /// The reader with another way to reach the chip (the firmware's simulated MFRC522 in
    /// tests: the same driver, the same SPI trait).
    pub fn with_opener(config: NfcReaderConfig, open: Opener) -> NfcReader {
        NfcReader { config, open }
    }

    fn failed(&self, message: String) -> DeviceError {
        DeviceError::Protocol {
            port: self.port(),
            message,
        }
    }
}

/// Pulses the chip's reset line low, then leaves it high (running), through the GPIO character
/// device; the line stays requested only for the pulse.
fn hard_reset(line: &config::GpioLine) -> Result<(), String> {
    use embedded_hal::digital::OutputPin;
    use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};
    let mut chip =
        Chip::new(&line.chip).map_err(|e| format!("cannot open GPIO chip {line}: {e}"))?;
    let handle = chip
        .get_line(line.line)
        .and_then(|l| l.request(LineRequestFlags::OUTPUT, 1, "storegate-nfc-reset"))
        .map_err(|e| format!("cannot request GPIO line {line}: {e}"))?;
    let mut pin =
        linux_embedded_hal::CdevPin::new(handle).map_err(|e| format!("GPIO line {line}: {e}"))?;
    pin.set_low()
        .map_err(|e| format!("GPIO line {line}: {e:?}"))?;
    std::thread::sleep(Duration::from_millis(10));
    pin.set_high()
        .map_err(|e| format!("GPIO line {line}: {e:?}"))?;
    // The datasheet's oscillator start-up after a hard power-down.
    std::thread::sleep(Duration::from_millis(50));
    Ok(())
}

/// The chip's IRQ pin through the GPIO character device: every edge wakes the wait, the
/// line's level says whether the chip asks for attention (the driver sets the pin active low).
struct GpioIrq {
    events: linux_embedded_hal::gpio_cdev::LineEventHandle,
    line: String,
}

/// Past the chip's own 25 ms timer: a wait this long means a missed edge or a dead pin, and
/// the driver reads the status register anyway.
const IRQ_WAIT: Duration = Duration::from_millis(40);

impl GpioIrq {
    fn open(line: &config::GpioLine) -> Result<GpioIrq, String> {
        use linux_embedded_hal::gpio_cdev::{Chip, EventRequestFlags, LineRequestFlags};
        let mut chip =
            Chip::new(&line.chip).map_err(|e| format!("cannot open GPIO chip {line}: {e}"))?;
        let events = chip
            .get_line(line.line)
            .and_then(|l| {
                l.events(
                    LineRequestFlags::INPUT | LineRequestFlags::ACTIVE_LOW,
                    EventRequestFlags::BOTH_EDGES,
                    "storegate-nfc-irq",
                )
            })
            .map_err(|e| format!("cannot request GPIO line {line} for events: {e}"))?;
        Ok(GpioIrq {
            events,
            line: line.to_string(),
        })
    }

    fn asserted(&self) -> bool {
        self.events.get_value().is_ok_and(|value| value == 1)
    }

    /// Whether an edge arrives within `timeout`; it is consumed.
    fn next_edge(&mut self, timeout: Duration) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let millis = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.events.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(ready) if ready > 0 => {
                if let Err(error) = self.events.get_event() {
                    tracing::debug!(line = %self.line, %error, "reading an IRQ edge failed");
                    return false;
                }
                true
            }
            _ => false,
        }
    }
}

impl IrqLine for GpioIrq {
    const WIRED: bool = true;

    fn wait(&mut self) -> bool {
        let deadline = std::time::Instant::now() + IRQ_WAIT;
        loop {
            if self.asserted() {
                // Edges of earlier commands still queued would wake the next wait early.
                while self.next_edge(Duration::ZERO) {}
                return true;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() || !self.next_edge(left) {
                return self.asserted();
            }
        }
    }
}

fn open_spidev(config: &NfcReaderConfig) -> Result<Box<dyn FrontEnd>, String> {
    use linux_embedded_hal::spidev::{SpiModeFlags, SpidevOptions};
    if let Some(line) = &config.reset_gpio {
        hard_reset(line)?;
    }
    let irq = config.irq_gpio.as_ref().map(GpioIrq::open).transpose()?;
    let mut spi = linux_embedded_hal::SpidevDevice::open(&config.spi)
        .map_err(|e| format!("cannot open {}: {e}", config.spi.display()))?;
    spi.configure(
        &SpidevOptions::new()
            .bits_per_word(8)
            .max_speed_hz(config.spi_hz)
            .mode(SpiModeFlags::SPI_MODE_0)
            .build(),
    )
    .map_err(|e| format!("cannot configure {}: {e}", config.spi.display()))?;
    match irq {
        Some(irq) => Ok(Box::new(Mfrc522::with_irq(spi, irq))),
        None => Ok(Box::new(Mfrc522::new(spi))),
    }
}

impl Driver for NfcReader {
    fn kind(&self) -> &'static str {
        "nfc_reader"
    }

    fn name(&self) -> &str {
        &self.config.name
    }

    fn port(&self) -> String {
        self.config.spi.display().to_string()
    }

    fn serve(&mut self, context: &DeviceContext) -> Result<(), DeviceError> {
        let mut chip = (self.open)(&self.config).map_err(|e| self.failed(e))?;
        chip.reset()
            .map_err(|e| self.failed(format!("the MFRC522 did not initialise: {e}")))?;
        context.up();
        let poll = Duration::from_millis(self.config.poll_ms);
        let mut present: Option<Vec<u8>> = None;
        let (mut misses, mut errors) = (0u8, 0u8);
        loop {
            while context.next_command().is_some() {}
            match chip.poll_card() {
                Ok(Some(uid)) => {
                    errors = 0;
                    misses = 0;
                    if present.as_ref() != Some(&uid) {
                        if let Some(old) = present.take() {
                            self.removed(context, old);
                        }
                        context.emit(DeviceEvent::CardPresented {
                            device: self.config.name.clone(),
                            till: self.config.till.clone(),
                            uid: uid.clone(),
                        });
                        present = Some(uid);
                    }
                }
                Ok(None) => {
                    errors = 0;
                    if present.is_some() {
                        misses += 1;
                        if misses >= REMOVE_AFTER_MISSES {
                            if let Some(old) = present.take() {
                                self.removed(context, old);
                            }
                            misses = 0;
                        }
                    }
                }
                Err(error) => {
                    errors += 1;
                    context.input_invalid("read_failed", &error);
                    if errors >= RESET_AFTER_ERRORS {
                        return Err(
                            self.failed(format!("{errors} failed polls in a row, last: {error}"))
                        );
                    }
                }
            }
            if context.pause(poll) {
                return Ok(());
            }
        }
    }
}

impl NfcReader {
    fn removed(&self, context: &DeviceContext, uid: Vec<u8>) {
        context.emit(DeviceEvent::CardRemoved {
            device: self.config.name.clone(),
            uid,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use storegate_firmware::iso14443::Uid;
    use storegate_firmware::sim::{Field, SimulatedMfrc522};

    use super::*;
    use crate::devices::{DeviceStatus, Stop};

    fn context() -> (
        DeviceContext,
        tokio::sync::mpsc::Receiver<DeviceEvent>,
        Arc<Stop>,
    ) {
        let (events, received) = tokio::sync::mpsc::channel(16);
        let (_commands, commands) = std::sync::mpsc::channel();
        let stop = Arc::new(Stop::default());
        let context = DeviceContext {
            name: "pi-reader".into(),
            events,
            commands: Mutex::new(commands),
            status: Arc::new(Mutex::new(DeviceStatus {
                name: "pi-reader".into(),
                kind: "nfc_reader",
                port: "/dev/spidev0.0".into(),
                state: crate::devices::DeviceState::Connecting,
                last_error: None,
                reconnects: 0,
                firmware: None,
                detail: None,
            })),
            stop: stop.clone(),
            metrics: Arc::new(crate::metrics::Metrics::new()),
        };
        (context, received, stop)
    }

    /// The test reader, polled every 5 ms, with the IRQ line `irq` if given.
    fn reader_config(irq: Option<&str>) -> NfcReaderConfig {
        NfcReaderConfig {
            name: "pi-reader".into(),
            spi: "/dev/spidev0.0".into(),
            till: "t1".into(),
            spi_hz: 1_000_000,
            poll_ms: 5,
            reset_gpio: None,
            irq_gpio: irq.map(|line| line.to_string().try_into().unwrap()),
        }
    }

    fn next(events: &mut tokio::sync::mpsc::Receiver<DeviceEvent>) -> DeviceEvent {
        for _ in 0..500 {
            if let Ok(event) = events.try_recv() {
                return event;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no device event within 5 s");
    }

    /// The daemon's driver against the firmware's simulated MFRC522 behind the same
    /// `SpiDevice` trait: a 7-byte card is presented once while it stays, a second card after
    /// it, each removal reported; stopping ends the loop.
    #[test]
    fn cards_on_the_simulated_chip_arrive_once_each_and_leave() {
        let field = Field::default();
        let chip_field = field.clone();
        let config = reader_config(None);
        let mut reader = NfcReader::with_opener(
            config,
            Box::new(move |_| {
                Ok(Box::new(Mfrc522::new(SimulatedMfrc522::new(
                    chip_field.clone(),
                ))))
            }),
        );
        let (context, mut events, stop) = context();
        let running = std::thread::spawn(move || reader.serve(&context));
        let first = Uid::new(&[0x04, 0xA1, 0xB2, 0xC3, 0xD4, 0xE5, 0xF6]).unwrap();
        let second = Uid::new(&[0xDE, 0xAD, 0xBE, 0xEF]).unwrap();

        field.present(first);
        assert_eq!(
            next(&mut events),
            DeviceEvent::CardPresented {
                device: "pi-reader".into(),
                till: "t1".into(),
                uid: first.as_bytes().to_vec()
            }
        );
        // It stays for many polls: no second report.
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            events.try_recv().is_err(),
            "a card that stays is reported once"
        );
        field.remove(first);
        assert_eq!(
            next(&mut events),
            DeviceEvent::CardRemoved {
                device: "pi-reader".into(),
                uid: first.as_bytes().to_vec()
            }
        );
        field.present(second);
        assert!(
            matches!(next(&mut events), DeviceEvent::CardPresented { uid, .. } if uid == second.as_bytes())
        );

        stop.set();
        assert!(running.join().unwrap().is_ok());
    }

    /// With the chip's IRQ pin on a line, the daemon's driver waits on it after each command
    /// (every wait finding the pin asserted) and reads the status register once per command,
    /// and taps arrive as without it.
    #[test]
    fn with_the_irq_line_taps_arrive_and_each_command_waits_on_the_pin() {
        let field = Field::default();
        let chip = SimulatedMfrc522::new(field.clone());
        let line = chip.irq_line();
        let chip = Mutex::new(Some(chip));
        let config = reader_config(Some("/dev/gpiochip0:24"));
        let opened_line = line.clone();
        let mut reader = NfcReader::with_opener(
            config,
            Box::new(move |_| {
                let chip = chip.lock().unwrap().take().ok_or("opened twice")?;
                Ok(Box::new(Mfrc522::with_irq(chip, opened_line.clone())))
            }),
        );
        let (context, mut events, stop) = context();
        let running = std::thread::spawn(move || reader.serve(&context));
        let card = Uid::new(&[0xDE, 0xAD, 0xBE, 0xEF]).unwrap();
        field.present(card);
        assert!(
            matches!(next(&mut events), DeviceEvent::CardPresented { uid, .. } if uid == card.as_bytes())
        );
        stop.set();
        assert!(running.join().unwrap().is_ok());
        let (waits, asserted) = line.waits();
        assert!(waits > 0);
        assert_eq!(asserted, waits, "the chip drove the pin for every command");
        assert_eq!(line.status_reads(), waits, "one status read per command");
    }
}
