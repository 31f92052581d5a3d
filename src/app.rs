//! Assembly: open the databases, start the actors, resume unfinished sagas, serve HTTP.
//! `sagashop serve` and the tests start the application through the same functions.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use actix_rt::Arbiter;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use tracing_actix_web::TracingLogger;

use crate::actors::account::{AccountCore, AccountService};
use crate::actors::bridge::{NatsBridge, ResultRelay, Served, forward_results, serve_role};
use crate::actors::endpoint::Endpoint;
use crate::actors::faults::Faults;
use crate::actors::leases::{Leases, Leave, Round};
use crate::actors::messages::{
    AcceptPurchase, CreateProduct, GetOrder, GetPayment, GetPerson, GetProduct, GetProducts,
    GetShipping, ListProducts, LogIn, RefreshTokens, SignUp, StepCommand, UpdatePerson,
    UpdateShipping,
};
use crate::actors::order::{OrderCore, OrderService};
use crate::actors::participant::Participant;
use crate::actors::payment::{PaymentCore, PaymentService};
use crate::actors::product::{ProductCore, ProductService};
use crate::actors::read_side::{Observed, ReadSide};
use crate::actors::results::{GapFill, NoLog, ResultHub, StepLog, StreamLimits};
use crate::actors::router::ServiceRouter;
use crate::actors::saga::{SagaDeps, SagaPolicy};
use crate::actors::starts::{self, StartNotices};
use crate::actors::store::SagaStore;
use crate::actors::supervisor::{SagaSupervisor, SupervisorSettings, load_unfinished};
use crate::auth::{secret, throttle::LoginThrottle, tokens::TokenIssuer};
use crate::cache::Cache;
use crate::cache::bloom::{BloomParams, IdFilters, Scanned};
use crate::clock::Clock;
use crate::cluster::bus::Bus;
use crate::cluster::identity::claim_node_id;
use crate::cluster::roles::Role;
use crate::cluster::stats::{self, Gather, ReadyCheck, Reporter};
use crate::config::{Config, DatabaseOptions, ServiceDb};
use crate::db::accounts::Accounts;
use crate::db::ledger::StepRepository;
use crate::db::open::{DbLocation, open};
use crate::db::orders::Orders;
use crate::db::partitions::PartitionLeases;
use crate::db::payments::Payments;
use crate::db::products::Products;
use crate::db::saga_list::SagaList;
use crate::db::sagas::Sagas;
use crate::domain::ids::{IdGenerator, PurchaseId};
use crate::domain::purchase::Step;
use crate::http::dashboard::{self, Dashboard};
use crate::http::health::Probe;
use crate::http::{AppState, HttpSettings, NodeHttp, SseSettings, cors::cors, routes};
use crate::telemetry::Telemetry;
use crate::telemetry::metrics::{Metrics, NodeLabels};
use crate::telemetry::metrics_server::metrics_server;

/// A started application: what HTTP needs, plus the test-only fault switches.
pub struct Application {
    pub state: NodeHttp,
    /// The node's metrics (served by the metrics listener).
    pub metrics: Metrics,
    /// This orchestrator's partition leases (cluster mode): told to give every partition
    /// back at shutdown.
    pub leases: Option<actix::Addr<Leases>>,
    pub faults: Arc<Faults>,
    /// The clock every component tells time by (tests move it forward).
    pub clock: Clock,
    /// How the HTTP server is to treat connections.
    pub http: HttpSettings,
    /// Held while the application runs: no second process opens the same data directory.
    pub data_dir_lock: Option<std::fs::File>,
    /// The threads owning each database (stopped with the application).
    pub arbiters: Vec<Arbiter>,
}

