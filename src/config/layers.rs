//! Signed remote config layers (docs/protocol.md "Config layers"): what store IT signs and a
//! gateway checks. A layer is `{"layer","version","issued_at","body"}`; its exact JSON bytes are
//! signed with Ed25519 (no canonical-JSON question) and travel base64url-encoded beside the
//! signature and the signing key's id. A body may set only what a remote layer may set: never
//! the keys only the box knows (`LOCAL_ONLY`).
//!
//! This is the signing and checking half (used by `storegate config sign`); applying layers on
//! a running gateway builds on it.

use base64::Engine;
use ring::signature::{Ed25519KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};

use crate::codes::coupon::PublicKey;
use crate::protocol::SignedLayer;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Sections a remote layer may never set: who the box is, where its journal is, whose
/// signatures it trusts, its device paths, and its broker connection (a wrong broker pushed to
/// the fleet would cut every box off from the channel that could correct it).
pub const LOCAL_ONLY: &[&str] = &["gateway", "journal", "config", "devices", "mqtt"];

/// Which layer: they apply fleet < store < gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerName {
    /// Every box.
    Fleet,
    /// The boxes of one store.
    Store,
    /// One box.
    Gateway,
}

impl LayerName {
    /// The wire name (`fleet`, `store`, `gateway`).
    pub fn as_str(self) -> &'static str {
        match self {
            LayerName::Fleet => "fleet",
            LayerName::Store => "store",
            LayerName::Gateway => "gateway",
        }
    }
}

/// A layer's signed content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    /// Which layer.
    pub layer: LayerName,
    /// Higher than every earlier version of this layer (replays are refused).
    pub version: u64,
    /// When IT issued it (RFC 3339).
    pub issued_at: String,
    /// The partial config it sets, as JSON (sections and keys as in the TOML file).
    pub body: serde_json::Value,
}

/// Why a layer is refused; the code goes into the `config/state` report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayerRefusal {
    /// The payload or signature is not base64url, or the payload is not a layer.
    #[error("malformed: {0}")]
    Malformed(String),
    /// No trusted key verifies the signature.
    #[error("bad_signature: no key in config.trusted_keys verifies it")]
    BadSignature,
    /// The box trusts no key at all.
    #[error("no_trusted_keys: config.trusted_keys is empty, so no layer is accepted")]
    NoTrustedKeys,
    /// The body tries to set a key only the box may set.
    #[error("local_only_key: a remote layer may not set [{0}]")]
    LocalOnly(String),
}

/// Why a layer could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config layer: {0}")]
pub struct SignError(String);

impl Layer {
    /// Checks what a layer must be before anyone signs or applies it: a version from 1, an
    /// RFC 3339 `issued_at`, a body that is a table and names no local-only section.
    pub fn check(&self) -> Result<(), LayerRefusal> {
        if !crate::protocol::is_valid_seq(self.version) {
            return Err(LayerRefusal::Malformed(format!(
                "version {} is outside 1 .. 2^53-1",
                self.version
            )));
        }
        if humantime::parse_rfc3339_weak(&self.issued_at).is_err() {
            return Err(LayerRefusal::Malformed(
                "issued_at is not an RFC 3339 time".into(),
            ));
        }
        let body = self
            .body
            .as_object()
            .ok_or_else(|| LayerRefusal::Malformed("body must be a table".into()))?;
        if let Some(section) = body.keys().find(|k| LOCAL_ONLY.contains(&k.as_str())) {
            return Err(LayerRefusal::LocalOnly(section.clone()));
        }
        Ok(())
    }
}

