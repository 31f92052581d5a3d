//! A node's metrics as plain data: read from the one Prometheus registry that `/metrics`
//! exposes (what its `gather` answers), so every number the dashboard shows is the number a scrape
//! shows, and summed over nodes for the cluster's totals.

use std::collections::BTreeMap;

use prometheus::proto::{MetricFamily, MetricType};
use serde::{Deserialize, Serialize};

use super::quantile::Bucket;

/// Label names and values of one series (sorted, so equal label sets compare equal).
pub type Labels = BTreeMap<String, String>;

/// One counter or gauge series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub labels: Labels,
    pub value: f64,
}

/// One histogram series: its finite cumulative buckets, total count and sum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub labels: Labels,
    /// Observations in all (the `+Inf` bucket).
    pub count: u64,
    pub sum: f64,
    pub buckets: Vec<Bucket>,
}

/// A metric family: its series, by kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Family {
    Counter { samples: Vec<Sample> },
    Gauge { samples: Vec<Sample> },
    Histogram { series: Vec<Series> },
}

/// Metric families by name.
pub type Metrics = BTreeMap<String, Family>;

/// The families the dashboard reads: sagashop's own and the process collector's.
fn wanted(name: &str) -> bool {
    name.starts_with("sagashop_") || name.starts_with("process_")
}

/// Families that describe one node (its identity, its start): never summed into totals.
fn per_node(name: &str) -> bool {
    name.starts_with("sagashop_node_") || name.starts_with("process_")
}

fn labels_of(metric: &prometheus::proto::Metric) -> Labels {
    metric
        .get_label()
        .iter()
        .map(|l| (l.name().to_owned(), l.value().to_owned()))
        .collect()
}

fn family_of(mf: &MetricFamily) -> Option<Family> {
    let metrics = mf.get_metric();
    let samples = |value: &dyn Fn(&prometheus::proto::Metric) -> f64| {
        metrics
            .iter()
            .map(|m| Sample {
                labels: labels_of(m),
                value: value(m),
            })
            .collect()
    };
    match mf.get_field_type() {
        MetricType::COUNTER => Some(Family::Counter {
            samples: samples(&|m| m.get_counter().value()),
        }),
        MetricType::GAUGE => Some(Family::Gauge {
            samples: samples(&|m| m.get_gauge().value()),
        }),
        MetricType::HISTOGRAM => Some(Family::Histogram {
            series: metrics
                .iter()
                .map(|m| {
                    let h = m.get_histogram();
                    Series {
                        labels: labels_of(m),
                        count: h.get_sample_count(),
                        sum: h.get_sample_sum(),
                        buckets: h
                            .get_bucket()
                            .iter()
                            .filter(|b| b.upper_bound().is_finite())
                            .map(|b| Bucket {
                                le: b.upper_bound(),
                                count: b.cumulative_count(),
                            })
                            .collect(),
                    }
                })
                .collect(),
        }),
        _ => None,
    }
}

/// The sagashop and process families among `families` (what the registry's `gather`
/// answers, the same a scrape encodes).
pub fn from_families(families: &[MetricFamily]) -> Metrics {
    families
        .iter()
        .filter(|mf| wanted(mf.name()))
        .filter_map(|mf| Some((mf.name().to_owned(), family_of(mf)?)))
        .collect()
}

/// Adds `series` into `into`, series by series (matched by labels), buckets by bound.
fn add_series(into: &mut Vec<Series>, series: &[Series]) {
    for s in series {
        match into.iter_mut().find(|t| t.labels == s.labels) {
            None => into.push(s.clone()),
            Some(t) => {
                t.count += s.count;
                t.sum += s.sum;
                for b in &s.buckets {
                    match t.buckets.iter_mut().find(|tb| tb.le == b.le) {
                        Some(tb) => tb.count += b.count,
                        None => t.buckets.push(*b),
                    }
                }
                t.buckets.sort_by(|a, b| a.le.total_cmp(&b.le));
            }
        }
    }
}

fn add_samples(into: &mut Vec<Sample>, samples: &[Sample]) {
    for s in samples {
        match into.iter_mut().find(|t| t.labels == s.labels) {
            Some(t) => t.value += s.value,
            None => into.push(s.clone()),
        }
    }
}

