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