/// Takes an exclusive lock on the data directory when any database is an embedded SQLite
/// file there: two processes writing one SQLite store would break its one-writer model.
fn lock_data_dir(databases: &DatabaseOptions) -> anyhow::Result<Option<std::fs::File>> {
    let embedded = ServiceDb::ALL
        .iter()
        .any(|db| !matches!(DbLocation::resolve(databases, *db), DbLocation::Mysql(_)));
    if !embedded {
        return Ok(None);
    }
    let dir = &databases.data_dir;
    std::fs::create_dir_all(dir)?;
    let path = dir.join("sagashop.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another sagashop process is using the data directory {} (it holds {}); \
             stop it, or give this one its own --data-dir",
            dir.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
    }
}

/// Raises the soft limit on open files up to the hard limit: every connection and SSE stream
/// holds a descriptor.
fn raise_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open file limit"),
    }
}

/// Starts `actor` on a thread of its own: it owns a database whose calls block while they
/// run (embedded SQLite runs inline), so nothing else waits behind them.
fn on_own_thread<A>(arbiters: &mut Vec<Arbiter>, actor: A) -> actix::Addr<A>
where
    A: Actor<Context = actix::Context<A>> + Send,
{
    let arbiter = Arbiter::new();
    let addr = A::start_in_arbiter(&arbiter.handle(), |_| actor);
    arbiters.push(arbiter);
    addr
}

/// Starts a saga participant's service actor and its step [`Participant`] on one thread of
/// their own: both use the service's database, whose embedded calls run inline there.
fn participant_thread<A, R>(
    arbiters: &mut Vec<Arbiter>,
    service: A,
    steps: Participant<R>,
) -> (actix::Addr<A>, actix::Recipient<StepCommand>)
where
    A: Actor<Context = actix::Context<A>> + Send,
    R: StepRepository + Send,
{
    let arbiter = Arbiter::new();
    let addr = A::start_in_arbiter(&arbiter.handle(), |_| service);
    let steps = Participant::start_in_arbiter(&arbiter.handle(), |_| steps);
    arbiters.push(arbiter);
    (addr, steps.recipient())
}

/// Benchmark switch (`--hold-payments`): payment commands wait until the process gets
/// SIGUSR1, so sagas pile up in flight.
#[cfg(feature = "faults")]
fn hold_payments_until_sigusr1(faults: Arc<Faults>) {
    faults.hold_step(Step::CreatePayment, true);
    tracing::warn!("payment step held until SIGUSR1 (--hold-payments)");
    actix_rt::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut usr1) = signal(SignalKind::user_defined1()) {
            usr1.recv().await;
        }
        tracing::warn!("payment step released");
        faults.hold_step(Step::CreatePayment, false);
    });
}

/// Opens and migrates the given service databases, in order.
pub async fn open_databases(
    databases: &DatabaseOptions,
    which: &[ServiceDb],
) -> anyhow::Result<Vec<(ServiceDb, crate::db::DbPool)>> {
    let mut pools = Vec::new();
    for db in which {
        pools.push((*db, open(databases, *db).await?));
    }
    Ok(pools)
}

/// Starts every actor on the current actix System and resumes unfinished sagas.
pub async fn start(config: &Config) -> anyhow::Result<Application> {
    start_with(config, Clock::system()).await
}

/// Refuses a clock that is behind the newest stored id: ids made now could collide with or
/// sort before stored ones, and every order the system relies on would be off.
async fn refuse_clock_behind_ids(
    clock: &Clock,
    pool: impl Fn(ServiceDb) -> Option<crate::db::DbPool>,
) -> anyhow::Result<()> {
    let newest = crate::db::newest::newest_id(
        pool(ServiceDb::Account).as_ref(),
        pool(ServiceDb::Product).as_ref(),
        pool(ServiceDb::Saga).as_ref(),
    )
    .await?;
    let made_at = crate::domain::ids::issued_at_ms(newest);
    let now = clock.now_ms();
    if newest > 0 && made_at > now {
        anyhow::bail!(
            "the system clock is {:.1} s behind the newest stored id {newest}; \
             refusing to start, since new ids could repeat old ones: fix the clock",
            (made_at - now) as f64 / 1000.0
        );
    }
    Ok(())
}

