//! Which scanned numbers are loyalty cards, and which digits of a magnetic card identify the
//! customer: a rule each scanner and keyboard wedge carries in its config.

use serde::Deserialize;

/// How a scanner tells and reads loyalty cards: which digits of a magnetic card's account
/// number identify the customer, and which barcodes are loyalty cards.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardNumberRule {
    /// Leading digits of a magnetic card's account number to drop (an issuer prefix).
    #[serde(default)]
    pub skip: usize,
    /// Digits to keep after that; all by default.
    pub take: Option<usize>,
    /// A scanned all-digit barcode starting with one of these is a loyalty card (e.g. the
    /// store's in-store number range "2790"), its number the whole barcode.
    #[serde(default)]
    pub barcode_prefixes: Vec<String>,
}
