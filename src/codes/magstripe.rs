//! Magnetic stripe track data (ISO/IEC 7811 encoding, 7813 layout) as a reader in keyboard or
//! serial mode sends it: track 1 `%<format><PAN>^<name>^<YYMM>…?`, track 2 `;<PAN>=<YYMM>…?`,
//! each optionally followed by its LRC character. Sentinels and field lengths are checked, the
//! LRC too where present.

/// Why track data was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrackError {
    /// No start sentinel of track 1 (`%`) or track 2 (`;`).
    #[error("no track: expected %…? (track 1) or ;…? (track 2)")]
    NoTrack,
    /// A track without its end sentinel `?`.
    #[error("track {0} has no end sentinel '?'")]
    NoEndSentinel(u8),
    /// A character the track's character set does not have.
    #[error("track {track}: character {found:?} is not allowed on this track")]
    BadCharacter {
        /// Which track.
        track: u8,
        /// The character.
        found: char,
    },
    /// The longitudinal redundancy check of a track does not match.
    #[error("track {0}: the LRC does not match the data")]
    Lrc(u8),
    /// The track's fields are not where ISO 7811 puts them.
    #[error("track {track}: {message}")]
    Layout {
        /// Which track.
        track: u8,
        /// What is wrong.
        message: &'static str,
    },
}

/// Track 1's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track1 {
    /// The format code (`B` for payment cards, refused).
    pub format: char,
    /// The account number.
    pub pan: String,
    /// The cardholder's name.
    pub name: String,
    /// Everything after the second separator (expiry, service code, discretionary data).
    pub rest: String,
}

/// Track 2's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track2 {
    /// The account number.
    pub pan: String,
    /// Everything after the separator.
    pub rest: String,
}

/// The tracks read from one swipe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tracks {
    /// Track 1, if read.
    pub track1: Option<Track1>,
    /// Track 2, if read.
    pub track2: Option<Track2>,
}

/// Whether `text` looks like track data at all (so it is parsed as such, not taken as text).
pub fn looks_like_tracks(text: &str) -> bool {
    (text.starts_with('%') || text.starts_with(';')) && text.contains('?')
}

/// Reads track 1 and/or 2 data (sentinels, separators, LRC when present).
pub fn parse_tracks(text: &str) -> Result<Tracks, TrackError> {
    let mut tracks = Tracks::default();
    let mut rest = text.trim_end_matches(['\r', '\n']);
    while let Some(first) = rest.chars().next() {
        let track = match first {
            '%' => 1,
            ';' => 2,
            _ => return Err(TrackError::NoTrack),
        };
        let end = rest.find('?').ok_or(TrackError::NoEndSentinel(track))?;
        let raw = &rest[..=end];
        rest = &rest[end + 1..];
        // A character right after '?' that does not start another track is the LRC.
        if let Some(lrc) = rest.chars().next().filter(|c| *c != '%' && *c != ';') {
            check_lrc(track, raw, lrc)?;
            rest = &rest[lrc.len_utf8()..];
        }
        let body = &raw[1..raw.len() - 1];
        match track {
            1 => tracks.track1 = Some(track1(body)?),
            _ => tracks.track2 = Some(track2(body)?),
        }
    }
    if tracks.track1.is_none() && tracks.track2.is_none() {
        return Err(TrackError::NoTrack);
    }
    Ok(tracks)
}

/// Character value on the track: 6 bits from 0x20 on track 1, 4 bits from 0x30 on track 2.
fn value(track: u8, c: char) -> Option<u8> {
    let (base, max) = if track == 1 {
        (0x20, 0x3F)
    } else {
        (0x30, 0x0F)
    };
    let v = u32::from(c).checked_sub(base)?;
    (v <= max).then_some(v as u8)
}

fn check_lrc(track: u8, raw: &str, lrc: char) -> Result<(), TrackError> {
    let mut xor = 0u8;
    for c in raw.chars() {
        xor ^= value(track, c).ok_or(TrackError::BadCharacter { track, found: c })?;
    }
    match value(track, lrc) {
        Some(v) if v == xor => Ok(()),
        _ => Err(TrackError::Lrc(track)),
    }
}

