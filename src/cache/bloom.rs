//! Bloom filters on plain Redis (SETBIT/GETBIT in Lua scripts: Debian's Redis has no
//! RedisBloom), one per kind of id (products, orders, payments), so lookups of ids that never
//! existed are answered without a database read.
//!
//! A filter must never make an existing id answer 404, so it only ever says "absent" when it
//! can stand behind it:
//! - Its bits and its generation marker (`bloom:{name}:gen` = build time, size, hash count)
//!   are read in one script. No marker, a missing filter key, a marker for other sizes, an
//!   error or Redis down: the filter is bypassed (the caller asks the database).
//! - "Absent" holds only for ids minted before the build's scan began (ids are time-ordered):
//!   a newer id may have been stored after the scan passed its place, so it goes to the
//!   database. An id stamped later than now plus a clock skew is absent at once.
//! - A missing or stale marker makes one node (under a lock) rebuild the filter from the
//!   database into a fresh key, then swap it in. Adds are retried; when an add is given up,
//!   the marker is dropped so the filter is rebuilt rather than missing an id.
//!
//! Keys share one hash tag per filter (`bloom:{product}`, `bloom:{product}:gen`, ...), so a
//! filter's scripts run on one Redis Cluster slot. They have no TTL, so `volatile-lru` never
//! evicts them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::{Notify, mpsc};

use super::redis::{Redis, RedisError};
use crate::clock::Clock;
use crate::db::DbError;
use crate::domain::ids::{ProductId, PurchaseId, issued_at_ms};
use crate::telemetry::metrics::{BloomCounters, Metrics};

/// How far behind the scan's start the recorded build time is: ids minted on a node whose
/// clock runs this much ahead still count as "newer than the build".
const BUILD_SKEW_MS: i64 = 2_000;
/// Ids stamped later than now plus this are absent without a look.
const FUTURE_SKEW_MS: i64 = 5_000;
/// How often each node looks at the marker (and rebuilds when it is missing).
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// How long the build lock holds without being extended (each page extends it).
const BUILD_LOCK_MS: u64 = 60_000;
/// Ids the filter answered "held" for, remembered in process so a warm read makes no
/// Redis call (a held id stays held: bits are only ever set, and a rebuild scans it again).
const HELD_REMEMBERED: u64 = 100_000;
/// How long a held id is remembered.
const HELD_FOR: Duration = Duration::from_secs(60);
/// Ids per scan page.
const SCAN_PAGE: u64 = 5_000;
/// Ids per SETBIT script call.
const IDS_PER_CALL: usize = 500;
/// Attempts of an add before it is given up (then the filter is rebuilt).
const ADD_ATTEMPTS: u32 = 8;

/// Why a filter could not be checked, built or added to. Checks never fail: they bypass.
#[derive(Debug, thiserror::Error)]
pub enum BloomError {
    /// Capacity or error rate out of range.
    #[error("bloom filter configuration: {0}")]
    Config(String),
    /// Redis gave no answer.
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// The id scan failed.
    #[error("bloom filter scan: {0}")]
    Db(#[from] DbError),
    /// The fresh key vanished during the build (someone deleted it): build again later.
    #[error("bloom filter build lost its key")]
    Lost,
}

/// A filter's size: `bits` and `hashes` from the configured capacity and error rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BloomParams {
    /// Bits in the filter (m).
    pub bits: u64,
    /// Bit positions per id (k).
    pub hashes: u32,
    /// The false-positive rate it is sized for.
    pub error_rate: f64,
}

impl BloomParams {
    /// The optimal m and k for `capacity` ids at `error_rate` false positives.
    pub fn sized(capacity: u64, error_rate: f64) -> Result<Self, BloomError> {
        if capacity == 0 || !(error_rate > 0.0 && error_rate < 1.0) {
            return Err(BloomError::Config(format!(
                "capacity {capacity} must be > 0 and error rate {error_rate} within (0, 1)"
            )));
        }
        let ln2 = std::f64::consts::LN_2;
        let bits = (-(capacity as f64) * error_rate.ln() / (ln2 * ln2)).ceil();
        // Redis strings hold at most 2^32 bits.
        if bits >= 4_294_967_296.0 {
            return Err(BloomError::Config(format!(
                "{capacity} ids at rate {error_rate} need more than 2^32 bits"
            )));
        }
        let bits = (bits as u64).max(64);
        let hashes = ((bits as f64 / capacity as f64) * ln2)
            .round()
            .clamp(1.0, 30.0) as u32;
        Ok(BloomParams {
            bits,
            hashes,
            error_rate,
        })
    }

