//! The nodes of the cluster the load generator drives, as it sees them: which node each
//! customer buys on and streams from, which nodes are taken as dead, and when a dead node is
//! tried again. One URL is a cluster of one node, so every run goes through here.
//!
//! Pure bookkeeping (no I/O; the caller passes the time in), so the failover rules are
//! unit-tested without a server.

use std::cell::Cell;
use std::time::{Duration, Instant};

use serde::Serialize;

/// How long a node that failed a request is passed over before one request tries it again.
pub(crate) const RETRY: Duration = Duration::from_secs(1);

/// One node: its base URL, whether it is taken as dead, and what it served.
#[derive(Debug)]
struct Node {
    url: String,
    /// `None` while the node answers; after a failed request, when it may be tried again.
    retry_at: Cell<Option<Instant>>,
    answered: Cell<u64>,
    failed: Cell<u64>,
    streams: Cell<u64>,
}

/// What one node served during a run, for the report: shows how the load was spread and
/// which node failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeReport {
    pub url: String,
    /// Requests the node answered (any status).
    pub answered: u64,
    /// Requests that got no answer from it (connection refused or reset, timeout).
    pub failed_requests: u64,
    /// Result streams it subscribed.
    pub streams: u64,
}

/// The cluster's nodes in `--url` order.
#[derive(Debug)]
pub(crate) struct Nodes {
    nodes: Vec<Node>,
}

