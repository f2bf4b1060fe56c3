//! Projective maps between quadrilaterals: the corpus draws codes through one, the grid locator
//! samples them through one.

/// A 3x3 homography, row-major, applied to (x, y, 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Homography([f64; 9]);

impl Homography {
    /// The projective map of the unit square ((0,0), (1,0), (1,1), (0,1)) onto a quad given in
    /// that order (Heckbert's square-to-quad). None for a degenerate quad.
    pub fn square_to_quad(q: [(f64, f64); 4]) -> Option<Homography> {
        let [(x0, y0), (x1, y1), (x2, y2), (x3, y3)] = q;
        let (sx, sy) = (x0 - x1 + x2 - x3, y0 - y1 + y2 - y3);
        let (dx1, dx2, dy1, dy2) = (x1 - x2, x3 - x2, y1 - y2, y3 - y2);
        let den = dx1 * dy2 - dx2 * dy1;
        if den.abs() < 1e-12 {
            return None;
        }
        let g = (sx * dy2 - dx2 * sy) / den;
        let h = (dx1 * sy - sx * dy1) / den;
        Some(Homography([
            x1 - x0 + g * x1,
            x3 - x0 + h * x3,
            x0,
            y1 - y0 + g * y1,
            y3 - y0 + h * y3,
            y0,
            g,
            h,
            1.0,
        ]))
    }

    /// The map taking each corner of `from` to the same corner of `to`.
    pub fn quad_to_quad(from: [(f64, f64); 4], to: [(f64, f64); 4]) -> Option<Homography> {
        let to_square = Homography::square_to_quad(from)?.inverse()?;
        Some(Homography::square_to_quad(to)?.after(&to_square))
    }

    /// The inverse map, if the map is not degenerate.
    pub fn inverse(&self) -> Option<Homography> {
        let [a, b, c, d, e, f, g, h, i] = self.0;
        let det = a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g);
        if det.abs() < 1e-12 {
            return None;
        }
        Some(Homography([
            (e * i - f * h) / det,
            (c * h - b * i) / det,
            (b * f - c * e) / det,
            (f * g - d * i) / det,
            (a * i - c * g) / det,
            (c * d - a * f) / det,
            (d * h - e * g) / det,
            (b * g - a * h) / det,
            (a * e - b * d) / det,
        ]))
    }

    /// `self` applied to the result of `first`.
    fn after(&self, first: &Homography) -> Homography {
        let (m, n) = (&self.0, &first.0);
        let mut out = [0.0; 9];
        for row in 0..3 {
            for col in 0..3 {
                out[row * 3 + col] = (0..3).map(|k| m[row * 3 + k] * n[k * 3 + col]).sum();
            }
        }
        Homography(out)
    }

    /// Maps a point.
    pub fn apply(&self, x: f64, y: f64) -> (f64, f64) {
        let m = &self.0;
        let w = m[6] * x + m[7] * y + m[8];
        (
            (m[0] * x + m[1] * y + m[2]) / w,
            (m[3] * x + m[4] * y + m[5]) / w,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quad_to_quad_takes_each_corner_to_its_partner_and_inverts() {
        let from = [(3.5, 3.5), (21.5, 3.5), (18.5, 18.5), (3.5, 21.5)];
        let to = [(100.0, 80.0), (220.0, 95.0), (205.0, 210.0), (90.0, 230.0)];
        let map = Homography::quad_to_quad(from, to).expect("a proper quad");
        for (a, b) in from.iter().zip(&to) {
            let (x, y) = map.apply(a.0, a.1);
            assert!(
                (x - b.0).abs() < 1e-9 && (y - b.1).abs() < 1e-9,
                "{a:?} -> {x},{y}"
            );
        }
        let back = map.inverse().expect("invertible");
        let (u, v) = back.apply(205.0, 210.0);
        assert!((u - 18.5).abs() < 1e-9 && (v - 18.5).abs() < 1e-9);
    }

    #[test]
    fn a_degenerate_quad_has_no_map() {
        let line = [(0.0, 0.0), (1.0, 1.0), (2.0, 2.0), (3.0, 3.0)];
        assert!(Homography::square_to_quad(line).is_none());
    }
}