/// Refuses a topology that cannot work: roles split without a bus to join them, or a
/// cluster node on a SQLite file, which other nodes cannot share.
fn check_topology(config: &Config) -> anyhow::Result<()> {
    let cluster = &config.cluster;
    if !cluster.is_cluster() {
        if !cluster.roles.is_all() {
            anyhow::bail!(
                "--roles {} needs --nats-url: nodes with some of the roles reach the others \
                 over NATS (without it, one process runs every role)",
                cluster.roles
            );
        }
        return Ok(());
    }
    for role in cluster.roles.iter() {
        let db = role.database();
        if let DbLocation::Sqlite(path) = DbLocation::resolve(&config.databases, db) {
            anyhow::bail!(
                "the {role} role needs the {name} database on MySQL in a cluster (--nats-url), \
                 but it would be the SQLite file {path}, which other nodes cannot share: \
                 set --{name}-database-url mysql://...",
                name = db.name()
            );
        }
    }
    Ok(())
}

/// Joins the cluster's bus and claims the node id; `None` in embedded mode.
async fn join_cluster(config: &Config) -> anyhow::Result<Option<Bus>> {
    let cluster = &config.cluster;
    if !cluster.is_cluster() {
        return Ok(None);
    }
    let bus = Bus::connect(cluster, cluster.node_id).await?;
    claim_node_id(&bus, cluster.roles).await?;
    tracing::info!(node_id = cluster.node_id, roles = %cluster.roles, cluster = %cluster.cluster_name, "joined the cluster");
    Ok(Some(bus))
}

/// Ends the process when the process `pid` is gone (tests: nodes die with their test).
fn exit_with(pid: Option<u32>) {
    let Some(pid) = pid else { return };
    actix_rt::spawn(async move {
        let path = format!("/proc/{pid}");
        while std::path::Path::new(&path).exists() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        tracing::warn!(pid, "the process this node lives with is gone: exiting");
        std::process::exit(0);
    });
}

/// How this node reaches the roles it does not run, and which of its own it serves to
/// other nodes.
struct Wiring {
    bus: Option<Bus>,
    clock: Clock,
    metrics: Metrics,
    timeout: Duration,
    bridges: HashMap<Role, actix::Addr<NatsBridge>>,
    served: Vec<(Role, Served)>,
}

impl Wiring {
    /// The bridge to `role` on other nodes (one per role, made on first use).
    fn remote(&mut self, role: Role) -> actix::Addr<NatsBridge> {
        let (bus, metrics, timeout) = (&self.bus, &self.metrics, self.timeout);
        let clock = &self.clock;
        self.bridges
            .entry(role)
            .or_insert_with(|| {
                let bus = bus.clone().expect("check_topology: split roles need a bus");
                NatsBridge::new(bus, role, timeout, metrics.clone(), clock.clone()).start()
            })
            .clone()
    }

    /// Serves `role` to other nodes with the local actors `served` names.
    fn serve(&mut self, role: Role, served: impl FnOnce(Served) -> Served) {
        let served = served(Served::new(self.clock.clone()));
        self.served.push((role, served));
    }

    /// Joins each served role's queue group; nothing to do in embedded mode.
    async fn start_serving(self) -> anyhow::Result<()> {
        if let Some(bus) = &self.bus {
            for (role, served) in self.served {
                serve_role(bus, role, served, &self.metrics).await?;
            }
        }
        Ok(())
    }
}

