//! `sagashop loadgen --reads`: the read path alone. Creates `--read-products` products, then
//! `--concurrency` workers GET `/api/product/{id}` of random ones, on the nodes in turn, for
//! `--duration` seconds; reports requests per second, latency percentiles and, from the
//! nodes' `/metrics` (`--metrics-url`) scraped before and after, how often each cache level
//! (local, redis) answered and how many database reads the caches made. This is what shows
//! whether Redis in front of the database pays for itself.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use awc::http::Method;
use futures_util::future::join_all;
use hdrhistogram::Histogram;
use rand::Rng;
use serde::Serialize;
use serde_json::json;

use super::cluster::{Answer, Cluster, client};
use super::nodes::{NodeReport, Nodes};
use super::{Latency, LoadgenArgs};

/// The cache whose counters the report reads: product details.
const CACHE: &str = "product";

/// The figures of a read run.
#[derive(Debug, Clone, Serialize)]
pub struct ReadReport {
    /// The nodes driven, comma-separated as `--url` takes them.
    pub url: String,
    /// What each node served and how often it failed, in `--url` order.
    pub nodes: Vec<NodeReport>,
    /// Products read (created before the run).
    pub products: usize,
    /// Reads in flight at once.
    pub concurrency: usize,
    /// Seconds the reads ran.
    pub seconds: f64,
    /// Reads answered 200 with the product asked for.
    pub ok: u64,
    /// Reads answered with anything else (a 404 or 5xx, or another product).
    pub wrong: u64,
    /// Reads that got no answer.
    pub failed_requests: u64,
    /// `ok` per second.
    pub requests_per_second: f64,
    /// From sending a read to its whole answer.
    pub latency_ms: Latency,
    /// Each cache level's hits and misses of the product cache over the run, summed over
    /// the nodes (empty without `--metrics-url`).
    pub levels: Vec<LevelRatio>,
    /// Database reads the product cache made over the run (`None` without `--metrics-url`).
    pub database_loads: Option<f64>,
}

/// One cache level's answers over a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LevelRatio {
    /// `local` or `redis`.
    pub level: String,
    pub hits: f64,
    pub misses: f64,
    /// hits / (hits + misses); `None` when the level was not asked.
    pub hit_ratio: Option<f64>,
}

/// Runs the reads and returns the report.
pub async fn run(args: &LoadgenArgs) -> anyhow::Result<ReadReport> {
    let nodes = Rc::new(Nodes::parse(&args.url)?);
    let cluster = Cluster {
        client: client(args.concurrency),
        nodes,
    };
    let ids = create_products(&cluster, args.read_products, args.concurrency.max(1)).await?;
    let before = scrape_all(&cluster, &args.metrics_url).await?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    let tally = Rc::new(Tally::new()?);
    join_all((0..args.concurrency.max(1)).map(|w| read_until(&cluster, &ids, w, deadline, &tally)))
        .await;
    let seconds = started.elapsed().as_secs_f64();
    let after = scrape_all(&cluster, &args.metrics_url).await?;
    let h = tally.latency_us.borrow();
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let (levels, database_loads) = match (&before, &after) {
        (Some(b), Some(a)) => (level_ratios(b, a), Some(a.loads() - b.loads())),
        _ => (Vec::new(), None),
    };
    Ok(ReadReport {
        url: cluster.nodes.urls(),
        nodes: cluster.nodes.report(),
        products: ids.len(),
        concurrency: args.concurrency,
        seconds,
        ok: tally.ok.get(),
        wrong: tally.wrong.get(),
        failed_requests: cluster.nodes.failed_requests(),
        requests_per_second: tally.ok.get() as f64 / seconds,
        latency_ms: Latency {
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            max: h.max() as f64 / 1000.0,
        },
        levels,
        database_loads,
    })
}

