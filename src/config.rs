//! Every setting sagashop reads, from flags and environment, with defaults, in one struct.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::auth::proxies::TrustedProxies;
use crate::auth::throttle::ThrottleSettings;
use crate::cluster::roles::Roles;
use crate::secrets::{DatabaseUrl, Secret};

/// The service databases sagashop keeps apart (database per service).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceDb {
    Account,
    Product,
    Order,
    Payment,
    Saga,
}

impl ServiceDb {
    /// All databases, in the order they are opened and migrated.
    pub const ALL: [ServiceDb; 5] = [
        ServiceDb::Account,
        ServiceDb::Product,
        ServiceDb::Order,
        ServiceDb::Payment,
        ServiceDb::Saga,
    ];

    /// Short name used for SQLite file names, MySQL database names and migration folders.
    pub fn name(self) -> &'static str {
        match self {
            ServiceDb::Account => "account",
            ServiceDb::Product => "product",
            ServiceDb::Order => "order",
            ServiceDb::Payment => "payment",
            ServiceDb::Saga => "saga",
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, the event's fields at the top level (for log shippers).
    Json,
}

/// Logs and traces: what `serve` writes and where it sends spans.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Logs and traces")]
pub struct TelemetryOptions {
    /// Log line format; `RUST_LOG` filters either (default `info`).
    #[arg(long, env = "SAGASHOP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// OTLP/gRPC endpoint to export traces to, e.g. `http://127.0.0.1:4317` (Jaeger >= 1.35
    /// takes OTLP there); unset: no export. Batching follows the `OTEL_BSP_*` variables.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// The original's Jaeger setting, kept as an alias: used as the OTLP endpoint when
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` is unset (point it at Jaeger's OTLP port, 4317).
    #[arg(long, env = "JAEGER_URL")]
    pub jaeger_url: Option<String>,

    /// The service name on exported spans.
    #[arg(long, env = "OTEL_SERVICE_NAME", default_value = "sagashop")]
    pub otel_service_name: String,
}

impl TelemetryOptions {
    /// Where spans go: the OTLP endpoint, else `JAEGER_URL`; `None` (no export) when neither
    /// is set to something.
    pub fn otlp_endpoint(&self) -> Option<&str> {
        [&self.otlp_endpoint, &self.jaeger_url]
            .into_iter()
            .flatten()
            .map(|url| url.trim())
            .find(|url| !url.is_empty())
    }
}

/// Where the service databases live: what both `serve` and `migrate` need.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Databases")]
pub struct DatabaseOptions {
    /// Directory for the embedded SQLite files and the generated JWT secret.
    #[arg(long, env = "SAGASHOP_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Account database URL (unset: SQLite file in the data dir; `mysql://...`: MySQL/MariaDB).
    #[arg(long, env = "ACCOUNT_DATABASE_URL", hide_env_values = true)]
    pub account_database_url: Option<DatabaseUrl>,

    /// Product database URL (unset: SQLite file in the data dir; `mysql://...`: MySQL/MariaDB).
    #[arg(long, env = "PRODUCT_DATABASE_URL", hide_env_values = true)]
    pub product_database_url: Option<DatabaseUrl>,

    /// Order database URL (unset: SQLite file in the data dir; `mysql://...`: MySQL/MariaDB).
    #[arg(long, env = "ORDER_DATABASE_URL", hide_env_values = true)]
    pub order_database_url: Option<DatabaseUrl>,

    /// Payment database URL (unset: SQLite file in the data dir; `mysql://...`: MySQL/MariaDB).
    #[arg(long, env = "PAYMENT_DATABASE_URL", hide_env_values = true)]
    pub payment_database_url: Option<DatabaseUrl>,

    /// Saga store database URL (unset: SQLite file in the data dir; `mysql://...`: MySQL/MariaDB).
    #[arg(long, env = "SAGA_DATABASE_URL", hide_env_values = true)]
    pub saga_database_url: Option<DatabaseUrl>,

    /// Connections per MySQL database pool.
    #[arg(long, env = "SAGASHOP_DB_POOL_SIZE", default_value_t = 8)]
    pub db_pool_size: usize,