    /// The bit positions of `id`: double hashing over two stable 64-bit mixes of the id
    /// (the same on every node and every build).
    fn positions(&self, id: u64) -> impl Iterator<Item = u64> + '_ {
        let h1 = splitmix64(id);
        let h2 = splitmix64(id ^ 0x5851_f42d_4c95_7f2d) | 1;
        (0..u64::from(self.hashes)).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % self.bits)
    }

    /// The generation marker of a build that began at `built_ms`.
    fn marker(&self, built_ms: i64) -> String {
        format!("{built_ms}:{}:{}", self.bits, self.hashes)
    }

    /// The build time in a marker, when the marker is for filters of this size.
    fn built_ms(&self, marker: &str) -> Option<i64> {
        let mut parts = marker.split(':');
        let built = parts.next()?.parse().ok()?;
        let bits: u64 = parts.next()?.parse().ok()?;
        let hashes: u32 = parts.next()?.parse().ok()?;
        (bits == self.bits && hashes == self.hashes).then_some(built)
    }
}

/// SplitMix64's finalizer: a fixed, well-mixed hash of a 64-bit id.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce5_e4b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One page of the ids a filter holds: up to `limit` ids above `after`, ascending.
pub type IdScan =
    Arc<dyn Fn(u64, u64) -> BoxFuture<'static, Result<Vec<u64>, DbError>> + Send + Sync>;

/// KEYS: filter, marker. ARGV: bit positions. {1, ''} all set; {0, marker} a bit is clear;
/// {-1, ''} no marker or no filter (bypass).
static CHECK: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local marker = redis.call('GET', KEYS[2])
if not marker or redis.call('EXISTS', KEYS[1]) == 0 then return {-1, ''} end
for i = 1, #ARGV do
  if redis.call('GETBIT', KEYS[1], ARGV[i]) == 0 then return {0, marker} end
end
return {1, ''}
",
    )
});

/// KEYS: the filter and, while a build runs, its fresh key. ARGV: bit positions. Sets them
/// in each key that exists (never creates a filter: a created one would look empty).
static ADD: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    for i = 1, #ARGV do redis.call('SETBIT', key, ARGV[i], 1) end
  end
end
return 1
",
    )
});

/// KEYS: the fresh key. ARGV: bit positions. 0 when the key vanished.
static FILL: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 1, #ARGV do redis.call('SETBIT', KEYS[1], ARGV[i], 1) end
return 1
",
    )
});

/// KEYS: fresh key, filter, marker. ARGV: marker. Swaps the build in; 0 when it vanished.
static FINISH: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('SET', KEYS[3], ARGV[1])
return 1
",
    )
});

/// KEYS: lock. ARGV: token. Deletes the lock only for its holder.
static UNLOCK: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
",
    )
});

/// The Redis keys of one filter, all on one hash slot.
#[derive(Clone)]
struct Keys {
    filter: String,
    marker: String,
    fresh: String,
    lock: String,
}

impl Keys {
    fn of(name: &str) -> Self {
        let filter = format!("bloom:{{{name}}}");
        Keys {
            marker: format!("{filter}:gen"),
            fresh: format!("{filter}:next"),
            lock: format!("{filter}:building"),
            filter,
        }
    }
}

struct Inner {
    name: String,
    redis: Redis,
    params: BloomParams,
    keys: Keys,
    scan: IdScan,
    clock: Clock,
    counters: Option<BloomCounters>,
    adds: mpsc::UnboundedSender<u64>,
    /// An add was given up: drop the marker (so the filter is rebuilt) when Redis answers.
    lost_add: Arc<AtomicBool>,
    /// Wakes the maintenance task early (a check found no marker).
    wake: Notify,
    /// Ids recently found held (see [`HELD_REMEMBERED`]).
    held: moka::future::Cache<u64, ()>,
}

/// A Bloom filter over the ids of one table; cheap to clone. Answers "surely absent" or
/// "ask the database", never a wrong "absent".
#[derive(Clone)]
pub struct BloomFilter {
    inner: Arc<Inner>,
}

