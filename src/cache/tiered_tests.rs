//! The two-level cache against a real Redis (one server, or a Redis Cluster when
//! `SAGASHOP_TEST_REDIS_CLUSTER` is set): what a user of the cache would notice.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::redis::{Redis, RedisTarget};
use super::test_support::{RedisServer, target, unique};
use super::{Cache, versioned};
use crate::telemetry::metrics::{Metrics, NodeLabels};

/// A redis-server of the test's own on a port the OS has spare, its files under the temp dir.
fn own_redis(test: &str) -> Option<RedisServer> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a spare port")
        .port();
    let root = std::env::temp_dir().join("sagashop-redis-servers");
    RedisServer::start(test, &root, port)
}

fn metrics() -> Metrics {
    Metrics::new(&NodeLabels {
        node_id: 1,
        roles: "all".into(),
    })
    .unwrap()
}

/// One node's cache over `target`, counted in its own metrics.
fn node(target: &RedisTarget) -> (Cache, Metrics) {
    let metrics = metrics();
    let redis = Redis::open(target.clone(), Duration::from_secs(2)).unwrap();
    let cache = Cache::tiered(
        redis,
        Duration::from_secs(60),
        Duration::from_secs(60),
        &metrics,
    )
    .counted(&metrics);
    (cache, metrics)
}

