//! Messages other than event bodies: batches, acks, status, rpc.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// One journal event as it travels in a batch. `body` stays raw JSON from journal to central so
/// it is never re-encoded on the way.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireEvent {
    /// Per-gateway position, 1 … 2^53 − 1, assigned at commit, never reused.
    pub seq: u64,
    /// ULID, globally unique; central dedups on it as well as on `seq`.
    pub id: String,
    /// `purchase`, `coupon_redeemed`, `identity_seen` or `order_placed`.
    pub kind: String,
    /// The gateway's wall clock at commit (RFC 3339, ms); order is `seq`, never this.
    pub at: String,
    /// Whether the system clock was synchronised when `at` was taken.
    pub clock_synced: bool,
    /// The till (or kiosk, or device's till) the event came from.
    pub till: String,
    /// The kind's body, as committed.
    pub body: Box<RawValue>,
}

/// What central applies from an event's body, read once when the event arrives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BodyFacts {
    /// A purchase's receipt id (unique per gateway).
    pub receipt: Option<String>,
    /// The customer ref a purchase, identification or coupon redemption names: what central
    /// files the event under for the customer's timeline, erasure and reports.
    pub customer: Option<String>,
    /// Whether a purchase moves its customer's balance (the resolver applies it).
    pub moves_points: bool,
    /// A coupon redemption.
    pub coupon: Option<super::CouponRedeemed>,
}

/// An event as central reads it: what it applies, and why it is refused, if it is. A refused
/// event is stored all the same (it fills its seq slot) with what could be read of it, so its
/// customer's erasure still finds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckedEvent {
    /// What the body says, as far as it could be read.
    pub facts: BodyFacts,
    /// Why central applies the event to nothing.
    pub refused: Option<String>,
}

/// A purchase body as central applies it: the fields it reads, typed, so the check on arrival
/// and central's resolver read a body the same way (a repeated field is refused).
#[derive(Debug, Deserialize)]
pub struct PurchaseBody {
    /// Unique per gateway.
    pub receipt: String,
    // Read for their types only.
    #[serde(rename = "total_minor")]
    _total_minor: i64,
    #[serde(rename = "currency")]
    _currency: String,
    /// The customer's profile ref, if identified.
    #[serde(default)]
    pub customer: Option<String>,
    /// Points earned.
    #[serde(default)]
    pub points: i64,
    /// Points spent.
    #[serde(default)]
    pub points_redeemed: i64,
}

impl PurchaseBody {
    /// What the purchase moves on its customer's balance, if it has a customer and moves any.
    pub fn moved(&self) -> Option<(&str, i64)> {
        let points = self.points.saturating_sub(self.points_redeemed);
        self.customer
            .as_deref()
            .filter(|_| points != 0)
            .map(|customer| (customer, points))
    }
}

/// An `identity_seen` body as central applies it.
#[derive(Debug, Deserialize)]
pub struct SeenBody {
    /// The ref the gateway recorded the identification under.
    pub customer: String,
    /// What identified the customer.
    #[serde(default)]
    pub identifiers: Vec<Identifier>,
}

/// What a body that does not check can still tell, for a refused event's row.
#[derive(Deserialize)]
struct Filing {
    #[serde(default)]
    receipt: Option<serde_json::Value>,
    #[serde(default)]
    customer: Option<serde_json::Value>,
}

impl WireEvent {
    /// What a receiver checks before an event may touch its state (docs/protocol.md "Event
    /// batch"), and what central applies from it, read once: a known kind, a ULID id, an RFC
    /// 3339 `at`, a till id, an object body, and the fields central applies. A purchase needs
    /// a receipt, integer money, a currency, a profile ref or null as `customer`, and points
    /// from 0 to 10^12; an identification a profile ref and identifiers of a known kind with
    /// 64-hex-digit hashes (central merges by them and sends them to every box, which would
    /// refuse the whole change that carried a malformed one); a coupon redemption its coupon,
    /// receipt, discount and mode. Unknown fields pass.
    pub fn check(&self) -> CheckedEvent {
        match self.checked_facts() {
            Ok(facts) => CheckedEvent {
                facts,
                refused: None,
            },
            Err(reason) => CheckedEvent {
                facts: self.filing(),
                refused: Some(reason),
            },
        }
    }