impl BloomFilter {
    /// The filter `name` (`product`, `order`, `payment`; its keys are `bloom:{name}...`) over
    /// the ids `scan` pages through. Starts the tasks that add ids and keep the filter built
    /// (they end when the last clone is dropped); needs a Tokio runtime.
    pub fn start(
        name: &str,
        redis: Redis,
        params: BloomParams,
        scan: IdScan,
        clock: Clock,
        metrics: Option<&Metrics>,
    ) -> Self {
        let (adds, added) = mpsc::unbounded_channel();
        let counters = metrics.map(|m| m.bloom(name));
        if let Some(c) = &counters {
            c.false_positive_rate.set(params.error_rate);
        }
        let lost_add = Arc::new(AtomicBool::new(false));
        let keys = Keys::of(name);
        let inner = Arc::new(Inner {
            name: name.to_owned(),
            redis: redis.clone(),
            params,
            keys: keys.clone(),
            scan,
            clock,
            counters,
            adds,
            lost_add: lost_add.clone(),
            wake: Notify::new(),
            held: moka::future::Cache::builder()
                .max_capacity(HELD_REMEMBERED)
                .time_to_live(HELD_FOR)
                .build(),
        });
        tokio::spawn(run_adds(added, redis, keys, params, lost_add));
        tokio::spawn(maintain(Arc::downgrade(&inner)));
        BloomFilter { inner }
    }

    /// False when `id` surely never existed (no database read needed); true when the
    /// database must say (the filter holds it, the id is newer than the build, or the
    /// filter cannot be used now).
    pub async fn may_contain(&self, id: u64) -> bool {
        let i = &self.inner;
        if i.held.contains_key(&id) {
            return true;
        }
        let minted = issued_at_ms(id);
        if minted > i.clock.now_ms() + FUTURE_SKEW_MS {
            self.count(|c| &c.rejections);
            return false;
        }
        let mut check = CHECK.prepare_invoke();
        check.key(&i.keys.filter).key(&i.keys.marker);
        for p in i.params.positions(id) {
            check.arg(p);
        }
        match i.redis.script::<(i64, String)>(&check).await {
            Ok((1, _)) => {
                i.held.insert(id, ()).await;
                true
            }
            Ok((0, marker)) => match i.params.built_ms(&marker) {
                // The id's 10 ms tick ended before the scan began: the scan saw its row.
                Some(built) if minted + 10 <= built => {
                    self.count(|c| &c.rejections);
                    false
                }
                Some(_) => {
                    self.count(|c| &c.db_checks);
                    true
                }
                None => true, // built for other sizes: rebuilt soon
            },
            Ok(_) => {
                i.wake.notify_one();
                true
            }
            Err(e) => {
                tracing::debug!(filter = %i.name, error = %e, "bloom filter bypassed");
                true
            }
        }
    }

    /// Records a newly stored id, in the background with retries.
    pub fn add(&self, id: u64) {
        let _ = self.inner.adds.send(id);
    }

    /// Records newly stored ids before returning (call before anyone learns they exist: a
    /// build that began between an id's minting and its insert would otherwise reject it
    /// until the add lands); on failure they are retried in the background.
    pub async fn add_now(&self, ids: &[u64]) {
        let i = &self.inner;
        let mut add = ADD.prepare_invoke();
        add.key(&i.keys.filter).key(&i.keys.fresh);
        for id in ids {
            for p in i.params.positions(*id) {
                add.arg(p);
            }
        }
        if i.redis.script::<i64>(&add).await.is_err() {
            ids.iter().for_each(|id| self.add(*id));
        }
    }

    /// Builds the filter from the database unless a valid one is in place (or another node
    /// is building it). True when this call built it.
    pub async fn ensure_built(&self) -> Result<bool, BloomError> {
        let i = &self.inner;
        if i.lost_add.load(Ordering::SeqCst) {
            let _: i64 = i.redis.query(redis::cmd("DEL").arg(&i.keys.marker)).await?;
            i.lost_add.store(false, Ordering::SeqCst);
            tracing::warn!(filter = %i.name, "an add was lost: rebuilding the bloom filter");
        }
        let (marker, exists): (Option<String>, bool) = i
            .redis
            .pipeline(
                redis::pipe()
                    .cmd("GET")
                    .arg(&i.keys.marker)
                    .cmd("EXISTS")
                    .arg(&i.keys.filter),
            )
            .await?;
        if exists && marker.is_some_and(|m| i.params.built_ms(&m).is_some()) {
            return Ok(false);
        }
        let token = rand::random::<u64>().to_string();
        let locked: Option<String> = i
            .redis
            .query(
                redis::cmd("SET")
                    .arg(&i.keys.lock)
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(BUILD_LOCK_MS),
            )
            .await?;
        if locked.is_none() {
            return Ok(false);
        }
        let built = self.build().await;
        let mut unlock = UNLOCK.prepare_invoke();
        unlock.key(&i.keys.lock).arg(&token);
        if let Err(e) = i.redis.script::<i64>(&unlock).await {
            tracing::warn!(filter = %i.name, error = %e, "bloom build lock not released (it expires)");
        }
        built?;
        self.count(|c| &c.rebuilds);
        Ok(true)
    }

