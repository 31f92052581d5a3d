//! Percentiles from a histogram's cumulative buckets, computed as Prometheus'
//! `histogram_quantile` does: find the bucket the rank falls in and interpolate linearly
//! inside it. The dashboard shows the same p50/p90/p99 a Grafana panel over `/metrics`
//! would (over the whole life of the counters, as `histogram_quantile` over the raw series).

/// One finite cumulative bucket: observations at or below `le` (the `+Inf` bucket is the
/// histogram's total count, carried beside the buckets: JSON has no infinity).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Bucket {
    /// The bucket's upper bound.
    pub le: f64,
    /// Observations at or below `le` (cumulative, as Prometheus exposes them).
    pub count: u64,
}

/// The `q`-quantile (0 to 1) of `total` observations counted in the finite `buckets` (sorted
/// by `le`) and above them, or `None` without observations or finite buckets. Like
/// Prometheus: a rank above the last finite bucket answers that bucket's bound, and the
/// first bucket starts at 0 (unless its bound is below 0).
pub fn histogram_quantile(q: f64, finite: &[Bucket], total: u64) -> Option<f64> {
    if q.is_nan() || finite.is_empty() || total == 0 {
        return None;
    }
    if q < 0.0 {
        return Some(f64::NEG_INFINITY);
    }
    if q > 1.0 {
        return Some(f64::INFINITY);
    }
    let rank = q * total as f64;
    // The first finite bucket holding the rank.
    let b = finite.partition_point(|bucket| (bucket.count as f64) < rank);
    if b == finite.len() {
        return Some(finite[b - 1].le);
    }
    if b == 0 && finite[0].le <= 0.0 {
        return Some(finite[0].le);
    }
    let (start, before) = match b {
        0 => (0.0, 0),
        _ => (finite[b - 1].le, finite[b - 1].count),
    };
    let end = finite[b].le;
    let inside = finite[b].count - before;
    if inside == 0 {
        return Some(end);
    }
    Some(start + (end - start) * ((rank - before as f64) / inside as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The quantile over buckets written as Prometheus exposes them, `+Inf` last.
    fn quantile(q: f64, pairs: &[(f64, u64)]) -> Option<f64> {
        let (inf, finite) = pairs.split_last().unwrap();
        assert!(inf.0.is_infinite());
        let finite: Vec<Bucket> = finite
            .iter()
            .map(|&(le, count)| Bucket { le, count })
            .collect();
        histogram_quantile(q, &finite, inf.1)
    }

    #[test]
    fn interpolates_inside_the_bucket_the_rank_falls_in() {
        // 10 observations in (0, 0.1], 10 in (0.1, 0.2], none above.
        let b = [(0.1, 10), (0.2, 20), (0.5, 20), (f64::INFINITY, 20)];
        assert_eq!(quantile(0.5, &b), Some(0.1));
        assert!((quantile(0.25, &b).unwrap() - 0.05).abs() < 1e-12);
        assert!((quantile(0.75, &b).unwrap() - 0.15).abs() < 1e-12);
        assert!((quantile(0.99, &b).unwrap() - 0.198).abs() < 1e-12);
    }

    #[test]
    fn a_rank_in_the_infinite_bucket_answers_the_highest_finite_bound() {
        let b = [(0.1, 1), (1.0, 2), (f64::INFINITY, 10)];
        assert_eq!(quantile(0.9, &b), Some(1.0));
    }

    #[test]
    fn no_observations_or_no_finite_bucket_answers_nothing() {
        assert_eq!(quantile(0.5, &[(0.1, 0), (f64::INFINITY, 0)]), None);
        assert_eq!(quantile(0.5, &[(f64::INFINITY, 3)]), None);
        assert_eq!(quantile(f64::NAN, &[(1.0, 1), (f64::INFINITY, 1)]), None);
    }

    #[test]
    fn quantiles_outside_zero_to_one_are_infinite_as_in_prometheus() {
        let b = [(1.0, 1), (f64::INFINITY, 1)];
        assert_eq!(quantile(-0.1, &b), Some(f64::NEG_INFINITY));
        assert_eq!(quantile(1.1, &b), Some(f64::INFINITY));
    }

    #[test]
    fn the_first_bucket_starts_at_zero() {
        let b = [(0.004, 4), (f64::INFINITY, 4)];
        assert!((quantile(0.5, &b).unwrap() - 0.002).abs() < 1e-12);
    }
}