    fn checked_facts(&self) -> Result<BodyFacts, String> {
        use super::EventKind;
        let kind = EventKind::from_wire(&self.kind)
            .ok_or_else(|| format!("unknown event kind {:?}", truncated(&self.kind)))?;
        if self.id.parse::<ulid::Ulid>().is_err() {
            return Err(format!("id {:?} is not a ULID", truncated(&self.id)));
        }
        if humantime::parse_rfc3339(&self.at).is_err() {
            return Err(format!(
                "at {:?} is not an RFC 3339 time",
                truncated(&self.at)
            ));
        }
        if !super::is_till_id(&self.till) {
            return Err(format!("till {:?} is not a till id", truncated(&self.till)));
        }
        let body = self.body.get();
        // JSON allows it; PostgreSQL's jsonb and text do not, and an event central cannot
        // index would fail every batch it came in.
        if body.contains("\\u0000") {
            return Err("body holds a NUL character (\\u0000)".into());
        }
        // A struct reads a JSON array too, field by position.
        if !body.trim_start().starts_with('{') {
            return Err("body is not a JSON object".into());
        }
        let read = |e: serde_json::Error| format!("body: {e}");
        let customer_ref = |customer: &Option<String>| match customer {
            Some(customer) => super::check_profile_ref("customer", customer)
                .map_err(|e| format!("{} {e}", kind.as_str())),
            None => Ok(()),
        };
        let mut facts = BodyFacts::default();
        match kind {
            EventKind::Purchase => {
                let purchase: PurchaseBody = serde_json::from_str(body).map_err(read)?;
                if purchase.receipt.trim().is_empty() {
                    return Err("purchase without a receipt".into());
                }
                customer_ref(&purchase.customer)?;
                for (field, points) in [
                    ("points", purchase.points),
                    ("points_redeemed", purchase.points_redeemed),
                ] {
                    // The gateways' own bound: no balance overflows, so no event can make
                    // the resolver's rounds fail.
                    if !(0..=super::events::MAX_POINTS).contains(&points) {
                        return Err(format!("purchase {field} must be 0 to 10^12"));
                    }
                }
                facts.moves_points = purchase.moved().is_some();
                facts.receipt = Some(purchase.receipt);
                facts.customer = purchase.customer;
            }
            EventKind::IdentitySeen => {
                let seen: SeenBody = serde_json::from_str(body).map_err(read)?;
                customer_ref(&Some(seen.customer.clone()))?;
                if let Some(bad) = seen.identifiers.iter().find(|i| !i.has_valid_hash()) {
                    return Err(format!(
                        "identifier hash {:?} is not 64 lower-case hex digits",
                        truncated(&bad.hash)
                    ));
                }
                facts.customer = Some(seen.customer);
            }
            EventKind::CouponRedeemed => {
                let coupon: super::CouponRedeemed = serde_json::from_str(body).map_err(read)?;
                customer_ref(&coupon.customer)?;
                facts.customer = coupon.customer.clone();
                facts.coupon = Some(coupon);
            }
            EventKind::OrderPlaced => {
                serde_json::from_str::<serde::de::IgnoredAny>(body).map_err(read)?;
            }
        }
        Ok(facts)
    }

    /// A refused event's receipt and customer, where the body names them as strings.
    fn filing(&self) -> BodyFacts {
        let Ok(filing) = serde_json::from_str::<Filing>(self.body.get()) else {
            return BodyFacts::default();
        };
        let text = |value: Option<serde_json::Value>| match value {
            Some(serde_json::Value::String(text)) => Some(text),
            _ => None,
        };
        use super::EventKind::{CouponRedeemed, IdentitySeen, Purchase};
        let is = |kind: super::EventKind| self.kind == kind.as_str();
        BodyFacts {
            receipt: text(filing.receipt).filter(|_| is(Purchase)),
            customer: text(filing.customer)
                .filter(|_| is(Purchase) || is(IdentitySeen) || is(CouponRedeemed)),
            ..BodyFacts::default()
        }
    }
}