fn track1(body: &str) -> Result<Track1, TrackError> {
    let layout = |message| TrackError::Layout { track: 1, message };
    if let Some(c) = body
        .chars()
        .find(|c| value(1, *c).is_none() || matches!(c, '%' | '?'))
    {
        return Err(TrackError::BadCharacter { track: 1, found: c });
    }
    if body.len() > 78 {
        return Err(layout("longer than 79 characters"));
    }
    let mut chars = body.chars();
    let format = chars
        .next()
        .filter(char::is_ascii_uppercase)
        .ok_or(layout("must start with a format code A-Z"))?;
    let mut fields = chars.as_str().splitn(3, '^');
    let pan = fields.next().unwrap_or_default();
    let name = fields
        .next()
        .ok_or(layout("no '^' after the account number"))?;
    let rest = fields.next().ok_or(layout("no '^' after the name"))?;
    if pan.is_empty() || pan.len() > 19 || !pan.bytes().all(|b| b.is_ascii_digit()) {
        return Err(layout("account number must be 1 to 19 digits"));
    }
    if name.len() > 26 {
        return Err(layout("name longer than 26 characters"));
    }
    Ok(Track1 {
        format,
        pan: pan.into(),
        name: name.trim().into(),
        rest: rest.into(),
    })
}

fn track2(body: &str) -> Result<Track2, TrackError> {
    let layout = |message| TrackError::Layout { track: 2, message };
    if let Some(c) = body.chars().find(|c| !(c.is_ascii_digit() || *c == '=')) {
        return Err(TrackError::BadCharacter { track: 2, found: c });
    }
    if body.len() > 38 {
        return Err(layout("longer than 40 characters"));
    }
    let (pan, rest) = body.split_once('=').unwrap_or((body, ""));
    if pan.is_empty() || pan.len() > 19 {
        return Err(layout("account number must be 1 to 19 digits"));
    }
    Ok(Track2 {
        pan: pan.into(),
        rest: rest.into(),
    })
}

/// A loyalty card's number from its tracks: the account number of track 2 (else track 1),
/// without `skip` leading digits (an issuer prefix), at most `take` digits. A payment card
/// (track 1 format code B) is refused: a loyalty reader must never handle one.
pub fn loyalty_number(
    tracks: &Tracks,
    skip: usize,
    take: Option<usize>,
) -> Result<String, TrackError> {
    if tracks.track1.as_ref().is_some_and(|t| t.format == 'B') {
        return Err(TrackError::Layout {
            track: 1,
            message: "format code B is a payment card, not a loyalty card",
        });
    }
    let pan = tracks
        .track2
        .as_ref()
        .map(|t| t.pan.as_str())
        .or_else(|| tracks.track1.as_ref().map(|t| t.pan.as_str()))
        .ok_or(TrackError::NoTrack)?;
    let digits: String = pan.chars().skip(skip).collect();
    Ok(match take {
        Some(n) => digits.chars().take(n).collect(),
        None => digits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lrc(track: u8, raw: &str) -> char {
        let xor = raw.chars().fold(0, |x, c| x ^ value(track, c).unwrap());
        char::from(xor + if track == 1 { 0x20 } else { 0x30 })
    }

    #[test]
    fn parses_both_tracks_with_and_without_lrc() {
        let t1 = "%L6001234567890^MUSTER/ANNA^2912?";
        let t2 = ";6001234567890=2912101?";
        let tracks = parse_tracks(&format!("{t1}{t2}\r")).unwrap();
        assert_eq!(tracks.track1.as_ref().unwrap().name, "MUSTER/ANNA");
        assert_eq!(tracks.track2.as_ref().unwrap().pan, "6001234567890");
        let with_lrc = format!("{t1}{}{t2}{}", lrc(1, t1), lrc(2, t2));
        assert_eq!(parse_tracks(&with_lrc).unwrap(), tracks);
        let wrong = format!(
            "{t2}{}",
            char::from(u8::try_from(u32::from(lrc(2, t2))).unwrap() ^ 1)
        );
        assert_eq!(parse_tracks(&wrong), Err(TrackError::Lrc(2)));
        assert_eq!(loyalty_number(&tracks, 4, Some(6)).unwrap(), "234567");
    }

    #[test]
    fn refuses_broken_tracks_and_payment_cards() {
        assert_eq!(parse_tracks(";123=45"), Err(TrackError::NoEndSentinel(2)));
        assert!(matches!(
            parse_tracks(";12a4=5?"),
            Err(TrackError::BadCharacter { .. })
        ));
        assert!(matches!(
            parse_tracks("%L123?"),
            Err(TrackError::Layout { .. })
        ));
        assert!(matches!(
            parse_tracks("%l123^A^1?"),
            Err(TrackError::BadCharacter { .. })
        ));
        assert!(matches!(
            parse_tracks("%1123^A^1?"),
            Err(TrackError::Layout { .. })
        ));
        assert_eq!(parse_tracks("hello"), Err(TrackError::NoTrack));
        let payment = parse_tracks("%B4111111111111111^DOE/J^2912101?").unwrap();
        assert!(loyalty_number(&payment, 0, None).is_err());
    }
}
