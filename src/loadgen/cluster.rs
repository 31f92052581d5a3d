//! Requests to the cluster. Each goes to a node that [`Nodes`] picks, and how it ended
//! (answered, never sent, answer lost) is booked on that node, so that the next request
//! passes a dead node over and a node that answers again is used again.

use std::rc::Rc;
use std::time::{Duration, Instant};

use awc::Client;
use awc::error::{ConnectError, SendRequestError};
use awc::http::Method;
use serde_json::Value;

use super::nodes::Nodes;

/// How a request ended. The difference between the last two decides whether a POST may be
/// sent again: the API has no idempotency key.
#[derive(Debug)]
pub(crate) enum Answer {
    /// The node answered (the body is `Null` when it did not decode).
    Answered(u16, Value),
    /// The connection could not be made: the request never reached a node.
    NotSent,
    /// Sent, but no complete answer came back: it may or may not have taken effect.
    Lost,
}

/// True when a request that failed with `e` surely never reached the node. awc reports a
/// connection that closed before the response head as `Disconnected`, after the request was
/// written: that one may have taken effect.
pub(crate) fn unsent(e: &SendRequestError) -> bool {
    matches!(e, SendRequestError::Connect(c) if !matches!(c, ConnectError::Disconnected))
}

/// The HTTP client and the nodes it talks to; cheap to clone into each task.
#[derive(Clone)]
pub(crate) struct Cluster {
    pub(crate) client: Client,
    pub(crate) nodes: Rc<Nodes>,
}

impl Cluster {
    /// The same nodes (and their liveness) through another client.
    pub(crate) fn with_client(&self, client: Client) -> Self {
        Cluster {
            client,
            nodes: self.nodes.clone(),
        }
    }

    /// Sends one request to node `node` (`token` as `Authorization: Bearer`) and books how it
    /// ended on the node.
    pub(crate) async fn send_to(
        &self,
        node: usize,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        let answer = send(
            &self.client,
            method,
            &format!("{}{path}", self.nodes.url(node)),
            token,
            body,
        )
        .await;
        match answer {
            Answer::Answered(..) => self.nodes.answered(node),
            Answer::NotSent | Answer::Lost => self.nodes.failed(node, Instant::now()),
        }
        answer
    }

    /// Sends a request to a live node, `preferred` first. One that surely was not sent goes
    /// to the next live node, and so does a GET that failed any way (it changes nothing);
    /// each node is tried at most once. Fails when no node answered.
    pub(crate) async fn request(
        &self,
        preferred: usize,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        for _ in 0..self.nodes.len() {
            let node = self.nodes.pick(preferred, Instant::now());
            match self.send_to(node, method.clone(), path, token, body).await {
                Answer::Answered(status, v) => return Ok((status, v)),
                Answer::Lost if method != Method::GET => {
                    anyhow::bail!("{method} {path}: {} did not answer", self.nodes.url(node))
                }
                Answer::NotSent | Answer::Lost => {}
            }
        }
        anyhow::bail!("{method} {path}: no node answered ({})", self.nodes.urls())
    }

    /// `GET path` through a live node, `preferred` first.
    pub(crate) async fn get(
        &self,
        preferred: usize,
        path: &str,
        token: Option<&str>,
    ) -> anyhow::Result<(u16, Value)> {
        self.request(preferred, Method::GET, path, token, None)
            .await
    }
}

/// Sends one request to `url` and reads its JSON answer.
async fn send(
    client: &Client,
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Answer {
    let mut req = client.request(method, url);
    if let Some(t) = token {
        req = req.insert_header(("Authorization", format!("Bearer {t}")));
    }
    let sent = match body {
        Some(b) => req.send_body(b.to_string()).await,
        None => req.send().await,
    };
    let mut res = match sent {
        Ok(res) => res,
        Err(e) if unsent(&e) => return Answer::NotSent,
        Err(_) => return Answer::Lost,
    };
    let status = res.status().as_u16();
    match res.body().limit(16 << 20).await {
        Ok(bytes) => Answer::Answered(
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ),
        // A success whose body (a purchase id, a product) was cut off is as good as lost.
        Err(_) if res.status().is_success() => Answer::Lost,
        Err(_) => Answer::Answered(status, Value::Null),
    }
}

/// The load generator's HTTP client: enough pooled connections for `concurrency` requests
/// and the streams. Its timeout covers sending a request and its answer's head (a result
/// stream's body is not timed by it).
pub(crate) fn client(concurrency: usize) -> Client {
    let connector = awc::Connector::new().limit(concurrency * 2 + 64);
    Client::builder()
        .connector(connector)
        .timeout(Duration::from_secs(60))
        .finish()
}
