//! EAN-13, EAN-8, UPC-A and UPC-E: the product barcodes on everything in a store. Each has a
//! GS1 check digit; a UPC-E is a zero-suppressed UPC-A and is expanded to it (GS1 General
//! Specifications 5.2.2.4.2) so the GTIN is the same however the pack was printed.

use super::gs1::has_valid_check_digit;

/// Why a product barcode was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetailError {
    /// Not the right number of digits.
    #[error("{kind} needs {digits} digits, got {got:?}")]
    Length {
        /// `EAN-13`, `UPC-E`, …
        kind: &'static str,
        /// How many it needs.
        digits: usize,
        /// What was read.
        got: String,
    },
    /// The check digit does not fit the number.
    #[error("{kind} {number} has a wrong check digit")]
    CheckDigit {
        /// `EAN-13`, `UPC-A`, …
        kind: &'static str,
        /// The number as read.
        number: String,
    },
    /// A UPC-E whose number system is not 0 or 1.
    #[error("UPC-E {0} has a number system other than 0 or 1")]
    UpceNumberSystem(String),
}

fn digits(kind: &'static str, data: &str, count: usize) -> Result<(), RetailError> {
    if data.len() != count || !data.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RetailError::Length {
            kind,
            digits: count,
            got: data.chars().take(32).collect(),
        });
    }
    Ok(())
}

fn checked(kind: &'static str, number: &str) -> Result<String, RetailError> {
    if !has_valid_check_digit(number) {
        return Err(RetailError::CheckDigit {
            kind,
            number: number.to_string(),
        });
    }
    Ok(format!("{number:0>14}"))
}

/// An EAN-13's GTIN-14.
pub fn ean13(data: &str) -> Result<String, RetailError> {
    digits("EAN-13", data, 13)?;
    checked("EAN-13", data)
}

/// An EAN-8's GTIN-14.
pub fn ean8(data: &str) -> Result<String, RetailError> {
    digits("EAN-8", data, 8)?;
    checked("EAN-8", data)
}

/// A UPC-A's GTIN-14.
pub fn upca(data: &str) -> Result<String, RetailError> {
    digits("UPC-A", data, 12)?;
    checked("UPC-A", data)
}

/// A UPC-E (8 digits: number system, six data digits, check digit) expanded to its UPC-A, and
/// that UPC-A's GTIN-14.
pub fn upce(data: &str) -> Result<(String, String), RetailError> {
    digits("UPC-E", data, 8)?;
    let d: Vec<char> = data.chars().collect();
    if d[0] != '0' && d[0] != '1' {
        return Err(RetailError::UpceNumberSystem(data.to_string()));
    }
    let (ns, m, check) = (d[0], &d[1..7], d[7]);
    let body: String = match m[5] {
        '0' | '1' | '2' => format!("{}{}{}0000{}{}{}", m[0], m[1], m[5], m[2], m[3], m[4]),
        '3' => format!("{}{}{}00000{}{}", m[0], m[1], m[2], m[3], m[4]),
        '4' => format!("{}{}{}{}00000{}", m[0], m[1], m[2], m[3], m[4]),
        _ => format!("{}{}{}{}{}0000{}", m[0], m[1], m[2], m[3], m[4], m[5]),
    };
    let upca_number = format!("{ns}{body}{check}");
    let gtin = checked("UPC-E", &upca_number)?;
    Ok((upca_number, gtin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_and_expands_product_codes() {
        assert_eq!(ean13("4006381333931").unwrap(), "04006381333931");
        assert!(matches!(
            ean13("4006381333932"),
            Err(RetailError::CheckDigit { .. })
        ));
        assert!(matches!(
            ean13("400638133393"),
            Err(RetailError::Length { .. })
        ));
        assert_eq!(ean8("96385074").unwrap(), "00000096385074");
        assert_eq!(upca("036000291452").unwrap(), "00036000291452");
        // UPC-E 04252614 ↔ UPC-A 042100005264 (the textbook pair).
        assert_eq!(
            upce("04252614").unwrap(),
            ("042100005264".to_string(), "00042100005264".to_string())
        );
        // Each of the four suppression rules.
        assert_eq!(upce("01234505").unwrap().0, "012000003455");
        assert_eq!(upce("01234531").unwrap().0, "012300000451");
        assert_eq!(upce("01234543").unwrap().0, "012340000053");
        assert_eq!(upce("01234565").unwrap().0, "012345000065");
        assert!(matches!(
            upce("21234565"),
            Err(RetailError::UpceNumberSystem(_))
        ));
        assert!(matches!(
            upce("01234566"),
            Err(RetailError::CheckDigit { .. })
        ));
    }
}