    /// Scans every id into a fresh key and swaps it in with its marker.
    async fn build(&self) -> Result<(), BloomError> {
        let i = &self.inner;
        let started = i.clock.now_ms() - BUILD_SKEW_MS;
        // The fresh key exists (full size) before the scan, so adds from here on reach it.
        let () = i
            .redis
            .pipeline(
                redis::pipe()
                    .cmd("DEL")
                    .arg(&i.keys.fresh)
                    .ignore()
                    .cmd("SETBIT")
                    .arg(&i.keys.fresh)
                    .arg(i.params.bits - 1)
                    .arg(0)
                    .ignore(),
            )
            .await?;
        let mut after = 0;
        let mut count = 0usize;
        loop {
            let ids = (i.scan)(after, SCAN_PAGE).await?;
            for chunk in ids.chunks(IDS_PER_CALL) {
                let mut fill = FILL.prepare_invoke();
                fill.key(&i.keys.fresh);
                for id in chunk {
                    for p in i.params.positions(*id) {
                        fill.arg(p);
                    }
                }
                if i.redis.script::<i64>(&fill).await? == 0 {
                    return Err(BloomError::Lost);
                }
            }
            count += ids.len();
            let _: i64 = i
                .redis
                .query(redis::cmd("PEXPIRE").arg(&i.keys.lock).arg(BUILD_LOCK_MS))
                .await?;
            match ids.last() {
                Some(last) if ids.len() as u64 == SCAN_PAGE => after = *last,
                _ => break,
            }
        }
        let mut finish = FINISH.prepare_invoke();
        finish
            .key(&i.keys.fresh)
            .key(&i.keys.filter)
            .key(&i.keys.marker)
            .arg(i.params.marker(started));
        if i.redis.script::<i64>(&finish).await? == 0 {
            return Err(BloomError::Lost);
        }
        tracing::info!(filter = %i.name, ids = count, "bloom filter built");
        Ok(())
    }

    fn count(&self, counter: impl FnOnce(&BloomCounters) -> &prometheus::IntCounter) {
        if let Some(c) = &self.inner.counters {
            counter(c).inc();
        }
    }
}

/// Where a service finds its filter: empty until the filters are started (never, without
/// Redis), and while empty every id goes to the database. Cheap to clone.
#[derive(Clone, Default)]
pub struct FilterSlot(Arc<OnceLock<BloomFilter>>);

impl FilterSlot {
    /// Puts the filter in place (a second filter is ignored).
    pub fn set(&self, filter: BloomFilter) {
        let _ = self.0.set(filter);
    }

    /// [`BloomFilter::may_contain`], true while there is no filter.
    pub async fn may_contain(&self, id: impl Into<u64>) -> bool {
        match self.0.get() {
            Some(f) => f.may_contain(id.into()).await,
            None => true,
        }
    }

    /// [`BloomFilter::add_now`], nothing while there is no filter (a filter built later
    /// scans them).
    pub async fn add_now(&self, ids: &[u64]) {
        if let Some(f) = self.0.get()
            && !ids.is_empty()
        {
            f.add_now(ids).await;
        }
    }
}

/// The filters of the three kinds of ids the API looks up by id.
#[derive(Clone, Default)]
pub struct IdFilters {
    /// Product ids (`GET /api/product/{id}`).
    pub product: FilterSlot,
    /// Order ids (`GET /api/order/{id}`).
    pub order: FilterSlot,
    /// Payment ids (`GET /api/payment/{id}`).
    pub payment: FilterSlot,
}

/// The repositories whose ids the filters hold: those of the roles this node serves.
pub struct Scanned {
    /// The product database, when this node serves products.
    pub products: Option<crate::db::products::Products>,
    /// The order database, when this node serves orders.
    pub orders: Option<crate::db::orders::Orders>,
    /// The payment database, when this node serves payments.
    pub payments: Option<crate::db::payments::Payments>,
}

