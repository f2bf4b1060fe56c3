//! ISO/IEC 14443-3 type A pieces both the driver and the simulated card field need: the UID of
//! a card, the cascade levels it is read in, and the CRC_A that closes SELECT and HLTA frames.

/// REQA: wakes cards in the IDLE state (a short frame of 7 bits).
pub const REQA: u8 = 0x26;
/// WUPA: wakes cards in the IDLE or HALT state (7 bits). Polling with WUPA sees a card that
/// stays on the reader after it was read and halted, which is what debouncing needs.
pub const WUPA: u8 = 0x52;
/// HLTA, followed by 0x00 and CRC_A.
pub const HLTA: u8 = 0x50;
/// The SEL codes of cascade levels 1, 2 and 3.
pub const SEL: [u8; 3] = [0x93, 0x95, 0x97];
/// Cascade tag: the first byte of a level that is not the UID's last.
pub const CASCADE_TAG: u8 = 0x88;
/// The SAK bit that says "UID not complete, go on to the next cascade level".
pub const SAK_CASCADE: u8 = 0x04;

/// CRC_A (CRC-16/ISO-IEC-14443-3-A: poly 0x1021 reflected, init 0x6363), low byte first on the
/// air.
pub fn crc_a(data: &[u8]) -> [u8; 2] {
    let mut crc: u16 = 0x6363;
    for &byte in data {
        let mut ch = byte ^ (crc & 0x00FF) as u8;
        ch ^= ch << 4;
        let ch = u16::from(ch);
        crc = (crc >> 8) ^ (ch << 8) ^ (ch << 3) ^ (ch >> 4);
    }
    crc.to_le_bytes()
}

/// A card's unique identifier: 4, 7 or 10 bytes (single, double, triple size).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Uid {
    bytes: [u8; 10],
    len: u8,
}

impl Uid {
    /// A UID from its bytes; `None` unless there are 4, 7 or 10 of them.
    pub fn new(bytes: &[u8]) -> Option<Uid> {
        if !matches!(bytes.len(), 4 | 7 | 10) {
            return None;
        }
        let mut uid = Uid {
            bytes: [0; 10],
            len: bytes.len() as u8,
        };
        uid.bytes[..bytes.len()].copy_from_slice(bytes);
        Some(uid)
    }

    /// The UID's bytes, in the order the card sends them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// How many cascade levels reading this UID takes (1, 2 or 3).
    pub fn levels(&self) -> usize {
        match self.len {
            4 => 1,
            7 => 2,
            _ => 3,
        }
    }

    /// The four UID-carrying bytes and BCC the card answers at cascade level `level` (0-based):
    /// a cascade tag and three UID bytes on every level but the last.
    pub fn cascade_level(&self, level: usize) -> Option<[u8; 5]> {
        if level >= self.levels() {
            return None;
        }
        let bytes = self.as_bytes();
        let mut out = [0u8; 5];
        if level + 1 < self.levels() {
            out[0] = CASCADE_TAG;
            out[1..4].copy_from_slice(&bytes[level * 3..level * 3 + 3]);
        } else {
            out[..4].copy_from_slice(&bytes[level * 3..level * 3 + 4]);
        }
        out[4] = out[0] ^ out[1] ^ out[2] ^ out[3];
        Some(out)
    }
}

impl core::fmt::Debug for Uid {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Uid(")?;
        for byte in self.as_bytes() {
            write!(f, "{byte:02X}")?;
        }
        write!(f, ")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_a_matches_the_catalogue_and_the_hlta_frame() {
        // CRC-16/ISO-IEC-14443-3-A check value over "123456789" is 0xBF05.
        assert_eq!(crc_a(b"123456789"), 0xBF05u16.to_le_bytes());
        // HLTA as every reader sends it: 50 00 57 CD.
        assert_eq!(crc_a(&[HLTA, 0x00]), [0x57, 0xCD]);
    }

    #[test]
    fn uids_split_into_cascade_levels_with_tags_and_bcc() {
        let single = Uid::new(&[0xDE, 0xAD, 0xBE, 0xEF]).unwrap();
        assert_eq!(single.levels(), 1);
        assert_eq!(
            single.cascade_level(0),
            Some([0xDE, 0xAD, 0xBE, 0xEF, 0xDE ^ 0xAD ^ 0xBE ^ 0xEF])
        );
        assert_eq!(single.cascade_level(1), None);

        let triple = Uid::new(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]).unwrap();
        assert_eq!(triple.levels(), 3);
        assert_eq!(
            triple.cascade_level(0),
            Some([0x88, 1, 2, 3, 0x88 ^ 1 ^ 2 ^ 3])
        );
        assert_eq!(
            triple.cascade_level(1),
            Some([0x88, 4, 5, 6, 0x88 ^ 4 ^ 5 ^ 6])
        );
        assert_eq!(triple.cascade_level(2), Some([7, 8, 9, 10, 7 ^ 8 ^ 9 ^ 10]));

        assert_eq!(Uid::new(&[1, 2, 3]), None);
        assert_eq!(Uid::new(&[0; 11]), None);
    }
}
