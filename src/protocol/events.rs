//! Event kinds and their bodies (docs/protocol.md "Event kinds and their body"), one type per kind,
//! with the checks a body must pass before it may enter the journal.

use serde::{Deserialize, Serialize};

/// What kind of thing happened. The wire name is the `kind` field of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A sale at a till.
    Purchase,
    /// A coupon accepted for a sale.
    CouponRedeemed,
    /// A customer identified (card, app, phone, email).
    IdentitySeen,
    /// An online order placed from a till.
    OrderPlaced,
}

impl EventKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Purchase => "purchase",
            EventKind::CouponRedeemed => "coupon_redeemed",
            EventKind::IdentitySeen => "identity_seen",
            EventKind::OrderPlaced => "order_placed",
        }
    }

    /// The kind a wire name stands for; `None` for a kind docs/protocol.md does not define.
    pub fn from_wire(kind: &str) -> Option<EventKind> {
        [
            EventKind::Purchase,
            EventKind::CouponRedeemed,
            EventKind::IdentitySeen,
            EventKind::OrderPlaced,
        ]
        .into_iter()
        .find(|k| k.as_str() == kind)
    }
}

/// A till id as the API and device config accept it: 1-32 letters, digits, `-` or `_`.
pub fn is_till_id(till: &str) -> bool {
    !till.is_empty()
        && till.len() <= 32
        && till
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A body that failed its checks: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The field's path, e.g. `lines[0].qty`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// A refusal of `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// One basket line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    /// The store's article number.
    pub sku: String,
    /// The GTIN, 8 to 14 digits, when the article has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtin: Option<String>,
    /// Quantity; negative for a return.
    pub qty: i64,
    /// Price per unit in minor units.
    pub unit_minor: i64,
}

/// `purchase`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Purchase {
    /// Unique per gateway; a second purchase with it is refused.
    pub receipt: String,
    /// The basket.
    pub lines: Vec<Line>,
    /// What the customer paid, in minor units.
    pub total_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// The customer's profile ref, if identified.
    pub customer: Option<String>,
    /// Ids of coupons redeemed for this sale.
    #[serde(default)]
    pub coupons: Vec<String>,
    /// Loyalty points earned.
    #[serde(default)]
    pub points: i64,
    /// Loyalty points the customer spent on this sale. Absent means 0. An extension of
    /// docs/protocol.md's body (there is no event for spending points): central's ledger
    /// applies `points - points_redeemed`; readers that do not know it ignore it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub points_redeemed: i64,
    /// What the total differs from the lines' sum by, stated by the till (a coupon's
    /// discount is negative, rounding or a deposit either way). Absent means 0: then
    /// `total_minor` must equal the sum of `qty * unit_minor`, so a till bug cannot record a
    /// wrong total silently. An extension of docs/protocol.md's body; readers ignore it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub adjustment_minor: i64,
}

/// More points than one sale can earn or spend (central refuses them too: a balance never
/// overflows).
pub(super) const MAX_POINTS: i64 = 1_000_000_000_000;

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// `coupon_redeemed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CouponRedeemed {
    /// The coupon's id (its payload's `id`).
    pub coupon: String,
    /// The customer it was redeemed for, if identified.
    pub customer: Option<String>,
    /// The receipt it was redeemed for.
    pub receipt: String,
    /// The discount granted.
    pub discount_minor: i64,
    /// `online` (reserved at central first) or `offline` (the offline policy).
    pub mode: String,
    /// The coupon's `uses` (extension: lets central tell a double redemption of a single-use
    /// coupon from a second use of a multi-use one; absent means 1).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub uses: u64,
}

fn one() -> u64 {
    1
}

fn is_one(n: &u64) -> bool {
    *n == 1
}

/// Longest receipt id, sku or coupon id we accept; longer is a till bug, not a receipt.
const MAX_ID_LEN: usize = 64;
/// A basket bigger than this is refused: one event must fit a 256 KiB batch with room to spare.
const MAX_LINES: usize = 500;

