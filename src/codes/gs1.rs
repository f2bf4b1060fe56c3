//! GS1 check digits (GS1 General Specifications 7.9.1): weights 3 and 1 alternating from the
//! right of the data digits, the check digit makes the sum a multiple of 10. The same rule serves
//! GTIN-8/12/13/14, SSCC and GLN.

/// The check digit for `data` (all digits, without the check digit); `None` if not digits.
pub fn check_digit(data: &str) -> Option<u8> {
    let mut sum = 0u32;
    for (i, byte) in data.bytes().rev().enumerate() {
        if !byte.is_ascii_digit() {
            return None;
        }
        let digit = u32::from(byte - b'0');
        sum += if i % 2 == 0 { digit * 3 } else { digit };
    }
    Some(((10 - sum % 10) % 10) as u8)
}

/// Whether the last digit of `number` is the check digit of the others.
pub fn has_valid_check_digit(number: &str) -> bool {
    let Some((last, data)) = number
        .as_bytes()
        .split_last()
        .map(|(last, data)| (*last, data))
    else {
        return false;
    };
    if !last.is_ascii_digit() || data.is_empty() {
        return false;
    }
    std::str::from_utf8(data)
        .ok()
        .and_then(check_digit)
        .is_some_and(|digit| digit == last - b'0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_general_specifications_examples() {
        // GS1 General Specifications, check digit calculation example: GTIN-13 629104150021 → 3.
        assert_eq!(check_digit("629104150021"), Some(3));
        assert!(has_valid_check_digit("6291041500213"));
        assert!(has_valid_check_digit("09506000134352"));
        assert!(!has_valid_check_digit("09506000134353"));
        assert!(!has_valid_check_digit("0950600013435x"));
        assert!(!has_valid_check_digit("7"));
        assert_eq!(check_digit("12a"), None);
    }
}

/// GS1's reference examples (the GTIN, SSCC, GLN and measure examples its documentation uses)
/// in bracketed form with the fields they must yield, and broken variants of them with the
/// reason each must be refused.
#[cfg(test)]
mod published_examples {
    use super::*;

    fn parse(bracketed: &str) -> Result<Vec<(String, String)>, Gs1Error> {
        let strings = from_bracketed(bracketed).expect("bracketed form");
        parse_element_strings(&strings).map(|v| v.into_iter().map(|e| (e.ai, e.value)).collect())
    }

    #[test]
    fn element_strings_parse_as_published() {
        let ok: &[(&str, &[(&str, &str)])] = &[
            (
                "(01)09521234543213(3103)000123",
                &[("01", "09521234543213"), ("3103", "000123")],
            ),
            (
                "(01)09501101020917(17)190508(10)ABCD1234(21)10",
                &[
                    ("01", "09501101020917"),
                    ("17", "190508"),
                    ("10", "ABCD1234"),
                    ("21", "10"),
                ],
            ),
            ("(00)106141412345678908", &[("00", "106141412345678908")]),
            (
                "(01)09501101530003(3922)0123(8005)000365",
                &[
                    ("01", "09501101530003"),
                    ("3922", "0123"),
                    ("8005", "000365"),
                ],
            ),
            (
                "(414)5412345000013(254)32a",
                &[("414", "5412345000013"), ("254", "32a")],
            ),
            ("(17)201200", &[("17", "201200")]),
        ];
        for (input, expected) in ok {
            let got = parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            let expected: Vec<(String, String)> = expected
                .iter()
                .map(|(a, v)| (a.to_string(), v.to_string()))
                .collect();
            assert_eq!(got, expected, "{input}");
        }
    }

    #[test]
    fn invalid_element_strings_are_refused_with_the_reason() {
        type Reason = fn(&Gs1Error) -> bool;
        let refused: &[(&str, Reason)] = &[
            ("(01)09521234543214", |e| {
                matches!(e, Gs1Error::CheckDigit { .. })
            }),
            ("(00)106141412345678909", |e| {
                matches!(e, Gs1Error::CheckDigit { .. })
            }),
            ("(01)0952123454321", |e| {
                matches!(e, Gs1Error::Length { .. })
            }),
            ("(17)191308", |e| matches!(e, Gs1Error::Date { .. })),
            ("(3103)00012A", |e| matches!(e, Gs1Error::NotNumeric { .. })),
            ("(10)ABCDEFGHIJKLMNOPQRSTU", |e| {
                matches!(e, Gs1Error::Length { .. })
            }),
            ("(89)1234", |e| matches!(e, Gs1Error::UnknownAi(_))),
        ];
        for (input, reason) in refused {
            match parse(input) {
                Err(e) => assert!(reason(&e), "{input}: wrong reason {e}"),
                Ok(v) => panic!("{input} parsed as {v:?}"),
            }
        }
    }

