//! Identity: turns what a reader or till saw (a card, a phone, an email, an app token) into
//! docs/protocol.md identifiers — hex HMAC-SHA256 of the normalised value under the fleet key, so raw
//! numbers never leave the box — and into the profile ref the customer is known by here. A
//! customer this box has never seen gets a provisional ref `prov:<gateway>:<ulid>` at once,
//! offline or not; central later merges it into a profile (docs/protocol.md "Identity").
//!
//! The owner type [`Identity`] serialises identifications, so one card tapped on two readers at
//! the same instant still gets one ref, and records each `identity_seen` together with its
//! hash → ref pairs in one journal transaction. What this box knows of customers lives in the
//! journal alone (`identity_refs`, `profile_views`), so an erasure from central
//! (`changes.rs`) leaves no copy behind in memory.

pub mod alias;
pub mod changes;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::Arc;

use tokio::sync::{watch, Mutex};

use crate::sync::RpcClient;

use crate::journal::{
    AppendError, Appended, AsyncOutbox, CachedProfile, IdentityRef, Journal, JournalError, NewEvent,
};
use crate::protocol::{EventKind, Identifier, IdentifierKind};

/// Shortest normalised value that can identify anyone (docs/protocol.md: fewer than 6 significant
/// characters is junk).
const MIN_SIGNIFICANT: usize = 6;
/// Longest value we hash; anything longer is not an identifier a human or card carries.
const MAX_VALUE: usize = 256;

/// Why a raw value cannot become an identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentifierError {
    /// Fewer significant characters than can identify anyone.
    #[error("{0} is empty or too short to identify anyone (fewer than 6 significant characters)")]
    TooShort(&'static str),
    /// All one digit (a test card, a stuck reader).
    #[error("{0} is one digit repeated, which is a test or placeholder value")]
    Repeated(&'static str),
    /// Not a phone number in E.164 form.
    #[error("a phone must be E.164: + then 8 to 15 digits")]
    NotE164,
    /// Not an email address.
    #[error("an email needs one @ with a name before it and a domain with a dot after it")]
    NotEmail,
    /// Longer than any identifier.
    #[error("{0} is longer than 256 characters")]
    TooLong(&'static str),
}

/// Why an identification was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// No `identity.hmac_key` is configured.
    #[error("no identity.hmac_key is configured, so customers cannot be identified")]
    NoKey,
    /// The identifier was refused.
    #[error(transparent)]
    Identifier(#[from] IdentifierError),
    /// The journal refused the event.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// The journal could not be read.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// docs/protocol.md normalisation: card = digits only; phone = E.164; email = trimmed, lower-cased;
/// app = as given. Junk is refused.
pub fn normalise(kind: IdentifierKind, raw: &str) -> Result<String, IdentifierError> {
    let name = kind.as_str();
    if raw.len() > MAX_VALUE {
        return Err(IdentifierError::TooLong(name));
    }
    let value = match kind {
        IdentifierKind::Card => raw.chars().filter(char::is_ascii_digit).collect::<String>(),
        IdentifierKind::Phone => {
            let compact: String = raw
                .chars()
                .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.'))
                .collect();
            let digits = compact.strip_prefix('+').ok_or(IdentifierError::NotE164)?;
            if !(8..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(IdentifierError::NotE164);
            }
            compact
        }
        IdentifierKind::Email => {
            let email = raw.trim().to_lowercase();
            let (local, domain) = email.split_once('@').ok_or(IdentifierError::NotEmail)?;
            if local.is_empty()
                || domain.contains('@')
                || !domain.contains('.')
                || domain.starts_with('.')
                || domain.ends_with('.')
            {
                return Err(IdentifierError::NotEmail);
            }
            email
        }
        IdentifierKind::App => raw.to_string(),
    };
    let significant: Vec<char> = value.chars().filter(|c| c.is_alphanumeric()).collect();
    if significant.len() < MIN_SIGNIFICANT {
        return Err(IdentifierError::TooShort(name));
    }
    if matches!(kind, IdentifierKind::Card | IdentifierKind::Phone)
        && significant.iter().all(|c| *c == significant[0])
    {
        return Err(IdentifierError::Repeated(name));
    }
    Ok(value)
}

/// The card number of an NFC card: its UID read as one big-endian number, in decimal,
/// zero-padded to the width of the largest UID of that length. Card identifiers are digits
/// only (docs/protocol.md); the padding keeps a 4-byte UID from meeting a 7-byte one that starts
/// with zero bytes.
pub fn card_number_from_uid(uid: &[u8]) -> String {
    let uid = &uid[..uid.len().min(15)];
    let number = uid
        .iter()
        .fold(0u128, |number, byte| (number << 8) | u128::from(*byte));
    let largest = (1u128 << (8 * uid.len())) - 1;
    let width = largest.to_string().len();
    format!("{number:0width$}")
}

/// An identifier as a till or the web shop sends it, before hashing: the raw value, which is
/// hashed at once and never stored, logged or published (the HTTP bodies of
/// `POST /v1/customers/identify` and central's `POST /v1/customers`).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentifier {
    /// What kind of identifier.
    pub kind: IdentifierKind,
    /// The value as entered or read.
    pub value: String,
    /// For phones and emails: whether the customer proved they own it.
    #[serde(default)]
    pub verified: Option<bool>,
}

/// What an identification recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The profile the customer resolves to now (through central's merges).
    pub customer: String,
    /// Where the customer was found: `local` (this box knew an identifier), `central` (by
    /// `profile.lookup` within the lookup timeout) or `provisional` (a new `prov:` ref).
    pub known: &'static str,
    /// The `identity_seen` event; it keeps the ref the identification was made with.
    pub event: Appended,
}

/// The fleet identity key (`[identity] hmac_key`: base64 of at least 16 bytes), decoded when
/// config loads. Its `Debug` never shows the key.
#[derive(Clone, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct HmacKey(Vec<u8>);

impl TryFrom<String> for HmacKey {
    type Error = String;

    fn try_from(text: String) -> Result<HmacKey, String> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| format!("not valid base64: {e}"))?;
        if bytes.len() < 16 {
            return Err("needs at least 16 bytes of key material (base64)".into());
        }
        Ok(HmacKey(bytes))
    }
}

