//! Codes: what the text inside a barcode or QR code means. Every reader of codes (serial
//! scanners, the kiosk camera, `storegate decode`, `storegate scan-image`) hands its text here,
//! so a coupon is a coupon however it was read.
//!
//! Recognised, in this order: storegate coupon tokens (`SGC1.<payload>.<sig>`, PROTOCOL.md
//! "Coupons"; the structure is checked here, the signature when the coupon is redeemed),
//! storegate app identity tokens (`SGA1.<token>`: the customer app's QR code, an `app`
//! identifier), GS1 Digital Link URIs (a GTIN with check digit, then qualifiers and attributes
//! as GS1 application identifiers), and anything else as plain text.

mod digital_link;
mod gs1;

pub use digital_link::parse_digital_link;
pub use gs1::{check_digit, has_valid_check_digit};

use base64::Engine;
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
    pub ai: String,
    pub value: String,
}

/// What a code's text means.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Interpretation {
    /// A storegate coupon; `payload` is the coupon's JSON. Not verified yet.
    CouponToken {
        token: String,
        payload: serde_json::Value,
    },
    /// The customer app's identity code: becomes an `app` identifier as given.
    AppIdentity { token: String },
    /// A GS1 Digital Link URI.
    Gs1DigitalLink {
        uri: String,
        gtin: String,
        elements: Vec<ElementString>,
    },
    /// Anything else.
    Text { text: String },
}

/// Why a code was refused. The text looked like one of ours (or like a GS1 link) but is broken;
/// it is never silently downgraded to plain text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error("the code holds {0} bytes; at most 8 KiB is a code")]
    TooLong(usize),
    #[error("coupon token: {0}")]
    Coupon(String),
    #[error("app token: {0}")]
    App(String),
    #[error("GS1 Digital Link: {0}")]
    DigitalLink(String),
}

/// Interprets the text of a code.
pub fn interpret(text: &str) -> Result<Interpretation, CodeError> {
    if text.len() > MAX_TEXT {
        return Err(CodeError::TooLong(text.len()));
    }
    if let Some(rest) = text.strip_prefix(COUPON_PREFIX) {
        return coupon(text, rest);
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
    Ok(Interpretation::Text {
        text: text.to_string(),
    })
}

fn coupon(token: &str, rest: &str) -> Result<Interpretation, CodeError> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (payload, signature) = rest
        .split_once('.')
        .ok_or_else(|| CodeError::Coupon("needs SGC1.<payload>.<signature>".into()))?;
    let payload = b64
        .decode(payload)
        .map_err(|e| CodeError::Coupon(format!("payload is not base64url: {e}")))?;
    let signature = b64
        .decode(signature)
        .map_err(|e| CodeError::Coupon(format!("signature is not base64url: {e}")))?;
    if signature.len() != 64 {
        return Err(CodeError::Coupon(format!(
            "an Ed25519 signature has 64 bytes, this one {}",
            signature.len()
        )));
    }
    let payload: serde_json::Value = serde_json::from_slice(&payload)
        .map_err(|e| CodeError::Coupon(format!("payload is not JSON: {e}")))?;
    if !payload.get("id").is_some_and(|id| id.is_string()) {
        return Err(CodeError::Coupon("payload has no string `id`".into()));
    }
    Ok(Interpretation::CouponToken {
        token: token.to_string(),
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
                text: "hello".into()
            }
        );
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
