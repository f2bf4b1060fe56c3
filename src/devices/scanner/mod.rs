//! Serial and USB-CDC barcode scanners: bytes in, one scan per frame out. A frame ends with the
//! configured suffix (CR, LF, CRLF or a custom string) and may have to start with a prefix;
//! frames longer than `max_len`, without the prefix, or not UTF-8 are counted and dropped,
//! never passed on and never allowed to wedge the reader. An AIM identifier (`]E0`…) at the
//! start is split off and tells the codes part how to read the data.

pub mod config;

use std::time::Duration;

use self::config::ScannerConfig;
use super::port::{open_serial, read_available};
use super::{DeviceContext, DeviceError, DeviceEvent, Driver};
use crate::codes::Aim;

/// Read timeout: how fast a stop is noticed; scanners are silent between scans.
const READ_TIMEOUT: Duration = Duration::from_millis(50);

/// Why bytes from a scanner were not a scan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// Longer than `max_len` (line noise, a stuck trigger).
    #[error("frame longer than {max} bytes (no suffix seen); dropped up to the next suffix")]
    TooLong {
        /// The configured limit.
        max: usize,
    },
    /// A scan without the configured prefix.
    #[error("frame does not start with the configured prefix")]
    MissingPrefix,
    /// A scan that is not UTF-8.
    #[error("frame is not UTF-8 text")]
    NotUtf8,
}

impl FramingError {
    /// The metric label of the refusal.
    pub fn reason(&self) -> &'static str {
        match self {
            FramingError::TooLong { .. } => "too_long",
            FramingError::MissingPrefix => "missing_prefix",
            FramingError::NotUtf8 => "not_utf8",
        }
    }
}

/// Splits a scanner's byte stream into frames. Bounded memory: at most `max_len` bytes are
/// kept; the rest of an over-long frame is skipped up to its suffix.
#[derive(Debug)]
pub struct LineFramer {
    suffix: Vec<u8>,
    /// CR, LF and CRLF scanners are treated alike: either byte ends a frame and empty frames
    /// are skipped, so a scanner set to CRLF still works with a CR config.
    line_ends: bool,
    prefix: Vec<u8>,
    max_len: usize,
    buf: Vec<u8>,
    overflowed: bool,
}

impl LineFramer {
    /// A framer for scans that end with `suffix` and start with `prefix`, at most `max_len` bytes.
    pub fn new(suffix: &str, prefix: &str, max_len: usize) -> LineFramer {
        let line_ends = matches!(suffix, "\r" | "\n" | "\r\n");
        LineFramer {
            suffix: suffix.as_bytes().to_vec(),
            line_ends,
            prefix: prefix.as_bytes().to_vec(),
            max_len,
            buf: Vec::with_capacity(max_len.min(4096)),
            overflowed: false,
        }
    }

    /// Feeds bytes; every completed frame (or its refusal) is appended to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Result<String, FramingError>>) {
        for &byte in bytes {
            if self.line_ends && (byte == b'\r' || byte == b'\n') {
                self.finish(out);
                continue;
            }
            if self.overflowed {
                // Skipping the rest of an over-long frame; only its suffix ends the skip.
                if !self.line_ends {
                    self.buf.push(byte);
                    if self.buf.ends_with(&self.suffix) {
                        self.buf.clear();
                        self.overflowed = false;
                    } else if self.buf.len() >= self.suffix.len() {
                        let keep = self.suffix.len().saturating_sub(1);
                        let drop = self.buf.len() - keep;
                        self.buf.drain(..drop);
                    }
                }
                continue;
            }
            self.buf.push(byte);
            if !self.line_ends && !self.suffix.is_empty() && self.buf.ends_with(&self.suffix) {
                self.buf.truncate(self.buf.len() - self.suffix.len());
                self.finish(out);
                continue;
            }
            if self.buf.len() > self.max_len + self.suffix.len() {
                out.push(Err(FramingError::TooLong { max: self.max_len }));
                self.buf.clear();
                self.overflowed = true;
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<Result<String, FramingError>>) {
        if self.overflowed {
            self.overflowed = false;
            self.buf.clear();
            return;
        }
        if self.buf.is_empty() {
            return;
        }
        let frame = std::mem::take(&mut self.buf);
        if frame.len() > self.max_len {
            out.push(Err(FramingError::TooLong { max: self.max_len }));
            return;
        }
        let Some(body) = frame.strip_prefix(self.prefix.as_slice()) else {
            out.push(Err(FramingError::MissingPrefix));
            return;
        };
        match std::str::from_utf8(body) {
            Ok(text) => out.push(Ok(text.to_string())),
            Err(_) => out.push(Err(FramingError::NotUtf8)),
        }
    }
}

/// A serial or USB-CDC barcode scanner.
pub struct SerialScanner {
    config: ScannerConfig,
}

impl SerialScanner {
    /// The scanner of `config`.
    pub fn new(config: ScannerConfig) -> SerialScanner {
        SerialScanner { config }
    }
}

impl Driver for SerialScanner {
    fn kind(&self) -> &'static str {
        "scanner"
    }