impl HmacKey {
    /// The identifier for a raw value: normalised, checked, and hashed under this key. The
    /// one place a raw card number, phone or email becomes a hash, at the gateway and at
    /// central's online channel alike.
    pub fn identifier(
        &self,
        kind: IdentifierKind,
        raw: &str,
        verified: Option<bool>,
    ) -> Result<Identifier, IdentifierError> {
        let value = normalise(kind, raw)?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0)
            .map_err(|_| IdentifierError::TooShort("key"))?;
        mac.update(value.as_bytes());
        let hash = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let verified = match kind {
            IdentifierKind::Phone | IdentifierKind::Email => Some(verified.unwrap_or(false)),
            IdentifierKind::Card | IdentifierKind::App => None,
        };
        Ok(Identifier {
            kind,
            hash,
            verified,
        })
    }
}

impl std::fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacKey(<secret>)")
    }
}

/// The identity part's owner.
pub struct Identity {
    key: Option<HmacKey>,
    gateway: String,
    journal: Journal,
    /// Reads of `identity_refs`, over a connection kept for them.
    reads: AsyncOutbox,
    /// One identification at a time: the second of two simultaneous taps of a new card finds
    /// the first one's ref.
    serial: Mutex<()>,
    central: Option<Central>,
}

/// How identification asks central, when it can.
struct Central {
    rpc: RpcClient,
    /// The till never waits longer than this for central (`[identity] lookup_timeout_ms`).
    timeout: std::time::Duration,
    aliases: watch::Receiver<Arc<alias::Aliases>>,
}

impl Identity {
    /// `hmac_key` is the fleet key from config (`None`: identification refused).
    pub fn new(
        hmac_key: Option<&HmacKey>,
        gateway: &str,
        journal: Journal,
    ) -> Result<Identity, JournalError> {
        let key = hmac_key.cloned();
        let reads = AsyncOutbox::new(journal.outbox()?);
        Ok(Identity {
            key,
            gateway: gateway.to_string(),
            journal,
            reads,
            serial: Mutex::new(()),
            central: None,
        })
    }

    /// Asks central (`profile.lookup`, at most `timeout`) for customers this box does not know,
    /// and resolves refs through `aliases`.
    pub fn with_central(
        mut self,
        rpc: RpcClient,
        timeout: std::time::Duration,
        aliases: watch::Receiver<Arc<alias::Aliases>>,
    ) -> Identity {
        self.central = Some(Central {
            rpc,
            timeout,
            aliases,
        });
        self
    }

    /// The identifier for a raw value: normalised, checked and hashed.
    pub fn identifier(
        &self,
        kind: IdentifierKind,
        raw: &str,
        verified: Option<bool>,
    ) -> Result<Identifier, IdentityError> {
        let key = self.key.as_ref().ok_or(IdentityError::NoKey)?;
        Ok(key.identifier(kind, raw, verified)?)
    }

