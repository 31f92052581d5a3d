//! Every Prometheus metric of a node, in one registry that the metrics listener and the
//! dashboard both read.
//!
//! Recording must cost nothing a benchmark could see, so every label combination a hot path
//! uses is resolved once, here, when the registry is built, and recording is an atomic add on
//! a handle held by the recorder. Values that are cheaper to read than to keep up to date (the
//! database pools, the saga store's queue) are sampled just before each scrape.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web_prom::{PrometheusMetrics, PrometheusMetricsBuilder};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::domain::purchase::Step;
use crate::domain::saga::{Call, SagaState};

/// Prefix of every metric name (and the namespace of the HTTP metrics).
const NAMESPACE: &str = "sagashop";

/// What the route label says for a request no route matched (never its raw path: ids and
/// scanners' probes would make a label value each).
pub const UNMATCHED_ROUTE: &str = "UNMATCHED";

/// Why the registry could not be built (a programming error: a name registered twice).
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metric registration: {0}")]
    Register(#[from] prometheus::Error),
    #[error("HTTP metrics: {0}")]
    Http(String),
}

/// How a saga ended, as the `outcome` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SagaOutcome {
    Succeeded,
    RolledBack,
    /// A compensation was reported as failing (the saga keeps retrying it).
    RollbackFailed,
}

impl SagaOutcome {
    const ALL: [SagaOutcome; 3] = [
        SagaOutcome::Succeeded,
        SagaOutcome::RolledBack,
        SagaOutcome::RollbackFailed,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SagaOutcome::Succeeded => "succeeded",
            SagaOutcome::RolledBack => "rolled_back",
            SagaOutcome::RollbackFailed => "rollback_failed",
        }
    }
}

/// How one step call ended, as the `outcome` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// The participant applied it (or had already).
    Ok,
    /// The participant refused it for a business reason (not enough stock).
    Refused,
    /// No answer in time, or the participant could not run it.
    Failed,
}

impl CallOutcome {
    const ALL: [CallOutcome; 3] = [CallOutcome::Ok, CallOutcome::Refused, CallOutcome::Failed];

    fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Ok => "ok",
            CallOutcome::Refused => "refused",
            CallOutcome::Failed => "failed",
        }
    }
}

/// The actors whose queued work is measured (`actor` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueuedActor {
    /// A participant of one step (product, order or payment service).
    Participant(Step),
    /// The saga store's group-commit writer.
    SagaStore,
}

impl QueuedActor {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            QueuedActor::Participant(Step::UpdateProductInventory) => "product",
            QueuedActor::Participant(Step::CreateOrder) => "order",
            QueuedActor::Participant(Step::CreatePayment) => "payment",
            QueuedActor::SagaStore => "saga_store",
        }
    }
}

/// A step's label value: its wire name in lower case (`create_order`).
pub fn step_label(step: Step) -> String {
    step.as_str().to_ascii_lowercase()
}

/// A saga state's label value, as the purchase API names its status, in lower snake case.
pub fn state_label(state: SagaState) -> &'static str {
    match state {
        SagaState::Pending => "pending",
        SagaState::Executing(_) => "executing",
        SagaState::Compensating(_) => "compensating",
        SagaState::RollbackFailed(_) => "rollback_failed",
        SagaState::Succeeded => "succeeded",
        SagaState::RolledBack => "rolled_back",
    }
}

const STATES: [&str; 6] = [
    "pending",
    "executing",
    "compensating",
    "rollback_failed",
    "succeeded",
    "rolled_back",
];

fn state_index(state: SagaState) -> usize {
    let label = state_label(state);
    STATES.iter().position(|s| *s == label).unwrap_or(0)
}

fn step_index(step: Step) -> usize {
    Step::ALL.iter().position(|s| *s == step).unwrap_or(0)
}

fn kind_index(call: Call) -> usize {
    match call {
        Call::Execute(_) => 0,
        Call::Compensate(_) => 1,
    }
}

const KINDS: [&str; 2] = ["action", "compensation"];

/// How a partition changed hands, as `sagashop_partition_handovers_total` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handover {
    /// This node claimed an unowned or expired partition.
    Claimed,
    /// This node gave a partition up (over its fair share, or shutting down).
    Released,
    /// Another node took a partition over from this one.
    Lost,
}