/// [`start`] with the clock every component tells time by.
pub async fn start_with(config: &Config, clock: Clock) -> anyhow::Result<Application> {
    check_topology(config)?;
    let roles = config.cluster.roles;
    let node_id = config.cluster.node_id;
    let data_dir_lock = lock_data_dir(&config.databases)?;
    raise_file_limit();
    exit_with(config.cluster.exit_with_pid);
    let bus = join_cluster(config).await?;
    let secret = secret::load_or_create(
        config.jwt_secret.as_ref(),
        &config.databases.data_dir,
        config.databases.uses_external_database(),
    )?;
    let pools = open_databases(&config.databases, &roles.databases()).await?;
    let pool = |db: ServiceDb| pools.iter().find(|(d, _)| *d == db).map(|(_, p)| p.clone());
    refuse_clock_behind_ids(&clock, pool).await?;
    let faults = Arc::new(Faults::default());
    let ids = IdGenerator::new(node_id);
    let metrics = Metrics::new(&NodeLabels {
        node_id,
        roles: roles.to_string(),
    })?;
    for (db, pool) in &pools {
        metrics.watch_pool(db.name(), pool.clone());
    }
    let cache = Cache::configured(config, &metrics)?;
    let tokens = TokenIssuer::new(
        secret.expose(),
        config.jwt_access_token_expire_second,
        config.jwt_refresh_token_expire_second,
        clock.clone(),
    );
    // Filled after the services are built, when Redis is configured (see below).
    let filters = IdFilters::default();
    let mut wiring = Wiring {
        bus: bus.clone(),
        clock: clock.clone(),
        metrics: metrics.clone(),
        timeout: Duration::from_millis(config.cluster.bus_timeout_ms),
        bridges: HashMap::new(),
        served: Vec::new(),
    };
    let mut arbiters = Vec::new();

    let account = if roles.has(Role::Account) {
        let addr = on_own_thread(
            &mut arbiters,
            AccountService::new(AccountCore::new(
                Accounts::new(pool(ServiceDb::Account).expect("opened")),
                cache.clone(),
                ids.clone(),
                tokens.clone(),
                clock.clone(),
            )),
        );
        wiring.serve(Role::Account, |s| {
            s.on::<SignUp>(addr.clone().recipient())
                .on::<LogIn>(addr.clone().recipient())
                .on::<RefreshTokens>(addr.clone().recipient())
                .on::<GetPerson>(addr.clone().recipient())
                .on::<UpdatePerson>(addr.clone().recipient())
                .on::<GetShipping>(addr.clone().recipient())
                .on::<UpdateShipping>(addr.clone().recipient())
        });
        Endpoint::Local(addr)
    } else {
        Endpoint::Remote(wiring.remote(Role::Account))
    };

    let mut product_reads = None;
    let (product, product_steps, product_lookup) = if roles.has(Role::Product) {
        let products = Products::new(pool(ServiceDb::Product).expect("opened"), clock.clone());
        let steps = Participant::new(
            Observed::new(products.clone(), ReadSide::Products(cache.clone())),
            Step::UpdateProductInventory,
            faults.clone(),
            clock.clone(),
            &metrics,
        );
        let core = ProductCore::new(
            products,
            cache.clone(),
            filters.product.clone(),
            ids.clone(),
            clock.clone(),
        )
        .caching_stock(cache.redis().is_some() || !config.cluster.is_cluster());
        let core = Arc::new(core);
        product_reads = Some(core.clone());
        let (addr, steps) = participant_thread(&mut arbiters, ProductService::shared(core), steps);
        wiring.serve(Role::Product, |s| {
            s.on::<CreateProduct>(addr.clone().recipient())
                .on::<GetProduct>(addr.clone().recipient())
                .on::<GetProducts>(addr.clone().recipient())
                .on::<ListProducts>(addr.clone().recipient())
                .on::<StepCommand>(steps.clone())
        });
        let lookup = addr.clone().recipient();
        (Endpoint::Local(addr), steps, lookup)
    } else {
        let bridge = wiring.remote(Role::Product);
        let (steps, lookup) = (bridge.clone().recipient(), bridge.clone().recipient());
        (Endpoint::Remote(bridge), steps, lookup)
    };

    let (order, order_steps) = if roles.has(Role::Order) {
        let orders = Orders::new(pool(ServiceDb::Order).expect("opened"), clock.clone());
        let steps = Participant::new(
            Observed::new(
                orders.clone(),
                ReadSide::Orders(cache.clone(), filters.order.clone()),
            ),
            Step::CreateOrder,
            faults.clone(),
            clock.clone(),
            &metrics,
        );
        let core = OrderCore::new(orders, cache.clone(), filters.order.clone(), product_lookup);
        let (addr, steps) = participant_thread(&mut arbiters, OrderService::new(core), steps);
        wiring.serve(Role::Order, |s| {
            s.on::<GetOrder>(addr.clone().recipient())
                .on::<StepCommand>(steps.clone())
        });
        (Endpoint::Local(addr), steps)
    } else {
        let bridge = wiring.remote(Role::Order);
        (Endpoint::Remote(bridge.clone()), bridge.recipient())
    };

    let (payment, payment_steps) = if roles.has(Role::Payment) {
        let payments = Payments::new(pool(ServiceDb::Payment).expect("opened"), clock.clone());
        let steps = Participant::new(
            Observed::new(
                payments.clone(),
                ReadSide::Payments(cache.clone(), filters.payment.clone()),
            ),
            Step::CreatePayment,
            faults.clone(),
            clock.clone(),
            &metrics,
        );
        let core = PaymentCore::new(payments, cache.clone(), filters.payment.clone());
        let (addr, steps) = participant_thread(&mut arbiters, PaymentService::new(core), steps);
        wiring.serve(Role::Payment, |s| {
            s.on::<GetPayment>(addr.clone().recipient())
                .on::<StepCommand>(steps.clone())
        });
        (Endpoint::Local(addr), steps)
    } else {
        let bridge = wiring.remote(Role::Payment);
        (Endpoint::Remote(bridge.clone()), bridge.recipient())
    };
    // Bloom filters over the ids the API looks up, for the roles served here (Redis only).
    if let Some(redis) = cache.redis() {
        let params = BloomParams::sized(config.bloom_capacity, config.bloom_error_rate)?;
        let scanned = Scanned {
            products: pool(ServiceDb::Product).map(|p| Products::new(p, clock.clone())),
            orders: pool(ServiceDb::Order).map(|p| Orders::new(p, clock.clone())),
            payments: pool(ServiceDb::Payment).map(|p| Payments::new(p, clock.clone())),
        };
        filters.start(redis, params, scanned, &clock, &metrics);
    }
    if config.hold_payments {
        #[cfg(feature = "faults")]
        hold_payments_until_sigusr1(faults.clone());
        #[cfg(not(feature = "faults"))]
        anyhow::bail!("--hold-payments needs a build with fault switches: --features faults");
    }
    let mut leases = None;
    // This node's orchestrator, if it runs one: the api role hands it the sagas it accepts
    // in partitions held here.
    let mut local_orchestrator = None;
    let (supervisor, store) = if roles.has(Role::Orchestrator) {
        let store_thread = Arbiter::new();
        let repo = Sagas::new(pool(ServiceDb::Saga).expect("opened"), clock.clone());
        // Embedded: the one node owns every partition. Cluster: orchestrators lease them.
        let leased = config.cluster.is_cluster();
        let store = if leased {
            SagaStore::start_leased(
                repo,
                node_id,
                config.partitions,
                &store_thread.handle(),
                &metrics,
            )
            .await?
        } else {
            SagaStore::start(
                repo,
                node_id,
                config.partitions,
                &store_thread.handle(),
                &metrics,
            )
            .await?
        };
        arbiters.push(store_thread);
        let deps = SagaDeps {
            router: ServiceRouter::new(product_steps, order_steps, payment_steps, faults.clone()),
            store: store.clone(),
            policy: SagaPolicy {
                step_timeout: config.step_timeout(),
                retry: config.retry_policy(),
            },
            faults: faults.clone(),
            clock: clock.clone(),
            metrics: metrics.clone(),
        };
        // A cluster orchestrator resumes sagas as it claims their partitions.
        let resumed = if leased {
            Vec::new()
        } else {
            load_unfinished(&store).await?
        };
        if !resumed.is_empty() {
            tracing::info!(count = resumed.len(), "resuming unfinished sagas");
        }
        // The supervisor and every saga actor it starts live on a thread of their own, stopped
        // with the application's other threads.
        let settings = SupervisorSettings {
            max_in_flight: config.max_sagas_in_flight,
            resume_per_second: config.resume_per_second,
            retain: Duration::from_secs(config.retain_days * 86_400),
            prune_every: Duration::from_secs(config.prune_every_seconds.max(1)),
            sweep_pending: leased,
        };
        let addr = on_own_thread(&mut arbiters, SagaSupervisor::new(deps, settings, resumed));
        if leased {
            let DbLocation::Mysql(url) = DbLocation::resolve(&config.databases, ServiceDb::Saga)
            else {
                unreachable!("check_topology refuses a cluster saga store on SQLite");
            };
            let lease = Duration::from_secs(config.cluster.lease_seconds);
            let db = PartitionLeases::new(url, node_id, lease.as_millis() as u64);
            let actor = Leases::new(
                db,
                store.clone(),
                addr.clone(),
                metrics.clone(),
                config.partitions,
                lease,
            );
            let actor = actor.start();
            // Claim a share before serving (the actor goes on every third of a lease).
            actor.send(Round).await?;
            leases = Some(actor);
        }
        wiring.serve(Role::Orchestrator, |s| {
            s.on::<AcceptPurchase>(addr.clone().recipient())
        });
        if let Some(bus) = &bus {
            ResultRelay::new(bus.clone(), store.clone(), &metrics).start();
            starts::listen(bus, store.clone(), addr.clone(), &metrics).await?;
        }
        local_orchestrator = Some((store.clone(), addr.clone()));
        (Endpoint::Local(addr), Some(store))
    } else {
        let store = pool(ServiceDb::Saga)
            .map(|p| SagaStore::reader(Sagas::new(p, clock.clone()), config.partitions));
        (Endpoint::Remote(wiring.remote(Role::Orchestrator)), store)
    };
    let log: Rc<dyn StepLog> = match &store {
        Some(store) => Rc::new(store.repo().clone()),
        None => Rc::new(NoLog),
    };
    let hub = ResultHub::new(
        StreamLimits {
            per_customer: config.sse_max_per_customer,
            total: config.sse_max_streams,
        },
        GapFill {
            log,
            partitions: config.partitions,
            counters: metrics.gap_fills(),
        },
    )
    .start();
    let remote: Vec<Role> = roles.remote_needs();
    wiring.start_serving().await?;
    if let (Some(bus), true) = (&bus, roles.has(Role::Api)) {
        forward_results(bus, hub.clone(), roles.has(Role::Orchestrator), &metrics).await?;
    }

    // In a cluster the api node stores the sagas it accepts and tells their owners; embedded,
    // the local supervisor stores each with its first transition.
    let starts = bus.as_ref().zip(store.as_ref()).map(|(bus, store)| {
        StartNotices::new(
            bus.clone(),
            store.repo().clone(),
            local_orchestrator,
            &metrics,
        )
    });
    let api = roles.has(Role::Api).then(|| AppState {
        account,
        product,
        product_reads,
        order,
        payment,
        supervisor,
        starts,
        hub,
        store: store.expect("the api role opens the saga store"),
        tokens,
        logins: LoginThrottle::new(config.login_throttle(), clock.clone()),
        trusted_proxies: config.trusted_proxies.clone(),
        ids,
        clock: clock.clone(),
        metrics: metrics.clone(),
        accept_within: if roles.has(Role::Orchestrator) {
            Duration::from_secs(3600)
        } else {
            Duration::from_millis(config.cluster.bus_timeout_ms)
        },
        body_timeout: std::time::Duration::from_millis(config.client_request_timeout_ms),
        sse: SseSettings {
            buffer: config.sse_buffer,
            keep_alive: std::time::Duration::from_secs(config.sse_keepalive_seconds),
            replay_page: config.sse_replay_page.max(1),
        },
    });
    let probe = Arc::new(Probe {
        node_id,
        roles,
        databases: pools.iter().map(|(db, p)| (db.name(), p.clone())).collect(),
        bus: bus.clone(),
        remote,
        redis: cache.redis().cloned(),
    });
    let gather: Gather = {
        let metrics = metrics.clone();
        Arc::new(move || metrics.gather())
    };
    let reporter = report_stats(bus.as_ref(), node_id, probe.clone(), gather).await?;
    let dashboard = api.as_ref().map(|api| {
        Arc::new(Dashboard {
            reporter,
            bus,
            cluster_name: config
                .cluster
                .is_cluster()
                .then(|| config.cluster.cluster_name.clone()),
            admin_token: config
                .admin_token
                .clone()
                .filter(|t| !t.expose().is_empty()),
            store: api.store.clone(),
            sagas: SagaList::new(pool(ServiceDb::Saga).expect("the api role opens the saga store")),
            clock: clock.clone(),
        })
    });
    Ok(Application {
        state: NodeHttp {
            api,
            probe,
            metrics: metrics.clone(),
            dashboard,
        },
        faults,
        clock,
        metrics,
        http: HttpSettings {
            workers: config.workers,
            max_connections: config.max_connections,
            client_request_timeout: Duration::from_millis(config.client_request_timeout_ms),
            keep_alive: Duration::from_secs(config.keep_alive_seconds),
            signals: true,
        },
        data_dir_lock,
        leases,
        arbiters,
    })
}

