//! Keyboard layouts a keyboard-wedge scanner can be set to type in. The scanner turns each
//! character into the key presses of the layout it is configured for; reading them back needs
//! the same layout, or a German scanner's `Y` arrives as `Z`.

use serde::Deserialize;

/// Linux input key codes used here (linux/input-event-codes.h); each constant is the
/// `KEY_<NAME>` of that header.
#[allow(missing_docs)]
pub mod key {
    pub const ESC: u16 = 1;
    pub const TAB: u16 = 15;
    pub const RIGHTBRACE: u16 = 27;
    pub const ENTER: u16 = 28;
    pub const LEFTCTRL: u16 = 29;
    pub const LEFTSHIFT: u16 = 42;
    pub const RIGHTSHIFT: u16 = 54;
    pub const LEFTALT: u16 = 56;
    pub const SPACE: u16 = 57;
    pub const CAPSLOCK: u16 = 58;
    pub const NUMLOCK: u16 = 69;
    pub const KPENTER: u16 = 96;
    pub const RIGHTCTRL: u16 = 97;
    pub const RIGHTALT: u16 = 100;
    pub const LEFTMETA: u16 = 125;
    pub const RIGHTMETA: u16 = 126;
    /// The key between left Shift and Z on ISO keyboards (`<` on German ones).
    pub const KEY_102ND: u16 = 86;
}

/// The layout a wedge scanner types in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// US QWERTY.
    Us,
    /// German QWERTZ (AltGr for `@`, `{` …).
    De,
}

/// Keys 2..=13 (the digit row), 16..=27 (Q row), 30..=41 (A row and the key left of 1),
/// 43..=53 (backslash/hash key and the Z row), as (plain, shifted) characters.
struct Rows {
    digits: [&'static str; 2],
    q: [&'static str; 2],
    a: [&'static str; 2],
    grave: [char; 2],
    backslash: [char; 2],
    z: [&'static str; 2],
    key_102nd: [char; 2],
}

const US: Rows = Rows {
    digits: ["1234567890-=", "!@#$%^&*()_+"],
    q: ["qwertyuiop[]", "QWERTYUIOP{}"],
    a: ["asdfghjkl;'", "ASDFGHJKL:\""],
    grave: ['`', '~'],
    backslash: ['\\', '|'],
    z: ["zxcvbnm,./", "ZXCVBNM<>?"],
    key_102nd: ['\\', '|'],
};

const DE: Rows = Rows {
    digits: ["1234567890ß´", "!\"§$%&/()=?`"],
    q: ["qwertzuiopü+", "QWERTZUIOPÜ*"],
    a: ["asdfghjklöä", "ASDFGHJKLÖÄ"],
    grave: ['^', '°'],
    backslash: ['#', '\''],
    z: ["yxcvbnm,.-", "YXCVBNM;:_"],
    key_102nd: ['<', '>'],
};

fn nth(row: &str, i: usize) -> Option<char> {
    row.chars().nth(i)
}

impl Layout {
    /// The character a key types, or `None` for a key that types none here.
    pub fn char_of(self, code: u16, shift: bool, altgr: bool) -> Option<char> {
        let rows = match self {
            Layout::Us => &US,
            Layout::De => &DE,
        };
        if altgr {
            return match (self, code) {
                (Layout::De, 3) => Some('²'),
                (Layout::De, 4) => Some('³'),
                (Layout::De, 8) => Some('{'),
                (Layout::De, 9) => Some('['),
                (Layout::De, 10) => Some(']'),
                (Layout::De, 11) => Some('}'),
                (Layout::De, 12) => Some('\\'),
                (Layout::De, 16) => Some('@'),
                (Layout::De, 18) => Some('€'),
                (Layout::De, 27) => Some('~'),
                (Layout::De, 50) => Some('µ'),
                (Layout::De, key::KEY_102ND) => Some('|'),
                _ => None,
            };
        }
        let s = usize::from(shift);
        let code_usize = usize::from(code);
        match code {
            2..=13 => nth(rows.digits[s], code_usize - 2),
            16..=27 => nth(rows.q[s], code_usize - 16),
            30..=40 => nth(rows.a[s], code_usize - 30),
            41 => Some(rows.grave[s]),
            43 => Some(rows.backslash[s]),
            44..=53 => nth(rows.z[s], code_usize - 44),
            key::KEY_102ND => Some(rows.key_102nd[s]),
            key::SPACE => Some(' '),
            key::TAB => Some('\t'),
            // The keypad types the same in every layout (Num Lock on, as scanners assume).
            55 => Some('*'),
            71..=73 => nth("789", code_usize - 71),
            74 => Some('-'),
            75..=77 => nth("456", code_usize - 75),
            78 => Some('+'),
            79..=81 => nth("123", code_usize - 79),
            82 => Some('0'),
            83 => Some('.'),
            98 => Some('/'),
            _ => None,
        }
    }

    /// The keypad digit of a key, for Alt+keypad character entry.
    pub fn keypad_digit(code: u16) -> Option<u32> {
        match code {
            71..=73 => Some(u32::from(code) - 71 + 7),
            75..=77 => Some(u32::from(code) - 75 + 4),
            79..=81 => Some(u32::from(code) - 79 + 1),
            82 => Some(0),
            _ => None,
        }
    }
}
