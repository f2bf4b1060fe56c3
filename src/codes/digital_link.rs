//! GS1 Digital Link URIs (GS1 Digital Link Standard 1.2, uncompressed form): any domain, then
//! `/01/<GTIN>` (or the `gtin` alias) as primary key, optional key qualifiers `/22/`, `/10/`,
//! `/21/` in that order, and data attributes as `?<AI>=<value>` query parameters.

use super::gs1::has_valid_check_digit;
use super::{CodeError, ElementString, Interpretation};

/// Qualifiers of AI 01 in the order the standard fixes.
const GTIN_QUALIFIERS: [&str; 3] = ["22", "10", "21"];

/// `Ok(None)` when `text` is no Digital Link at all (so it is other text); an error when it is
/// one but broken (bad GTIN, check digit, qualifier order).
pub fn parse_digital_link(text: &str) -> Result<Option<Interpretation>, CodeError> {
    let Some(rest) = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
    else {
        return Ok(None);
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let path = path.split_once('#').map_or(path, |(p, _)| p);
    let segments: Vec<&str> = path.split('/').collect();
    // The primary key may follow any path prefix on the resolver's domain.
    let Some(at) = segments
        .iter()
        .position(|s| *s == "01" || s.eq_ignore_ascii_case("gtin"))
    else {
        return Ok(None);
    };
    let bad = |message: String| CodeError::DigitalLink(message);
    let gtin = segments
        .get(at + 1)
        .map(|s| percent_decode(s))
        .transpose()
        .map_err(bad)?
        .ok_or_else(|| bad("/01/ has no GTIN after it".into()))?;
    if !matches!(gtin.len(), 8 | 12 | 13 | 14) || !gtin.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(format!("GTIN {gtin:?} must be 8, 12, 13 or 14 digits")));
    }
    if !has_valid_check_digit(&gtin) {
        return Err(bad(format!("GTIN {gtin} has a wrong check digit")));
    }
    let gtin = format!("{gtin:0>14}");
    let mut elements = vec![ElementString {
        ai: "01".into(),
        value: gtin.clone(),
    }];
    let mut next_qualifier = 0;
    let mut pairs = segments[at + 2..].chunks(2);
    for pair in pairs.by_ref() {
        let [ai, value] = pair else {
            return Err(bad(format!("qualifier {:?} has no value", pair[0])));
        };
        let position = GTIN_QUALIFIERS[next_qualifier..]
            .iter()
            .position(|q| q == ai)
            .ok_or_else(|| {
                bad(format!(
                    "/{ai}/ is not a GTIN qualifier here (22, 10, 21, in that order)"
                ))
            })?;
        next_qualifier += position + 1;
        elements.push(ElementString {
            ai: (*ai).to_string(),
            value: percent_decode(value).map_err(bad)?,
        });
    }
    for parameter in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = parameter.split_once('=').unwrap_or((parameter, ""));
        // Non-numeric parameters belong to the resolver (linkType, …), not to the product.
        if (2..=4).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_digit()) {
            elements.push(ElementString {
                ai: key.to_string(),
                value: percent_decode(value).map_err(bad)?,
            });
        }
    }
    Ok(Some(Interpretation::Gs1DigitalLink {
        uri: text.to_string(),
        gtin,
        elements,
    }))
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape in {text:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} is not UTF-8 once decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elements(text: &str) -> Vec<(String, String)> {
        match parse_digital_link(text).unwrap().unwrap() {
            Interpretation::Gs1DigitalLink { elements, .. } => {
                elements.into_iter().map(|e| (e.ai, e.value)).collect()
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_the_standards_examples() {
        // GS1 Digital Link Standard examples.
        assert_eq!(
            elements("https://id.gs1.org/01/09506000134352/10/ABC%2F123/21/12345?17=201225"),
            [
                ("01".into(), "09506000134352".into()),
                ("10".into(), "ABC/123".into()),
                ("21".into(), "12345".into()),
                ("17".into(), "201225".into()),
            ]
        );
        assert_eq!(
            elements(
                "https://example.com/products/gtin/9506000134352?3103=000195&linkType=gs1:pip"
            ),
            [
                ("01".into(), "09506000134352".into()),
                ("3103".into(), "000195".into()),
            ]
        );
    }

    #[test]
    fn refuses_broken_links_and_ignores_other_urls() {
        assert!(parse_digital_link("https://id.gs1.org/01/09506000134353").is_err());
        assert!(parse_digital_link("https://id.gs1.org/01/123").is_err());
        assert!(parse_digital_link("https://id.gs1.org/01/09506000134352/21/1/10/A").is_err());
        assert!(parse_digital_link("https://id.gs1.org/01/09506000134352/10").is_err());
        assert!(parse_digital_link("https://id.gs1.org/01/09506000134352/10/%G1").is_err());
        assert_eq!(
            parse_digital_link("https://shop.example.com/cart").unwrap(),
            None
        );
        assert_eq!(parse_digital_link("01/09506000134352").unwrap(), None);
    }
}