/// Creates `n` products, `concurrency` at a time, spread over the nodes; their ids.
async fn create_products(
    cluster: &Cluster,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<u64>> {
    let run = sagashop::clock::Clock::system().now_ms();
    let next = Cell::new(0usize);
    let ids = RefCell::new(Vec::with_capacity(n));
    let creator = |w: usize| {
        let (next, ids) = (&next, &ids);
        async move {
            loop {
                let i = next.get();
                if i >= n {
                    return Ok::<_, anyhow::Error>(());
                }
                next.set(i + 1);
                let body = json!({"name":format!("reads-{run}-{i}"),"description":"loadgen --reads",
                    "brand_name":"loadgen","price":10 + (i % 90) as i64,"inventory":1_000_000});
                let (status, v) = cluster
                    .request(w + i, Method::POST, "/api/product", None, Some(&body))
                    .await?;
                if status != 201 {
                    bail!("POST /api/product answered {status}: {v}");
                }
                ids.borrow_mut().push(v["id"].as_u64().context("id")?);
            }
        }
    };
    for done in join_all((0..concurrency.min(n.max(1))).map(creator)).await {
        done?;
    }
    Ok(ids.into_inner())
}

/// What the workers measured.
struct Tally {
    ok: Cell<u64>,
    wrong: Cell<u64>,
    latency_us: RefCell<Histogram<u64>>,
}

impl Tally {
    fn new() -> anyhow::Result<Self> {
        Ok(Tally {
            ok: Cell::new(0),
            wrong: Cell::new(0),
            latency_us: RefCell::new(Histogram::new_with_bounds(1, 600_000_000, 3)?),
        })
    }
}

/// Worker `w`: reads random products, each on the next node in turn, until `deadline`.
async fn read_until(cluster: &Cluster, ids: &[u64], w: usize, deadline: Instant, tally: &Tally) {
    let mut turn = w;
    while Instant::now() < deadline && !ids.is_empty() {
        let id = ids[rand::rng().random_range(0..ids.len())];
        let node = cluster.nodes.pick(turn, Instant::now());
        turn += 1;
        let sent = Instant::now();
        let answer = cluster
            .send_to(node, Method::GET, &format!("/api/product/{id}"), None, None)
            .await;
        match answer {
            Answer::Answered(200, v) if v["id"].as_u64() == Some(id) => {
                tally.ok.set(tally.ok.get() + 1);
                let us = sent.elapsed().as_micros().max(1) as u64;
                let _ = tally.latency_us.borrow_mut().record(us);
            }
            Answer::Answered(..) => tally.wrong.set(tally.wrong.get() + 1),
            // Booked on the node by `send_to`; a dead node is passed over for a while.
            Answer::NotSent | Answer::Lost => {
                actix_rt::time::sleep(Duration::from_millis(10)).await
            }
        }
    }
}

/// The product cache's counters, summed over the nodes: (level, result) -> requests, and
/// the database loads.
#[derive(Debug, Default, Clone, PartialEq)]
struct Counters {
    requests: BTreeMap<(String, String), f64>,
    loads: f64,
}

impl Counters {
    fn loads(&self) -> f64 {
        self.loads
    }

    /// Adds one node's `/metrics` text.
    fn add(&mut self, text: &str) {
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            let labels: BTreeMap<&str, &str> = labels
                .trim_end_matches('}')
                .split(',')
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k, v.trim_matches('"')))
                .collect();
            if labels.get("cache") != Some(&CACHE) {
                continue;
            }
            match name {
                "sagashop_cache_requests_total" => {
                    let (Some(level), Some(result)) = (labels.get("level"), labels.get("result"))
                    else {
                        continue;
                    };
                    *self
                        .requests
                        .entry((level.to_string(), result.to_string()))
                        .or_default() += value;
                }
                "sagashop_cache_loads_total" => self.loads += value,
                _ => {}
            }
        }
    }
}

/// Every `--metrics-url` scraped and summed; `None` when none is given.
async fn scrape_all(cluster: &Cluster, urls: &[String]) -> anyhow::Result<Option<Counters>> {
    if urls.is_empty() {
        return Ok(None);
    }
    let mut counters = Counters::default();
    for url in urls {
        let mut res = cluster
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("scraping {url}: {e}"))?;
        let body = res.body().limit(16 << 20).await.context("a metrics body")?;
        counters.add(std::str::from_utf8(&body).context("metrics text")?);
    }
    Ok(Some(counters))
}