impl Handover {
    /// Every kind, so that each shows on `/metrics` from the start.
    pub const ALL: [Handover; 3] = [Handover::Claimed, Handover::Released, Handover::Lost];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Handover::Claimed => "claimed",
            Handover::Released => "released",
            Handover::Lost => "lost",
        }
    }
}

/// What this node is, for `sagashop_node_info`.
#[derive(Debug, Clone)]
pub struct NodeLabels {
    pub node_id: u16,
    /// Its roles, comma-separated.
    pub roles: String,
}

/// The counters of one bridge subject pattern.
#[derive(Clone)]
pub struct SubjectCounters {
    /// Messages received on it.
    pub inbound: IntCounter,
    /// Messages sent on it.
    pub outbound: IntCounter,
    /// Messages that did not decode, or came in a schema version this build does not know.
    pub poisoned: IntCounter,
}

/// The hit and miss counters of one cache, per level, and its database loads.
#[derive(Clone)]
pub struct CacheCounters {
    pub local_hit: IntCounter,
    pub local_miss: IntCounter,
    pub redis_hit: IntCounter,
    pub redis_miss: IntCounter,
    /// Database reads the cache made on a miss (what the stampede lock keeps at one).
    pub loads: IntCounter,
}

/// The Bloom filter metrics, by filter (product, order, payment).
struct BloomVecs {
    rejections: IntCounterVec,
    rebuilds: IntCounterVec,
    db_checks: IntCounterVec,
    false_positive_rate: prometheus::GaugeVec,
}

impl BloomVecs {
    fn register(r: &Registry) -> Result<Self, MetricsError> {
        Ok(BloomVecs {
            rejections: counter_vec(
                r,
                "bloom_rejections_total",
                "Lookups a Bloom filter answered 'surely absent' without a database read.",
                &["filter"],
            )?,
            rebuilds: counter_vec(
                r,
                "bloom_rebuilds_total",
                "Bloom filters this node rebuilt from the database (missing or stale marker).",
                &["filter"],
            )?,
            db_checks: counter_vec(
                r,
                "bloom_db_checks_total",
                "Ids a filter did not hold but that are newer than its build: asked the database.",
                &["filter"],
            )?,
            false_positive_rate: register(
                r,
                prometheus::GaugeVec::new(
                    Opts::new(
                        name("bloom_false_positive_rate"),
                        "The false-positive rate a Bloom filter is sized for (configured).",
                    ),
                    &["filter"],
                )?,
            )?,
        })
    }
}

/// The metrics of one Bloom filter, resolved once.
#[derive(Clone)]
pub struct BloomCounters {
    /// Answered absent without a database read.
    pub rejections: IntCounter,
    /// Rebuilt from the database by this node.
    pub rebuilds: IntCounter,
    /// Absent from the filter but newer than its build: the database was asked.
    pub db_checks: IntCounter,
    /// The configured false-positive rate.
    pub false_positive_rate: prometheus::Gauge,
}

/// Per-step handles, resolved once.
struct StepHandles {
    /// [step][kind][outcome]
    calls: Vec<Vec<Vec<IntCounter>>>,
    /// [step][kind]
    latency: Vec<Vec<Histogram>>,
    retries: Vec<IntCounter>,
    timeouts: Vec<IntCounter>,
}

type Sampler = Box<dyn Fn() + Send + Sync>;

struct Inner {
    registry: Registry,
    http: PrometheusMetrics,
    samplers: Mutex<Vec<Sampler>>,
    sagas_started: IntCounter,
    sagas_finished: Vec<IntCounter>,
    saga_duration: Vec<Histogram>,
    sagas_alive: Vec<IntGauge>,
    steps: StepHandles,
    supervisor_restarts: IntCounter,
    queue_depth: IntGaugeVec,
    commit_batch: HistogramVec,
    bridge_messages: IntCounterVec,
    bridge_redelivered: IntCounterVec,
    bridge_poisoned: IntCounterVec,
    partitions_owned: IntGauge,
    handovers: IntCounterVec,
    writes_committed: IntCounter,
    writes_fenced: IntCounter,
    commands_fenced: IntCounterVec,
    gap_fills: IntCounter,
    gap_filled_events: IntCounter,
    cache_requests: IntCounterVec,
    cache_loads: IntCounterVec,
    cache_invalidations_received: IntCounter,
    cache_redis_errors: IntCounter,
    sse_connections: IntGauge,
    sse_events: IntCounter,
    pool_connections: IntGaugeVec,
    pool_max: IntGaugeVec,
    bloom: BloomVecs,
}