impl Purchase {
    /// Checks what serde cannot: non-empty ids, plausible amounts, a currency code, a profile ref.
    pub fn validate(&self) -> Result<(), FieldError> {
        check_id("receipt", &self.receipt)?;
        if self.lines.is_empty() {
            return Err(FieldError::new(
                "lines",
                "a purchase needs at least one line",
            ));
        }
        if self.lines.len() > MAX_LINES {
            return Err(FieldError::new(
                "lines",
                format!("at most {MAX_LINES} lines per purchase"),
            ));
        }
        for (i, line) in self.lines.iter().enumerate() {
            check_id(&format!("lines[{i}].sku"), &line.sku)?;
            if let Some(gtin) = &line.gtin {
                if gtin.is_empty() || gtin.len() > 14 || !gtin.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(FieldError::new(
                        format!("lines[{i}].gtin"),
                        "a GTIN is 8 to 14 digits",
                    ));
                }
            }
            if line.qty == 0 || line.qty.abs() > 1_000_000 {
                return Err(FieldError::new(
                    format!("lines[{i}].qty"),
                    "must be a non-zero quantity (negative for a return)",
                ));
            }
            if line.unit_minor < 0 {
                return Err(FieldError::new(
                    format!("lines[{i}].unit_minor"),
                    "must not be negative (discounts travel as coupons)",
                ));
            }
        }
        if self.total_minor.abs() > 100_000_000_000 {
            return Err(FieldError::new("total_minor", "is implausibly large"));
        }
        let lines_sum = self
            .lines
            .iter()
            .try_fold(0i64, |sum, line| {
                line.qty
                    .checked_mul(line.unit_minor)
                    .and_then(|amount| sum.checked_add(amount))
            })
            .ok_or_else(|| FieldError::new("lines", "the lines' amounts overflow"))?;
        let expected = lines_sum.checked_add(self.adjustment_minor);
        if expected != Some(self.total_minor) {
            return Err(FieldError::new(
                "total_minor",
                format!(
                    "is {} but the lines sum to {lines_sum}{}; send adjustment_minor for a deliberate difference",
                    self.total_minor,
                    if self.adjustment_minor == 0 {
                        String::new()
                    } else {
                        format!(" and adjustment_minor is {}", self.adjustment_minor)
                    }
                ),
            ));
        }
        check_currency("currency", &self.currency)?;
        if let Some(customer) = &self.customer {
            check_profile_ref("customer", customer)?;
        }
        for (i, coupon) in self.coupons.iter().enumerate() {
            check_id(&format!("coupons[{i}]"), coupon)?;
        }
        if !(0..=MAX_POINTS).contains(&self.points) {
            return Err(FieldError::new("points", "must be 0 to 10^12"));
        }
        if !(0..=MAX_POINTS).contains(&self.points_redeemed) {
            return Err(FieldError::new("points_redeemed", "must be 0 to 10^12"));
        }
        if self.points_redeemed > 0 && self.customer.is_none() {
            return Err(FieldError::new(
                "points_redeemed",
                "points can only be spent by an identified customer",
            ));
        }
        Ok(())
    }
}

fn check_id(field: &str, value: &str) -> Result<(), FieldError> {
    if value.trim().is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if value.len() > MAX_ID_LEN {
        return Err(FieldError::new(
            field,
            format!("must be at most {MAX_ID_LEN} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

fn check_currency(field: &str, value: &str) -> Result<(), FieldError> {
    if value.len() == 3 && value.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            "must be an ISO 4217 code such as EUR",
        ))
    }
}

/// A profile ref: `p:<uuid>` or `prov:<gateway>:<ulid>`.
pub fn check_profile_ref(field: &str, value: &str) -> Result<(), FieldError> {
    let ok = if let Some(rest) = value.strip_prefix("p:") {
        !rest.is_empty()
            && rest.len() <= 64
            && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    } else if let Some(rest) = value.strip_prefix("prov:") {
        match rest.split_once(':') {
            Some((gateway, ulid)) => {
                super::topics::is_topic_id(gateway) && ulid.parse::<ulid::Ulid>().is_ok()
            }
            None => false,
        }
    } else {
        false
    };
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            "must be a profile ref: p:<uuid> or prov:<gateway>:<ulid>",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn purchase() -> Purchase {
        Purchase {
            receipt: "r-1".into(),
            lines: vec![Line {
                sku: "sku-1".into(),
                gtin: Some("4006381333931".into()),
                qty: 2,
                unit_minor: 199,
            }],
            total_minor: 398,
            currency: "EUR".into(),
            customer: None,
            coupons: vec![],
            points: 3,
            points_redeemed: 0,
            adjustment_minor: 0,
        }
    }

    #[test]
    fn valid_purchase_passes() {
        assert_eq!(purchase().validate(), Ok(()));
    }

    #[test]
    fn each_bad_field_is_named() {
        let mut p = purchase();
        p.lines[0].qty = 0;
        assert_eq!(p.validate().unwrap_err().field, "lines[0].qty");
        let mut p = purchase();
        p.currency = "eur".into();
        assert_eq!(p.validate().unwrap_err().field, "currency");
        let mut p = purchase();
        p.customer = Some("bob".into());
        assert_eq!(p.validate().unwrap_err().field, "customer");
        let mut p = purchase();
        p.receipt = " ".into();
        assert_eq!(p.validate().unwrap_err().field, "receipt");
        let mut p = purchase();
        p.lines.clear();
        assert_eq!(p.validate().unwrap_err().field, "lines");
    }

    #[test]
    fn the_total_is_the_lines_sum_unless_an_adjustment_says_otherwise() {
        let mut p = purchase();
        p.total_minor = 399;
        assert_eq!(p.validate().unwrap_err().field, "total_minor");
        p.adjustment_minor = 1;
        assert_eq!(p.validate(), Ok(()));
        p.total_minor = 300;
        p.adjustment_minor = -98;
        assert_eq!(p.validate(), Ok(()), "a coupon's discount");
        p.lines[0].unit_minor = i64::MAX;
        assert_eq!(
            p.validate().unwrap_err().field,
            "lines",
            "overflow is refused"
        );
    }

    #[test]
    fn profile_refs() {
        assert!(check_profile_ref("c", "p:0b5e1c3a-1d2f-4c1a-9f2e-0123456789ab").is_ok());
        assert!(check_profile_ref("c", "prov:gw-1:01JD0000000000000000000000").is_ok());
        assert!(check_profile_ref("c", "prov:gw-1:nope").is_err());
        assert!(check_profile_ref("c", "p:").is_err());
    }
}
