//! A Prometheus text-format scrape, parsed, for tests that compare counts with `/metrics`.

use std::collections::BTreeMap;

use awc::Client;

/// One sample of a scrape: its metric name, labels and value.
#[derive(Debug)]
pub(crate) struct Sample {
    pub(crate) name: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) value: f64,
}

/// A scrape, parsed (the text format: `name{label="value",...} value`).
pub(crate) struct Scrape(pub(crate) Vec<Sample>);

impl Scrape {
    pub(crate) fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').expect("a sample line");
                let (name, labels) = match series.split_once('{') {
                    Some((name, rest)) => (name, rest.trim_end_matches('}')),
                    None => (series, ""),
                };
                let labels = labels
                    .split("\",")
                    .filter(|pair| !pair.is_empty())
                    .map(|pair| {
                        let (k, v) = pair.split_once('=').expect("label=value");
                        (k.to_owned(), v.trim_matches('"').to_owned())
                    })
                    .collect();
                Sample {
                    name: name.to_owned(),
                    labels,
                    value: value.parse().expect("a number"),
                }
            })
            .collect();
        Scrape(samples)
    }

    /// The sum of the samples of `name` carrying every label in `labels`.
    pub(crate) fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, |l| {
            labels
                .iter()
                .all(|(k, v)| l.get(*k).is_some_and(|x| x == v))
        })
    }

    /// The sum of the samples of `name` whose labels pass `keep`.
    pub(crate) fn matching(
        &self,
        name: &str,
        keep: impl Fn(&BTreeMap<String, String>) -> bool,
    ) -> f64 {
        self.0
            .iter()
            .filter(|s| s.name == name && keep(&s.labels))
            .map(|s| s.value)
            .sum()
    }

    /// Every value the label `label` takes on `name`.
    pub(crate) fn label_values(&self, name: &str, label: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|s| s.name == name)
            .filter_map(|s| s.labels.get(label).cloned())
            .collect()
    }
}

pub(crate) async fn scrape(url: &str) -> Scrape {
    let mut res = Client::default()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("scraping {url}: {e}"));
    assert_eq!(res.status().as_u16(), 200);
    let content_type = res.headers().get("content-type").unwrap().to_str().unwrap();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let body = res.body().limit(8 << 20).await.unwrap();
    Scrape::parse(std::str::from_utf8(&body).unwrap())
}

/// A scrape of `url`, or `None` when the node does not answer (it was killed, say).
pub(crate) async fn try_scrape(url: &str) -> Option<Scrape> {
    let mut res = Client::default().get(url).send().await.ok()?;
    if res.status().as_u16() != 200 {
        return None;
    }
    let body = res.body().limit(8 << 20).await.ok()?;
    Some(Scrape::parse(std::str::from_utf8(&body).ok()?))
}