/// This node's stats reporter (for its dashboard); in a cluster it also answers every other
/// node's dashboard, whatever this node's roles.
async fn report_stats(
    bus: Option<&Bus>,
    node_id: u16,
    probe: Arc<Probe>,
    gather: Gather,
) -> anyhow::Result<Reporter> {
    let roles = probe.roles;
    let ready: ReadyCheck = Arc::new(move || {
        let probe = probe.clone();
        Box::pin(async move { probe.is_ready().await })
    });
    let reporter = Reporter::new(node_id, roles, gather, ready);
    if let Some(bus) = bus {
        stats::serve(bus, reporter.clone()).await?;
    }
    Ok(reporter)
}

/// The HTTP server over a started application, bound to `listener`.
pub fn http_server(
    state: NodeHttp,
    listener: std::net::TcpListener,
    settings: &HttpSettings,
) -> std::io::Result<actix_web::dev::Server> {
    let http_metrics = state.metrics.http();
    let api = state.api.map(web::Data::new);
    let probe = web::Data::from(state.probe);
    let dashboard = state.dashboard.map(web::Data::from);
    let mut server = HttpServer::new(move || {
        let app = App::new().app_data(probe.clone());
        let app = match &api {
            Some(data) => app.app_data(data.clone()),
            None => app,
        };
        let app = match &dashboard {
            Some(data) => app.app_data(data.clone()).configure(dashboard::configure),
            None => app,
        };
        app.wrap(from_fn(cors))
            .wrap(http_metrics.clone())
            .wrap(TracingLogger::default())
            .configure(|cfg| routes::configure_for(cfg, api.is_some()))
    })
    .shutdown_timeout(5)
    .max_connections(settings.max_connections)
    .client_request_timeout(settings.client_request_timeout)
    .client_disconnect_timeout(Duration::from_secs(1))
    .keep_alive(settings.keep_alive);
    if settings.workers > 0 {
        server = server.workers(settings.workers);
    }
    if !settings.signals {
        server = server.disable_signals();
    }
    Ok(server.listen(listener)?.run())
}