    /// Connections per SQLite database. SQLite has one writer at a time: 1 makes calls take
    /// turns in-process; more lets reads overlap a write but makes writers wait in SQLite.
    #[arg(long, env = "SAGASHOP_SQLITE_CONNECTIONS", default_value_t = 1)]
    pub sqlite_connections: usize,
}

/// The metrics listener's address when `--metrics-listen` is not given (the original's port).
pub const DEFAULT_METRICS_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    8080,
));

/// Where the metrics listener binds, or `off` for none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsListen(pub Option<SocketAddr>);

impl std::str::FromStr for MetricsListen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(MetricsListen(None));
        }
        s.parse()
            .map(|addr| MetricsListen(Some(addr)))
            .map_err(|e| format!("`{s}`: {e} (an address such as 127.0.0.1:8080, or `off`)"))
    }
}

/// Settings of `sagashop serve`: one place, documented by `sagashop serve --help`.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address the HTTP API listens on.
    #[arg(long, env = "SAGASHOP_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,

    /// Address of the metrics listener (`GET /metrics`, Prometheus text format); `off` runs
    /// none. Apart from the API, so the port can stay private. Unset, it is 127.0.0.1:8080,
    /// and a node that finds that port taken runs without metrics (with a warning) rather than
    /// refusing to start; an address given here must bind.
    #[arg(long, env = "SAGASHOP_METRICS_LISTEN", value_name = "ADDR|off")]
    pub metrics_listen: Option<MetricsListen>,

    /// HS256 secret for access and refresh tokens. Embedded mode generates one when unset;
    /// a MySQL deployment refuses to start without it.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// Bearer token of the dashboard's admin view (`/dashboard`: the recent sagas and each
    /// one's step history, i.e. every customer's purchases). Unset: the admin view is off and
    /// the dashboard shows aggregates only.
    #[arg(long, env = "SAGASHOP_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,

    /// Access token lifetime in seconds.
    #[arg(long, env = "JWT_ACCESS_TOKEN_EXPIRE_SECOND", default_value_t = 10800)]
    pub jwt_access_token_expire_second: u64,

    /// Refresh token lifetime in seconds.
    #[arg(long, env = "JWT_REFRESH_TOKEN_EXPIRE_SECOND", default_value_t = 86400)]
    pub jwt_refresh_token_expire_second: u64,

    /// Seconds an entry stays in the cache: the in-process cache without Redis, Redis's
    /// TTL (plus 0-10% jitter) with it.
    #[arg(long, env = "SAGASHOP_CACHE_TTL_SECONDS", default_value_t = 600)]
    pub cache_ttl_seconds: u64,

    /// One Redis as the shared cache level: `redis://[:password@]host:port[/db]`
    /// (`rediss://` for TLS). Unset (and no `--redis-cluster`): the in-process cache only.
    #[arg(
        long,
        env = "SAGASHOP_REDIS_URL",
        hide_env_values = true,
        conflicts_with = "redis_cluster"
    )]
    pub redis_url: Option<Secret>,

    /// A Redis Cluster as the shared cache level: comma-separated seed nodes, `host:port`
    /// or `redis://[:password@]host:port`. Not together with `--redis-url`.
    #[arg(long, env = "SAGASHOP_REDIS_CLUSTER", hide_env_values = true)]
    pub redis_cluster: Option<Secret>,

    /// Milliseconds any one Redis call may take; past it the read goes to the database.
    #[arg(long, env = "SAGASHOP_REDIS_TIMEOUT_MS", default_value_t = 100)]
    pub redis_timeout_ms: u64,

    /// Seconds an entry stays in the local level in front of Redis (with Redis only).
    #[arg(long, env = "SAGASHOP_LOCAL_CACHE_TTL_SECONDS", default_value_t = 60)]
    pub local_cache_ttl_seconds: u64,
    /// Ids each Bloom filter (products, orders, payments) is sized for; with Redis only. Past
    /// it the false-positive rate rises (more ids reach the database), never a false "absent".
    #[arg(long, env = "SAGASHOP_BLOOM_CAPACITY", default_value_t = 1_000_000)]
    pub bloom_capacity: u64,

    /// False-positive rate the Bloom filters are sized for (0 < rate < 1): the share of ids
    /// that never existed which still reach the database. Changing it rebuilds the filters.
    #[arg(long, env = "SAGASHOP_BLOOM_ERROR_RATE", default_value_t = 0.001)]
    pub bloom_error_rate: f64,

    /// Most sagas in flight on this node; beyond it `POST /api/purchase` answers 503.
    #[arg(long, env = "SAGASHOP_MAX_SAGAS_IN_FLIGHT", default_value_t = 100_000)]
    pub max_sagas_in_flight: usize,

    /// Days a finished saga's step log is kept (SSE resume, purchase history); older ones
    /// are pruned, their outcome kept.
    #[arg(long, env = "SAGASHOP_RETAIN_DAYS", default_value_t = 30)]
    pub retain_days: u64,

    /// Seconds between looks for step logs past retention (tests set it low).
    #[arg(long, hide = true, default_value_t = 600)]
    pub prune_every_seconds: u64,

    /// Unfinished sagas started per second when a node resumes them after a restart.
    #[arg(long, env = "SAGASHOP_RESUME_PER_SECOND", default_value_t = 20_000)]
    pub resume_per_second: usize,

    /// Milliseconds a saga waits for a step's reply before retrying the command.
    #[arg(long, env = "SAGASHOP_STEP_TIMEOUT_MS", default_value_t = 5000)]
    pub step_timeout_ms: u64,

    /// Seconds a step is retried on infrastructure errors (timeouts, a participant or its
    /// database down) before the saga gives up on it and compensates. A business refusal
    /// (not enough stock) fails the step at once.
    #[arg(long, env = "SAGASHOP_STEP_RETRY_SECONDS", default_value_t = 60)]
    pub step_retry_seconds: u64,

    /// Attempts of a compensation before the saga reports STATUS_ROLLBACK_FAIL (it keeps retrying).
    #[arg(long, env = "SAGASHOP_ROLLBACK_ATTEMPTS", default_value_t = 5)]
    pub rollback_attempts: u32,

    /// Longest pause, in milliseconds, between retries of a command (exponential backoff cap).
    #[arg(long, env = "SAGASHOP_MAX_BACKOFF_MS", default_value_t = 10_000)]
    pub max_backoff_ms: u64,

    /// Seconds between `: keep-alive` comments on idle SSE streams.
    #[arg(long, env = "SAGASHOP_SSE_KEEPALIVE_SECONDS", default_value_t = 15)]
    pub sse_keepalive_seconds: u64,

    /// Frames buffered per SSE connection; a client that falls this far behind is disconnected.
    #[arg(long, env = "SAGASHOP_SSE_BUFFER", default_value_t = 1024)]
    pub sse_buffer: usize,

    /// Result streams one customer may hold open; more get 429.
    #[arg(long, env = "SAGASHOP_SSE_MAX_PER_CUSTOMER", default_value_t = 8)]
    pub sse_max_per_customer: usize,

    /// Result streams the node holds open in all; more get 503.
    #[arg(long, env = "SAGASHOP_SSE_MAX_STREAMS", default_value_t = 10_000)]
    pub sse_max_streams: usize,

    /// Step-log entries read per query while a resumed stream catches up (tests set it low).
    #[arg(long, hide = true, default_value_t = 500)]
    pub sse_replay_page: u64,

    /// Partitions of a new saga store (fixed when the store is created; an existing store
    /// with another count refuses to open).
    #[arg(long, env = "SAGASHOP_PARTITIONS", default_value_t = crate::domain::partition::DEFAULT_COUNT,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub partitions: u32,

    /// Benchmark only: hold every payment command until the process receives SIGUSR1, so
    /// sagas pile up in flight (measures memory with many sagas in flight).
    #[arg(long, hide = true)]
    pub hold_payments: bool,

    /// Proxies (comma-separated IPs or CIDR networks) whose `X-Forwarded-For` names the
    /// client; from anyone else the header is ignored and the peer address is the client.
    #[arg(long, env = "SAGASHOP_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: TrustedProxies,

    /// Failed logins of one email from one client address, within a window, before that
    /// pair is refused (429) for a lockout.
    #[arg(long, env = "SAGASHOP_LOGIN_FAILURES_PER_CLIENT", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub login_failures_per_client: u32,

    /// Failed logins of one email from all addresses, within a window, before the email is
    /// refused (429) for a lockout.
    #[arg(long, env = "SAGASHOP_LOGIN_FAILURES_PER_EMAIL", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub login_failures_per_email: u32,

    /// Seconds of the failure window and of the first lockout; each further lockout of the
    /// same key doubles, up to 16 times this.
    #[arg(long, env = "SAGASHOP_LOGIN_LOCKOUT_SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub login_lockout_seconds: u64,

    /// HTTP worker threads (0 = one per core).
    #[arg(long, env = "SAGASHOP_WORKERS", default_value_t = 0)]
    pub workers: usize,

    /// Most open connections per HTTP worker; more wait in the listen backlog.
    #[arg(long, env = "SAGASHOP_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Milliseconds a client has to send a request's head, and then its whole body (a
    /// client that trickles bytes gets 408 instead of holding a worker).
    #[arg(
        long,
        env = "SAGASHOP_CLIENT_REQUEST_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub client_request_timeout_ms: u64,

    /// Seconds an idle keep-alive connection is kept open.
    #[arg(long, env = "SAGASHOP_KEEP_ALIVE_SECONDS", default_value_t = 15)]
    pub keep_alive_seconds: u64,

    /// How this node joins a cluster (its own help heading).
    #[command(flatten)]
    pub cluster: ClusterOptions,

    /// Log output and trace export (their own help heading).
    #[command(flatten)]
    pub telemetry: TelemetryOptions,

    /// Where the service databases live (listed last: they carry their own help heading).
    #[command(flatten)]
    pub databases: DatabaseOptions,
}