impl Nodes {
    /// The nodes named by `--url` (its values split at commas): blanks around a URL and a
    /// trailing `/` are dropped, so `{url}/api/...` is well formed.
    pub(crate) fn parse(urls: &[String]) -> anyhow::Result<Self> {
        let nodes = urls
            .iter()
            .map(|raw| {
                let url = raw.trim().trim_end_matches('/');
                anyhow::ensure!(
                    url.starts_with("http://") || url.starts_with("https://"),
                    "--url: {raw:?} is not an http:// URL"
                );
                Ok(Node {
                    url: url.to_owned(),
                    retry_at: Cell::new(None),
                    answered: Cell::new(0),
                    failed: Cell::new(0),
                    streams: Cell::new(0),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        anyhow::ensure!(!nodes.is_empty(), "--url names no node");
        Ok(Nodes { nodes })
    }

    /// How many nodes there are.
    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Node `i`'s base URL.
    pub(crate) fn url(&self, i: usize) -> &str {
        &self.nodes[i].url
    }

    /// Every URL, comma-separated as `--url` takes them (the report's `url`).
    pub(crate) fn urls(&self) -> String {
        let urls: Vec<&str> = self.nodes.iter().map(|n| n.url.as_str()).collect();
        urls.join(",")
    }

    /// The node customer `customer` signs up and buys on: customers are spread round-robin.
    pub(crate) fn home(&self, customer: usize) -> usize {
        customer % self.len()
    }

    /// The node customer `customer` holds its result stream on: the one after its home, so
    /// that with several nodes every result crosses from one node to another.
    pub(crate) fn stream_home(&self, customer: usize) -> usize {
        (customer + 1) % self.len()
    }

    /// The node a request goes to: `preferred` while it answers, else the next node (in
    /// `--url` order, wrapping around) that answers or whose retry is due. A due retry is
    /// handed to this one request (the next falls due `RETRY` later), so a dead node gets
    /// about one request per `RETRY` until it answers again. When every node is dead and
    /// none is due, `preferred`: the caller pauses after a failure, and a lone node (a
    /// server being restarted) is tried again at the caller's pace.
    pub(crate) fn pick(&self, preferred: usize, now: Instant) -> usize {
        let n = self.len();
        for i in (0..n).map(|k| (preferred + k) % n) {
            let retry_at = &self.nodes[i].retry_at;
            match retry_at.get() {
                None => return i,
                Some(at) if at <= now => {
                    retry_at.set(Some(now + RETRY));
                    return i;
                }
                Some(_) => {}
            }
        }
        preferred % n
    }

    /// Node `i` answered a request: it is alive (again).
    pub(crate) fn answered(&self, i: usize) {
        let node = &self.nodes[i];
        node.retry_at.set(None);
        node.answered.set(node.answered.get() + 1);
    }

    /// A request to node `i` got no answer: it is taken as dead until `now + RETRY`.
    pub(crate) fn failed(&self, i: usize, now: Instant) {
        let node = &self.nodes[i];
        node.retry_at.set(Some(now + RETRY));
        node.failed.set(node.failed.get() + 1);
    }

    /// Node `i` subscribed a result stream.
    pub(crate) fn streamed(&self, i: usize) {
        let node = &self.nodes[i];
        node.streams.set(node.streams.get() + 1);
    }

    /// Requests that got no answer, over all nodes.
    pub(crate) fn failed_requests(&self) -> u64 {
        self.nodes.iter().map(|n| n.failed.get()).sum()
    }

    /// Each node's figures, in `--url` order.
    pub(crate) fn report(&self) -> Vec<NodeReport> {
        self.nodes
            .iter()
            .map(|n| NodeReport {
                url: n.url.clone(),
                answered: n.answered.get(),
                failed_requests: n.failed.get(),
                streams: n.streams.get(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Nodes {
        let urls: Vec<String> = (0..n)
            .map(|i| format!("http://127.0.0.1:{}", 8001 + i))
            .collect();
        Nodes::parse(&urls).unwrap()
    }

    #[test]
    fn urls_are_trimmed_of_blanks_and_trailing_slashes_and_must_be_http() {
        let parsed = Nodes::parse(&[" http://a:1/ ".into(), "http://b:2".into()]).unwrap();
        assert_eq!(parsed.urls(), "http://a:1,http://b:2");
        assert!(Nodes::parse(&["a:1".into()]).is_err());
        assert!(Nodes::parse(&["".into()]).is_err());
        assert!(Nodes::parse(&[]).is_err());
    }

    #[test]
    fn customers_buy_round_robin_and_stream_from_the_next_node() {
        let three = nodes(3);
        let homes: Vec<usize> = (0..5).map(|c| three.home(c)).collect();
        let streams: Vec<usize> = (0..5).map(|c| three.stream_home(c)).collect();
        assert_eq!(homes, [0, 1, 2, 0, 1]);
        assert_eq!(streams, [1, 2, 0, 1, 2]);
        let one = nodes(1);
        assert_eq!((one.home(7), one.stream_home(7)), (0, 0));
    }

    #[test]
    fn a_dead_node_is_passed_over_for_the_next_live_one_wrapping_around() {
        let three = nodes(3);
        let now = Instant::now();
        assert_eq!(three.pick(2, now), 2);
        three.failed(2, now);
        assert_eq!(three.pick(2, now), 0);
        three.failed(0, now);
        assert_eq!(three.pick(2, now), 1);
        assert_eq!(three.pick(1, now), 1);
    }

    #[test]
    fn a_dead_node_gets_one_request_per_retry_interval_and_is_used_again_once_it_answers() {
        let two = nodes(2);
        let t0 = Instant::now();
        two.failed(0, t0);
        assert_eq!(two.pick(0, t0 + RETRY / 2), 1, "not due yet");
        let due = t0 + RETRY;
        assert_eq!(two.pick(0, due), 0, "the due retry");
        assert_eq!(two.pick(0, due), 1, "only one request retries it");
        two.failed(0, due);
        assert_eq!(
            two.pick(0, due + RETRY / 2),
            1,
            "failed again: passed over again"
        );
        assert_eq!(two.pick(0, due + RETRY), 0);
        two.answered(0);
        assert_eq!(two.pick(0, due + RETRY), 0);
        assert_eq!(
            two.pick(0, due + RETRY),
            0,
            "alive: every request goes there"
        );
    }

    #[test]
    fn when_every_node_is_dead_the_preferred_one_is_tried() {
        let two = nodes(2);
        let now = Instant::now();
        two.failed(0, now);
        two.failed(1, now);
        assert_eq!(two.pick(1, now), 1);
        let one = nodes(1);
        one.failed(0, now);
        assert_eq!(one.pick(0, now), 0);
    }

    #[test]
    fn the_report_counts_answers_failures_and_streams_per_node() {
        let two = nodes(2);
        let now = Instant::now();
        two.answered(0);
        two.answered(0);
        two.streamed(0);
        two.failed(1, now);
        assert_eq!(two.failed_requests(), 1);
        let report = two.report();
        assert_eq!(
            (
                report[0].answered,
                report[0].failed_requests,
                report[0].streams
            ),
            (2, 0, 1)
        );
        assert_eq!(
            (
                report[1].answered,
                report[1].failed_requests,
                report[1].streams
            ),
            (0, 1, 0)
        );
        assert_eq!(report[1].url, "http://127.0.0.1:8002");
    }
}
