//! The invalidation feed: every write publishes the keys it changed on one Redis pub/sub
//! channel, and every node drops them from its local level. A node that is not subscribed
//! cannot hear about writes, so while it is not its local level is cleared and bypassed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use prometheus::IntCounter;

use super::local::LocalCache;

/// The channel every node publishes changed keys on (one message: keys joined by newlines).
pub const CHANNEL: &str = "sagashop:invalidate";

/// How often a subscribed connection is pinged, so a silent one is noticed and replaced.
const PING_EVERY: Duration = Duration::from_secs(1);
/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// How long an invalidation is remembered per key: longer than any read takes.
const REMEMBER_FOR: Duration = Duration::from_secs(60);

/// What readers need to know about the feed to decide whether the local level may be used.
pub struct Feed {
    subscribed: AtomicBool,
    /// Sequence of invalidations applied and feed losses.
    applied: AtomicU64,
    /// The sequence number of the last loss of the feed.
    lost_at: AtomicU64,
    /// The sequence number of each key's last invalidation (for [`REMEMBER_FOR`]): a read
    /// that began before it may have read what the write replaced.
    stamps: moka::future::Cache<String, u64>,
}

impl Default for Feed {
    fn default() -> Self {
        Feed {
            subscribed: AtomicBool::new(false),
            applied: AtomicU64::new(0),
            lost_at: AtomicU64::new(0),
            stamps: moka::future::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(REMEMBER_FOR)
                .build(),
        }
    }
}

impl Feed {
    /// Whether the node hears every invalidation now (else the local level is off).
    pub fn is_subscribed(&self) -> bool {
        self.subscribed.load(Ordering::SeqCst)
    }

    /// A mark to compare with [`Feed::unchanged_since`] after a read.
    pub fn mark(&self) -> Mark {
        Mark {
            seq: self.applied.load(Ordering::SeqCst),
            at: std::time::Instant::now(),
        }
    }

    /// Whether `key` was not invalidated (and the feed was not lost) since `mark`. A read
    /// older than the stamps are kept is never trusted.
    pub async fn unchanged_since(&self, key: &str, mark: &Mark) -> bool {
        self.is_subscribed()
            && mark.at.elapsed() < REMEMBER_FOR / 2
            && self.lost_at.load(Ordering::SeqCst) <= mark.seq
            && self.stamps.get(key).await.is_none_or(|at| at <= mark.seq)
    }

    /// Records an invalidation of `key` (this node's own writes count too), before the key
    /// is dropped from the local level.
    pub async fn invalidated(&self, key: &str) {
        let at = self.applied.fetch_add(1, Ordering::SeqCst) + 1;
        self.stamps.insert(key.to_owned(), at).await;
    }

    fn lost(&self, local: &LocalCache) {
        self.subscribed.store(false, Ordering::SeqCst);
        let at = self.applied.fetch_add(1, Ordering::SeqCst) + 1;
        self.lost_at.store(at, Ordering::SeqCst);
        local.clear();
    }
}

/// Where the feed stood when a read began.
pub struct Mark {
    seq: u64,
    at: std::time::Instant,
}

/// Aborts the listener when the last handle on the cache is dropped.
pub struct ListenerGuard(tokio::task::AbortHandle);

impl Drop for ListenerGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the listener: subscribes over its own plain connection to one of `urls` (for a
/// cluster any node will do: PUBLISH reaches every node), drops the keys it hears from
/// `local`, and reconnects with backoff when the connection is lost.
pub fn listen(
    urls: Vec<String>,
    connect_within: Duration,
    local: LocalCache,
    feed: Arc<Feed>,
    received: IntCounter,
) -> ListenerGuard {
    let task = tokio::spawn(async move {
        let mut backoff = Duration::from_millis(50);
        for attempt in 0usize.. {
            let url = &urls[attempt % urls.len()];
            match subscribe(url, connect_within).await {
                Ok((sink, stream)) => {
                    feed.subscribed.store(true, Ordering::SeqCst);
                    backoff = Duration::from_millis(50);
                    follow(sink, stream, &local, &feed, &received).await;
                    tracing::warn!("cache invalidation feed lost; local cache off until back");
                }
                // The error may quote the URL's password: say only that it failed.
                Err(()) => tracing::debug!("cache invalidation feed: subscribe failed"),
            }
            feed.lost(&local);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    });
    ListenerGuard(task.abort_handle())
}

async fn subscribe(
    url: &str,
    within: Duration,
) -> Result<(redis::aio::PubSubSink, redis::aio::PubSubStream), ()> {
    let connect = async {
        let client = redis::Client::open(url)?;
        let (mut sink, stream) = client.get_async_pubsub().await?.split();
        sink.subscribe(CHANNEL).await?;
        Ok::<_, redis::RedisError>((sink, stream))
    };
    match tokio::time::timeout(within, connect).await {
        Ok(Ok(pair)) => Ok(pair),
        _ => Err(()),
    }
}

/// Applies messages until the connection ends or stops answering pings.
async fn follow(
    mut sink: redis::aio::PubSubSink,
    mut stream: redis::aio::PubSubStream,
    local: &LocalCache,
    feed: &Feed,
    received: &IntCounter,
) {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else { return };
                let Ok(payload) = message.get_payload::<String>() else { continue };
                for key in payload.lines().filter(|k| !k.is_empty()) {
                    // Stamp first: a read that began before this cannot fill what we drop.
                    feed.invalidated(key).await;
                    local.delete(key).await;
                }
                received.inc();
            }
            _ = ping.tick() => {
                let pong = tokio::time::timeout(PING_EVERY, sink.ping::<redis::Value>()).await;
                if !matches!(pong, Ok(Ok(_))) {
                    return;
                }
            }
        }
    }
}
