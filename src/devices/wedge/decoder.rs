//! Key events to scans. A scan is the characters typed up to Enter. A keyboard-wedge scanner
//! types characters, Shift, AltGr, GS as Ctrl+] and Alt+keypad codes; anything else with Ctrl,
//! Alt or the Windows key, or a function, Escape or arrow key, is not barcode data but a hotkey
//! ("BadBarcode" attacks open a terminal this way, and scanner programming codes look the same)
//! and the whole scan is refused.

use super::keymap::{key, Layout};

/// Longest scan kept; a stuck scanner or a held key cannot grow memory without bound.
pub const MAX_SCAN: usize = 1024;

/// Why typed input was not a scan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WedgeError {
    #[error(
        "hotkey {0} in scanned input (refused: keyboard-wedge input may only type characters)"
    )]
    /// A key combination no scanner types (Ctrl, Alt, Meta, F-keys, Escape).
    Hotkey(String),
    /// Longer than any scan.
    #[error("scan longer than {MAX_SCAN} characters")]
    TooLong,
}

/// Key events to scans, by the configured layout.
#[derive(Debug)]
pub struct WedgeDecoder {
    layout: Layout,
    shift: u8,
    ctrl: u8,
    alt: bool,
    altgr: bool,
    meta: u8,
    caps: bool,
    alt_code: Option<u32>,
    scan: String,
    refused: Option<WedgeError>,
}

impl WedgeDecoder {
    /// A decoder for `layout`.
    pub fn new(layout: Layout) -> WedgeDecoder {
        WedgeDecoder {
            layout,
            shift: 0,
            ctrl: 0,
            alt: false,
            altgr: false,
            meta: 0,
            caps: false,
            alt_code: None,
            scan: String::new(),
            refused: None,
        }
    }

    /// One key event (`value`: 1 press, 0 release, 2 autorepeat). Returns a finished scan, or
    /// why it was refused, when this event was its Enter.
    pub fn key(&mut self, code: u16, value: i32) -> Option<Result<String, WedgeError>> {
        let pressed = value == 1;
        let held = |count: u8| {
            if pressed {
                count.saturating_add(1)
            } else {
                count.saturating_sub(1)
            }
        };
        match code {
            key::LEFTSHIFT | key::RIGHTSHIFT if value != 2 => self.shift = held(self.shift),
            key::LEFTCTRL | key::RIGHTCTRL if value != 2 => self.ctrl = held(self.ctrl),
            key::LEFTMETA | key::RIGHTMETA if value != 2 => self.meta = held(self.meta),
            key::RIGHTALT => self.altgr = value != 0,
            key::LEFTALT => {
                self.alt = value != 0;
                if value == 0 {
                    if let Some(code) = self.alt_code.take() {
                        match char::from_u32(code).filter(|_| code <= 255) {
                            Some(c) => self.push(c),
                            None => self.refuse(format!("Alt+{code}")),
                        }
                    }
                }
            }
            _ if !pressed => {}
            key::CAPSLOCK => self.caps = !self.caps,
            key::NUMLOCK => {}
            key::ENTER | key::KPENTER => return self.finish(),
            _ => self.typed(code),
        }
        None
    }

    fn typed(&mut self, code: u16) {
        if self.alt && !self.altgr {
            match Layout::keypad_digit(code) {
                Some(digit) => {
                    let value = self
                        .alt_code
                        .unwrap_or(0)
                        .saturating_mul(10)
                        .saturating_add(digit);
                    self.alt_code = Some(value);
                }
                None => self.refuse(format!("Alt+key {code}")),
            }
            return;
        }
        if self.ctrl > 0 {
            if code == key::RIGHTBRACE && self.meta == 0 {
                self.push('\u{1d}');
            } else {
                self.refuse(format!("Ctrl+key {code}"));
            }
            return;
        }
        if self.meta > 0 {
            self.refuse(format!("Meta+key {code}"));
            return;
        }
        let letter = self
            .layout
            .char_of(code, false, false)
            .is_some_and(|c| c.is_alphabetic());
        let shift = (self.shift > 0) ^ (self.caps && letter);
        match self.layout.char_of(code, shift, self.altgr) {
            Some(c) => self.push(c),
            None if code == key::ESC => self.refuse("Escape".into()),
            None => self.refuse(format!("key {code}")),
        }
    }

    fn push(&mut self, c: char) {
        if self.scan.chars().count() >= MAX_SCAN {
            self.refused.get_or_insert(WedgeError::TooLong);
            return;
        }
        self.scan.push(c);
    }

    fn refuse(&mut self, what: String) {
        self.refused.get_or_insert(WedgeError::Hotkey(what));
    }