/// How a node takes part in a cluster. Without `--nats-url` it is the embedded system: one
/// process with every role, local actors and actix-broker only.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Cluster")]
pub struct ClusterOptions {
    /// Roles this node runs, comma-separated: api, orchestrator, account, product, order,
    /// payment (or `all`). Any subset but `all` needs `--nats-url`.
    #[arg(long, env = "SAGASHOP_ROLES", default_value = "all")]
    pub roles: Roles,

    /// This node's id (1-65535): unique in the cluster, and the machine id inside every id
    /// it generates. A node refuses to start while another live node holds its id.
    #[arg(long, visible_alias = "machine-id", env = "SAGASHOP_NODE_ID", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub node_id: u16,

    /// NATS server URL(s), comma-separated (`nats://host:4222`, `tls://...` for TLS). Unset:
    /// embedded mode.
    #[arg(long, env = "NATS_URL", hide_env_values = true)]
    pub nats_url: Option<DatabaseUrl>,

    /// NATS user (with `--nats-password`).
    #[arg(long, env = "NATS_USER")]
    pub nats_user: Option<String>,

    /// NATS password (never logged).
    #[arg(long, env = "NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<Secret>,

    /// NATS token, instead of a user and password (never logged).
    #[arg(long, env = "NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<Secret>,

