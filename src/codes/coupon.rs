//! Signed coupon tokens (docs/protocol.md "Coupons"): `SGC1.<payload>.<signature>`, both base64url
//! without padding, the signature Ed25519 over the payload bytes by a fleet coupon key. The
//! gateway verifies offline against the public keys in its config (several, for rotation); a
//! token that verifies with none of them is a forgery or from a retired key, and is refused
//! like a broken barcode. Signing lives here too, for `storegate coupon issue` and for tests.

use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::Serialize;

use super::{CodeError, COUPON_PREFIX};

const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A coupon's parts after the structure checks, before any signature check.
pub struct CouponParts {
    /// The payload's bytes, as signed.
    pub payload_bytes: Vec<u8>,
    /// The Ed25519 signature.
    pub signature: Vec<u8>,
    /// The payload, parsed.
    pub payload: serde_json::Value,
}

/// Splits and checks a token's structure: the prefix, both parts base64url, a 64-byte
/// signature, a JSON object payload with a string `id`, `kind` "percent" or "amount", and a
/// non-negative integer `value`.
pub fn parse(token: &str) -> Result<CouponParts, CodeError> {
    let refuse = |m: String| CodeError::Coupon(m);
    let rest = token
        .strip_prefix(COUPON_PREFIX)
        .ok_or_else(|| refuse(format!("does not start with {COUPON_PREFIX}")))?;
    let (payload, signature) = rest
        .split_once('.')
        .ok_or_else(|| refuse("needs SGC1.<payload>.<signature>".into()))?;
    let payload_bytes = B64URL
        .decode(payload)
        .map_err(|e| refuse(format!("payload is not base64url: {e}")))?;
    let signature = B64URL
        .decode(signature)
        .map_err(|e| refuse(format!("signature is not base64url: {e}")))?;
    if signature.len() != 64 {
        return Err(refuse(format!(
            "an Ed25519 signature has 64 bytes, this one {}",
            signature.len()
        )));
    }
    let payload: serde_json::Value = serde_json::from_slice(&payload_bytes)
        .map_err(|e| refuse(format!("payload is not JSON: {e}")))?;
    check_payload(&payload)?;
    Ok(CouponParts {
        payload_bytes,
        signature,
        payload,
    })
}

fn check_payload(payload: &serde_json::Value) -> Result<(), CodeError> {
    let refuse = |m: &str| Err(CodeError::Coupon(m.into()));
    if !payload.is_object() {
        return refuse("payload is not a JSON object");
    }
    if !payload.get("id").is_some_and(|id| id.is_string()) {
        return refuse("payload has no string `id`");
    }
    if !matches!(
        payload.get("kind").and_then(|k| k.as_str()),
        Some("percent" | "amount")
    ) {
        return refuse("payload `kind` is neither \"percent\" nor \"amount\"");
    }
    if !payload.get("value").is_some_and(|v| v.is_u64()) {
        return refuse("payload `value` is not a non-negative integer");
    }
    Ok(())
}

/// Why a coupon token is not a genuine one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not a well-formed token (truncated, not base64url, payload fields missing).
    #[error(transparent)]
    Malformed(CodeError),
    /// No coupon key is configured, so no token can be trusted (an Ed25519 signature does not
    /// say which key made it: a token of a key this box does not hold is a `BadSignature`).
    #[error("no coupon keys are configured (coupons.public_keys), so none can be trusted")]
    UnknownKey,
    /// The signature verifies with none of the configured keys: forged, altered, or signed by
    /// a retired key.
    #[error("the signature does not verify with any configured coupon key (forged, altered, or a retired key)")]
    BadSignature,
}

/// The coupon public keys a gateway honours.
#[derive(Debug, Clone, Default)]
pub struct CouponKeys {
    keys: Vec<Vec<u8>>,
}

/// An Ed25519 public key (coupon keys, config-signing keys), checked when config loads:
/// standard base64 of 32 bytes.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct PublicKey(Vec<u8>);