/// The node's metrics: one registry and the handles recorders hold. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

fn name(suffix: &str) -> String {
    format!("{NAMESPACE}_{suffix}")
}

fn register<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    collector: C,
) -> Result<C, MetricsError> {
    registry.register(Box::new(collector.clone()))?;
    Ok(collector)
}

fn counter_vec(
    r: &Registry,
    n: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, MetricsError> {
    register(r, IntCounterVec::new(Opts::new(name(n), help), labels)?)
}

fn gauge_vec(
    r: &Registry,
    n: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, MetricsError> {
    register(r, IntGaugeVec::new(Opts::new(name(n), help), labels)?)
}

fn histogram_vec(
    r: &Registry,
    n: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> Result<HistogramVec, MetricsError> {
    let opts = HistogramOpts::new(name(n), help).buckets(buckets);
    register(r, HistogramVec::new(opts, labels)?)
}

/// Latency buckets from 0.5 ms to about 33 s.
fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.0005, 2.0, 17).expect("valid buckets")
}

impl Metrics {
    /// A fresh registry holding every metric of the node described by `node`.
    pub fn new(node: &NodeLabels) -> Result<Self, MetricsError> {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let info = gauge_vec(
            &r,
            "node_info",
            "This node: its id, roles and version (always 1).",
            &["node_id", "roles", "version"],
        )?;
        info.with_label_values(&[
            node.node_id.to_string().as_str(),
            node.roles.as_str(),
            env!("CARGO_PKG_VERSION"),
        ])
        .set(1);
        let start = register(
            &r,
            IntGauge::new(
                name("node_start_time_seconds"),
                "When this node started, in seconds since the Unix epoch.",
            )?,
        )?;
        start.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        );

        let sagas_started = register(
            &r,
            IntCounter::new(
                name("sagas_started_total"),
                "Sagas accepted and stored by this node's orchestrator.",
            )?,
        )?;
        let finished = counter_vec(
            &r,
            "sagas_finished_total",
            "Sagas that reached an outcome, by outcome.",
            &["outcome"],
        )?;
        let duration = histogram_vec(
            &r,
            "saga_duration_seconds",
            "Time from a purchase's acceptance to its saga's outcome.",
            &["outcome"],
            latency_buckets(),
        )?;
        let alive = gauge_vec(
            &r,
            "sagas_alive",
            "Saga actors alive on this node, by the state of their saga.",
            &["state"],
        )?;
        let calls = counter_vec(
            &r,
            "steps_total",
            "Step calls answered (or given up on), by step, kind and outcome.",
            &["step", "kind", "outcome"],
        )?;
        let latency = histogram_vec(
            &r,
            "step_duration_seconds",
            "Time from sending a step call to its answer.",
            &["step", "kind"],
            latency_buckets(),
        )?;
        let retries = counter_vec(
            &r,
            "step_retries_total",
            "Step calls retried after an infrastructure error or a timeout.",
            &["step"],
        )?;
        let timeouts = counter_vec(
            &r,
            "step_timeouts_total",
            "Step calls not answered within the step timeout.",
            &["step"],
        )?;

        let steps = StepHandles {
            calls: Step::ALL
                .iter()
                .map(|s| {
                    let step = step_label(*s);
                    KINDS
                        .iter()
                        .map(|k| {
                            CallOutcome::ALL
                                .iter()
                                .map(|o| calls.with_label_values(&[step.as_str(), k, o.as_str()]))
                                .collect()
                        })
                        .collect()
                })
                .collect(),
            latency: Step::ALL
                .iter()
                .map(|s| {
                    let step = step_label(*s);
                    KINDS
                        .iter()
                        .map(|k| latency.with_label_values(&[step.as_str(), k]))
                        .collect()
                })
                .collect(),
            retries: Step::ALL
                .iter()
                .map(|s| retries.with_label_values(&[step_label(*s)]))
                .collect(),
            timeouts: Step::ALL
                .iter()
                .map(|s| timeouts.with_label_values(&[step_label(*s)]))
                .collect(),
        };

        let inner = Inner {
            sagas_started,
            sagas_finished: SagaOutcome::ALL
                .iter()
                .map(|o| finished.with_label_values(&[o.as_str()]))
                .collect(),
            saga_duration: SagaOutcome::ALL
                .iter()
                .map(|o| duration.with_label_values(&[o.as_str()]))
                .collect(),
            sagas_alive: STATES
                .iter()
                .map(|s| alive.with_label_values(&[s]))
                .collect(),
            steps,
            supervisor_restarts: register(
                &r,
                IntCounter::new(
                    name("supervisor_restarts_total"),
                    "Saga actors the supervisor restarted from the store after they died.",
                )?,
            )?,
            queue_depth: gauge_vec(
                &r,
                "actor_queue_depth",
                "Commands waiting for an actor's next batch.",
                &["actor"],
            )?,
            commit_batch: histogram_vec(
                &r,
                "commit_batch_size",
                "Commands or saga transitions committed in one transaction.",
                &["actor"],
                prometheus::exponential_buckets(1.0, 2.0, 10)?,
            )?,
            bridge_messages: counter_vec(
                &r,
                "bridge_messages_total",
                "NATS messages this node sent (out) or received (in), by subject pattern.",
                &["subject", "direction"],
            )?,
            bridge_redelivered: counter_vec(
                &r,
                "bridge_redelivered_total",
                "NATS messages delivered again by the broker, by subject pattern.",
                &["subject"],
            )?,
            bridge_poisoned: counter_vec(
                &r,
                "bridge_poisoned_total",
                "NATS messages refused as unreadable or of an unknown version, by subject pattern.",
                &["subject"],
            )?,
            partitions_owned: register(
                &r,
                IntGauge::new(
                    name("partitions_owned"),
                    "Saga store partitions this node owns.",
                )?,
            )?,
            handovers: counter_vec(
                &r,
                "partition_handovers_total",
                "Partitions this node claimed, released (its fair share shrank, or it stopped) \
                 or lost (another node took it over), by kind.",
                &["kind"],
            )?,
            writes_committed: register(
                &r,
                IntCounter::new(
                    name("saga_writes_committed_total"),
                    "Saga transitions this node wrote to the saga store (a stale owner's stays put).",
                )?,
            )?,
            writes_fenced: register(
                &r,
                IntCounter::new(
                    name("saga_writes_fenced_total"),
                    "Saga transitions this node did not write because it no longer owned \
                     their partition.",
                )?,
            )?,
            commands_fenced: counter_vec(
                &r,
                "step_commands_fenced_total",
                "Step commands this participant refused because they came from a partition \
                 owner older than the one that already drove the step, by step.",
                &["step"],
            )?,
            gap_fills: register(
                &r,
                IntCounter::new(
                    name("sse_gap_fills_total"),
                    "Times this node read missing results of a partition from the step log.",
                )?,
            )?,
            gap_filled_events: register(
                &r,
                IntCounter::new(
                    name("sse_gap_filled_events_total"),
                    "Results this node recovered from the step log by gap fills.",
                )?,
            )?,
            cache_requests: counter_vec(
                &r,
                "cache_requests_total",
                "Cache reads, by cache, level and result.",
                &["cache", "level", "result"],
            )?,
            cache_loads: counter_vec(
                &r,
                "cache_loads_total",
                "Database reads a cache made on a miss, by cache.",
                &["cache"],
            )?,
            cache_invalidations_received: register(
                &r,
                IntCounter::new(
                    name("cache_invalidations_received_total"),
                    "Invalidation messages (pub/sub) this node applied to its local cache.",
                )?,
            )?,
            cache_redis_errors: register(
                &r,
                IntCounter::new(
                    name("cache_redis_errors_total"),
                    "Cache calls to Redis that failed or timed out (the read went to the database).",
                )?,
            )?,
            sse_connections: register(
                &r,
                IntGauge::new(
                    name("sse_connections"),
                    "Result streams (SSE) open on this node.",
                )?,
            )?,
            sse_events: register(
                &r,
                IntCounter::new(
                    name("sse_events_total"),
                    "Step results sent on result streams.",
                )?,
            )?,
            pool_connections: gauge_vec(
                &r,
                "db_pool_connections",
                "Database pool connections, by database and state.",
                &["database", "state"],
            )?,
            pool_max: gauge_vec(
                &r,
                "db_pool_max_connections",
                "Most connections a database pool opens.",
                &["database"],
            )?,
            bloom: BloomVecs::register(&r)?,
            http: PrometheusMetricsBuilder::new(NAMESPACE)
                .registry(r.clone())
                .mask_unmatched_patterns(UNMATCHED_ROUTE)
                .build()
                .map_err(|e| MetricsError::Http(e.to_string()))?,
            samplers: Mutex::new(Vec::new()),
            registry: r,
        };
        for kind in Handover::ALL {
            inner.handovers.with_label_values(&[kind.as_str()]);
        }
        for step in Step::ALL {
            inner
                .commands_fenced
                .with_label_values(&[&step_label(step)]);
        }
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The middleware counting the API's requests by route pattern, method and status.
    pub fn http(&self) -> PrometheusMetrics {
        self.inner.http.clone()
    }

    /// The registry (the dashboard reads it with `gather`).
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// Every metric, with the sampled ones brought up to date first.
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        for sample in self.inner.samplers.lock().expect("samplers").iter() {
            sample();
        }
        self.inner.registry.gather()
    }

    /// Every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.gather(), &mut out)
            .expect("the text encoder writes to memory");
        String::from_utf8(out).expect("the text format is UTF-8")
    }

    /// Runs `sample` before every scrape: for values cheaper to read than to keep current.
    pub fn sample_before_scrape(&self, sample: impl Fn() + Send + Sync + 'static) {
        self.inner
            .samplers
            .lock()
            .expect("samplers")
            .push(Box::new(sample));
    }

    /// A saga was accepted and stored.
    pub fn saga_started(&self) {
        self.inner.sagas_started.inc();
    }

    /// A saga reached `outcome`, `took` after its purchase was accepted.
    pub fn saga_finished(&self, outcome: SagaOutcome, took: Duration) {
        let at = SagaOutcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(0);
        self.inner.sagas_finished[at].inc();
        self.inner.saga_duration[at].observe(took.as_secs_f64());
    }

    /// A saga actor alive in `state`; the returned guard follows its moves and counts it out
    /// when dropped (also when its actor dies).
    pub fn saga_alive(&self, state: SagaState) -> AliveSaga {
        let at = state_index(state);
        self.inner.sagas_alive[at].inc();
        AliveSaga {
            metrics: self.clone(),
            at,
        }
    }

    /// A step call ended with `outcome` after `took`.
    pub fn step_answered(&self, call: Call, outcome: CallOutcome, took: Duration) {
        let (s, k) = (step_index(call.step()), kind_index(call));
        let o = CallOutcome::ALL
            .iter()
            .position(|x| *x == outcome)
            .unwrap_or(0);
        let steps = &self.inner.steps;
        steps.calls[s][k][o].inc();
        steps.latency[s][k].observe(took.as_secs_f64());
    }

    /// A step call is to be sent again after a failure.
    pub fn step_retried(&self, step: Step) {
        self.inner.steps.retries[step_index(step)].inc();
    }

    /// A step call was not answered in time.
    pub fn step_timed_out(&self, step: Step) {
        self.inner.steps.timeouts[step_index(step)].inc();
    }

    /// The supervisor restarted a saga actor that died.
    pub fn supervisor_restarted(&self) {
        self.inner.supervisor_restarts.inc();
    }

    /// The gauge of `actor`'s queued commands.
    pub fn queue_depth(&self, actor: QueuedActor) -> IntGauge {
        self.inner.queue_depth.with_label_values(&[actor.as_str()])
    }

    /// The histogram of `actor`'s batch sizes.
    pub fn commit_batch(&self, actor: QueuedActor) -> Histogram {
        self.inner.commit_batch.with_label_values(&[actor.as_str()])
    }

    /// The counters of one NATS subject pattern (never a subject with ids in it).
    pub fn subject(&self, pattern: &str) -> SubjectCounters {
        let i = &self.inner;
        // Registered at zero, so a scrape shows the pattern before any redelivery.
        let _ = i.bridge_redelivered.with_label_values(&[pattern]);
        SubjectCounters {
            inbound: i.bridge_messages.with_label_values(&[pattern, "in"]),
            outbound: i.bridge_messages.with_label_values(&[pattern, "out"]),
            poisoned: i.bridge_poisoned.with_label_values(&[pattern]),
        }
    }

    /// The gauge of saga store partitions owned.
    pub fn partitions_owned(&self) -> IntGauge {
        self.inner.partitions_owned.clone()
    }

    /// The counter of one kind of partition handover.
    pub fn handover(&self, kind: Handover) -> IntCounter {
        self.inner.handovers.with_label_values(&[kind.as_str()])
    }

    /// The counter of saga transitions this node committed.
    pub fn writes_committed(&self) -> IntCounter {
        self.inner.writes_committed.clone()
    }

    /// The counter of saga writes dropped because their partition was lost.
    pub fn writes_fenced(&self) -> IntCounter {
        self.inner.writes_fenced.clone()
    }

    /// The counter of step commands refused as coming from a stale owner.
    pub fn command_fenced(&self, step: Step) -> IntCounter {
        self.inner
            .commands_fenced
            .with_label_values(&[&step_label(step)])
    }

    /// The counters of gap fills: fills done, and results they recovered.
    pub fn gap_fills(&self) -> (IntCounter, IntCounter) {
        (
            self.inner.gap_fills.clone(),
            self.inner.gap_filled_events.clone(),
        )
    }

    /// The counters of the cache named `cache`.
    pub fn cache(&self, cache: &str) -> CacheCounters {
        let c = &self.inner.cache_requests;
        CacheCounters {
            local_hit: c.with_label_values(&[cache, "local", "hit"]),
            local_miss: c.with_label_values(&[cache, "local", "miss"]),
            redis_hit: c.with_label_values(&[cache, "redis", "hit"]),
            redis_miss: c.with_label_values(&[cache, "redis", "miss"]),
            loads: self.inner.cache_loads.with_label_values(&[cache]),
        }
    }

    /// The counter of invalidation messages applied to the local cache.
    pub fn cache_invalidations_received(&self) -> IntCounter {
        self.inner.cache_invalidations_received.clone()
    }

    /// The counter of Redis calls by the cache that failed or timed out.
    pub fn cache_redis_errors(&self) -> IntCounter {
        self.inner.cache_redis_errors.clone()
    }

    /// The metrics of the Bloom filter named `filter`.
    pub fn bloom(&self, filter: &str) -> BloomCounters {
        let b = &self.inner.bloom;
        BloomCounters {
            rejections: b.rejections.with_label_values(&[filter]),
            rebuilds: b.rebuilds.with_label_values(&[filter]),
            db_checks: b.db_checks.with_label_values(&[filter]),
            false_positive_rate: b.false_positive_rate.with_label_values(&[filter]),
        }
    }

    /// A result stream opened; the guard counts it closed when dropped.
    pub fn sse_opened(&self) -> OpenStream {
        self.inner.sse_connections.inc();
        OpenStream {
            gauge: self.inner.sse_connections.clone(),
        }
    }

    /// The counter of results sent on streams.
    pub fn sse_events(&self) -> IntCounter {
        self.inner.sse_events.clone()
    }

    /// Reports a database pool's usage at each scrape.
    pub fn watch_pool(&self, database: &str, pool: crate::db::DbPool) {
        let c = &self.inner.pool_connections;
        let in_use = c.with_label_values(&[database, "in_use"]);
        let idle = c.with_label_values(&[database, "idle"]);
        let max = self.inner.pool_max.with_label_values(&[database]);
        self.sample_before_scrape(move || {
            let usage = pool.usage();
            in_use.set(usage.open.saturating_sub(usage.idle) as i64);
            idle.set(usage.idle as i64);
            max.set(usage.max as i64);
        });
    }
}