    /// The cluster's name: the prefix of its NATS subjects, so clusters sharing a NATS
    /// server stay apart. Letters, digits, `-` and `_`.
    #[arg(long, env = "SAGASHOP_CLUSTER_NAME", default_value = "sagashop",
          value_parser = subject_token)]
    pub cluster_name: String,

    /// Milliseconds an API request to another node's role may take before it answers 503.
    #[arg(long, env = "SAGASHOP_BUS_TIMEOUT_MS", default_value_t = 5000)]
    pub bus_timeout_ms: u64,

    /// Seconds a partition lease lasts (orchestrators in a cluster): an orchestrator that
    /// dies without giving its partitions back loses them this long after its last renewal
    /// (renewals come every third of it).
    #[arg(long, env = "SAGASHOP_LEASE_SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub lease_seconds: u64,

    /// Tests only: exit when the process with this pid is gone.
    #[arg(long, hide = true, env = "SAGASHOP_EXIT_WITH_PID")]
    pub exit_with_pid: Option<u32>,
}

/// Settings of `sagashop healthcheck`: a container's healthcheck asks its own node's API,
/// so an image without curl or a shell can still tell whether the node is ready.
#[derive(Debug, Clone, Args)]
pub struct HealthcheckOptions {
    /// Address the node's HTTP API listens on (the same setting as `serve --listen`); an
    /// unspecified address (`0.0.0.0`, `::`) is asked on loopback.
    #[arg(long, env = "SAGASHOP_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,