/// Signs `layer` with a base64 PKCS#8 Ed25519 key (`storegate config keygen`'s
/// `private_key`); the result is the MQTT payload as docs/protocol.md gives it.
pub fn sign(private_key: &str, key_id: &str, layer: &Layer) -> Result<SignedLayer, SignError> {
    layer.check().map_err(|e| SignError(e.to_string()))?;
    let der = B64
        .decode(private_key.trim())
        .map_err(|e| SignError(format!("private key is not base64: {e}")))?;
    let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
        .map_err(|e| SignError(format!("private key is not an Ed25519 PKCS#8 key: {e}")))?;
    let bytes = serde_json::to_vec(layer).map_err(|e| SignError(e.to_string()))?;
    Ok(SignedLayer {
        key_id: key_id.to_string(),
        payload: B64URL.encode(&bytes),
        sig: B64URL.encode(pair.sign(&bytes).as_ref()),
    })
}

/// The layer inside `signed`, if a key in `trusted` signed exactly these bytes and the layer
/// is well-formed. Which key signed is tried, not taken from `key_id` (an id is a label for
/// people; the signature is what proves it).
pub fn verify(signed: &SignedLayer, trusted: &[PublicKey]) -> Result<Layer, LayerRefusal> {
    if trusted.is_empty() {
        return Err(LayerRefusal::NoTrustedKeys);
    }
    let bytes = B64URL
        .decode(&signed.payload)
        .map_err(|_| LayerRefusal::Malformed("payload is not base64url".into()))?;
    let sig = B64URL
        .decode(&signed.sig)
        .map_err(|_| LayerRefusal::Malformed("sig is not base64url".into()))?;
    let genuine = trusted.iter().any(|key| {
        UnparsedPublicKey::new(&ED25519, key.bytes())
            .verify(&bytes, &sig)
            .is_ok()
    });
    if !genuine {
        return Err(LayerRefusal::BadSignature);
    }
    let layer: Layer = serde_json::from_slice(&bytes)
        .map_err(|e| LayerRefusal::Malformed(format!("payload is not a layer: {e}")))?;
    layer.check()?;
    Ok(layer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(body: serde_json::Value) -> Layer {
        Layer {
            layer: LayerName::Store,
            version: 8,
            issued_at: "2026-11-26T09:00:00Z".into(),
            body,
        }
    }

    fn key() -> (String, PublicKey) {
        let key = crate::codes::coupon::generate_key().unwrap();
        let public = PublicKey::try_from(key.public_key.clone()).unwrap();
        (key.private_key, public)
    }

    #[test]
    fn a_signed_layer_verifies_with_its_key_and_nothing_else() {
        let (private, public) = key();
        let (_, other) = key();
        let body = serde_json::json!({ "coupons": { "offline_budget_hour_minor": 2000 } });
        let signed = sign(&private, "it-2026", &layer(body.clone())).unwrap();
        assert_eq!(
            verify(&signed, &[other.clone(), public.clone()])
                .unwrap()
                .body,
            body
        );
        assert_eq!(verify(&signed, &[other]), Err(LayerRefusal::BadSignature));
        assert_eq!(verify(&signed, &[]), Err(LayerRefusal::NoTrustedKeys));

        // One changed byte of the payload and the signature no longer holds.
        let mut bytes = B64URL.decode(&signed.payload).unwrap();
        let at = bytes.iter().position(|b| *b == b'2').unwrap();
        bytes[at] = b'9';
        let tampered = SignedLayer {
            payload: B64URL.encode(&bytes),
            ..signed.clone()
        };
        assert_eq!(
            verify(&tampered, std::slice::from_ref(&public)),
            Err(LayerRefusal::BadSignature)
        );
        let garbled = SignedLayer {
            sig: "not base64!".into(),
            ..signed
        };
        assert!(matches!(
            verify(&garbled, &[public]),
            Err(LayerRefusal::Malformed(_))
        ));
    }

    #[test]
    fn local_only_sections_and_bad_versions_are_refused_before_signing() {
        let (private, _) = key();
        for section in LOCAL_ONLY {
            let body = serde_json::json!({ *section: { "x": 1 } });
            assert!(sign(&private, "k", &layer(body)).is_err(), "{section}");
        }
        let mut zero = layer(serde_json::json!({}));
        zero.version = 0;
        assert!(sign(&private, "k", &zero).is_err());
        assert!(sign(&private, "k", &layer(serde_json::json!([1]))).is_err());
    }
}
