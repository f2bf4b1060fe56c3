//! The reader link decoder and message parsers: arbitrary bytes from a serial port never
//! panic, and every frame the decoder hands out re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storegate_firmware::frame::{self, Decoder, MAX_FRAME};
use storegate_firmware::message::{Command, ReaderMessage};

fuzz_target!(|data: &[u8]| {
    let mut decoder = Decoder::new();
    for &byte in data {
        if let Some(frame) = decoder.push(byte) {
            let mut out = [0u8; MAX_FRAME];
            let n =
                frame::encode(frame.kind, frame.payload, &mut out).expect("a decoded frame fits");
            let mut again = Decoder::new();
            let round = out[..n]
                .iter()
                .find_map(|b| again.push(*b).map(|f| (f.kind, f.payload.to_vec())));
            assert_eq!(round, Some((frame.kind, frame.payload.to_vec())));
            let _ = ReaderMessage::parse(frame);
            let _ = Command::parse(frame);
        }
    }
});
