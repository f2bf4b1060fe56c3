//! The reader link's framing (`firmware/PROTOCOL.md`): encode into a caller's buffer, decode
//! from a byte stream with resynchronisation after garbage. No allocation, no panics on input.

use crate::crc16_ccitt;

/// Start-of-frame byte.
pub const START: u8 = 0x7E;
/// Largest payload a frame carries.
pub const MAX_PAYLOAD: usize = 32;
/// Largest encoded frame: start, len, type, payload, two CRC bytes.
pub const MAX_FRAME: usize = MAX_PAYLOAD + 5;

/// A decoded frame: its type and payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Message type.
    pub kind: u8,
    /// Payload bytes.
    pub payload: &'a [u8],
}

/// Why a frame could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The payload is longer than [`MAX_PAYLOAD`].
    PayloadTooLong,
    /// The output buffer is shorter than the frame.
    BufferTooSmall,
}

/// Writes one frame into `out`; returns its length.
pub fn encode(kind: u8, payload: &[u8], out: &mut [u8]) -> Result<usize, EncodeError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(EncodeError::PayloadTooLong);
    }
    let total = payload.len() + 5;
    if out.len() < total {
        return Err(EncodeError::BufferTooSmall);
    }
    out[0] = START;
    out[1] = payload.len() as u8;
    out[2] = kind;
    out[3..3 + payload.len()].copy_from_slice(payload);
    let crc = crc16_ccitt(&out[1..3 + payload.len()]);
    out[3 + payload.len()..total].copy_from_slice(&crc.to_be_bytes());
    Ok(total)
}

/// Reassembles frames from bytes as they arrive. A partial frame is kept until the rest comes;
/// a bad length or CRC drops one start byte and scans on.
#[derive(Debug)]
pub struct Decoder {
    buf: [u8; MAX_FRAME],
    len: usize,
    errors: u32,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// An empty decoder.
    pub const fn new() -> Decoder {
        Decoder {
            buf: [0; MAX_FRAME],
            len: 0,
            errors: 0,
        }
    }

    /// Frame starts dropped so far (bad length, bad CRC, bytes outside any frame).
    pub fn errors(&self) -> u32 {
        self.errors
    }

    /// Feeds one byte. Returns a frame when this byte completed a valid one; `None` means "not
    /// enough bytes yet" (or the byte was discarded as garbage), never an error to handle.
    pub fn push(&mut self, byte: u8) -> Option<Frame<'_>> {
        if self.len == 0 && byte != START {
            self.errors = self.errors.saturating_add(1);
            return None;
        }
        self.buf[self.len] = byte;
        self.len += 1;
        loop {
            match self.check() {
                Check::NeedMore => return None,
                Check::Complete => {
                    let kind = self.buf[2];
                    let payload_len = self.buf[1] as usize;
                    // The frame is handed out from the buffer; the next push starts afresh.
                    self.len = 0;
                    return Some(Frame {
                        kind,
                        payload: &self.buf[3..3 + payload_len],
                    });
                }
                Check::Bad => {
                    self.errors = self.errors.saturating_add(1);
                    self.resync();
                    if self.len == 0 {
                        return None;
                    }
                }
            }
        }
    }

    fn check(&self) -> Check {
        if self.len < 2 {
            return Check::NeedMore;
        }
        let payload_len = self.buf[1] as usize;
        if payload_len > MAX_PAYLOAD {
            return Check::Bad;
        }
        let total = payload_len + 5;
        if self.len < total {
            return Check::NeedMore;
        }
        let crc = u16::from_be_bytes([self.buf[total - 2], self.buf[total - 1]]);
        if crc16_ccitt(&self.buf[1..total - 2]) == crc {
            Check::Complete
        } else {
            Check::Bad
        }
    }

    /// Drops the current start byte and moves the buffer to the next start byte, if any.
    fn resync(&mut self) {
        let next = self.buf[1..self.len].iter().position(|b| *b == START);
        match next {
            Some(offset) => {
                let from = offset + 1;
                self.buf.copy_within(from..self.len, 0);
                self.len -= from;
            }
            None => self.len = 0,
        }
    }
}

enum Check {
    NeedMore,
    Complete,
    Bad,
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = [0u8; MAX_FRAME];
        let n = encode(kind, payload, &mut out).unwrap();
        out[..n].to_vec()
    }

    fn decode_all(bytes: &[u8]) -> (Vec<(u8, Vec<u8>)>, u32) {
        let mut d = Decoder::new();
        let mut frames = Vec::new();
        for b in bytes {
            if let Some(f) = d.push(*b) {
                frames.push((f.kind, f.payload.to_vec()));
            }
        }
        (frames, d.errors())
    }

    #[test]
    fn round_trips_every_payload_length() {
        for len in 0..=MAX_PAYLOAD {
            let payload: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(37)).collect();
            let (frames, errors) = decode_all(&frame(0x01, &payload));
            assert_eq!(frames, [(0x01, payload)]);
            assert_eq!(errors, 0);
        }
    }

    #[test]
    fn resyncs_after_garbage_and_a_corrupted_frame() {
        let uid = [0x04, 0xA1, 0x7E, 0x22, 0x33, 0x44, 0x55];
        let mut bytes = Vec::from(&b"\x00\x13garbage\x7E\xFF"[..]);
        let mut broken = frame(0x01, &uid);
        broken[5] ^= 0x01; // one flipped bit inside the UID
        bytes.extend(&broken);
        bytes.extend(frame(0x01, &uid));
        bytes.extend(frame(0x03, &[0, 0, 0, 9]));
        let (frames, errors) = decode_all(&bytes);
        assert_eq!(
            frames,
            [(0x01, uid.to_vec()), (0x03, [0, 0, 0, 9].to_vec())]
        );
        assert!(errors > 0);
    }

    #[test]
    fn a_start_byte_inside_a_payload_is_data() {
        let (frames, errors) = decode_all(&frame(0x81, &[START, START]));
        assert_eq!(frames, [(0x81, [START, START].to_vec())]);
        assert_eq!(errors, 0);
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let mut out = [0u8; MAX_FRAME];
        assert_eq!(
            encode(1, &[0; MAX_PAYLOAD + 1], &mut out),
            Err(EncodeError::PayloadTooLong)
        );
        assert_eq!(
            encode(1, &[0; 4], &mut out[..8]),
            Err(EncodeError::BufferTooSmall)
        );
    }

    #[test]
    fn random_bytes_never_panic_and_valid_frames_after_them_decode() {
        // A fixed xorshift stream: reproducible noise.
        let mut x: u32 = 0x1234_5678;
        let mut noise = Vec::new();
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            noise.push(x as u8);
        }
        let mut d = Decoder::new();
        for b in &noise {
            let _ = d.push(*b);
        }
        // Whatever state the noise left, a clean frame is found within two frames' time.
        let mut found = false;
        for _ in 0..2 {
            for b in frame(0x04, b"\x01fw-1.0") {
                if let Some(f) = d.push(b) {
                    found |= f.kind == 0x04 && f.payload == b"\x01fw-1.0";
                }
            }
        }
        assert!(found);
    }
}
