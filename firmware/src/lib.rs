//! storegate loyalty-reader bridge firmware (`no_std`, embedded-hal 1.0).
//!
//! - [`mfrc522`]: the NFC front end's driver over any `SpiDevice` (a microcontroller's SPI, a Pi's
//!   spidev, or the simulated chip).
//! - [`iso14443`]: UIDs, cascade levels and CRC_A.
//! - [`frame`] and [`message`]: the reader link protocol of `firmware/PROTOCOL.md`, shared with
//!   the gateway so both sides speak the same bytes.
//! - [`bridge`]: the firmware loop: poll, debounce, report, obey beep/LED/reset, heartbeat.
//! - [`sim`] (feature `sim`, on by default; boards turn it off): a simulated MFRC522 with cards in
//!   its field, for host tests and the `storegate-reader-sim` binary.

#![no_std]
#![deny(unsafe_code, missing_docs)]

pub mod bridge;
pub mod frame;
pub mod iso14443;
pub mod message;
pub mod mfrc522;
#[cfg(feature = "sim")]
pub mod sim;

/// CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor): the checksum
/// that closes every frame between the reader and the gateway.
pub fn crc16_ccitt(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_published_check_value_and_detects_a_flipped_bit() {
        // The catalogue check value of CRC-16/CCITT-FALSE over "123456789".
        assert_eq!(crc16_ccitt(b"123456789"), 0x29B1);
        assert_ne!(crc16_ccitt(b"123456788"), 0x29B1);
        assert_eq!(crc16_ccitt(b""), 0xFFFF);
    }
}
