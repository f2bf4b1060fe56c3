//! Codes: what the text inside a barcode or QR code means. Every reader of codes (serial
//! scanners, the kiosk camera, `storegate decode`, `storegate scan-image`) hands its text here,
//! so a coupon is a coupon however it was read.
//!
//! With an AIM symbology identifier (a scanner's `]E0`, `]C1`, …) the symbology decides: EAN
//! and UPC codes are checked and expanded to a GTIN, GS1 symbols are parsed into element
//! strings. Otherwise (no identifier, a QR code, Code 128), the text is recognised, in this
//! order, as: storegate coupon tokens (`SGC1.<payload>.<sig>`, docs/protocol.md
//! "Coupons"; the structure is checked here, the Ed25519 signature by [`coupon::CouponKeys`]),
//! storegate app identity tokens (`SGA1.<token>`: the customer app's QR code, an `app`
//! identifier), GS1 Digital Link URIs (a GTIN with check digit, then qualifiers and attributes
//! as GS1 application identifiers), GS1 element strings in their bracketed form, a bare 8, 12
//! or 13 digit number with a valid check digit (a product code), and anything else as text.

mod aim;
pub mod coupon;
mod digital_link;
mod gs1;
pub mod magstripe;
mod retail;

pub use aim::Aim;
pub use digital_link::parse_digital_link;
pub use gs1::{check_digit, from_bracketed, has_valid_check_digit, parse_element_strings, GS};
pub use retail::{ean13, ean8, upca, upce, RetailError};

use serde::Serialize;

/// Prefix of a coupon token.
pub const COUPON_PREFIX: &str = "SGC1.";
/// Prefix of an app identity token.
pub const APP_PREFIX: &str = "SGA1.";
/// Longest text interpreted; a QR code holds at most 7,089 digits, a scanner line far less.
pub const MAX_TEXT: usize = 8 * 1024;

/// One GS1 application identifier and its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ElementString {
    /// The Application Identifier, e.g. `01`.
    pub ai: String,
    /// Its value as read.
    pub value: String,
}

/// What a code's text means.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Interpretation {
    /// A storegate coupon; `payload` is the coupon's JSON. Structure checked here; the gateway
    /// also verifies the signature ([`coupon::CouponKeys`]) before a till hears of it.
    CouponToken {
        /// The token as scanned.
        token: String,
        /// The coupon's payload JSON.
        payload: serde_json::Value,
    },
    /// The customer app's identity code: becomes an `app` identifier as given.
    AppIdentity {
        /// The token as scanned, `SGA1.` included.
        token: String,
    },
    /// A GS1 Digital Link URI.
    Gs1DigitalLink {
        /// The URI as scanned.
        uri: String,
        /// The GTIN it names (14 digits).
        gtin: String,
        /// Its element strings.
        elements: Vec<ElementString>,
    },
    /// A product barcode (EAN-13, EAN-8, UPC-A, UPC-E) with a valid check digit.
    Product {
        /// `ean13`, `ean8`, `upc_a` or `upc_e`.
        symbology: &'static str,
        /// The number as printed (for UPC-E, its UPC-A expansion).
        number: String,
        /// The GTIN, 14 digits.
        gtin: String,
    },
    /// GS1 element strings (GS1-128, GS1 DataMatrix, GS1 QR, DataBar).
    Gs1ElementStrings {
        /// The GTIN of AI 01 or 02, if present.
        #[serde(skip_serializing_if = "Option::is_none")]
        gtin: Option<String>,
        /// Every element string, in order.
        elements: Vec<ElementString>,
    },
    /// Magnetic stripe track data: which tracks were read, and the account number masked
    /// (the number itself is only for the identity part, never published).
    MagneticStripe {
        /// Which tracks were read (1, 2).
        tracks: Vec<u8>,
        /// The account number with all but its last digits masked.
        masked_number: String,
    },
    /// Anything else. `probable_misread` marks a digit string the length of an EAN/UPC code
    /// whose check digit fits none of them: likely a misread product code, though some
    /// stores print check-digit-free numbers in Code 128, so the text is kept and the till
    /// decides (`storegate decode --strict` refuses it).
    Text {
        /// The text as read.
        text: String,
        /// A digit string the length of an EAN/UPC whose check digit fits none.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        probable_misread: bool,
    },
}