/// A saga actor counted in `sagashop_sagas_alive` under its current state.
pub struct AliveSaga {
    metrics: Metrics,
    at: usize,
}

impl AliveSaga {
    /// The saga moved to `state`.
    pub fn moved_to(&mut self, state: SagaState) {
        let to = state_index(state);
        if to != self.at {
            let alive = &self.metrics.inner.sagas_alive;
            alive[self.at].dec();
            alive[to].inc();
            self.at = to;
        }
    }
}

impl Drop for AliveSaga {
    fn drop(&mut self) {
        self.metrics.inner.sagas_alive[self.at].dec();
    }
}

/// An open result stream, counted in `sagashop_sse_connections` until dropped.
pub struct OpenStream {
    gauge: IntGauge,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics {
        Metrics::new(&NodeLabels {
            node_id: 3,
            roles: "api,orchestrator".into(),
        })
        .unwrap()
    }

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn every_named_metric_is_in_the_registry_before_anything_happens() {
        let text = metrics().render();
        for expected in [
            "sagashop_node_info{node_id=\"3\",roles=\"api,orchestrator\"",
            "sagashop_node_start_time_seconds ",
            "sagashop_sagas_started_total 0",
            "sagashop_sagas_finished_total{outcome=\"rollback_failed\"} 0",
            "sagashop_sagas_alive{state=\"pending\"} 0",
            "sagashop_steps_total{kind=\"compensation\",outcome=\"refused\",step=\"create_payment\"} 0",
            "sagashop_step_duration_seconds_count{kind=\"action\",step=\"update_product_inventory\"} 0",
            "sagashop_step_retries_total{step=\"create_order\"} 0",
            "sagashop_step_timeouts_total{step=\"create_order\"} 0",
            "sagashop_supervisor_restarts_total 0",
            "sagashop_partitions_owned 0",
            "sagashop_sse_connections 0",
            "sagashop_sse_events_total 0",
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
        #[cfg(target_os = "linux")]
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
    }

    #[test]
    fn an_alive_saga_follows_its_state_and_leaves_when_dropped() {
        let m = metrics();
        let mut saga = m.saga_alive(SagaState::Pending);
        saga.moved_to(SagaState::Executing(Step::CreateOrder));
        saga.moved_to(SagaState::Executing(Step::CreatePayment));
        let text = m.render();
        assert_eq!(
            line(&text, "sagashop_sagas_alive{state=\"pending\"}"),
            Some("sagashop_sagas_alive{state=\"pending\"} 0")
        );
        assert_eq!(
            line(&text, "sagashop_sagas_alive{state=\"executing\"}"),
            Some("sagashop_sagas_alive{state=\"executing\"} 1")
        );
        drop(saga);
        let text = m.render();
        assert_eq!(
            line(&text, "sagashop_sagas_alive{state=\"executing\"}"),
            Some("sagashop_sagas_alive{state=\"executing\"} 0")
        );
    }

    #[test]
    fn a_step_call_counts_under_its_step_kind_and_outcome() {
        let m = metrics();
        let undo = Call::Compensate(Step::CreateOrder);
        m.step_answered(undo, CallOutcome::Failed, Duration::from_millis(3));
        m.step_answered(undo, CallOutcome::Ok, Duration::from_millis(1));
        let text = m.render();
        assert!(text.contains("sagashop_steps_total{kind=\"compensation\",outcome=\"failed\",step=\"create_order\"} 1"), "{text}");
        assert!(text.contains("sagashop_step_duration_seconds_count{kind=\"compensation\",step=\"create_order\"} 2"), "{text}");
    }

    #[test]
    fn a_pool_is_sampled_at_scrape_time() {
        let m = metrics();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let pool = crate::db::DbPool::sqlite(path.to_str().unwrap(), 3).unwrap();
        m.watch_pool("order", pool);
        let text = m.render();
        assert!(
            text.contains("sagashop_db_pool_max_connections{database=\"order\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("sagashop_db_pool_connections{database=\"order\",state=\"in_use\"} 0"),
            "{text}"
        );
    }
}