impl TryFrom<String> for PublicKey {
    type Error = String;

    fn try_from(text: String) -> Result<PublicKey, String> {
        decode_ed25519_public_key(&text).map(PublicKey)
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&B64.encode(&self.0))
    }
}

impl PublicKey {
    /// The 32 key bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", B64.encode(&self.0))
    }
}

/// A coupon key that could not be read or made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("coupon key: {0}")]
pub struct KeyError(String);

impl CouponKeys {
    /// From config's `coupons.public_keys`, already checked when config loaded.
    pub fn new(keys: &[PublicKey]) -> CouponKeys {
        CouponKeys {
            keys: keys.iter().map(|k| k.0.clone()).collect(),
        }
    }

    /// From base64 texts (standard, 32 bytes each), as `storegate coupon verify` takes them.
    pub fn from_base64(keys: &[String]) -> Result<CouponKeys, KeyError> {
        let keys = keys
            .iter()
            .map(|k| decode_ed25519_public_key(k).map_err(KeyError))
            .collect::<Result<_, _>>()?;
        Ok(CouponKeys { keys })
    }

    /// The payload of a token whose structure is sound and whose signature verifies with one of
    /// the keys.
    pub fn verify(&self, token: &str) -> Result<serde_json::Value, CodeError> {
        self.check(token).map_err(|refusal| match refusal {
            Refusal::Malformed(error) => error,
            other => CodeError::Coupon(other.to_string()),
        })
    }

    /// `verify`, telling why a token is refused.
    pub fn check(&self, token: &str) -> Result<serde_json::Value, Refusal> {
        let parts = parse(token).map_err(Refusal::Malformed)?;
        if self.keys.is_empty() {
            return Err(Refusal::UnknownKey);
        }
        let verifies = self.keys.iter().any(|key| {
            UnparsedPublicKey::new(&ED25519, key)
                .verify(&parts.payload_bytes, &parts.signature)
                .is_ok()
        });
        if verifies {
            Ok(parts.payload)
        } else {
            Err(Refusal::BadSignature)
        }
    }
}

/// A new coupon signing key: the private half as base64 PKCS#8 (what `issue` takes; keep it
/// off the boxes), the public half as base64 (what `coupons.public_keys` takes).
#[derive(Debug, Clone, Serialize)]
pub struct NewKey {
    /// Base64 PKCS#8; stays where coupons are issued.
    pub private_key: String,
    /// Base64 (32 bytes), for `coupons.public_keys`.
    pub public_key: String,
}

/// A new Ed25519 coupon key pair.
pub fn generate_key() -> Result<NewKey, KeyError> {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| KeyError("the system random generator failed".into()))?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|e| KeyError(format!("generated key rejected: {e}")))?;
    Ok(NewKey {
        private_key: B64.encode(pkcs8.as_ref()),
        public_key: B64.encode(pair.public_key().as_ref()),
    })
}

/// Checks that `private_key` is a base64 PKCS#8 Ed25519 key that can sign coupons.
pub fn check_private_key(private_key: &str) -> Result<(), CodeError> {
    let der = B64
        .decode(private_key.trim())
        .map_err(|e| CodeError::Coupon(format!("private key is not base64: {e}")))?;
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
        .map(|_| ())
        .map_err(|e| CodeError::Coupon(format!("private key is not an Ed25519 PKCS#8 key: {e}")))
}

/// Signs `payload` (checked like a scanned coupon's) with a base64 PKCS#8 Ed25519 key (from
/// `generate_key`, or `openssl genpkey -algorithm ed25519 -outform DER | base64`).
pub fn issue(private_key: &str, payload: &serde_json::Value) -> Result<String, CodeError> {
    check_payload(payload)?;
    let der = B64
        .decode(private_key.trim())
        .map_err(|e| CodeError::Coupon(format!("private key is not base64: {e}")))?;
    let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
        .map_err(|e| CodeError::Coupon(format!("private key is not an Ed25519 PKCS#8 key: {e}")))?;
    let payload_bytes = serde_json::to_vec(payload)
        .map_err(|e| CodeError::Coupon(format!("payload does not serialise: {e}")))?;
    let signature = pair.sign(&payload_bytes);
    Ok(format!(
        "{COUPON_PREFIX}{}.{}",
        B64URL.encode(&payload_bytes),
        B64URL.encode(signature.as_ref())
    ))
}