    #[test]
    fn a_fixed_field_followed_by_a_separator_and_one_without_are_the_same() {
        let with = format!("0109501101530003{GS}17250101");
        let without = "010950110153000317250101";
        assert_eq!(parse_element_strings(&with), parse_element_strings(without));
        // A truncated field at the end never reads past the data.
        assert!(parse_element_strings("0109501101").is_err());
        assert!(parse_element_strings("391").is_err());
        assert!(parse_element_strings("é").is_err());
    }
}

/// The GS separator (ASCII 29) scanners send for FNC1 between variable-length fields; many
/// keyboard-wedge scanners send it as Ctrl+], which arrives as the same byte.
pub const GS: char = '\u{1d}';

/// Why element strings were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Gs1Error {
    #[error("unknown application identifier at {0:?}")]
    UnknownAi(String),
    #[error("AI ({ai}) needs {expected} characters, got {got:?}")]
    Length {
        ai: String,
        expected: String,
        got: String,
    },
    #[error("AI ({ai}) must be digits, got {got:?}")]
    NotNumeric { ai: String, got: String },
    #[error("AI ({ai}) {value} has a wrong check digit")]
    CheckDigit { ai: String, value: String },
    #[error("AI ({ai}) {value} is not a date YYMMDD")]
    Date { ai: String, value: String },
    #[error("no element strings")]
    Empty,
}

/// How an AI's value is written (GS1 General Specifications 3.2, the AI table).
#[derive(Debug, Clone, Copy)]
struct AiSpec {
    /// Digits of the AI itself.
    ai_len: usize,
    /// Exact value length, or `None` for variable.
    fixed: Option<usize>,
    max: usize,
    numeric: bool,
    check_digit: bool,
    date: bool,
}

const fn fixed_n(ai_len: usize, n: usize) -> AiSpec {
    AiSpec {
        ai_len,
        fixed: Some(n),
        max: n,
        numeric: true,
        check_digit: false,
        date: false,
    }
}

const fn var(ai_len: usize, max: usize, numeric: bool) -> AiSpec {
    AiSpec {
        ai_len,
        fixed: None,
        max,
        numeric,
        check_digit: false,
        date: false,
    }
}

const fn gtin_like(ai_len: usize, n: usize) -> AiSpec {
    AiSpec {
        check_digit: true,
        ..fixed_n(ai_len, n)
    }
}

const DATE: AiSpec = AiSpec {
    date: true,
    ..fixed_n(2, 6)
};

/// The AIs a store meets on packs, cases and coupons. An AI missing here is refused as unknown
/// rather than guessed at, since guessing its length would misread every field after it.
fn spec(data: &str) -> Option<(AiSpec, &str)> {
    let two = data.get(..2)?;
    let three = data.get(..3);
    let four = data.get(..4);
    let spec = match two {
        "00" => gtin_like(2, 18),
        "01" | "02" => gtin_like(2, 14),
        "10" | "21" | "22" => var(2, 20, false),
        "11" | "12" | "13" | "15" | "16" | "17" => DATE,
        "20" => fixed_n(2, 2),
        "30" | "37" => var(2, 8, true),
        "31" | "32" | "33" | "34" | "35" | "36" => {
            // Measures: 4-digit AI, the fourth digit the decimal point position.
            four.filter(|f| f.as_bytes()[3].is_ascii_digit())?;
            fixed_n(4, 6)
        }
        "39" => match three? {
            "390" | "392" => var(4, 15, true),
            "391" | "393" => var(4, 18, true),
            "394" => fixed_n(4, 4),
            _ => return None,
        },
        "23" | "24" | "25" => match three? {
            "235" => var(3, 28, false),
            "240" | "241" | "250" | "251" => var(3, 30, false),
            "242" => var(3, 6, true),
            "243" | "254" => var(3, 20, false),
            "253" => var(3, 30, false),
            "255" => var(3, 25, true),
            _ => return None,
        },
        "40" | "41" | "42" => match three? {
            "400" | "401" | "403" => var(3, 30, false),
            "402" => gtin_like(3, 17),
            "410" | "411" | "412" | "413" | "414" | "415" | "416" | "417" => gtin_like(3, 13),
            "420" => var(3, 20, false),
            "421" => var(3, 12, false),
            "422" => fixed_n(3, 3),
            "423" => var(3, 15, true),
            "424" | "425" | "426" => var(3, 15, true),
            _ => return None,
        },
        "70" => match four? {
            "7003" => fixed_n(4, 10),
            _ => return None,
        },
        "80" | "82" => match four? {
            "8003" | "8004" => var(4, 30, false),
            "8005" => fixed_n(4, 6),
            "8006" => fixed_n(4, 18),
            "8007" => var(4, 34, false),
            "8008" => var(4, 12, true),
            "8012" => var(4, 20, false),
            "8017" | "8018" => gtin_like(4, 18),
            "8020" => var(4, 25, false),
            "8200" => var(4, 70, false),
            _ => return None,
        },
        "90" => var(2, 30, false),
        "91" | "92" | "93" | "94" | "95" | "96" | "97" | "98" | "99" => var(2, 90, false),
        _ => return None,
    };
    Some((spec, data.get(..spec.ai_len)?))
}

