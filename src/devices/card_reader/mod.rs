//! The storegate loyalty reader (`firmware/`): its framed serial protocol
//! (`firmware/PROTOCOL.md`) decoded with the firmware's own codec, card taps out as events,
//! beep and LED commands in. A reader that stops sending heartbeats is reopened.

pub mod config;

use std::io::Write;
use std::time::{Duration, Instant};

use storegate_firmware::frame::{Decoder, MAX_FRAME};
use storegate_firmware::message::{Command, ReaderMessage, PROTOCOL_VERSION};

use self::config::CardReaderConfig;
use super::port::{open_serial, read_available};
use super::{DeviceCommand, DeviceContext, DeviceError, DeviceEvent, Driver};

/// Read timeout: how long a command (a beep) can wait behind a quiet line, and how fast a
/// stop is noticed.
const READ_TIMEOUT: Duration = Duration::from_millis(20);

/// A loyalty card reader running the storegate firmware.
pub struct CardReader {
    config: CardReaderConfig,
}

impl CardReader {
    /// The reader of `config`.
    pub fn new(config: CardReaderConfig) -> CardReader {
        CardReader { config }
    }

    fn port_name(&self) -> String {
        self.config.port.to_string()
    }

    fn io_error(&self, source: std::io::Error) -> DeviceError {
        DeviceError::Io {
            port: self.port_name(),
            source,
        }
    }

    fn handle(
        &self,
        message: ReaderMessage<'_>,
        context: &DeviceContext,
    ) -> Result<(), DeviceError> {
        match message {
            ReaderMessage::CardPresent(uid) => context.emit(DeviceEvent::CardPresented {
                device: self.config.name.clone(),
                till: self.config.till.clone(),
                uid: uid.as_bytes().to_vec(),
            }),
            ReaderMessage::CardRemoved(uid) => context.emit(DeviceEvent::CardRemoved {
                device: self.config.name.clone(),
                uid: uid.as_bytes().to_vec(),
            }),
            ReaderMessage::Heartbeat { .. } => {}
            ReaderMessage::Version { protocol, firmware } => {
                if protocol != PROTOCOL_VERSION {
                    return Err(DeviceError::Protocol {
                        port: self.port_name(),
                        message: format!(
                            "reader speaks link protocol {protocol}, this storegate speaks {PROTOCOL_VERSION}; update one of them"
                        ),
                    });
                }
                context.set_firmware(format!("{firmware} (protocol {protocol})"));
            }
        }
        Ok(())
    }
}

impl Driver for CardReader {
    fn kind(&self) -> &'static str {
        "card_reader"
    }

    fn name(&self) -> &str {
        &self.config.name
    }

    fn port(&self) -> String {
        self.port_name()
    }

    fn serve(&mut self, context: &DeviceContext) -> Result<(), DeviceError> {
        let mut port = open_serial(&self.config.port, self.config.baud, READ_TIMEOUT)?;
        context.up();
        let silence = Duration::from_millis(self.config.silence_timeout_ms);
        let mut decoder = Decoder::new();
        let mut framing_errors = 0u32;
        let mut last_heard = Instant::now();
        let mut buf = [0u8; 256];
        while !context.stopping() {
            while let Some(command) = context.next_command() {
                let command = match command {
                    DeviceCommand::Beep { ms } => Command::Beep { ms },
                    DeviceCommand::Led(led) => Command::Led(led),
                };
                let mut frame = [0u8; MAX_FRAME];
                // Every command fits a frame; a failure would be our bug, so skip, not crash.
                let Ok(n) = command.encode(&mut frame) else {
                    continue;
                };
                port.write_all(&frame[..n])
                    .and_then(|()| port.flush())
                    .map_err(|e| self.io_error(e))?;
            }
            let n = read_available(&mut port, &mut buf).map_err(|e| self.io_error(e))?;
            if n > 0 {
                last_heard = Instant::now();
            } else if last_heard.elapsed() > silence {
                return Err(DeviceError::Silent {
                    port: self.port_name(),
                    silent_ms: self.config.silence_timeout_ms,
                });
            }
            for &byte in &buf[..n] {
                let Some(frame) = decoder.push(byte) else {
                    continue;
                };
                match ReaderMessage::parse(frame) {
                    Ok(message) => self.handle(message, context)?,
                    Err(error) => context.input_invalid("bad_message", &format!("{error:?}")),
                }
            }
            if decoder.errors() != framing_errors {
                let dropped = decoder.errors() - framing_errors;
                framing_errors = decoder.errors();
                context.input_invalid(
                    "framing",
                    &format!("{dropped} byte(s) outside a valid frame"),
                );
            }
        }
        Ok(())
    }
}