    /// Identifies a customer at `till` and records the `identity_seen`: mergeable identifiers
    /// alone decide (unverified ones only when nothing mergeable was given), this box's own
    /// knowledge first, then central within the lookup timeout, else a new provisional ref.
    pub async fn seen(
        &self,
        till: &str,
        identifiers: Vec<Identifier>,
    ) -> Result<Recorded, IdentityError> {
        let _serial = self.serial.lock().await;
        let mergeable = identifiers.iter().any(Identifier::is_mergeable);
        let hashes: Vec<String> = identifiers.iter().map(|i| i.hash.clone()).collect();
        let local = self
            .reads
            .read(move |outbox| outbox.profiles_of(&hashes))
            .await?;
        let deciding = identifiers
            .iter()
            .zip(&local)
            .filter(|(i, _)| !mergeable || i.is_mergeable());
        let found_here = deciding.clone().find_map(|(_, profile)| profile.clone());
        let (customer, source) = match found_here {
            Some(profile) => (profile, "local"),
            None => {
                let deciding: Vec<&Identifier> = deciding.map(|(i, _)| i).collect();
                match self.lookup(&deciding).await {
                    Some(view) => {
                        let profile = view.profile.clone();
                        self.journal.cache_profile(view).await?;
                        (profile, "central")
                    }
                    None => (
                        format!("prov:{}:{}", self.gateway, ulid::Ulid::new()),
                        "provisional",
                    ),
                }
            }
        };
        let body = serde_json::json!({ "customer": customer, "identifiers": identifiers });
        let identity_refs: Vec<IdentityRef> = identifiers
            .iter()
            .zip(&local)
            .filter(|(_, known)| known.is_none())
            .map(|(identifier, _)| IdentityRef {
                hash: identifier.hash.clone(),
                profile: customer.clone(),
            })
            .collect();
        let event = self
            .journal
            .append(NewEvent {
                kind: EventKind::IdentitySeen,
                till: till.to_string(),
                body: body.to_string(),
                receipt: None,
                idempotency: None,
                identity_refs,
                print_on: None,
                coupon: None,
                points: None,
            })
            .await?;
        let customer = match &self.central {
            Some(central) => central.aliases.borrow().resolve(&customer),
            None => customer,
        };
        Ok(Recorded {
            customer,
            known: source,
            event,
        })
    }

    /// Central's profile for these identifiers, if it answers in time and knows one.
    async fn lookup(&self, identifiers: &[&Identifier]) -> Option<CachedProfile> {
        let central = self.central.as_ref()?;
        let params = serde_json::json!({ "identifiers": identifiers });
        let answer = central
            .rpc
            .call_within("profile.lookup", params, central.timeout)
            .await
            .ok()?;
        let profile = answer.get("profile")?;
        let reference = profile.get("ref")?.as_str()?;
        crate::protocol::check_profile_ref("ref", reference).ok()?;
        let points = profile.get("points").and_then(|p| p.as_i64()).unwrap_or(0);
        let hashes = profile
            .get("identifiers")
            .and_then(|i| serde_json::from_value::<Vec<Identifier>>(i.clone()).ok())
            .unwrap_or_default()
            .into_iter()
            .filter(Identifier::has_valid_hash)
            .map(|i| i.hash)
            .collect();
        Some(CachedProfile {
            members: central.aliases.borrow().members(reference),
            profile: reference.to_string(),
            points,
            // The writer stamps a look-up with the newest rev applied here.
            rev: 0,
            hashes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_as_the_protocol_says_and_refuses_junk() {
        use IdentifierKind::*;
        assert_eq!(normalise(Card, "6001 2345-6789").unwrap(), "600123456789");
        assert_eq!(
            normalise(Phone, "+49 (30) 123-4567").unwrap(),
            "+49301234567"
        );
        assert_eq!(
            normalise(Email, "  Ana@Example.COM ").unwrap(),
            "ana@example.com"
        );
        assert_eq!(normalise(App, " tok-ABC123").unwrap(), " tok-ABC123");

        assert_eq!(normalise(Card, ""), Err(IdentifierError::TooShort("card")));
        assert_eq!(
            normalise(Card, "12 34"),
            Err(IdentifierError::TooShort("card"))
        );
        assert_eq!(
            normalise(Card, "0000000000"),
            Err(IdentifierError::Repeated("card"))
        );
        assert_eq!(
            normalise(Phone, "030 1234567"),
            Err(IdentifierError::NotE164)
        );
        assert_eq!(normalise(Phone, "+1234"), Err(IdentifierError::NotE164));
        assert_eq!(
            normalise(Email, "ana.example.com"),
            Err(IdentifierError::NotEmail)
        );
        assert_eq!(
            normalise(Email, "ana@localhost"),
            Err(IdentifierError::NotEmail)
        );
        assert_eq!(
            normalise(App, &"x".repeat(300)),
            Err(IdentifierError::TooLong("app"))
        );
    }

    #[test]
    fn a_uid_becomes_its_big_endian_number() {
        assert_eq!(
            card_number_from_uid(&[0xDE, 0xAD, 0xBE, 0xEF]),
            "3735928559"
        );
        assert_eq!(
            card_number_from_uid(&[0xFF; 10]),
            (u128::MAX >> 48).to_string()
        );
        // Leading zero bytes still count: the same digits at another UID length differ.
        assert_eq!(card_number_from_uid(&[0, 0, 0, 7]), "0000000007");
        assert_ne!(
            card_number_from_uid(&[0, 0, 0, 0, 0, 0, 7]),
            card_number_from_uid(&[0, 0, 0, 7])
        );
    }
}