/// AIs whose first two digits are in the "predefined length" table (GS1 General
/// Specifications figure 7.8.5-2) end without a separator; every other AI is ended by GS or the
/// end of the data, even when its own length is fixed.
fn predefined_length(ai: &str) -> bool {
    matches!(
        &ai[..2],
        "00" | "01"
            | "02"
            | "03"
            | "04"
            | "11"
            | "12"
            | "13"
            | "14"
            | "15"
            | "16"
            | "17"
            | "18"
            | "19"
            | "20"
            | "31"
            | "32"
            | "33"
            | "34"
            | "35"
            | "36"
            | "41"
    )
}

/// Parses GS1 element strings (the data of a GS1-128, GS1 DataMatrix, GS1 QR or DataBar, FNC1
/// already stripped, GS between variable-length fields).
pub fn parse_element_strings(data: &str) -> Result<Vec<super::ElementString>, Gs1Error> {
    let mut rest = data.trim_start_matches(GS);
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (spec, ai) =
            spec(rest).ok_or_else(|| Gs1Error::UnknownAi(rest.chars().take(4).collect()))?;
        let after_ai = &rest[ai.len()..];
        let (value, next) = if let (Some(n), true) = (spec.fixed, predefined_length(ai)) {
            let value = after_ai
                .get(..n)
                .filter(|v| !v.contains(GS))
                .ok_or_else(|| Gs1Error::Length {
                    ai: ai.into(),
                    expected: n.to_string(),
                    got: after_ai.chars().take(n).collect(),
                })?;
            (value, &after_ai[n..])
        } else {
            let end = after_ai.find(GS).unwrap_or(after_ai.len());
            (&after_ai[..end], &after_ai[end..])
        };
        let length_ok = match spec.fixed {
            Some(n) => value.len() == n,
            None => (1..=spec.max).contains(&value.len()),
        };
        if !length_ok {
            return Err(Gs1Error::Length {
                ai: ai.into(),
                expected: spec
                    .fixed
                    .map_or(format!("1 to {}", spec.max), |n| n.to_string()),
                got: value.into(),
            });
        }
        if spec.numeric && !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Gs1Error::NotNumeric {
                ai: ai.into(),
                got: value.into(),
            });
        }
        if spec.check_digit && !has_valid_check_digit(value) {
            return Err(Gs1Error::CheckDigit {
                ai: ai.into(),
                value: value.into(),
            });
        }
        if spec.date {
            let month: u32 = value[2..4].parse().unwrap_or(0);
            let day: u32 = value[4..6].parse().unwrap_or(99);
            // Day 00 means "end of month" (GS1 General Specifications 7.12).
            if !(1..=12).contains(&month) || day > 31 {
                return Err(Gs1Error::Date {
                    ai: ai.into(),
                    value: value.into(),
                });
            }
        }
        out.push(super::ElementString {
            ai: ai.to_string(),
            value: value.to_string(),
        });
        rest = next.trim_start_matches(GS);
    }
    if out.is_empty() {
        return Err(Gs1Error::Empty);
    }
    Ok(out)
}

/// Turns the human-readable form `(01)09501101020917(17)190508` into element strings with GS
/// separators, for `storegate decode` and tests. `None` if `text` is not in that form.
pub fn from_bracketed(text: &str) -> Option<String> {
    if !text.starts_with('(') {
        return None;
    }
    let mut out = String::new();
    for part in text.split('(').skip(1) {
        let (ai, value) = part.split_once(')')?;
        if ai.is_empty() || ai.len() > 4 || !ai.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if !out.is_empty() {
            out.push(GS);
        }
        out.push_str(ai);
        out.push_str(value);
    }
    Some(out)
}