/// At most 64 characters of a refused value, for a log line.
fn truncated(value: &str) -> String {
    value.chars().take(64).collect()
}

/// `…/events`: a gateway's batch, in seq order.
#[derive(Debug, Serialize, Deserialize)]
pub struct EventBatch {
    /// The sending gateway's id (must match the topic).
    pub gateway: String,
    /// The sending gateway's store (must match the topic).
    pub store: String,
    /// When the batch was sent, by the gateway's clock.
    pub sent_at: String,
    /// Events in strictly increasing `seq` order.
    pub events: Vec<WireEvent>,
}

/// `…/ack`: central has durably stored every event with `seq <= upto_seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The end of the gap-free prefix central has stored for this gateway.
    pub upto_seq: u64,
}

/// `…/status` (retained) and its last will.
#[derive(Debug, Serialize, Deserialize)]
pub struct GatewayStatus {
    /// `online` or `offline`.
    pub state: String,
    /// Increases on every connect, so a late will of an older session is recognised.
    pub session: u64,
    /// The storegate version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Events committed but not yet acked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u64>,
    /// Applied config layer versions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    /// Short codes of conditions an operator must act on (`ack_beyond_journal`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alarms: Vec<String>,
}

/// `…/rpc/req`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RpcRequest {
    /// ULID; the response carries the same.
    pub id: String,
    /// `coupon.reserve`, `identity.since`, `profile.lookup`.
    pub method: String,
    /// The method's parameters.
    #[serde(default)]
    pub params: serde_json::Value,
    /// After this the gateway treats central as unreachable for the call.
    pub deadline: String,
}

/// `…/rpc/res`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RpcResponse {
    /// The request's id.
    pub id: String,
    /// Whether `result` (true) or `error` (false) is set.
    pub ok: bool,
    /// The method's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// Why central refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RpcError>,
}

/// A refusal's machine code and human message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RpcError {
    /// Machine-readable, e.g. `already_redeemed`.
    pub code: String,
    /// For people.
    pub message: String,
}

/// `storegate/v1/central/status`.
#[derive(Debug, Serialize, Deserialize)]
pub struct CentralStatus {
    /// `online` or `offline`.
    pub state: String,
}

/// `…/orders`: an order's status from central.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderStatus {
    /// The order's ULID.
    pub order: String,
    /// Where the order stands.
    pub status: OrderState,
    /// When central set this status; the latest `at` wins.
    pub at: String,
    /// Free text for the cashier.
    #[serde(default)]
    pub detail: Option<String>,
}

/// An order's status as central reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    /// Central took the order.
    Accepted,
    /// Central refused the order.
    Rejected,
    /// Sent to the customer.
    Shipped,
    /// Waiting in the store for pickup.
    ReadyForPickup,
    /// Called off.
    Cancelled,
}

/// An identifier as it travels: a kind and the HMAC of the normalised value, never the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identifier {
    /// What kind of identifier it is.
    pub kind: IdentifierKind,
    /// Hex HMAC-SHA256 of the normalised value under the fleet key.
    pub hash: String,
    /// For phones and emails: whether the customer proved they own it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
}

impl Identifier {
    /// Whether `hash` is what docs/protocol.md says it is: 64 lower-case hex digits.
    pub fn has_valid_hash(&self) -> bool {
        self.hash.len() == 64
            && self
                .hash
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    /// Whether it may decide which profile an identification belongs to (docs/protocol.md
    /// "Identity"): cards, app tokens, verified phones and emails. An unverified one is
    /// recorded beside them and decides nothing, so a phone typed at a shared kiosk never glues
    /// two people together.
    pub fn is_mergeable(&self) -> bool {
        match self.kind {
            IdentifierKind::Card | IdentifierKind::App => true,
            IdentifierKind::Phone | IdentifierKind::Email => self.verified == Some(true),
        }
    }
}

impl IdentifierKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentifierKind::Card => "card",
            IdentifierKind::Phone => "phone",
            IdentifierKind::Email => "email",
            IdentifierKind::App => "app",
        }
    }
}