/// `sagashop serve`: install logs and trace export, run until SIGINT/SIGTERM, then flush the
/// spans still buffered.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let cluster = &config.cluster;
    let telemetry = Telemetry::install(&config.telemetry, cluster.node_id, cluster.roles)?;
    let served = run(&config).await;
    telemetry.shutdown().await;
    served
}

async fn run(config: &Config) -> anyhow::Result<()> {
    let app = start(config).await?;
    let listener = std::net::TcpListener::bind(config.listen)?;
    let metrics = match config.metrics_address() {
        (Some(addr), required) => match std::net::TcpListener::bind(addr) {
            Ok(bound) => {
                tracing::info!(metrics_listen = %bound.local_addr()?, "metrics listener");
                Some(metrics_server(app.metrics.clone(), bound, true)?)
            }
            Err(e) if !required => {
                tracing::warn!(%addr, error = %e, "no metrics listener: the default port is \
                    taken (set --metrics-listen to another address, or to off)");
                None
            }
            Err(e) => {
                anyhow::bail!("cannot listen for metrics on {addr} (--metrics-listen): {e}")
            }
        },
        (None, _) => None,
    };
    tracing::info!(listen = %config.listen, data_dir = %config.databases.data_dir.display(), "sagashop serving");
    let api = http_server(app.state, listener, &app.http)?;
    match metrics {
        Some(metrics) => {
            let metrics_handle = metrics.handle();
            let stopped = actix_rt::spawn(metrics);
            api.await?;
            leave(app.leases.as_ref()).await;
            metrics_handle.stop(true).await;
            let _ = stopped.await;
        }
        None => {
            api.await?;
            leave(app.leases.as_ref()).await;
        }
    }
    Ok(())
}

