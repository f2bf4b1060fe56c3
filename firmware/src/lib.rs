//! storegate loyalty-reader bridge firmware (`no_std`).
//!
//! This crate will hold the MFRC522 driver and the card-reading loop. What is here now is the
//! framed link protocol both sides share (`firmware/PROTOCOL.md`): [`frame`] and its checksum.

#![no_std]
#![deny(unsafe_code, missing_docs)]

pub mod frame;

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
