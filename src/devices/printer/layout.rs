//! The receipt a purchase prints as: store header, lines, total, coupons, points, and a QR code
//! (receipt lookup or order tracking URL from config), on 58 or 80 mm paper. A reprint says
//! COPY at the top and the bottom, so a second paper receipt can never pass for a second sale.

use super::escpos::{Align, CodePage, Encoder};
use crate::protocol::Purchase;

/// How receipts look on one printer.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Characters per line in font A: 32 on 58 mm paper, 48 on 80 mm (42 with font B margins).
    pub columns: usize,
    /// The printer code page text is encoded in.
    pub code_page: CodePage,
    /// Lines at the top; the first is bold.
    pub header: Vec<String>,
    /// Lines at the bottom, above the QR code.
    pub footer: Vec<String>,
    /// `{receipt}` is replaced by the receipt id.
    pub qr_url: Option<String>,
}

fn money(minor: i64, currency: &str) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let minor = minor.unsigned_abs();
    format!("{sign}{}.{:02} {currency}", minor / 100, minor % 100)
}

/// `left` and `right` on one line of `columns`, `left` cut short to make room.
fn two_columns(left: &str, right: &str, columns: usize) -> String {
    let room = columns.saturating_sub(right.chars().count() + 1);
    let left: String = left.chars().take(room).collect();
    let pad = columns.saturating_sub(left.chars().count() + right.chars().count());
    format!("{left}{}{right}", " ".repeat(pad))
}

/// The ESC/POS bytes of a receipt, ending with the in-order status request whose reply tells
/// the driver the printer got through it, and the cut.
pub fn render(layout: &Layout, purchase: &Purchase, copy: bool) -> Vec<u8> {
    let columns = layout.columns.clamp(24, 64);
    let mut e = Encoder::new(layout.code_page);
    if copy {
        e.align(Align::Centre)
            .double(true)
            .bold(true)
            .line("COPY")
            .double(false)
            .bold(false);
    }
    e.align(Align::Centre);
    for (i, line) in layout.header.iter().enumerate() {
        e.bold(i == 0).line(line);
    }
    e.bold(false).align(Align::Left).feed(1);
    e.line(&format!("Receipt: {}", purchase.receipt));
    e.line(&"-".repeat(columns));
    for line in &purchase.lines {
        let amount = money(line.qty * line.unit_minor, &purchase.currency);
        e.line(&two_columns(
            &format!("{} x{}", line.sku, line.qty),
            &amount,
            columns,
        ));
    }
    e.line(&"-".repeat(columns));
    e.bold(true)
        .line(&two_columns(
            "TOTAL",
            &money(purchase.total_minor, &purchase.currency),
            columns,
        ))
        .bold(false);
    for coupon in &purchase.coupons {
        e.line(&format!("Coupon {coupon}"));
    }
    if purchase.points > 0 {
        e.line(&format!("Points earned: {}", purchase.points));
    }
    if purchase.points_redeemed > 0 {
        e.line(&format!("Points redeemed: {}", purchase.points_redeemed));
    }
    if !layout.footer.is_empty() {
        e.feed(1).align(Align::Centre);
        for line in &layout.footer {
            e.line(line);
        }
    }
    if let Some(url) = &layout.qr_url {
        e.feed(1)
            .align(Align::Centre)
            .qr(&url.replace("{receipt}", &purchase.receipt), 6);
    }
    if copy {
        e.feed(1)
            .align(Align::Centre)
            .double(true)
            .bold(true)
            .line("COPY")
            .double(false)
            .bold(false);
    }
    e.feed(3).cut(true).request_processed_status();
    e.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Line;

    fn purchase() -> Purchase {
        Purchase {
            receipt: "R-0001".into(),
            lines: vec![Line {
                sku: "Käse".into(),
                gtin: None,
                qty: 2,
                unit_minor: 250,
            }],
            total_minor: 500,
            currency: "EUR".into(),
            customer: None,
            coupons: vec!["c-10".into()],
            points: 5,
            points_redeemed: 0,
            adjustment_minor: 0,
        }
    }

    fn layout(columns: usize) -> Layout {
        Layout {
            columns,
            code_page: CodePage::Cp858,
            header: vec!["Store 042".into()],
            footer: vec!["Thank you".into()],
            qr_url: Some("https://shop.example/r/{receipt}".into()),
        }
    }

    #[test]
    fn a_receipt_has_its_lines_total_coupons_points_and_qr() {
        let bytes = render(&layout(32), &purchase(), false);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("Receipt: R-0001"));
        assert!(text.contains("TOTAL                   5.00 EUR"), "{text}");
        assert!(text.contains("Coupon c-10"));
        assert!(text.contains("Points earned: 5"));
        assert!(text.contains("https://shop.example/r/R-0001"));
        assert!(!text.contains("COPY"));
        assert!(bytes.ends_with(&[0x1D, b'V', 66, 3, 0x1D, b'r', 1]));
        // 80 mm paper: 48 columns.
        let wide = String::from_utf8_lossy(&render(&layout(48), &purchase(), false)).into_owned();
        assert!(wide.contains(&format!("TOTAL{}5.00 EUR", " ".repeat(48 - 5 - 8))));
    }

    #[test]
    fn a_reprint_says_copy_twice() {
        let text = String::from_utf8_lossy(&render(&layout(32), &purchase(), true)).into_owned();
        assert_eq!(text.matches("COPY").count(), 2);
    }
}