    fn finish(&mut self) -> Option<Result<String, WedgeError>> {
        let scan = std::mem::take(&mut self.scan);
        if let Some(error) = self.refused.take() {
            return Some(Err(error));
        }
        (!scan.is_empty()).then_some(Ok(scan))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Presses and releases, as `(code, value)` input events.
    fn tap(codes: &[u16]) -> Vec<(u16, i32)> {
        codes.iter().flat_map(|&c| [(c, 1), (c, 0)]).collect()
    }

    fn with(modifier: u16, codes: &[u16]) -> Vec<(u16, i32)> {
        let mut events = vec![(modifier, 1)];
        events.extend(tap(codes));
        events.push((modifier, 0));
        events
    }

    fn replay(layout: Layout, events: &[(u16, i32)]) -> Vec<Result<String, WedgeError>> {
        let mut decoder = WedgeDecoder::new(layout);
        events
            .iter()
            .filter_map(|&(code, value)| decoder.key(code, value))
            .collect()
    }

    #[test]
    fn a_us_scanner_types_an_ean_with_its_aim_id() {
        // "]E0" then 4006381333931, Enter: ] is KEY_RIGHTBRACE, E is Shift+KEY_E.
        let mut events = tap(&[27]);
        events.extend(with(key::LEFTSHIFT, &[18]));
        events.extend(tap(&[
            11,
            5,
            11,
            11,
            7,
            4,
            9,
            2,
            4,
            4,
            4,
            10,
            4,
            2,
            key::ENTER,
        ]));
        assert_eq!(replay(Layout::Us, &events), [Ok("]E04006381333931".into())]);
    }

    #[test]
    fn the_same_keys_read_in_the_scanners_layout() {
        // KEY_Y, KEY_Z, KEY_MINUS, Shift+KEY_7: "yz-&" on US, "zyß/" on DE.
        let mut events = tap(&[21, 44, 12]);
        events.extend(with(key::LEFTSHIFT, &[8]));
        events.extend(tap(&[key::ENTER]));
        assert_eq!(replay(Layout::Us, &events), [Ok("yz-&".into())]);
        assert_eq!(replay(Layout::De, &events), [Ok("zyß/".into())]);
        // AltGr+Q and AltGr+E on a German scanner: @ and €.
        let mut events = with(key::RIGHTALT, &[16, 18]);
        events.extend(tap(&[key::ENTER]));
        assert_eq!(replay(Layout::De, &events), [Ok("@€".into())]);
    }

    #[test]
    fn gs_arrives_as_ctrl_rightbrace_or_alt_keypad_029() {
        let mut events = tap(&[11, 2]);
        events.extend(with(key::LEFTCTRL, &[key::RIGHTBRACE]));
        events.extend(tap(&[3, 4]));
        // Alt+0 2 9 on the keypad.
        events.extend(with(key::LEFTALT, &[82, 80, 73]));
        events.extend(tap(&[5, key::KPENTER]));
        assert_eq!(
            replay(Layout::Us, &events),
            [Ok("01\u{1d}23\u{1d}4".into())]
        );
    }

    #[test]
    fn hotkeys_refuse_the_whole_scan_and_the_next_scan_is_clean() {
        // Ctrl+Alt+T (a terminal on many desktops), typed inside "12…3".
        let mut events = tap(&[2, 3]);
        events.push((key::LEFTCTRL, 1));
        events.extend(with(key::LEFTALT, &[20]));
        events.push((key::LEFTCTRL, 0));
        events.extend(tap(&[4, key::ENTER]));
        // The Windows key + R, then Escape, each in a scan of its own.
        events.extend(with(key::LEFTMETA, &[19]));
        events.extend(tap(&[key::ENTER, key::ESC, key::ENTER, 59, key::ENTER]));
        events.extend(tap(&[5, 6, key::ENTER]));
        let results = replay(Layout::Us, &events);
        assert_eq!(results.len(), 5);
        assert!(
            results[..4]
                .iter()
                .all(|r| matches!(r, Err(WedgeError::Hotkey(_)))),
            "{results:?}"
        );
        assert_eq!(results[4], Ok("45".into()));
    }

    #[test]
    fn caps_lock_and_over_long_input_are_handled() {
        let mut events = tap(&[key::CAPSLOCK, 30, 2, key::ENTER]);
        events.extend(tap(&[key::CAPSLOCK, 30, key::ENTER]));
        assert_eq!(
            replay(Layout::Us, &events),
            [Ok("A1".into()), Ok("a".into())]
        );
        let mut long = Vec::new();
        for _ in 0..=MAX_SCAN {
            long.extend(tap(&[2]));
        }
        long.extend(tap(&[key::ENTER, 3, key::ENTER]));
        assert_eq!(
            replay(Layout::Us, &long),
            [Err(WedgeError::TooLong), Ok("2".into())]
        );
    }
}
