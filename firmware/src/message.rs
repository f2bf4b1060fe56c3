//! The typed messages of the reader link (`firmware/PROTOCOL.md`), on top of [`crate::frame`].
//! The firmware encodes [`ReaderMessage`]s and decodes [`Command`]s; the gateway does the reverse
//! with the same code, so the two sides cannot drift apart.

use crate::frame::{self, EncodeError, Frame, MAX_FRAME};
use crate::iso14443::Uid;

/// Protocol version carried in the `version` message.
pub const PROTOCOL_VERSION: u8 = 1;

/// Message type codes.
pub mod kind {
    /// A card arrived (payload: UID).
    pub const CARD_PRESENT: u8 = 0x01;
    /// The card left (payload: UID).
    pub const CARD_REMOVED: u8 = 0x02;
    /// Liveness (payload: uptime seconds, u32 BE).
    pub const HEARTBEAT: u8 = 0x03;
    /// Protocol and firmware version.
    pub const VERSION: u8 = 0x04;
    /// Command: beep (payload: ms, u16 BE).
    pub const BEEP: u8 = 0x81;
    /// Command: LED (payload: 0 off, 1 green, 2 red).
    pub const LED: u8 = 0x82;
    /// Command: reset the reader.
    pub const RESET: u8 = 0x83;
}

/// A frame that decoded but does not make a valid message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageError {
    /// The type code is not one this side understands.
    UnknownType(u8),
    /// The payload has the wrong length or content for its type.
    BadPayload(u8),
}

/// Reader → gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReaderMessage<'a> {
    /// A card was put on the reader.
    CardPresent(Uid),
    /// The card was taken away.
    CardRemoved(Uid),
    /// The reader is alive; seconds since it started.
    Heartbeat {
        /// Uptime in seconds.
        uptime_s: u32,
    },
    /// Sent at start and after a reset.
    Version {
        /// Link protocol version.
        protocol: u8,
        /// Firmware version text.
        firmware: &'a str,
    },
}

impl<'a> ReaderMessage<'a> {
    /// Interprets a decoded frame.
    pub fn parse(frame: Frame<'a>) -> Result<ReaderMessage<'a>, MessageError> {
        let bad = MessageError::BadPayload(frame.kind);
        match frame.kind {
            kind::CARD_PRESENT => Uid::new(frame.payload)
                .map(ReaderMessage::CardPresent)
                .ok_or(bad),
            kind::CARD_REMOVED => Uid::new(frame.payload)
                .map(ReaderMessage::CardRemoved)
                .ok_or(bad),
            kind::HEARTBEAT => {
                let bytes: [u8; 4] = frame.payload.try_into().map_err(|_| bad)?;
                Ok(ReaderMessage::Heartbeat {
                    uptime_s: u32::from_be_bytes(bytes),
                })
            }
            kind::VERSION => {
                let (&protocol, text) = frame.payload.split_first().ok_or(bad)?;
                let firmware = core::str::from_utf8(text).map_err(|_| bad)?;
                Ok(ReaderMessage::Version { protocol, firmware })
            }
            other => Err(MessageError::UnknownType(other)),
        }
    }

    /// Encodes into `out`; returns the frame's length.
    pub fn encode(&self, out: &mut [u8; MAX_FRAME]) -> Result<usize, EncodeError> {
        match self {
            ReaderMessage::CardPresent(uid) => {
                frame::encode(kind::CARD_PRESENT, uid.as_bytes(), out)
            }
            ReaderMessage::CardRemoved(uid) => {
                frame::encode(kind::CARD_REMOVED, uid.as_bytes(), out)
            }
            ReaderMessage::Heartbeat { uptime_s } => {
                frame::encode(kind::HEARTBEAT, &uptime_s.to_be_bytes(), out)
            }
            ReaderMessage::Version { protocol, firmware } => {
                let mut payload = [0u8; frame::MAX_PAYLOAD];
                let text = firmware.as_bytes();
                if text.len() + 1 > payload.len() {
                    return Err(EncodeError::PayloadTooLong);
                }
                payload[0] = *protocol;
                payload[1..=text.len()].copy_from_slice(text);
                frame::encode(kind::VERSION, &payload[..=text.len()], out)
            }
        }
    }
}

/// The reader's LEDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Led {
    /// Both off.
    Off,
    /// Green on (customer recognised).
    Green,
    /// Red on (card refused).
    Red,
}

/// Gateway → reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Sound the buzzer for this many milliseconds.
    Beep {
        /// Duration in ms.
        ms: u16,
    },
    /// Set the LEDs.
    Led(Led),
    /// Re-initialise the NFC chip and forget the current card.
    Reset,
}

