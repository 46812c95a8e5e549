//! The little statistics the report needs: medians, percentiles, ratios.
//!
//! Rounds are few and the machines noisy, so every figure is a median over
//! rounds with its min and max beside it, never a mean.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The `p`th percentile (0..=100) of samples sorted ascending, interpolating
/// linearly between the two nearest ranks (numpy's default). `None` when empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let rank = (p.clamp(0.0, 100.0) / 100.0) * last as f64;
    let below = rank.floor() as usize;
    let above = rank.ceil() as usize;
    let weight = rank - below as f64;
    Some(sorted[below] + (sorted[above] - sorted[below]) * weight)
}

/// The median of unsorted samples.
pub fn median(samples: &[f64]) -> Option<f64> {
    percentile(&sorted(samples), 50.0)
}

/// A sorted copy; NaNs (which no measurement produces) sort last.
pub fn sorted(samples: &[f64]) -> Vec<f64> {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted
}

/// A figure over rounds: its median, min and max.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Summary {
    pub fn of(samples: &[f64]) -> Option<Self> {
        let sorted = sorted(samples);
        Some(Self {
            median: percentile(&sorted, 50.0)?,
            min: *sorted.first()?,
            max: *sorted.last()?,
            n: sorted.len(),
        })
    }
}

/// `a / b`, when both are there and `b` is not zero.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => Some(a / b),
        _ => None,
    }
}

/// How far `value` is over `limit`, in percent of the limit (positive: missed).
pub fn over_by_percent(value: f64, limit: f64) -> f64 {
    (value / limit - 1.0) * 100.0
}

/// One latency run's distribution, in microseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latencies {
    pub count: usize,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// Every sample, counted in buckets keyed by their lower bound in µs:
    /// 1 µs wide below 1 ms, 10 µs below 10 ms, 100 µs beyond.
    pub histogram_us: BTreeMap<u64, u32>,
}

impl Latencies {
    /// From round trips in nanoseconds.
    pub fn from_nanos(nanos: &[u64]) -> Option<Self> {
        let micros: Vec<f64> = nanos.iter().map(|&n| n as f64 / 1000.0).collect();
        let sorted = sorted(&micros);
        let mut histogram_us = BTreeMap::new();
        for &n in nanos {
            *histogram_us.entry(bucket_us(n)).or_insert(0) += 1;
        }
        Some(Self {
            count: sorted.len(),
            mean_us: sorted.iter().sum::<f64>() / sorted.len().max(1) as f64,
            p50_us: percentile(&sorted, 50.0)?,
            p90_us: percentile(&sorted, 90.0)?,
            p99_us: percentile(&sorted, 99.0)?,
            p999_us: percentile(&sorted, 99.9)?,
            max_us: *sorted.last()?,
            histogram_us,
        })
    }
}

/// The histogram bucket of a round trip of `nanos`.
pub fn bucket_us(nanos: u64) -> u64 {
    let us = nanos / 1000;
    let width = match us {
        0..1_000 => 1,
        1_000..10_000 => 10,
        _ => 100,
    };
    us / width * width
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let s = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&s, 0.0), Some(1.0));
        assert_eq!(percentile(&s, 100.0), Some(4.0));
        assert_eq!(percentile(&s, 50.0), Some(2.5));
        assert_eq!(percentile(&s, 25.0), Some(1.75));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn p99_of_a_hundred_and_one() {
        let s: Vec<f64> = (0..=100).map(f64::from).collect();
        assert_eq!(percentile(&s, 99.0), Some(99.0));
        assert_eq!(percentile(&s, 99.9), Some(99.9));
    }

    #[test]
    fn median_sorts_first() {
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn summary_has_median_min_max() {
        let s = Summary::of(&[3.0, 9.0, 1.0, 4.0, 2.0]).unwrap();
        assert_eq!(
            s,
            Summary {
                median: 3.0,
                min: 1.0,
                max: 9.0,
                n: 5
            }
        );
        assert_eq!(Summary::of(&[]), None);
    }

    #[test]
    fn ratios_need_both_sides() {
        assert_eq!(ratio(Some(3.0), Some(2.0)), Some(1.5));
        assert_eq!(ratio(Some(3.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(2.0)), None);
        assert_eq!(ratio(Some(1.0), None), None);
    }

    #[test]
    fn over_by() {
        assert!((over_by_percent(1.38, 1.15) - 20.0).abs() < 1e-9);
        assert!(over_by_percent(5.0, 8.0) < 0.0);
    }

    #[test]
    fn buckets_widen_in_the_tail() {
        assert_eq!(bucket_us(999), 0);
        assert_eq!(bucket_us(52_700), 52);
        assert_eq!(bucket_us(999_999), 999);
        assert_eq!(bucket_us(1_234_567), 1_230);
        assert_eq!(bucket_us(12_345_678), 12_300);
    }

    #[test]
    fn latencies_in_micros_with_a_histogram() {
        let nanos = [10_000, 10_400, 11_000, 30_999];
        let l = Latencies::from_nanos(&nanos).unwrap();
        assert_eq!(l.count, 4);
        assert_eq!(l.max_us, 30.999);
        assert!((l.p50_us - 10.7).abs() < 1e-9);
        assert!((l.mean_us - 15.59975).abs() < 1e-9);
        assert_eq!(
            l.histogram_us.into_iter().collect::<Vec<_>>(),
            [(10, 2), (11, 1), (30, 1)]
        );
        assert_eq!(Latencies::from_nanos(&[]), None);
    }
}