/// Why a code was refused. The text looked like one of ours (or like a GS1 link) but is broken;
/// it is never silently downgraded to plain text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    /// Longer than any code a till reads.
    #[error("the code holds {0} bytes; at most 8 KiB is a code")]
    TooLong(usize),
    /// A coupon token that is broken.
    #[error("coupon token: {0}")]
    Coupon(String),
    /// An app identity token that is broken.
    #[error("app token: {0}")]
    App(String),
    /// A GS1 Digital Link that is broken.
    #[error("GS1 Digital Link: {0}")]
    DigitalLink(String),
    /// An EAN/UPC with a wrong check digit or length.
    #[error(transparent)]
    Retail(#[from] RetailError),
    /// GS1 element strings that break the AI rules.
    #[error("GS1 element strings: {0}")]
    Gs1(#[from] gs1::Gs1Error),
    /// Magnetic stripe data that breaks ISO 7811.
    #[error("magnetic stripe: {0}")]
    Tracks(#[from] magstripe::TrackError),
    /// A control character (keystroke injection, scanner programming).
    #[error("control character {0:#04x} in scanned data (scanner programming codes and keystroke injection are refused)")]
    ControlCharacter(u32),
}

/// A card number as it may be shown: stars for all but its last four characters (ASCII digits
/// here; characters are counted, so any text masks without splitting one).
pub fn mask_number(number: &str) -> String {
    let count = number.chars().count();
    let shown = count.min(4);
    let tail: String = number.chars().skip(count - shown).collect();
    format!("{}{tail}", "*".repeat(count - shown))
}

/// Interprets what a scanner sent: an optional AIM identifier (already split off) and the data.
pub fn interpret_scan(aim: Option<Aim>, data: &str) -> Result<Interpretation, CodeError> {
    if data.len() > MAX_TEXT {
        return Err(CodeError::TooLong(data.len()));
    }
    // GS separates GS1 fields; tab and newline occur in some QR payloads. Anything else is a
    // terminal or keyboard control code, the tool of "BadBarcode" attacks.
    if let Some(c) = data
        .chars()
        .find(|c| c.is_control() && !matches!(*c, GS | '\t' | '\n' | '\r'))
    {
        return Err(CodeError::ControlCharacter(u32::from(c)));
    }
    let Some(aim) = aim else {
        return interpret(data);
    };
    match (aim.code, aim.modifier) {
        ('E', '0') if data.len() == 12 => product("upc_a", data, upca(data)?),
        ('E', '0') if data.len() == 8 => {
            let (upca_number, gtin) = upce(data)?;
            product("upc_e", &upca_number, gtin)
        }
        ('E', '0') => {
            let gtin = ean13(data)?;
            // A UPC-A travels as an EAN-13 with a leading zero.
            let symbology = if data.starts_with('0') {
                "upc_a"
            } else {
                "ean13"
            };
            product(symbology, data, gtin)
        }
        ('E', '4') => product("ean8", data, ean8(data)?),
        _ if aim.is_gs1() => gs1_strings(data),
        _ => interpret(data),
    }
}

fn product(
    symbology: &'static str,
    number: &str,
    gtin: String,
) -> Result<Interpretation, CodeError> {
    Ok(Interpretation::Product {
        symbology,
        number: number.to_string(),
        gtin,
    })
}

fn gs1_strings(data: &str) -> Result<Interpretation, CodeError> {
    let elements = parse_element_strings(data)?;
    let gtin = elements
        .iter()
        .find(|e| e.ai == "01" || e.ai == "02")
        .map(|e| e.value.clone());
    Ok(Interpretation::Gs1ElementStrings { gtin, elements })
}

/// Interprets the text of a code.
pub fn interpret(text: &str) -> Result<Interpretation, CodeError> {
    if text.len() > MAX_TEXT {
        return Err(CodeError::TooLong(text.len()));
    }
    if text.starts_with(COUPON_PREFIX) {
        return coupon(text);
    }
    if let Some(rest) = text.strip_prefix(APP_PREFIX) {
        let ok = (8..=512).contains(&rest.len())
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(CodeError::App(
                "the token after SGA1. must be 8 to 512 characters of A-Z a-z 0-9 - _".into(),
            ));
        }
        return Ok(Interpretation::AppIdentity {
            token: text.to_string(),
        });
    }
    if let Some(link) = parse_digital_link(text)? {
        return Ok(link);
    }
    if magstripe::looks_like_tracks(text) {
        let tracks = magstripe::parse_tracks(text)?;
        let pan = tracks
            .track2
            .as_ref()
            .map(|t| t.pan.clone())
            .or_else(|| tracks.track1.as_ref().map(|t| t.pan.clone()))
            .unwrap_or_default();
        let masked_number = mask_number(&pan);
        let numbers = [
            tracks.track1.as_ref().map(|_| 1),
            tracks.track2.as_ref().map(|_| 2),
        ];
        return Ok(Interpretation::MagneticStripe {
            tracks: numbers.into_iter().flatten().collect(),
            masked_number,
        });
    }
    if let Some(strings) = from_bracketed(text) {
        return gs1_strings(&strings);
    }
    let mut probable_misread = false;
    if text.bytes().all(|b| b.is_ascii_digit()) && matches!(text.len(), 8 | 12 | 13) {
        // Without a symbology identifier a bare number may be a product code or anything else
        // (a loyalty card, an order number): only a valid check digit makes it a product.
        // As biip does, every retail code of that length is tried, UPC-E included.
        if let Some(found) = bare_retail_code(text) {
            return Ok(found);
        }
        probable_misread = true;
    }
    Ok(Interpretation::Text {
        text: text.to_string(),
        probable_misread,
    })
}

/// The EAN/UPC code a bare digit string of 8, 12 or 13 digits is, if its check digit fits.
fn bare_retail_code(text: &str) -> Option<Interpretation> {
    let found = match text.len() {
        13 => ean13(text).ok().map(|g| ("ean13", text.to_string(), g)),
        12 => upca(text).ok().map(|g| ("upc_a", text.to_string(), g)),
        8 => ean8(text)
            .ok()
            .map(|g| ("ean8", text.to_string(), g))
            .or_else(|| upce(text).ok().map(|(number, g)| ("upc_e", number, g))),
        _ => None,
    };
    found.map(|(symbology, number, gtin)| Interpretation::Product {
        symbology,
        number,
        gtin,
    })
}

/// The coupon's structure; its signature is checked by whoever holds the configured keys
/// ([`coupon::CouponKeys`]): the gateway before a scan reaches a till.
fn coupon(token: &str) -> Result<Interpretation, CodeError> {
    let parts = coupon::parse(token)?;
    Ok(Interpretation::CouponToken {
        token: token.to_string(),
        payload: parts.payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn token(payload: &str, signature_len: usize) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "SGC1.{}.{}",
            b64.encode(payload),
            b64.encode(vec![7u8; signature_len])
        )
    }

    #[test]
    fn recognises_coupons_app_tokens_links_and_text() {
        let coupon = token(r#"{"id":"c-1","kind":"percent","value":10}"#, 64);
        match interpret(&coupon).unwrap() {
            Interpretation::CouponToken { payload, .. } => assert_eq!(payload["id"], "c-1"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            interpret("SGA1.u7Kq2mZx9Lp3").unwrap(),
            Interpretation::AppIdentity {
                token: "SGA1.u7Kq2mZx9Lp3".into()
            }
        );
        assert!(matches!(
            interpret("https://id.gs1.org/01/09506000134352").unwrap(),
            Interpretation::Gs1DigitalLink { .. }
        ));
        assert_eq!(
            interpret("hello").unwrap(),
            Interpretation::Text {
                text: "hello".into(),
                probable_misread: false,
            }
        );
    }

    #[test]
    fn scanner_data_is_read_by_its_symbology() {
        let scan = |raw: &str| {
            let (aim, data) = Aim::split(raw);
            interpret_scan(aim, data)
        };
        assert_eq!(
            scan("]E04006381333931").unwrap(),
            Interpretation::Product {
                symbology: "ean13",
                number: "4006381333931".into(),
                gtin: "04006381333931".into()
            }
        );
        assert!(matches!(
            scan("]E04006381333932"),
            Err(CodeError::Retail(RetailError::CheckDigit { .. }))
        ));
        assert!(matches!(
            scan("]E004252614").unwrap(),
            Interpretation::Product { symbology: "upc_e", ref number, .. } if number == "042100005264"
        ));
        match scan("]C1010950110153000310ABC\u{1d}21XYZ").unwrap() {
            Interpretation::Gs1ElementStrings { gtin, elements } => {
                assert_eq!(gtin.as_deref(), Some("09501101530003"));
                assert_eq!(elements.len(), 3);
            }
            other => panic!("{other:?}"),
        }
        // No AIM: a bare number is a product only with a valid check digit.
        assert!(matches!(
            scan("96385074").unwrap(),
            Interpretation::Product { .. }
        ));
        assert!(matches!(
            scan("96385075").unwrap(),
            Interpretation::Text {
                probable_misread: true,
                ..
            }
        ));
        // As the biip GS1 library reads them: a UPC-E without AIM is expanded, a 13-digit
        // string with a wrong check digit is not a plain text.
        assert!(matches!(
            scan("04252614").unwrap(),
            Interpretation::Product { symbology: "upc_e", ref gtin, .. } if gtin == "00042100005264"
        ));
        assert!(matches!(
            scan("4006381333932").unwrap(),
            Interpretation::Text {
                probable_misread: true,
                ..
            }
        ));
        assert!(matches!(
            scan("1234567").unwrap(),
            Interpretation::Text {
                probable_misread: false,
                ..
            }
        ));
        // Keystroke injection and scanner programming codes.
        assert_eq!(
            scan("abc\u{1b}[31m"),
            Err(CodeError::ControlCharacter(0x1b))
        );
        assert_eq!(scan("\u{4}"), Err(CodeError::ControlCharacter(4)));
    }

    #[test]
    fn broken_tokens_are_refused_not_treated_as_text() {
        assert!(matches!(interpret("SGC1.nodot"), Err(CodeError::Coupon(_))));
        assert!(matches!(
            interpret(&token(r#"{"id":"c-1"}"#, 10)),
            Err(CodeError::Coupon(m)) if m.contains("64 bytes")
        ));
        assert!(matches!(
            interpret(&token("not json", 64)),
            Err(CodeError::Coupon(_))
        ));
        assert!(matches!(
            interpret(&token(r#"{"value":1}"#, 64)),
            Err(CodeError::Coupon(_))
        ));
        assert!(matches!(interpret("SGA1.short"), Err(CodeError::App(_))));
        assert!(matches!(
            interpret(&"x".repeat(MAX_TEXT + 1)),
            Err(CodeError::TooLong(_))
        ));
    }
}