impl IdFilters {
    /// Starts the filter of each repository in `scanned` on `redis` and puts it in its slot.
    pub fn start(
        &self,
        redis: &Redis,
        params: BloomParams,
        scanned: Scanned,
        clock: &Clock,
        metrics: &Metrics,
    ) {
        let start = |name: &str, scan: IdScan| {
            BloomFilter::start(
                name,
                redis.clone(),
                params,
                scan,
                clock.clone(),
                Some(metrics),
            )
        };
        if let Some(repo) = scanned.products {
            self.product.set(start(
                "product",
                Arc::new(move |after, limit| {
                    let repo = repo.clone();
                    Box::pin(async move {
                        let ids = repo.ids_after(ProductId(after), limit).await?;
                        Ok(ids.into_iter().map(u64::from).collect())
                    })
                }),
            ));
        }
        if let Some(repo) = scanned.orders {
            self.order.set(start(
                "order",
                Arc::new(move |after, limit| {
                    let repo = repo.clone();
                    Box::pin(async move {
                        let ids = repo.ids_after(PurchaseId(after), limit).await?;
                        Ok(ids.into_iter().map(u64::from).collect())
                    })
                }),
            ));
        }
        if let Some(repo) = scanned.payments {
            self.payment.set(start(
                "payment",
                Arc::new(move |after, limit| {
                    let repo = repo.clone();
                    Box::pin(async move {
                        let ids = repo.ids_after(PurchaseId(after), limit).await?;
                        Ok(ids.into_iter().map(u64::from).collect())
                    })
                }),
            ));
        }
    }
}

