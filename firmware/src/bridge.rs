//! The firmware loop: poll the NFC front end, debounce cards, report them over the UART link,
//! obey the gateway's commands (beep, LEDs, reset) and send heartbeats.
//!
//! [`Bridge::step`] never blocks: it reads only the bytes the UART already holds and polls the
//! card at most every [`POLL_INTERVAL_MS`], so a board's main loop and the host simulator both
//! call it in a loop with the current time.

use embedded_hal::digital::OutputPin;
use embedded_hal::spi::SpiDevice;
use embedded_io::{Read, ReadReady, Write};

use crate::frame::{Decoder, MAX_FRAME};
use crate::iso14443::Uid;
use crate::message::{Command, Led, ReaderMessage, PROTOCOL_VERSION};
use crate::mfrc522::{self, Mfrc522};

/// How often the reader looks for a card.
pub const POLL_INTERVAL_MS: u32 = 50;
/// A card counts as removed after this many polls in a row without it. One bad read (a card
/// held at the edge of the field) must not turn into removed-then-present.
pub const REMOVE_AFTER_MISSES: u8 = 3;
/// Polls in a row that fail with a chip error before the chip is re-initialised.
pub const RESET_AFTER_ERRORS: u8 = 10;
/// How often a heartbeat goes out.
pub const HEARTBEAT_INTERVAL_MS: u32 = 1_000;
/// The firmware's version, as reported in the `version` message.
pub const FIRMWARE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Something that can tell which card, if any, is on the reader.
pub trait CardSource {
    /// Why a poll failed.
    type Error: core::fmt::Debug;
    /// (Re-)initialises the reader.
    fn reset(&mut self) -> Result<(), Self::Error>;
    /// The card on the reader now, if any.
    fn poll_card(&mut self) -> Result<Option<Uid>, Self::Error>;
}

impl<SPI: SpiDevice, IRQ: mfrc522::IrqLine> CardSource for Mfrc522<SPI, IRQ> {
    type Error = mfrc522::Error<SPI::Error>;

    fn reset(&mut self) -> Result<(), Self::Error> {
        self.init().map(|_| ())
    }

    /// WUPA, anticollision/select, then HLTA so the card is quiet until the next WUPA.
    fn poll_card(&mut self) -> Result<Option<Uid>, Self::Error> {
        if !self.wake_up()? {
            return Ok(None);
        }
        let uid = self.select()?;
        self.halt()?;
        Ok(Some(uid))
    }
}

/// Why a step failed. Card read errors are not here: they count as a poll without a card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeError<E> {
    /// The UART failed.
    Link(E),
    /// A buzzer or LED pin failed.
    Pin,
}

/// The buzzer and LED outputs.
#[derive(Debug)]
pub struct Outputs<B, G, R> {
    /// Buzzer (high = sounding).
    pub buzzer: B,
    /// Green LED.
    pub green: G,
    /// Red LED.
    pub red: R,
}

/// Counters a board can expose (on a debug port, say) and tests can check.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Polls that failed with a chip or card error (collisions, CRC, protocol).
    pub read_errors: u32,
    /// Chip re-initialisations after repeated errors or a reset command.
    pub resets: u32,
    /// Frames from the gateway that were not valid commands.
    pub bad_commands: u32,
}

/// The firmware loop's state.
#[derive(Debug)]
pub struct Bridge<C, L, B, G, R> {
    reader: C,
    link: L,
    outputs: Outputs<B, G, R>,
    decoder: Decoder,
    current: Option<Uid>,
    misses: u8,
    errors_in_a_row: u8,
    buzzer_off_at: Option<u32>,
    next_poll: u32,
    next_heartbeat: u32,
    started_at: u32,
    stats: Stats,
}

/// `now` is at or past `deadline`, with the millisecond counter allowed to wrap.
fn reached(now: u32, deadline: u32) -> bool {
    now.wrapping_sub(deadline) < u32::MAX / 2
}