/// Each level's hits and misses between two scrapes.
fn level_ratios(before: &Counters, after: &Counters) -> Vec<LevelRatio> {
    ["local", "redis"]
        .into_iter()
        .map(|level| {
            let delta = |result: &str| {
                let key = (level.to_owned(), result.to_owned());
                after.requests.get(&key).copied().unwrap_or(0.0)
                    - before.requests.get(&key).copied().unwrap_or(0.0)
            };
            let (hits, misses) = (delta("hit"), delta("miss"));
            LevelRatio {
                level: level.to_owned(),
                hits,
                misses,
                hit_ratio: (hits + misses > 0.0).then(|| hits / (hits + misses)),
            }
        })
        .collect()
}

/// The text report (without `--json`).
pub fn render_text(r: &ReadReport) -> String {
    let mut out = vec![
        format!(
            "sagashop loadgen --reads against {} ({} products, concurrency {})",
            r.url, r.products, r.concurrency
        ),
        format!(
            "  reads/s           : {:.1} ({} in {:.1} s)",
            r.requests_per_second, r.ok, r.seconds
        ),
        format!(
            "  errors            : {} wrong answers, {} failed requests (no answer)",
            r.wrong, r.failed_requests
        ),
        format!(
            "  latency (ms)      : p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
            r.latency_ms.p50, r.latency_ms.p90, r.latency_ms.p99, r.latency_ms.max
        ),
    ];
    if r.levels.is_empty() {
        out.push("  cache levels      : not scraped (--metrics-url)".to_owned());
    }
    for l in &r.levels {
        let ratio = l
            .hit_ratio
            .map_or("-".to_owned(), |r| format!("{:.1}%", r * 100.0));
        out.push(format!(
            "  {:<6} level      : hit ratio {ratio} ({} hits, {} misses)",
            l.level, l.hits, l.misses
        ));
    }
    if let Some(loads) = r.database_loads {
        out.push(format!("  database reads    : {loads}"));
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = "\
# HELP sagashop_cache_requests_total x
sagashop_cache_requests_total{cache=\"product\",level=\"local\",result=\"hit\"} 30
sagashop_cache_requests_total{cache=\"product\",level=\"local\",result=\"miss\"} 10
sagashop_cache_requests_total{cache=\"product\",level=\"redis\",result=\"hit\"} 6
sagashop_cache_requests_total{cache=\"product\",level=\"redis\",result=\"miss\"} 4
sagashop_cache_requests_total{cache=\"person\",level=\"local\",result=\"hit\"} 99
sagashop_cache_loads_total{cache=\"product\"} 4
sagashop_cache_loads_total{cache=\"order\"} 7
";

    #[test]
    fn hit_ratios_are_per_level_over_the_run_and_summed_over_nodes() {
        let before = Counters::default();
        let mut after = Counters::default();
        after.add(SCRAPE);
        after.add(SCRAPE);
        let levels = level_ratios(&before, &after);
        assert_eq!(levels[0].level, "local");
        assert_eq!((levels[0].hits, levels[0].misses), (60.0, 20.0));
        assert_eq!(levels[0].hit_ratio, Some(0.75));
        assert_eq!(levels[1].hit_ratio, Some(0.6));
        assert_eq!(after.loads() - before.loads(), 8.0);
    }

    #[test]
    fn a_level_never_asked_has_no_ratio() {
        let mut c = Counters::default();
        c.add("sagashop_cache_requests_total{cache=\"product\",level=\"local\",result=\"hit\"} 5");
        let levels = level_ratios(&Counters::default(), &c);
        assert_eq!(levels[1].hit_ratio, None);
        let text = render_text(&ReadReport {
            url: "http://a:1".into(),
            nodes: Vec::new(),
            products: 10,
            concurrency: 2,
            seconds: 1.0,
            ok: 5,
            wrong: 0,
            failed_requests: 0,
            requests_per_second: 5.0,
            latency_ms: Latency {
                p50: 1.0,
                p90: 1.0,
                p99: 1.0,
                max: 1.0,
            },
            levels,
            database_loads: Some(0.0),
        });
        assert!(
            text.contains("local  level      : hit ratio 100.0%"),
            "{text}"
        );
        assert!(text.contains("redis  level      : hit ratio -"), "{text}");
    }
}