impl Command {
    /// Interprets a decoded frame.
    pub fn parse(frame: Frame<'_>) -> Result<Command, MessageError> {
        let bad = MessageError::BadPayload(frame.kind);
        match frame.kind {
            kind::BEEP => {
                let bytes: [u8; 2] = frame.payload.try_into().map_err(|_| bad)?;
                Ok(Command::Beep {
                    ms: u16::from_be_bytes(bytes),
                })
            }
            kind::LED => match frame.payload {
                [0] => Ok(Command::Led(Led::Off)),
                [1] => Ok(Command::Led(Led::Green)),
                [2] => Ok(Command::Led(Led::Red)),
                _ => Err(bad),
            },
            kind::RESET if frame.payload.is_empty() => Ok(Command::Reset),
            kind::RESET => Err(bad),
            other => Err(MessageError::UnknownType(other)),
        }
    }

    /// Encodes into `out`; returns the frame's length.
    pub fn encode(&self, out: &mut [u8; MAX_FRAME]) -> Result<usize, EncodeError> {
        match self {
            Command::Beep { ms } => frame::encode(kind::BEEP, &ms.to_be_bytes(), out),
            Command::Led(led) => {
                let code = match led {
                    Led::Off => 0,
                    Led::Green => 1,
                    Led::Red => 2,
                };
                frame::encode(kind::LED, &[code], out)
            }
            Command::Reset => frame::encode(kind::RESET, &[], out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Decoder;

    fn reparse_reader(message: ReaderMessage<'_>) {
        let mut out = [0u8; MAX_FRAME];
        let n = message.encode(&mut out).unwrap();
        let mut decoder = Decoder::new();
        let mut parsed = None;
        for byte in &out[..n] {
            if let Some(frame) = decoder.push(*byte) {
                let copy = ReaderMessage::parse(frame).unwrap();
                // Compare inside the borrow: a Version borrows the decoder's buffer.
                assert_eq!(copy, message);
                parsed = Some(());
            }
        }
        assert!(parsed.is_some(), "{message:?} did not come back");
    }

    #[test]
    fn every_message_and_command_round_trips() {
        let uid = Uid::new(&[0x04, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66]).unwrap();
        reparse_reader(ReaderMessage::CardPresent(uid));
        reparse_reader(ReaderMessage::CardRemoved(uid));
        reparse_reader(ReaderMessage::Heartbeat { uptime_s: 86_400 });
        reparse_reader(ReaderMessage::Version {
            protocol: PROTOCOL_VERSION,
            firmware: "0.1.0",
        });
        for command in [
            Command::Beep { ms: 150 },
            Command::Led(Led::Off),
            Command::Led(Led::Green),
            Command::Led(Led::Red),
            Command::Reset,
        ] {
            let mut out = [0u8; MAX_FRAME];
            let n = command.encode(&mut out).unwrap();
            let mut decoder = Decoder::new();
            let frame = out[..n]
                .iter()
                .find_map(|b| decoder.push(*b).map(Command::parse));
            assert_eq!(frame, Some(Ok(command)));
        }
    }

    #[test]
    fn wrong_payloads_are_refused_with_their_type() {
        let frame = |kind, payload| Frame { kind, payload };
        assert_eq!(
            ReaderMessage::parse(frame(kind::CARD_PRESENT, &[1, 2, 3])),
            Err(MessageError::BadPayload(kind::CARD_PRESENT))
        );
        assert_eq!(
            ReaderMessage::parse(frame(kind::HEARTBEAT, &[1])),
            Err(MessageError::BadPayload(kind::HEARTBEAT))
        );
        assert_eq!(
            ReaderMessage::parse(frame(kind::VERSION, &[1, 0xFF])),
            Err(MessageError::BadPayload(kind::VERSION))
        );
        assert_eq!(
            ReaderMessage::parse(frame(0x42, &[])),
            Err(MessageError::UnknownType(0x42))
        );
        assert_eq!(
            Command::parse(frame(kind::LED, &[3])),
            Err(MessageError::BadPayload(kind::LED))
        );
        assert_eq!(
            Command::parse(frame(kind::RESET, &[0])),
            Err(MessageError::BadPayload(kind::RESET))
        );
        assert_eq!(
            Command::parse(frame(kind::CARD_PRESENT, &[1, 2, 3, 4])),
            Err(MessageError::UnknownType(kind::CARD_PRESENT))
        );
    }
}