impl<C, L, B, G, R> Bridge<C, L, B, G, R>
where
    C: CardSource,
    L: Read + ReadReady + Write,
    B: OutputPin,
    G: OutputPin,
    R: OutputPin,
{
    /// Sets the loop up; nothing is sent until [`Bridge::start`].
    pub fn new(reader: C, link: L, outputs: Outputs<B, G, R>) -> Self {
        Bridge {
            reader,
            link,
            outputs,
            decoder: Decoder::new(),
            current: None,
            misses: 0,
            errors_in_a_row: 0,
            buzzer_off_at: None,
            next_poll: 0,
            next_heartbeat: 0,
            started_at: 0,
            stats: Stats::default(),
        }
    }

    /// Initialises the chip (a failure is counted and retried by later polls) and announces the
    /// firmware version.
    pub fn start(&mut self, now_ms: u32) -> Result<(), BridgeError<L::Error>> {
        self.started_at = now_ms;
        self.next_poll = now_ms;
        self.next_heartbeat = now_ms.wrapping_add(HEARTBEAT_INTERVAL_MS);
        self.reset_reader();
        self.send(ReaderMessage::Version {
            protocol: PROTOCOL_VERSION,
            firmware: FIRMWARE_VERSION,
        })
    }

    /// One turn of the loop at time `now_ms`.
    pub fn step(&mut self, now_ms: u32) -> Result<(), BridgeError<L::Error>> {
        self.read_commands(now_ms)?;
        if let Some(off_at) = self.buzzer_off_at {
            if reached(now_ms, off_at) {
                self.outputs
                    .buzzer
                    .set_low()
                    .map_err(|_| BridgeError::Pin)?;
                self.buzzer_off_at = None;
            }
        }
        if reached(now_ms, self.next_poll) {
            self.next_poll = now_ms.wrapping_add(POLL_INTERVAL_MS);
            self.poll(now_ms)?;
        }
        if reached(now_ms, self.next_heartbeat) {
            self.next_heartbeat = now_ms.wrapping_add(HEARTBEAT_INTERVAL_MS);
            let uptime_s = now_ms.wrapping_sub(self.started_at) / 1000;
            self.send(ReaderMessage::Heartbeat { uptime_s })?;
        }
        Ok(())
    }

    /// Counters since start.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The card the gateway was last told about.
    pub fn current_card(&self) -> Option<Uid> {
        self.current
    }

    /// The UART, for tests and simulators that feed or drain it.
    pub fn link_mut(&mut self) -> &mut L {
        &mut self.link
    }

    /// The parts back, for tests that inspect them.
    pub fn into_parts(self) -> (C, L, Outputs<B, G, R>) {
        (self.reader, self.link, self.outputs)
    }

    fn poll(&mut self, _now_ms: u32) -> Result<(), BridgeError<L::Error>> {
        let seen = match self.reader.poll_card() {
            Ok(seen) => {
                self.errors_in_a_row = 0;
                seen
            }
            Err(_) => {
                self.stats.read_errors = self.stats.read_errors.saturating_add(1);
                self.errors_in_a_row = self.errors_in_a_row.saturating_add(1);
                if self.errors_in_a_row >= RESET_AFTER_ERRORS {
                    self.reset_reader();
                }
                None
            }
        };
        match (seen, self.current) {
            (Some(uid), Some(current)) if uid == current => self.misses = 0,
            (Some(uid), current) => {
                if let Some(previous) = current {
                    self.send(ReaderMessage::CardRemoved(previous))?;
                }
                self.current = Some(uid);
                self.misses = 0;
                self.send(ReaderMessage::CardPresent(uid))?;
            }
            (None, Some(current)) => {
                self.misses = self.misses.saturating_add(1);
                if self.misses >= REMOVE_AFTER_MISSES {
                    self.current = None;
                    self.misses = 0;
                    self.send(ReaderMessage::CardRemoved(current))?;
                }
            }
            (None, None) => {}
        }
        Ok(())
    }

    fn reset_reader(&mut self) {
        self.stats.resets = self.stats.resets.saturating_add(1);
        self.errors_in_a_row = 0;
        if self.reader.reset().is_err() {
            self.stats.read_errors = self.stats.read_errors.saturating_add(1);
        }
    }

    fn read_commands(&mut self, now_ms: u32) -> Result<(), BridgeError<L::Error>> {
        let mut buf = [0u8; 32];
        // Bounded: a gateway flooding the line cannot starve card polling.
        for _ in 0..8 {
            if !self.link.read_ready().map_err(BridgeError::Link)? {
                break;
            }
            let n = self.link.read(&mut buf).map_err(BridgeError::Link)?;
            if n == 0 {
                break;
            }
            for &byte in &buf[..n] {
                let command = match self.decoder.push(byte) {
                    Some(frame) => Command::parse(frame),
                    None => continue,
                };
                match command {
                    Ok(command) => self.obey(command, now_ms)?,
                    Err(_) => self.stats.bad_commands = self.stats.bad_commands.saturating_add(1),
                }
            }
        }
        Ok(())
    }

    fn obey(&mut self, command: Command, now_ms: u32) -> Result<(), BridgeError<L::Error>> {
        match command {
            Command::Beep { ms } => {
                self.outputs
                    .buzzer
                    .set_high()
                    .map_err(|_| BridgeError::Pin)?;
                self.buzzer_off_at = Some(now_ms.wrapping_add(u32::from(ms)));
            }
            Command::Led(led) => {
                let (green, red) = match led {
                    Led::Off => (false, false),
                    Led::Green => (true, false),
                    Led::Red => (false, true),
                };
                self.outputs
                    .green
                    .set_state(green.into())
                    .map_err(|_| BridgeError::Pin)?;
                self.outputs
                    .red
                    .set_state(red.into())
                    .map_err(|_| BridgeError::Pin)?;
            }
            Command::Reset => {
                self.current = None;
                self.misses = 0;
                self.reset_reader();
                self.send(ReaderMessage::Version {
                    protocol: PROTOCOL_VERSION,
                    firmware: FIRMWARE_VERSION,
                })?;
            }
        }
        Ok(())
    }

    fn send(&mut self, message: ReaderMessage<'_>) -> Result<(), BridgeError<L::Error>> {
        let mut out = [0u8; MAX_FRAME];
        // Every message this firmware builds fits a frame; a failure here is a bug, not input.
        let Ok(n) = message.encode(&mut out) else {
            return Ok(());
        };
        self.link.write_all(&out[..n]).map_err(BridgeError::Link)?;
        self.link.flush().map_err(BridgeError::Link)
    }
}
