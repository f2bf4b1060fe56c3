//! Scanner framing: any byte stream, any configured suffix/prefix, bounded output.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storegate::devices::scanner::LineFramer;

fuzz_target!(|input: (u8, &[u8])| {
    let (choice, data) = input;
    let suffix = ["\r", "\n", "\r\n", "\u{3}", "END"][usize::from(choice) % 5];
    let prefix = if choice & 0x80 != 0 { "\u{2}" } else { "" };
    let mut framer = LineFramer::new(suffix, prefix, 32);
    let mut out = Vec::new();
    // Fed in uneven pieces, as a serial port delivers them.
    for chunk in data.chunks(usize::from(choice % 7) + 1) {
        framer.push(chunk, &mut out);
    }
    for frame in out.into_iter().flatten() {
        assert!(frame.len() <= 32);
    }
});