/// The cluster's totals: every node's series added up (counters, gauges and histogram
/// buckets alike), leaving out what describes one node only (its identity, its process).
pub fn sum<'a>(nodes: impl IntoIterator<Item = &'a Metrics>) -> Metrics {
    let mut total = Metrics::new();
    for metrics in nodes {
        for (name, family) in metrics.iter().filter(|(n, _)| !per_node(n)) {
            match (total.get_mut(name), family) {
                (None, _) => {
                    total.insert(name.clone(), family.clone());
                }
                (Some(Family::Counter { samples: t }), Family::Counter { samples })
                | (Some(Family::Gauge { samples: t }), Family::Gauge { samples }) => {
                    add_samples(t, samples)
                }
                (Some(Family::Histogram { series: t }), Family::Histogram { series }) => {
                    add_series(t, series)
                }
                // Nodes of different builds disagreeing on a family's type: keep the first.
                _ => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts};

    use super::*;

    /// A registry filled the way the metrics module fills it, with known values.
    fn registry() -> prometheus::Registry {
        let registry = prometheus::Registry::new();
        let finished = IntCounterVec::new(
            Opts::new("sagashop_sagas_finished_total", "sagas finished"),
            &["outcome"],
        )
        .unwrap();
        finished.with_label_values(&["succeeded"]).inc_by(7);
        finished.with_label_values(&["rolled_back"]).inc_by(2);
        registry.register(Box::new(finished)).unwrap();
        let started = IntCounter::new("sagashop_sagas_started_total", "started").unwrap();
        started.inc_by(9);
        registry.register(Box::new(started)).unwrap();
        let owned = IntGauge::new("sagashop_partitions_owned", "owned").unwrap();
        owned.set(16);
        registry.register(Box::new(owned)).unwrap();
        let steps = HistogramVec::new(
            HistogramOpts::new("sagashop_step_duration_seconds", "steps")
                .buckets(vec![0.001, 0.01, 0.1]),
            &["step", "kind"],
        )
        .unwrap();
        for v in [0.0005, 0.005, 0.005, 0.05, 5.0] {
            steps
                .with_label_values(&["create_order", "action"])
                .observe(v);
        }
        registry.register(Box::new(steps)).unwrap();
        let other = IntCounter::new("unrelated_total", "not ours").unwrap();
        registry.register(Box::new(other)).unwrap();
        registry
    }

    fn counter(metrics: &Metrics, name: &str, label: Option<(&str, &str)>) -> f64 {
        let Some(Family::Counter { samples }) = metrics.get(name) else {
            panic!("{name} is not a counter in {metrics:?}")
        };
        samples
            .iter()
            .find(|s| label.is_none_or(|(k, v)| s.labels.get(k).map(String::as_str) == Some(v)))
            .unwrap()
            .value
    }

    #[test]
    fn a_snapshot_holds_what_the_registry_counts() {
        let metrics = from_families(&registry().gather());
        assert!(!metrics.contains_key("unrelated_total"));
        assert_eq!(counter(&metrics, "sagashop_sagas_started_total", None), 9.0);
        let succeeded = Some(("outcome", "succeeded"));
        assert_eq!(
            counter(&metrics, "sagashop_sagas_finished_total", succeeded),
            7.0
        );
        let Some(Family::Gauge { samples }) = metrics.get("sagashop_partitions_owned") else {
            panic!()
        };
        assert_eq!(samples[0].value, 16.0);
        let Some(Family::Histogram { series }) = metrics.get("sagashop_step_duration_seconds")
        else {
            panic!()
        };
        let s = &series[0];
        assert_eq!(s.labels["step"], "create_order");
        assert_eq!(s.count, 5);
        let counts: Vec<u64> = s.buckets.iter().map(|b| b.count).collect();
        assert_eq!(
            counts,
            [1, 3, 4],
            "cumulative, the +Inf bucket left to `count`"
        );
    }

    #[test]
    fn a_snapshot_survives_json() {
        let metrics = from_families(&registry().gather());
        let back: Metrics =
            serde_json::from_str(&serde_json::to_string(&metrics).unwrap()).unwrap();
        assert_eq!(back, metrics);
    }

    #[test]
    fn totals_add_every_node_series_by_labels() {
        let one = from_families(&registry().gather());
        let total = sum([&one, &one, &one]);
        assert_eq!(counter(&total, "sagashop_sagas_started_total", None), 27.0);
        let rolled_back = Some(("outcome", "rolled_back"));
        assert_eq!(
            counter(&total, "sagashop_sagas_finished_total", rolled_back),
            6.0
        );
        let Some(Family::Histogram { series }) = total.get("sagashop_step_duration_seconds") else {
            panic!()
        };
        assert_eq!(series[0].count, 15);
        let counts: Vec<u64> = series[0].buckets.iter().map(|b| b.count).collect();
        assert_eq!(counts, [3, 9, 12]);
    }
}
