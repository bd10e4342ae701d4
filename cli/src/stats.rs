//! Percentiles of latency samples.

use std::time::Duration;

/// p50 and p99 of a set of samples, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Samples.
    pub n: usize,
}

/// Summarises samples (nearest-rank percentiles).
pub fn summarize(samples: &mut [Duration]) -> Summary {
    samples.sort_unstable();
    Summary {
        p50_us: percentile_us(samples, 0.50),
        p99_us: percentile_us(samples, 0.99),
        n: samples.len(),
    }
}

/// The nearest-rank `q` quantile of sorted samples, in microseconds (0 for
/// none).
pub fn percentile_us(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut v: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        let s = summarize(&mut v);
        assert_eq!(s.p50_us, 50.0);
        assert_eq!(s.p99_us, 99.0);
        assert_eq!(summarize(&mut []).n, 0);
    }
}
