//! Assembly: open the databases, start the actors, resume unfinished sagas, serve HTTP.
//! `sagashop serve` and the tests start the application through the same functions.

use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use actix_rt::Arbiter;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use tracing_actix_web::TracingLogger;

use crate::actors::account::{AccountCore, AccountService};
use crate::actors::faults::Faults;
use crate::actors::messages::StepCommand;
use crate::actors::order::{OrderCore, OrderService};
use crate::actors::participant::Participant;
use crate::actors::payment::{PaymentCore, PaymentService};
use crate::actors::product::{ProductCore, ProductService};
use crate::actors::results::{ResultHub, StreamLimits};
use crate::actors::router::ServiceRouter;
use crate::actors::saga::{SagaDeps, SagaPolicy};
use crate::actors::store::SagaStore;
use crate::actors::supervisor::{SagaSupervisor, SupervisorSettings, load_unfinished};
use crate::auth::{secret, throttle::LoginThrottle, tokens::TokenIssuer};
use crate::cache::Cache;
use crate::clock::Clock;
use crate::config::{Config, DatabaseOptions, ServiceDb};
use crate::db::accounts::Accounts;
use crate::db::ledger::StepRepository;
use crate::db::open::{DbLocation, open};
use crate::db::orders::Orders;
use crate::db::payments::Payments;
use crate::db::products::Products;
use crate::db::sagas::Sagas;
use crate::domain::ids::{IdGenerator, PurchaseId};
use crate::domain::purchase::Step;
use crate::http::{AppState, HttpSettings, SseSettings, cors::cors, routes};

/// A started application: what HTTP needs, plus the test-only fault switches.
pub struct Application {
    pub state: AppState,
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

/// Opens and migrates every service database, in order.
pub async fn open_databases(
    databases: &DatabaseOptions,
) -> anyhow::Result<Vec<(ServiceDb, crate::db::DbPool)>> {
    let mut pools = Vec::new();
    for db in ServiceDb::ALL {
        pools.push((db, open(databases, db).await?));
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
    pool: impl Fn(ServiceDb) -> crate::db::DbPool,
) -> anyhow::Result<()> {
    let newest = crate::db::newest::newest_id(
        &pool(ServiceDb::Account),
        &pool(ServiceDb::Product),
        &pool(ServiceDb::Saga),
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

/// [`start`] with the clock every component tells time by.
pub async fn start_with(config: &Config, clock: Clock) -> anyhow::Result<Application> {
    let data_dir_lock = lock_data_dir(&config.databases)?;
    raise_file_limit();
    let secret = secret::load_or_create(
        config.jwt_secret.as_ref(),
        &config.databases.data_dir,
        config.databases.uses_external_database(),
    )?;
    let pools = open_databases(&config.databases).await?;
    let pool = |db: ServiceDb| {
        pools
            .iter()
            .find(|(d, _)| *d == db)
            .map(|(_, p)| p.clone())
            .expect("every database opened")
    };
    refuse_clock_behind_ids(&clock, pool).await?;
    let faults = Arc::new(Faults::default());
    let ids = IdGenerator::new(config.machine_id);
    let cache = Cache::local(std::time::Duration::from_secs(config.cache_ttl_seconds));
    let tokens = TokenIssuer::new(
        secret.expose(),
        config.jwt_access_token_expire_second,
        config.jwt_refresh_token_expire_second,
        clock.clone(),
    );

    let mut arbiters = Vec::new();
    let account = on_own_thread(
        &mut arbiters,
        AccountService::new(AccountCore::new(
            Accounts::new(pool(ServiceDb::Account)),
            cache.clone(),
            ids.clone(),
            tokens.clone(),
            clock.clone(),
        )),
    );
    let products = Products::new(pool(ServiceDb::Product), clock.clone());
    let steps = Participant::new(
        products.clone(),
        Step::UpdateProductInventory,
        faults.clone(),
        clock.clone(),
    );
    let core = ProductCore::new(products, cache.clone(), ids.clone(), clock.clone());
    let (product, product_steps) =
        participant_thread(&mut arbiters, ProductService::new(core), steps);
    let orders = Orders::new(pool(ServiceDb::Order), clock.clone());
    let steps = Participant::new(
        orders.clone(),
        Step::CreateOrder,
        faults.clone(),
        clock.clone(),
    );
    let core = OrderCore::new(orders, product.clone().recipient());
    let (order, order_steps) = participant_thread(&mut arbiters, OrderService::new(core), steps);
    let payments = Payments::new(pool(ServiceDb::Payment), clock.clone());
    let steps = Participant::new(
        payments.clone(),
        Step::CreatePayment,
        faults.clone(),
        clock.clone(),
    );
    let core = PaymentCore::new(payments);
    let (payment, payment_steps) =
        participant_thread(&mut arbiters, PaymentService::new(core), steps);
    if config.hold_payments {
        #[cfg(feature = "faults")]
        hold_payments_until_sigusr1(faults.clone());
        #[cfg(not(feature = "faults"))]
        anyhow::bail!("--hold-payments needs a build with fault switches: --features faults");
    }
    let hub = ResultHub::new(StreamLimits {
        per_customer: config.sse_max_per_customer,
        total: config.sse_max_streams,
    })
    .start();

    let store_thread = Arbiter::new();
    let store = SagaStore::start(
        Sagas::new(pool(ServiceDb::Saga), clock.clone()),
        config.machine_id,
        config.partitions,
        &store_thread.handle(),
    )
    .await?;
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
    };
    let resumed = load_unfinished(&store).await?;
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
    };
    let supervisor = on_own_thread(&mut arbiters, SagaSupervisor::new(deps, settings, resumed));

    let state = AppState {
        account,
        product,
        order,
        payment,
        supervisor,
        hub,
        store,
        tokens,
        logins: LoginThrottle::new(config.login_throttle(), clock.clone()),
        trusted_proxies: config.trusted_proxies.clone(),
        ids,
        body_timeout: std::time::Duration::from_millis(config.client_request_timeout_ms),
        sse: SseSettings {
            buffer: config.sse_buffer,
            keep_alive: std::time::Duration::from_secs(config.sse_keepalive_seconds),
            replay_page: config.sse_replay_page.max(1),
        },
        databases: pools.iter().map(|(db, p)| (db.name(), p.clone())).collect(),
    };
    Ok(Application {
        state,
        faults,
        clock,
        http: HttpSettings {
            workers: config.workers,
            max_connections: config.max_connections,
            client_request_timeout: Duration::from_millis(config.client_request_timeout_ms),
            keep_alive: Duration::from_secs(config.keep_alive_seconds),
            signals: true,
        },
        data_dir_lock,
        arbiters,
    })
}

/// The HTTP server over a started application, bound to `listener`.
pub fn http_server(
    state: AppState,
    listener: std::net::TcpListener,
    settings: &HttpSettings,
) -> std::io::Result<actix_web::dev::Server> {
    let data = web::Data::new(state);
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .wrap(from_fn(cors))
            .wrap(TracingLogger::default())
            .configure(routes::configure)
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

/// `sagashop serve`: run until SIGINT/SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let app = start(&config).await?;
    let listener = std::net::TcpListener::bind(config.listen)?;
    tracing::info!(listen = %config.listen, data_dir = %config.databases.data_dir.display(), "sagashop serving");
    http_server(app.state, listener, &app.http)?.await?;
    Ok(())
}

/// `sagashop migrate`: create and migrate every database, then exit.
pub async fn migrate(databases: DatabaseOptions) -> anyhow::Result<()> {
    for (db, _) in open_databases(&databases).await? {
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
