//! A code held in front of the camera is reported once, until it leaves. "Leaves" means
//! missing from [`RELEASE_AFTER`] changed frames in a row, so one blurred frame while the
//! customer's hand moves does not report the same coupon twice.

use std::collections::HashMap;

/// Changed frames without a code before it counts as gone.
pub const RELEASE_AFTER: u32 = 3;

/// Codes in front of the camera now: one scan per presentation, not one per frame.
#[derive(Debug, Default)]
pub struct HeldCodes {
    misses: HashMap<String, u32>,
}

impl HeldCodes {
    /// Takes the texts decoded from a changed frame; returns those not already held, in order.
    pub fn observe(&mut self, texts: &[String]) -> Vec<String> {
        self.misses.retain(|held, misses| {
            if texts.contains(held) {
                return true;
            }
            *misses += 1;
            *misses < RELEASE_AFTER
        });
        let mut new = Vec::new();
        for text in texts {
            if self.misses.insert(text.clone(), 0).is_none() && !new.contains(text) {
                new.push(text.clone());
            }
        }
        new
    }

    /// How many codes are held now.
    pub fn held(&self) -> usize {
        self.misses.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_once_while_held_and_again_after_it_left() {
        let mut held = HeldCodes::default();
        let code = vec!["SGA1.abcdefgh".to_string()];
        assert_eq!(held.observe(&code), code);
        assert!(held.observe(&code).is_empty());
        // Two frames without it (a blur), then back: still the same presentation.
        assert!(held.observe(&[]).is_empty());
        assert!(held.observe(&[]).is_empty());
        assert!(held.observe(&code).is_empty());
        // Gone for three frames: shown again, it is new again.
        for _ in 0..RELEASE_AFTER {
            held.observe(&[]);
        }
        assert_eq!(held.held(), 0);
        assert_eq!(held.observe(&code), code);
    }
}