/// Keeps the filter built: at once, then every [`CHECK_EVERY`] or when a check found no
/// marker. Ends when the filter is dropped.
async fn maintain(filter: std::sync::Weak<Inner>) {
    loop {
        let Some(inner) = filter.upgrade() else {
            return;
        };
        let f = BloomFilter { inner };
        if let Err(e) = f.ensure_built().await {
            tracing::debug!(filter = %f.inner.name, error = %e, "bloom filter not built now");
        }
        let inner = f.inner;
        let woken = async {
            inner.wake.notified().await;
            // A missing marker is noticed by many checks at once: look once.
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        tokio::select! {
            () = tokio::time::sleep(CHECK_EVERY) => {}
            () = woken => {}
        }
    }
}

/// Sends added ids to Redis in batches, retrying with backoff; an add given up sets
/// `lost_add`, so the filter is rebuilt. Ends when the filter is dropped.
async fn run_adds(
    mut added: mpsc::UnboundedReceiver<u64>,
    redis: Redis,
    keys: Keys,
    params: BloomParams,
    lost_add: Arc<AtomicBool>,
) {
    let mut batch = Vec::new();
    while added.recv_many(&mut batch, IDS_PER_CALL).await > 0 {
        let mut add = ADD.prepare_invoke();
        add.key(&keys.filter).key(&keys.fresh);
        for id in &batch {
            for p in params.positions(*id) {
                add.arg(p);
            }
        }
        let mut delay = Duration::from_millis(50);
        for attempt in 1..=ADD_ATTEMPTS {
            match redis.script::<i64>(&add).await {
                Ok(_) => break,
                Err(e) if attempt == ADD_ATTEMPTS => {
                    tracing::warn!(filter = %keys.filter, error = %e, ids = batch.len(),
                        "bloom filter add given up: the filter will be rebuilt");
                    lost_add.store(true, Ordering::SeqCst);
                }
                Err(_) => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
        batch.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::products::{Product, Products};
    use crate::domain::ids::first_id_at;
    use crate::telemetry::metrics::NodeLabels;
    use futures_util::{FutureExt, StreamExt};
    use std::time::Instant;

    /// The Redis the tests use: the cluster in `SAGASHOP_TEST_REDIS_CLUSTER` (seeds,
    /// comma-separated) when set, else `SAGASHOP_TEST_REDIS_URL` or the shared 6379.
    fn redis() -> Redis {
        let target = match std::env::var("SAGASHOP_TEST_REDIS_CLUSTER") {
            Ok(seeds) if !seeds.is_empty() => super::super::redis::RedisTarget::Cluster(
                seeds
                    .split(',')
                    .map(|s| match s.contains("://") {
                        true => s.to_owned(),
                        false => format!("redis://{s}"),
                    })
                    .collect(),
            ),
            _ => super::super::redis::RedisTarget::Single(
                std::env::var("SAGASHOP_TEST_REDIS_URL")
                    .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
            ),
        };
        Redis::open(target, Duration::from_secs(2)).unwrap()
    }

    fn metrics() -> Metrics {
        Metrics::new(&NodeLabels {
            node_id: 1,
            roles: "all".into(),
        })
        .unwrap()
    }

    /// A filter name no other test run uses (its keys are deleted at the end).
    fn unique(kind: &str) -> String {
        format!("test-{kind}-{}", rand::random::<u32>())
    }

    fn now() -> i64 {
        Clock::system().now_ms()
    }

    /// The `n`-th id minted `ago_ms` before now (distinct low bits: sequence and machine).
    fn old_id(ago_ms: i64, n: u64) -> u64 {
        first_id_at(now() - ago_ms) + n
    }

    fn over(ids: Vec<u64>) -> IdScan {
        let ids = Arc::new(ids);
        Arc::new(move |after, limit| {
            let ids = ids.clone();
            async move {
                let page = ids.iter().copied().filter(|id| *id > after);
                Ok(page.take(limit as usize).collect())
            }
            .boxed()
        })
    }

    async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "waited for {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn drop_keys(name: &str) {
        let k = Keys::of(name);
        let _: Result<i64, _> = redis()
            .query(
                redis::cmd("DEL")
                    .arg(&k.filter)
                    .arg(&k.marker)
                    .arg(&k.fresh)
                    .arg(&k.lock),
            )
            .await;
    }

    #[test]
    fn sizes_follow_capacity_and_error_rate() {
        let p = BloomParams::sized(1_000_000, 0.001).unwrap();
        assert_eq!(p.hashes, 10);
        assert!((14_377_000..14_378_000).contains(&p.bits), "{p:?}");
        assert!(BloomParams::sized(10, 0.0).is_err());
        assert!(BloomParams::sized(10, 1.0).is_err());
        assert!(BloomParams::sized(0, 0.01).is_err());
    }

    #[test]
    fn the_filters_are_sized_by_the_bloom_flags() {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: crate::config::Config,
        }
        let defaults = crate::config::Config::embedded("/srv");
        assert_eq!(
            (defaults.bloom_capacity, defaults.bloom_error_rate),
            (1_000_000, 0.001)
        );
        let args = [
            "sagashop",
            "--bloom-capacity",
            "5000",
            "--bloom-error-rate",
            "0.01",
        ];
        let set = Wrapper::parse_from(args).config;
        let p = BloomParams::sized(set.bloom_capacity, set.bloom_error_rate).unwrap();
        assert_eq!((p.hashes, p.error_rate), (7, 0.01));
    }

    #[tokio::test]
    async fn added_ids_are_never_rejected_and_false_positives_stay_near_the_configured_rate() {
        let name = unique("fp");
        let m = metrics();
        let counters = m.bloom(&name);
        let members: Vec<u64> = (0..10_000).map(|n| old_id(3_600_000, n)).collect();
        let params = BloomParams::sized(10_000, 0.01).unwrap();
        let filter = BloomFilter::start(
            &name,
            redis(),
            params,
            over(members.clone()),
            Clock::system(),
            Some(&m),
        );
        wait_for("the build", || counters.rebuilds.get() == 1).await;

        let present: Vec<bool> = futures_util::stream::iter(members.iter().copied())
            .map(|id| filter.may_contain(id))
            .buffer_unordered(64)
            .collect()
            .await;
        assert!(present.iter().all(|p| *p), "no false negatives");

        let strangers = (0..10_000u64).map(|n| old_id(7_200_000, n));
        let passed = futures_util::stream::iter(strangers)
            .map(|id| filter.may_contain(id))
            .buffer_unordered(64)
            .filter(|p| std::future::ready(*p))
            .count()
            .await;
        let rate = passed as f64 / 10_000.0;
        assert!(
            rate < 0.02,
            "measured false-positive rate {rate}, configured 0.01"
        );
        assert_eq!(counters.rejections.get() as usize, 10_000 - passed);
        assert_eq!(counters.false_positive_rate.get(), 0.01);
        drop_keys(&name).await;
    }

    #[tokio::test]
    async fn a_deleted_filter_is_bypassed_then_rebuilt_from_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("product.db").to_string_lossy().into_owned();
        crate::db::open::migrate(
            &crate::db::open::DbLocation::Sqlite(path.clone()),
            crate::config::ServiceDb::Product,
        )
        .await
        .unwrap();
        let products = Products::new(
            crate::db::DbPool::sqlite(&path, 2).unwrap(),
            Clock::system(),
        );
        let ids: Vec<ProductId> = (0..50).map(|n| ProductId(old_id(3_600_000, n))).collect();
        for id in &ids {
            let p = Product {
                id: *id,
                name: format!("p{id}"),
                description: String::new(),
                brand_name: String::new(),
                price: 1,
                inventory: 1,
                created_at: 0,
            };
            products.insert(&p).await.unwrap();
        }
        let repo = products.clone();
        let scan: IdScan = Arc::new(move |after, limit| {
            let repo = repo.clone();
            async move {
                let page = repo.ids_after(ProductId(after), limit).await?;
                Ok(page.into_iter().map(u64::from).collect())
            }
            .boxed()
        });
        let name = unique("product");
        let m = metrics();
        let counters = m.bloom(&name);
        let params = BloomParams::sized(1_000, 0.001).unwrap();
        let filter = BloomFilter::start(&name, redis(), params, scan, Clock::system(), Some(&m));
        wait_for("the build", || counters.rebuilds.get() == 1).await;
        let unknown = old_id(3_600_000, 1_000);
        assert!(!filter.may_contain(unknown).await);

        let _: i64 = redis()
            .query(redis::cmd("DEL").arg(Keys::of(&name).filter))
            .await
            .unwrap();
        for id in &ids {
            assert!(filter.may_contain(id.0).await, "bypassed while missing");
        }
        wait_for("the rebuild", || counters.rebuilds.get() == 2).await;
        for id in &ids {
            assert!(
                filter.may_contain(id.0).await,
                "{id} held after the rebuild"
            );
        }
        assert!(!filter.may_contain(unknown).await);
        drop_keys(&name).await;
    }

    #[tokio::test]
    async fn ids_newer_than_the_build_go_to_the_database_and_future_ones_do_not() {
        let name = unique("order");
        let m = metrics();
        let counters = m.bloom(&name);
        let params = BloomParams::sized(1_000, 0.001).unwrap();
        let filter = BloomFilter::start(
            &name,
            redis(),
            params,
            over(vec![]),
            Clock::system(),
            Some(&m),
        );
        wait_for("the build", || counters.rebuilds.get() == 1).await;

        // Minted after the scan began and not (yet) added: the database must say.
        let fresh = first_id_at(now() + 100);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(filter.may_contain(fresh).await);
        assert_eq!(counters.db_checks.get(), 1);
        assert_eq!(counters.rejections.get(), 0);

        // Once added, it is held like any other.
        filter.add(fresh);
        let probe = filter.clone();
        let start = Instant::now();
        loop {
            let before = counters.db_checks.get();
            assert!(probe.may_contain(fresh).await);
            if counters.db_checks.get() == before {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "the add landed");
        }

        // Added before returning: held at once.
        let other = fresh + 1;
        filter.add_now(&[other]).await;
        let before = counters.db_checks.get();
        assert!(filter.may_contain(other).await);
        assert_eq!(counters.db_checks.get(), before, "held, not looked up");
        // A warm read of a held id asks Redis no more.
        assert!(filter.inner.held.contains_key(&other));

        // Stamped a minute from now: absent without asking Redis or the database.
        let future = first_id_at(now() + 60_000);
        assert!(!filter.may_contain(future).await);
        assert_eq!(counters.rejections.get(), 1);
        drop_keys(&name).await;
    }

    #[tokio::test]
    async fn with_redis_down_every_id_goes_to_the_database() {
        let down = Redis::open(
            super::super::redis::RedisTarget::Single("redis://127.0.0.1:1".into()),
            Duration::from_millis(100),
        )
        .unwrap();
        let m = metrics();
        let params = BloomParams::sized(1_000, 0.001).unwrap();
        let filter = BloomFilter::start(
            "down",
            down,
            params,
            over(vec![]),
            Clock::system(),
            Some(&m),
        );
        let start = Instant::now();
        for n in 0..100 {
            assert!(filter.may_contain(old_id(3_600_000, n)).await);
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert!(!filter.may_contain(first_id_at(now() + 60_000)).await);
    }
}