/// Graceful shutdown of an orchestrator in a cluster: the writer commits what is queued,
/// then every partition is given back, so other orchestrators claim them at once instead of
/// waiting for the leases to run out.
async fn leave(leases: Option<&actix::Addr<Leases>>) {
    let Some(leases) = leases else { return };
    tracing::info!("giving the partitions back");
    if let Err(e) = leases.send(Leave).await {
        tracing::warn!(error = %e, "cannot give the partitions back; they expire with their leases");
    }
}

/// `sagashop migrate`: create and migrate every database, then exit.
pub async fn migrate(databases: DatabaseOptions) -> anyhow::Result<()> {
    for (db, _) in open_databases(&databases, &ServiceDb::ALL).await? {
        tracing::info!(database = db.name(), "migrated");
    }
    Ok(())
}

/// `sagashop sagas quarantined`: the sagas set aside because their stored log does not replay.
pub async fn list_quarantined(databases: &DatabaseOptions) -> anyhow::Result<()> {
    let sagas = Sagas::new(open(databases, ServiceDb::Saga).await?, Clock::system());
    let found = sagas.quarantined().await?;
    if found.is_empty() {
        println!("no quarantined sagas");
    }
    for q in found {
        println!(
            "{}\tcustomer {}\t{}",
            q.purchase_id, q.customer_id, q.reason
        );
    }
    Ok(())
}

/// `sagashop sagas retry ID`: releases a quarantined saga; the node that runs the store picks
/// it up within seconds (or at its next start) and replays its log again.
pub async fn retry_quarantined(
    databases: &DatabaseOptions,
    purchase_id: PurchaseId,
) -> anyhow::Result<()> {
    let sagas = Sagas::new(open(databases, ServiceDb::Saga).await?, Clock::system());
    if !sagas.request_retry(purchase_id).await? {
        anyhow::bail!("saga {purchase_id} is not quarantined");
    }
    println!("saga {purchase_id} released; it runs again within seconds");
    Ok(())
}
