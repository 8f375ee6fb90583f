//! Medians and spreads: with a noisy shared machine, the median of interleaved runs and the
//! per-round pair ratios say more than a mean.
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub n: usize,
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { f64::midpoint(v[n / 2 - 1], v[n / 2]) };
        Some(Self { n, median, min: v[0], max: v[n - 1] })
    }

    pub fn to_json(self, digits: i32) -> Value {
        json!({ "n": self.n, "median": round(self.median, digits), "min": round(self.min, digits), "max": round(self.max, digits) })
    }

    /// `12.3 [11.0–13.1]`.
    pub fn show(self, digits: usize) -> String {
        format!("{:.d$} [{:.d$}–{:.d$}]", self.median, self.min, self.max, d = digits)
    }
}

pub fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even_and_non_finite() {
        assert_eq!(Spread::of(&[3.0, 1.0, 2.0]).unwrap(), Spread { n: 3, median: 2.0, min: 1.0, max: 3.0 });
        assert!((Spread::of(&[4.0, 1.0, 2.0, 3.0]).unwrap().median - 2.5).abs() < 1e-12);
        assert_eq!(Spread::of(&[f64::NAN, 5.0]).unwrap().n, 1);
        assert!(Spread::of(&[]).is_none());
        assert_eq!(Spread::of(&[1.0, 2.0, 3.0]).unwrap().show(1), "2.0 [1.0–3.0]");
    }
}
