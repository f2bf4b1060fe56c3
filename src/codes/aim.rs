//! AIM symbology identifiers (ISO/IEC 15424): the `]Xm` a scanner puts before the data when
//! configured to, saying which barcode type it read. Knowing the symbology decides how the data
//! is read: an EAN-13 has a check digit to verify, a GS1-128 carries element strings.

/// A parsed identifier: flag character and modifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aim {
    /// The symbology character (`E` for EAN/UPC, `C` for Code 128, `Q` for QR …).
    pub code: char,
    /// The modifier (`1` for GS1 in Code 128 and QR …).
    pub modifier: char,
}

impl Aim {
    /// Splits a leading `]Xm` off `data`. `None` when there is none (scanner not configured
    /// to send AIM ids) or it is malformed.
    pub fn split(data: &str) -> (Option<Aim>, &str) {
        let mut chars = data.chars();
        match (chars.next(), chars.next(), chars.next()) {
            (Some(']'), Some(code), Some(modifier))
                if code.is_ascii_alphabetic() && modifier.is_ascii_alphanumeric() =>
            {
                (Some(Aim { code, modifier }), &data[3..])
            }
            _ => (None, data),
        }
    }

    /// The symbology's name as events and `storegate decode` report it.
    pub fn symbology(&self) -> &'static str {
        match (self.code, self.modifier) {
            ('E', '0') => "ean13",
            ('E', '4') => "ean8",
            ('E', _) => "ean_upc_addon",
            ('C', '1') => "gs1_128",
            ('C', _) => "code128",
            ('A', _) => "code39",
            ('G', _) => "code93",
            ('I', '1') => "itf14",
            ('I', _) => "itf",
            ('F', _) => "codabar",
            ('e', _) => "gs1_databar",
            ('Q', '3') | ('Q', '5') => "gs1_qr",
            ('Q', _) => "qr",
            ('d', '2') => "gs1_datamatrix",
            ('d', _) => "datamatrix",
            ('L', _) => "pdf417",
            ('z', _) => "aztec",
            _ => "other",
        }
    }

    /// Whether the data is GS1 element strings (FNC1 in first position).
    pub fn is_gs1(&self) -> bool {
        matches!(
            (self.code, self.modifier),
            ('C', '1') | ('e', '0') | ('Q', '3') | ('Q', '5') | ('d', '2') | ('J', '1')
        )
    }
}

impl std::fmt::Display for Aim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "]{}{}", self.code, self.modifier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_identifiers_and_leaves_other_data_alone() {
        let (aim, rest) = Aim::split("]E05901234123457");
        assert_eq!(aim.map(|a| a.symbology()), Some("ean13"));
        assert_eq!(rest, "5901234123457");
        let (aim, rest) = Aim::split("]C1010950110153000317");
        assert!(aim.is_some_and(|a| a.is_gs1()));
        assert_eq!(rest, "010950110153000317");
        assert_eq!(Aim::split("]Q1hello").0.map(|a| a.symbology()), Some("qr"));
        assert_eq!(Aim::split("5901234123457"), (None, "5901234123457"));
        assert_eq!(Aim::split("]"), (None, "]"));
        assert_eq!(Aim::split("]é0x").0, None);
    }
}