    /// Path to ask: `/readyz` (every dependency answers) or `/healthz` (the process serves).
    #[arg(long, default_value = "/readyz")]
    pub path: String,

    /// Milliseconds to wait for the answer.
    #[arg(long, default_value_t = 3000)]
    pub timeout_ms: u64,
}

impl HealthcheckOptions {
    /// The URL asked: the listen address (on loopback when it is unspecified) and the path.
    pub fn url(&self) -> String {
        let mut addr = self.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr.ip() {
                std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let slash = if self.path.starts_with('/') { "" } else { "/" };
        format!("http://{addr}{slash}{}", self.path)
    }
}

/// A cluster name usable as a NATS subject token.
fn subject_token(name: &str) -> Result<String, String> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(name.to_owned())
    } else {
        Err("use letters, digits, `-` and `_` only".into())
    }
}

impl ClusterOptions {
    /// Whether the node joins a cluster (NATS configured).
    pub fn is_cluster(&self) -> bool {
        self.nats_url.is_some()
    }
}

impl DatabaseOptions {
    /// The URL configured for one service database, if any.
    pub fn database_url(&self, db: ServiceDb) -> Option<&DatabaseUrl> {
        match db {
            ServiceDb::Account => self.account_database_url.as_ref(),
            ServiceDb::Product => self.product_database_url.as_ref(),
            ServiceDb::Order => self.order_database_url.as_ref(),
            ServiceDb::Payment => self.payment_database_url.as_ref(),
            ServiceDb::Saga => self.saga_database_url.as_ref(),
        }
    }

    /// True when any service database is an external MySQL server (cluster-style deployment).
    pub fn uses_external_database(&self) -> bool {
        ServiceDb::ALL
            .iter()
            .any(|db| self.database_url(*db).is_some_and(DatabaseUrl::is_mysql))
    }
}