/// Waits until the node hears invalidations (its local level is on).
async fn subscribed(cache: &Cache) {
    let until = Instant::now() + Duration::from_secs(5);
    while !cache.local_level_on() {
        assert!(
            Instant::now() < until,
            "the invalidation feed never subscribed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The value of one sample in `metrics`' text, 0 when absent.
fn sample(metrics: &Metrics, line_start: &str) -> u64 {
    metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
        .unwrap_or(0)
}

fn loads(metrics: &Metrics, cache: &str) -> u64 {
    sample(
        metrics,
        &format!("sagashop_cache_loads_total{{cache=\"{cache}\"}}"),
    )
}

fn requests(metrics: &Metrics, cache: &str, level: &str, result: &str) -> u64 {
    sample(
        metrics,
        &format!(
            "sagashop_cache_requests_total{{cache=\"{cache}\",level=\"{level}\",result=\"{result}\"}}"
        ),
    )
}

#[tokio::test]
async fn a_fill_with_a_version_read_before_an_invalidation_is_refused() {
    let Some(target) = target() else { return };
    let redis = Redis::open(target, Duration::from_secs(2)).unwrap();
    let key = unique("product");
    let before = versioned::read(&redis, &key).await.unwrap();
    assert!(before.value.is_none());
    versioned::bump(&redis, &key, Duration::from_secs(60))
        .await
        .unwrap();
    let ttl = Duration::from_secs(60);
    let stale = versioned::fill(&redis, &key, before.version, "\"old\"", ttl).await;
    assert!(!stale.unwrap(), "a fill from before the write was stored");
    assert!(versioned::read(&redis, &key).await.unwrap().value.is_none());
    let now = versioned::read(&redis, &key).await.unwrap();
    assert!(
        versioned::fill(&redis, &key, now.version, "\"new\"", ttl)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn a_reader_that_loaded_before_a_write_cannot_leave_its_stale_value_behind() {
    let Some(target) = target() else { return };
    let (reader, _) = node(&target);
    let (writer, _) = node(&target);
    let (fresh_node, _) = node(&target);
    subscribed(&reader).await;
    let key = unique("product");
    // The reader loads "old" from the database; the write (and its invalidation) lands
    // while the reader still holds it, before the reader fills.
    let slow_old = async {
        let v = Some("old".to_owned());
        writer.invalidate(&key).await;
        Ok::<_, ()>(v)
    };
    let got = reader.get_or_load(&key, || slow_old).await.unwrap();
    assert_eq!(
        got.as_deref(),
        Some("old"),
        "the reader answers what it read"
    );
    // Neither Redis nor the reader's local level keep it: the next reads load "new".
    let new = || async { Ok::<_, ()>(Some("new".to_owned())) };
    assert_eq!(
        fresh_node.get_or_load(&key, new).await.unwrap().unwrap(),
        "new"
    );
    assert_eq!(reader.get_or_load(&key, new).await.unwrap().unwrap(), "new");
}

#[tokio::test]
async fn an_invalidation_on_one_node_drops_the_key_from_another_nodes_local_level() {
    let Some(target) = target() else { return };
    let (one, _) = node(&target);
    let (two, two_metrics) = node(&target);
    subscribed(&one).await;
    subscribed(&two).await;
    let key = unique("cuspersonalinfo");
    let value = Arc::new(std::sync::Mutex::new("Ada".to_owned()));
    let db = || async { Ok::<_, ()>(Some(value.lock().unwrap().clone())) };
    assert_eq!(one.get_or_load(&key, db).await.unwrap().unwrap(), "Ada");
    assert_eq!(two.get_or_load(&key, db).await.unwrap().unwrap(), "Ada");
    assert_eq!(two.get_or_load(&key, db).await.unwrap().unwrap(), "Ada");
    assert_eq!(requests(&two_metrics, "person", "local", "hit"), 1);

    let heard = sample(&two_metrics, "sagashop_cache_invalidations_received_total");
    *value.lock().unwrap() = "Grace".to_owned();
    one.invalidate(&key).await;
    let until = Instant::now() + Duration::from_secs(2);
    while sample(&two_metrics, "sagashop_cache_invalidations_received_total") == heard {
        assert!(
            Instant::now() < until,
            "node two never heard the invalidation"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(two.get_or_load(&key, db).await.unwrap().unwrap(), "Grace");
    assert_eq!(one.get_or_load(&key, db).await.unwrap().unwrap(), "Grace");
}

#[tokio::test]
async fn credentials_are_never_kept_in_the_local_level() {
    let Some(target) = target() else { return };
    let (cache, metrics) = node(&target);
    subscribed(&cache).await;
    let key = super::keys::credentials(&format!("{}@example.test", unique("u")));
    let db = || async { Ok::<_, ()>(Some(1u64)) };
    for _ in 0..3 {
        assert_eq!(cache.get_or_load(&key, db).await, Ok(Some(1)));
    }
    assert_eq!(requests(&metrics, "credentials", "local", "hit"), 0);
    assert_eq!(requests(&metrics, "credentials", "redis", "hit"), 2);
    assert_eq!(loads(&metrics, "credentials"), 1);
}

#[tokio::test]
async fn a_warm_key_is_served_from_the_local_level() {
    let Some(target) = target() else { return };
    let (cache, metrics) = node(&target);
    subscribed(&cache).await;
    let key = unique("product");
    let db = || async { Ok::<_, ()>(Some(7u64)) };
    for _ in 0..5 {
        assert_eq!(cache.get_or_load(&key, db).await, Ok(Some(7)));
    }
    assert_eq!(requests(&metrics, "product", "local", "hit"), 4);
    assert_eq!(requests(&metrics, "product", "redis", "miss"), 1);
    assert_eq!(loads(&metrics, "product"), 1);
}

#[tokio::test]
async fn two_hundred_concurrent_cold_reads_make_one_database_read() {
    let Some(target) = target() else { return };
    let (cache, metrics) = node(&target);
    let key = unique("product");
    let calls = AtomicUsize::new(0);
    let db = || async {
        calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok::<_, ()>(Some(99u64))
    };
    let reads = (0..200).map(|_| cache.get_or_load(&key, db));
    let answers = futures_util::future::join_all(reads).await;
    assert!(answers.iter().all(|a| *a == Ok(Some(99))));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(loads(&metrics, "product"), 1);
}

#[tokio::test]
async fn cold_reads_on_two_nodes_wait_for_one_load_under_the_stampede_lock() {
    let Some(target) = target() else { return };
    let (one, _) = node(&target);
    let (two, _) = node(&target);
    let key = unique("product");
    let calls = AtomicUsize::new(0);
    let db = || async {
        calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok::<_, ()>(Some(5u64))
    };
    let reads = (0..100).flat_map(|_| [one.get_or_load(&key, db), two.get_or_load(&key, db)]);
    let answers = futures_util::future::join_all(reads).await;
    assert!(answers.iter().all(|a| *a == Ok(Some(5))));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn with_redis_unreachable_reads_come_from_the_database_quickly() {
    // Port 1 on loopback: nothing listens, connections are refused.
    let target = RedisTarget::Single("redis://127.0.0.1:1".into());
    let metrics = metrics();
    let redis = Redis::open(target, Duration::from_millis(100)).unwrap();
    let cache = Cache::tiered(
        redis,
        Duration::from_secs(60),
        Duration::from_secs(60),
        &metrics,
    )
    .counted(&metrics);
    let started = Instant::now();
    let key = unique("product");
    for n in 0..20u64 {
        let db = || async move { Ok::<_, ()>(Some(n)) };
        assert_eq!(cache.get_or_load(&key, db).await, Ok(Some(n)));
        cache.invalidate(&key).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(!cache.local_level_on());
    assert_eq!(loads(&metrics, "product"), 20);
    assert!(sample(&metrics, "sagashop_cache_redis_errors_total") >= 20);
}

#[tokio::test]
async fn absent_rows_are_cached_in_no_level() {
    let Some(target) = target() else { return };
    let (cache, _) = node(&target);
    subscribed(&cache).await;
    let key = unique("order");
    let none = || async { Ok::<Option<u64>, ()>(None) };
    assert_eq!(cache.get_or_load(&key, none).await, Ok(None));
    let some = || async { Ok::<_, ()>(Some(1u64)) };
    assert_eq!(cache.get_or_load(&key, some).await, Ok(Some(1)));
}

#[tokio::test]
async fn losing_redis_turns_the_local_level_off_until_the_feed_is_back() {
    let Some(mut own) = own_redis("losing_redis") else {
        return;
    };
    let target = RedisTarget::Single(own.url());
    let (cache, metrics) = node(&target);
    subscribed(&cache).await;
    let key = unique("product");
    let value = Arc::new(std::sync::Mutex::new(1u64));
    let db = || async { Ok::<_, ()>(Some(*value.lock().unwrap())) };
    assert_eq!(cache.get_or_load(&key, db).await, Ok(Some(1)));
    assert_eq!(cache.get_or_load(&key, db).await, Ok(Some(1)));
    assert_eq!(requests(&metrics, "product", "local", "hit"), 1);

    // Redis dies; a write it never hears of happens meanwhile.
    own.stop();
    let until = Instant::now() + Duration::from_secs(5);
    while cache.local_level_on() {
        assert!(Instant::now() < until, "the lost feed went unnoticed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    *value.lock().unwrap() = 2;
    for _ in 0..10 {
        assert_eq!(
            cache.get_or_load(&key, db).await,
            Ok(Some(2)),
            "no stale local hit"
        );
    }
    assert_eq!(requests(&metrics, "product", "local", "hit"), 1);
    assert!(sample(&metrics, "sagashop_cache_redis_errors_total") >= 1);

    // Redis is back (empty): the feed resubscribes, and both levels serve again.
    own.resume().await;
    subscribed(&cache).await;
    tokio::time::sleep(Duration::from_millis(600)).await; // past the down mark
    let redis_hits = requests(&metrics, "product", "redis", "hit");
    let (other, _) = node(&target);
    assert_eq!(other.get_or_load(&key, db).await, Ok(Some(2)));
    assert_eq!(cache.get_or_load(&key, db).await, Ok(Some(2)));
    assert_eq!(
        requests(&metrics, "product", "redis", "hit"),
        redis_hits + 1
    );
    assert_eq!(cache.get_or_load(&key, db).await, Ok(Some(2)));
    assert_eq!(requests(&metrics, "product", "local", "hit"), 2);
}