/// An Ed25519 public key as config holds it (coupon keys, config-signing keys): standard
/// base64 of 32 bytes.
pub fn decode_ed25519_public_key(text: &str) -> Result<Vec<u8>, String> {
    let bytes = B64
        .decode(text.trim())
        .map_err(|e| format!("not valid base64: {e}"))?;
    if bytes.len() == 32 {
        Ok(bytes)
    } else {
        Err(format!(
            "an Ed25519 public key is 32 bytes, this one is {}",
            bytes.len()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn payload() -> serde_json::Value {
        json!({"id": "c-1", "campaign": "spring", "kind": "percent", "value": 10, "offline": true})
    }

    #[test]
    fn an_issued_coupon_verifies_with_its_key_and_after_a_rotation() {
        let old = generate_key().unwrap();
        let new = generate_key().unwrap();
        let token = issue(&old.private_key, &payload()).unwrap();
        let keys = CouponKeys::from_base64(&[new.public_key.clone(), old.public_key]).unwrap();
        assert_eq!(keys.verify(&token).unwrap()["id"], "c-1");
        let only_new = CouponKeys::from_base64(&[new.public_key]).unwrap();
        assert!(
            matches!(only_new.verify(&token), Err(CodeError::Coupon(m)) if m.contains("does not verify"))
        );
    }

    #[test]
    fn an_altered_payload_or_signature_is_refused() {
        let key = generate_key().unwrap();
        let keys = CouponKeys::from_base64(&[key.public_key]).unwrap();
        let token = issue(&key.private_key, &payload()).unwrap();
        let (head, signature) = token.rsplit_once('.').unwrap();
        // Same structure, ten times the discount, the original signature.
        let richer = json!({"id": "c-1", "campaign": "spring", "kind": "percent", "value": 100, "offline": true});
        let forged = format!(
            "{COUPON_PREFIX}{}.{signature}",
            B64URL.encode(serde_json::to_vec(&richer).unwrap())
        );
        assert!(keys.verify(&forged).is_err());
        let mut bytes = B64URL.decode(signature).unwrap();
        bytes[0] ^= 1;
        assert!(keys
            .verify(&format!("{head}.{}", B64URL.encode(bytes)))
            .is_err());
        assert!(keys.verify(&token).is_ok());
    }

    #[test]
    fn without_keys_nothing_is_trusted_and_bad_keys_are_refused() {
        let key = generate_key().unwrap();
        let token = issue(&key.private_key, &payload()).unwrap();
        let none = CouponKeys::from_base64(&[]).unwrap();
        assert!(
            matches!(none.verify(&token), Err(CodeError::Coupon(m)) if m.contains("no coupon keys"))
        );
        assert!(CouponKeys::from_base64(&["AAAA".into()]).is_err());
        assert!(CouponKeys::from_base64(&["not base64!".into()]).is_err());
    }

    #[test]
    fn payloads_without_the_protocol_fields_are_neither_issued_nor_accepted() {
        let key = generate_key().unwrap();
        for bad in [
            json!({"kind": "percent", "value": 10}),
            json!({"id": "c-1", "kind": "free", "value": 10}),
            json!({"id": "c-1", "kind": "amount", "value": -5}),
            json!(["c-1"]),
        ] {
            assert!(issue(&key.private_key, &bad).is_err(), "{bad}");
        }
        assert!(issue("bm90IGEga2V5", &payload()).is_err());
    }
}
