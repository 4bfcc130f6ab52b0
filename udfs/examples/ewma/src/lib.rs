//! A time-decayed exponentially weighted moving average, as a rivulet WASM aggregate:
//! `ewma(value, at, half_life_s)` weighs each value by `2^(-(t_last - at) / half_life)`, where
//! `t_last` is the latest `at` of the group, so a value half a life older counts half as much.
//!
//! ```sql
//! SELECT ticker_symbol, ewma(price, event_time, 30.0) AS price_ewma
//! FROM source
//! GROUP BY TUMBLE(event_time, INTERVAL '1' MINUTE), ticker_symbol
//! ```
//!
//! Unlike a per-row EWMA, this one does not depend on the order rows arrive in: the state is the
//! decayed sums (Σ w·v, Σ w) referred to the latest time seen, and two states merge by referring
//! both to the later time. That makes it exact across micro-batches, partial aggregates and
//! checkpoint restores. The half-life is taken from the group's first row.

use rivulet_udf::{Aggregate, Timestamp};

/// The state of one group.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Ewma {
    /// Σ w·v, with weights referred to `reference`.
    weighted: f64,
    /// Σ w.
    weight: f64,
    /// The latest time seen (microseconds), the reference of the weights.
    reference: i64,
    /// Half-life in microseconds (0 until the first row).
    half_life_us: f64,
}

impl Ewma {
    fn decay(&self, from: i64, to: i64) -> f64 {
        if self.half_life_us <= 0.0 {
            return 1.0;
        }
        (-((to - from) as f64) / self.half_life_us).exp2()
    }

    /// Refers the sums to the later time `to`.
    fn advance(&mut self, to: i64) {
        if to > self.reference {
            let d = self.decay(self.reference, to);
            self.weighted *= d;
            self.weight *= d;
            self.reference = to;
        }
    }

    /// Adds `value`, observed at `at`, with a half-life of `half_life_s` seconds.
    pub fn update(&mut self, value: f64, at: Timestamp, half_life_s: f64) {
        if self.weight == 0.0 && self.half_life_us == 0.0 {
            self.half_life_us = half_life_s * 1e6;
            self.reference = at.0;
        }
        self.advance(at.0);
        let w = self.decay(at.0, self.reference);
        self.weighted += w * value;
        self.weight += w;
    }
}

impl Aggregate for Ewma {
    type Output = f64;

    fn merge(&mut self, mut other: Self) {
        if other.weight == 0.0 {
            return;
        }
        if self.weight == 0.0 {
            *self = other;
            return;
        }
        let to = self.reference.max(other.reference);
        self.advance(to);
        other.advance(to);
        self.weighted += other.weighted;
        self.weight += other.weight;
    }

    fn evaluate(&self) -> Option<f64> {
        (self.weight > 0.0).then(|| self.weighted / self.weight)
    }

    fn save(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(32);
        b.extend_from_slice(&self.weighted.to_le_bytes());
        b.extend_from_slice(&self.weight.to_le_bytes());
        b.extend_from_slice(&self.reference.to_le_bytes());
        b.extend_from_slice(&self.half_life_us.to_le_bytes());
        b
    }

    fn load(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != 32 {
            return None;
        }
        let word = |i: usize| -> [u8; 8] { bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes") };
        Some(Self {
            weighted: f64::from_le_bytes(word(0)),
            weight: f64::from_le_bytes(word(1)),
            reference: i64::from_le_bytes(word(2)),
            half_life_us: f64::from_le_bytes(word(3)),
        })
    }
}

rivulet_udf::export! {
    aggregate ewma(value: f64, at: Timestamp, half_life_s: f64) -> f64 = Ewma;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(rows: &[(f64, i64)]) -> Ewma {
        let mut e = Ewma::default();
        for &(v, t) in rows {
            e.update(v, Timestamp(t * 1_000_000), 10.0);
        }
        e
    }

    #[test]
    fn a_value_one_half_life_older_weighs_half() {
        let e = of(&[(0.0, 0), (3.0, 10)]);
        // weights 0.5 and 1: (0·0.5 + 3·1) / 1.5
        assert!((e.evaluate().unwrap() - 2.0).abs() < 1e-12);
        assert_eq!(Ewma::default().evaluate(), None);
    }

    #[test]
    fn order_and_merging_do_not_change_the_result() {
        let rows = [(1.0, 5), (7.0, 0), (4.0, 12), (2.0, 3)];
        let whole = of(&rows).evaluate().unwrap();
        let mut reversed: Vec<_> = rows.to_vec();
        reversed.reverse();
        assert!((of(&reversed).evaluate().unwrap() - whole).abs() < 1e-12);
        let mut a = of(&rows[..2]);
        a.merge(of(&rows[2..]));
        assert!((a.evaluate().unwrap() - whole).abs() < 1e-12);
        let saved = Ewma::load(&a.save()).unwrap();
        assert_eq!(saved, a);
        assert_eq!(Ewma::load(b"short"), None);
    }
}