    fn name(&self) -> &str {
        &self.config.name
    }

    fn port(&self) -> String {
        self.config.port.to_string()
    }

    fn serve(&mut self, context: &DeviceContext) -> Result<(), DeviceError> {
        let mut port = open_serial(&self.config.port, self.config.baud, READ_TIMEOUT)?;
        context.up();
        let mut framer = LineFramer::new(
            &self.config.suffix,
            &self.config.prefix,
            self.config.max_len,
        );
        let mut buf = [0u8; 1024];
        let mut frames = Vec::new();
        while !context.stopping() {
            let n = read_available(&mut port, &mut buf).map_err(|source| DeviceError::Io {
                port: self.config.port.to_string(),
                source,
            })?;
            framer.push(&buf[..n], &mut frames);
            for frame in frames.drain(..) {
                match frame {
                    Ok(text) => {
                        let (aim, data) = Aim::split(&text);
                        context.emit(DeviceEvent::Scanned {
                            device: self.config.name.clone(),
                            till: self.config.till.clone(),
                            aim,
                            text: data.to_string(),
                        });
                    }
                    Err(error) => context.input_invalid(error.reason(), &error.to_string()),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(framer: &mut LineFramer, bytes: &[u8]) -> Vec<Result<String, FramingError>> {
        let mut out = Vec::new();
        framer.push(bytes, &mut out);
        out
    }

    #[test]
    fn cr_lf_and_crlf_scanners_frame_alike_and_partial_frames_wait() {
        let mut framer = LineFramer::new("\r", "", 64);
        assert_eq!(
            frames(&mut framer, b"]E04006381333931\r\n123\n\r\r45"),
            [Ok("]E04006381333931".into()), Ok("123".into())]
        );
        assert_eq!(frames(&mut framer, b"67\r"), [Ok("4567".into())]);
    }

    #[test]
    fn a_custom_suffix_and_prefix_frame_exactly() {
        let mut framer = LineFramer::new("\u{3}", "\u{2}", 64);
        assert_eq!(
            frames(&mut framer, b"\x02abc\x03\x02d\re\x03zz\x03"),
            [
                Ok("abc".into()),
                Ok("d\re".into()),
                Err(FramingError::MissingPrefix)
            ]
        );
    }

    #[test]
    fn over_long_frames_are_dropped_once_and_the_next_frame_is_clean() {
        let mut framer = LineFramer::new("\r\n", "", 8);
        let mut bytes = vec![b'x'; 100];
        bytes.extend(b"\r\nok\r\n");
        assert_eq!(
            frames(&mut framer, &bytes),
            [Err(FramingError::TooLong { max: 8 }), Ok("ok".into())]
        );
        let mut framer = LineFramer::new("END", "", 4);
        assert_eq!(
            frames(&mut framer, b"0123456789abcEN"),
            [Err(FramingError::TooLong { max: 4 })]
        );
        // The skip ends at the suffix; the next frame stands on its own (and is too long too).
        assert_eq!(
            frames(&mut framer, b"Dgood END"),
            [Err(FramingError::TooLong { max: 4 })]
        );
        assert_eq!(frames(&mut framer, b"ok1END"), [Ok("ok1".into())]);
        assert_eq!(
            frames(&mut framer, b"\xff\xfeEND"),
            [Err(FramingError::NotUtf8)]
        );
    }
}