impl Config {
    /// Configuration with every default and the given data directory (tests and tools).
    pub fn embedded(data_dir: impl Into<PathBuf>) -> Self {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: Config,
        }
        let mut config = Wrapper::parse_from(["sagashop"]).config;
        config.databases.data_dir = data_dir.into();
        config
    }

    /// Where the metrics listener binds (`None`: nowhere), and whether a failure to bind
    /// there must stop the node: only for an address the operator chose.
    pub fn metrics_address(&self) -> (Option<SocketAddr>, bool) {
        match self.metrics_listen {
            Some(MetricsListen(address)) => (address, true),
            None => (Some(DEFAULT_METRICS_LISTEN), false),
        }
    }

    /// The shared cache level configured, if any (seeds given as `host:port` become
    /// `redis://host:port`).
    pub fn redis_target(&self) -> Option<crate::cache::redis::RedisTarget> {
        use crate::cache::redis::RedisTarget;
        if let Some(url) = &self.redis_url {
            return Some(RedisTarget::Single(url.expose().trim().to_owned()));
        }
        let seeds: Vec<String> = self
            .redis_cluster
            .as_ref()?
            .expose()
            .split(',')
            .map(str::trim)
            .filter(|seed| !seed.is_empty())
            .map(|seed| {
                if seed.contains("://") {
                    seed.to_owned()
                } else {
                    format!("redis://{seed}")
                }
            })
            .collect();
        (!seeds.is_empty()).then_some(RedisTarget::Cluster(seeds))
    }

    /// Step reply timeout.
    pub fn step_timeout(&self) -> Duration {
        Duration::from_millis(self.step_timeout_ms)
    }

    /// The login throttle's limits.
    pub fn login_throttle(&self) -> ThrottleSettings {
        ThrottleSettings {
            per_client: self.login_failures_per_client,
            per_email: self.login_failures_per_email,
            lockout: Duration::from_secs(self.login_lockout_seconds),
        }
    }

    /// The saga machine's retry budgets.
    pub fn retry_policy(&self) -> crate::domain::saga::RetryPolicy {
        crate::domain::saga::RetryPolicy {
            step_budget: Duration::from_secs(self.step_retry_seconds),
            rollback_attempts: self.rollback_attempts,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(self.max_backoff_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metrics_listener_is_an_address_or_off() {
        assert_eq!(
            Config::embedded("/srv").metrics_address(),
            (Some("127.0.0.1:8080".parse().unwrap()), false)
        );
        assert_eq!("off".parse(), Ok(MetricsListen(None)));
        assert_eq!("OFF".parse(), Ok(MetricsListen(None)));
        assert_eq!(
            "0.0.0.0:9001".parse(),
            Ok(MetricsListen(Some("0.0.0.0:9001".parse().unwrap())))
        );
        let wrong = "9001".parse::<MetricsListen>().unwrap_err();
        assert!(wrong.contains("or `off`"), "{wrong}");
    }

    #[test]
    fn the_healthcheck_asks_an_unspecified_listen_address_on_loopback() {
        let ask = |listen: &str, path: &str| {
            HealthcheckOptions {
                listen: listen.parse().unwrap(),
                path: path.into(),
                timeout_ms: 1,
            }
            .url()
        };
        assert_eq!(
            ask("0.0.0.0:8000", "/readyz"),
            "http://127.0.0.1:8000/readyz"
        );
        assert_eq!(ask("[::]:8000", "healthz"), "http://[::1]:8000/healthz");
        assert_eq!(
            ask("10.1.2.3:9000", "/readyz"),
            "http://10.1.2.3:9000/readyz"
        );
    }

    #[test]
    fn debug_output_of_the_configuration_shows_no_secret() {
        let mut config = Config::embedded("/srv");
        config.jwt_secret = Some("jwt-s3cret".into());
        config.admin_token = Some("admin-s3cret".into());
        config.databases.order_database_url = Some("mysql://shop:db-s3cret@db:3306/order".into());
        config.cluster.nats_url = Some("nats://bus:nats-s3cret@nats:4222".into());
        config.cluster.nats_password = Some("pw-s3cret".into());
        config.cluster.nats_token = Some("tok-s3cret".into());
        config.redis_url = Some("redis://:redis-s3cret@cache:6379".into());
        config.redis_cluster = Some("redis://:rc-s3cret@a:7000,b:7001".into());
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("nats://bus:***@nats:4222"), "{shown}");
        let token_url = crate::secrets::DatabaseUrl::new("nats://tok-s3cret@nats:4222");
        assert_eq!(token_url.to_string(), "nats://***@nats:4222");
        assert!(shown.contains("mysql://shop:***@db:3306/order"), "{shown}");
    }

    #[test]
    fn redis_is_one_server_or_a_cluster_never_both() {
        use crate::cache::redis::RedisTarget;
        use clap::Parser;
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: Config,
        }
        let parse = |args: &[&str]| {
            Wrapper::try_parse_from(std::iter::once("sagashop").chain(args.iter().copied()))
                .map(|w| w.config)
        };
        assert!(parse(&[]).unwrap().redis_target().is_none());
        let single = parse(&["--redis-url", "redis://127.0.0.1:6379"]).unwrap();
        assert!(
            matches!(single.redis_target(), Some(RedisTarget::Single(u)) if u == "redis://127.0.0.1:6379")
        );
        let cluster = parse(&["--redis-cluster", "127.0.0.1:7000, redis://:pw@h:7001"]).unwrap();
        let Some(RedisTarget::Cluster(seeds)) = cluster.redis_target() else {
            panic!("not a cluster")
        };
        assert_eq!(seeds, ["redis://127.0.0.1:7000", "redis://:pw@h:7001"]);
        assert_eq!(single.redis_timeout_ms, 100);
        assert_eq!(single.local_cache_ttl_seconds, 60);
        let both = parse(&["--redis-url", "redis://a", "--redis-cluster", "b:1"]);
        assert!(both.is_err());
    }

    #[test]
    fn jaeger_url_is_the_otlp_endpoint_when_that_is_unset() {
        let mut t = Config::embedded("/srv").telemetry;
        (t.otlp_endpoint, t.jaeger_url) = (None, None);
        assert_eq!(t.otlp_endpoint(), None);
        t.jaeger_url = Some("http://jaeger:4317".into());
        assert_eq!(t.otlp_endpoint(), Some("http://jaeger:4317"));
        t.otlp_endpoint = Some(" ".into());
        assert_eq!(t.otlp_endpoint(), Some("http://jaeger:4317"));
        t.otlp_endpoint = Some("http://collector:4317".into());
        assert_eq!(t.otlp_endpoint(), Some("http://collector:4317"));
    }
}