/// The kinds of customer identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentifierKind {
    /// A loyalty card number.
    Card,
    /// A phone number (E.164).
    Phone,
    /// An email address.
    Email,
    /// The customer app's identity token.
    App,
}

/// `storegate/v1/identity`: merges and profile updates from central.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdentityChange {
    /// Fleet-wide change number, up by 1 per change.
    pub rev: u64,
    /// Refs merged into others.
    #[serde(default)]
    pub merges: Vec<Merge>,
    /// Current views of affected profiles.
    #[serde(default)]
    pub profiles: Vec<ProfileView>,
    /// Profiles erased (right to erasure): every cached detail goes.
    #[serde(default)]
    pub erased: Vec<String>,
}

impl IdentityChange {
    /// docs/protocol.md's rules for a change: a rev in range, well-formed refs and hashes.
    pub fn check(&self) -> Result<(), String> {
        if !super::is_valid_seq(self.rev) {
            return Err(format!("rev {} is outside 1 .. 2^53-1", self.rev));
        }
        let refs = self
            .merges
            .iter()
            .flat_map(|m| [&m.from, &m.to])
            .chain(self.profiles.iter().map(|p| &p.profile))
            .chain(self.erased.iter());
        for profile in refs {
            super::check_profile_ref("ref", profile).map_err(|e| e.to_string())?;
        }
        if let Some(bad) = self
            .profiles
            .iter()
            .flat_map(|p| &p.identifiers)
            .find(|i| !i.has_valid_hash())
        {
            return Err(format!(
                "identifier hash {:?} is not 64 hex digits",
                bad.hash
            ));
        }
        Ok(())
    }
}

/// One ref merged into another: `from` now resolves to `to`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Merge {
    /// The ref that stops being a root.
    pub from: String,
    /// The ref it now resolves to.
    pub to: String,
}

/// A profile as central shares it with gateways.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProfileView {
    /// The profile's ref (`p:…`).
    #[serde(rename = "ref")]
    pub profile: String,
    /// Its identifiers.
    #[serde(default)]
    pub identifiers: Vec<Identifier>,
    /// Its loyalty points balance at central.
    #[serde(default)]
    pub points: i64,
}

/// A signed config layer as published by IT (`…/config`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedLayer {
    /// Names the trusted key that signed it.
    pub key_id: String,
    /// Base64url of the layer JSON, signed as bytes.
    pub payload: String,
    /// Base64url Ed25519 signature over `payload`'s bytes.
    pub sig: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    const CARD: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const PROV: &str = "prov:gw-1:01JD0000000000000000000000";

    fn event(kind: &str, body: &str) -> WireEvent {
        WireEvent {
            seq: 1,
            id: "01JD0000000000000000000001".into(),
            kind: kind.into(),
            at: "2026-11-26T10:00:00.000Z".into(),
            clock_synced: true,
            till: "till-1".into(),
            body: RawValue::from_string(body.into()).unwrap(),
        }
    }

    fn refused(kind: &str, body: &str) -> String {
        let checked = event(kind, body).check();
        checked
            .refused
            .unwrap_or_else(|| panic!("{kind} {body} was accepted: {:?}", checked.facts))
    }

    #[test]
    fn what_central_applies_is_read_once_from_an_accepted_body() {
        let purchase = format!(
            r#"{{"receipt":"r-1","lines":[],"total_minor":100,"currency":"EUR","customer":"{PROV}","points":12,"points_redeemed":2,"extra":[1]}}"#
        );
        let checked = event("purchase", &purchase).check();
        assert_eq!(checked.refused, None);
        assert_eq!(checked.facts.receipt.as_deref(), Some("r-1"));
        assert_eq!(checked.facts.customer.as_deref(), Some(PROV));
        assert!(checked.facts.moves_points);
        // Spending what it earns moves nothing; so does an anonymous sale.
        let even = purchase.replace(r#""points_redeemed":2"#, r#""points_redeemed":12"#);
        assert!(!event("purchase", &even).check().facts.moves_points);
        let anonymous =
            r#"{"receipt":"r-2","total_minor":1,"currency":"EUR","customer":null,"points":0}"#;
        let checked = event("purchase", anonymous).check();
        assert_eq!((checked.refused, checked.facts.customer), (None, None));

        let seen =
            format!(r#"{{"customer":"{PROV}","identifiers":[{{"kind":"card","hash":"{CARD}"}}]}}"#);
        let checked = event("identity_seen", &seen).check();
        assert_eq!(checked.refused, None);
        assert_eq!(checked.facts.customer.as_deref(), Some(PROV));

        let coupon = r#"{"coupon":"c-1","customer":null,"receipt":"r-1","discount_minor":500,"mode":"online","uses":3}"#;
        let checked = event("coupon_redeemed", coupon).check();
        assert_eq!(checked.refused, None);
        assert_eq!(
            checked.facts.coupon.map(|c| (c.coupon, c.uses)),
            Some(("c-1".into(), 3))
        );
    }

    /// A body central would apply one way and its resolver another, or whose identifiers every
    /// box would refuse in the change that carries them, is refused on arrival.
    #[test]
    fn a_body_central_could_not_apply_as_sent_is_refused() {
        let purchase = |fields: &str| {
            format!(r#"{{"receipt":"r-1","total_minor":100,"currency":"EUR",{fields}}}"#)
        };
        for fields in [
            r#""customer":"bogus""#,
            r#""customer":7"#,
            &format!(r#""customer":"{PROV}","points":"10""#),
            &format!(r#""customer":"{PROV}","points":-1"#),
            &format!(r#""customer":"{PROV}","points":1000000000001"#),
            &format!(r#""customer":"{PROV}","points_redeemed":9223372036854775807"#),
            r#""receipt":"r-2""#,
        ] {
            refused("purchase", &purchase(fields));
        }
        assert_eq!(
            refused("purchase", r#"["r-1",100,"EUR"]"#),
            "body is not a JSON object"
        );
        for body in [
            format!(r#"{{"customer":"bogus","identifiers":[{{"kind":"card","hash":"{CARD}"}}]}}"#),
            format!(r#"{{"customer":"{PROV}","identifiers":[{{"kind":"card","hash":"XYZ"}}]}}"#),
            format!(
                r#"{{"customer":"{PROV}","identifiers":[{{"kind":"fingerprint","hash":"{CARD}"}}]}}"#
            ),
            format!(r#"{{"customer":"{PROV}","identifiers":{{"kind":"card"}}}}"#),
            format!(r#"{{"identifiers":[{{"kind":"card","hash":"{CARD}"}}]}}"#),
        ] {
            refused("identity_seen", &body);
        }
        refused(
            "coupon_redeemed",
            r#"{"coupon":"c-1","customer":null,"receipt":"r-1","mode":"online"}"#,
        );
        refused("order_placed", "[]");
    }

    /// A refused event keeps what can be read of it: its row stays findable by its customer
    /// (erasure scrubs it) and its receipt.
    #[test]
    fn a_refused_event_is_filed_under_what_its_body_names() {
        let checked = event(
            "identity_seen",
            &format!(r#"{{"customer":"{PROV}","identifiers":[{{"kind":"card","hash":"XYZ"}}]}}"#),
        )
        .check();
        assert!(checked.refused.is_some());
        assert_eq!(checked.facts.customer.as_deref(), Some(PROV));
        let checked = event(
            "purchase",
            r#"{"receipt":"r-9","total_minor":"ten","currency":"EUR","customer":null}"#,
        )
        .check();
        assert!(checked.refused.is_some());
        assert_eq!(checked.facts.receipt.as_deref(), Some("r-9"));
        assert_eq!(
            event("order_placed", r#"{"customer":"x"}"#)
                .check()
                .facts
                .customer,
            None
        );
    }
}
