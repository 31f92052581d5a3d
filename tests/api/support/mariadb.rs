//! The MariaDB tests' server: found, or the test is reported as skipped (outside CI) or fails
//! (in CI, `CI` set); and a guard that drops the test's databases even when the test fails.

use std::future::Future;
use std::io::Write as _;

use diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl};
use sagashop::config::{DatabaseOptions, ServiceDb};

/// The server the MariaDB tests use (`SAGASHOP_TEST_MYSQL_URL`, else the local MariaDB).
pub fn server() -> String {
    std::env::var("SAGASHOP_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

/// One test's set of service databases on the MariaDB server, dropped with the guard.
pub struct Databases {
    server: String,
    run: String,
}

impl Databases {
    /// A fresh, unique set of database names for the test `name`; `None` (after printing
    /// `SKIPPED: <reason>`) when the server cannot be reached outside CI. In CI it panics.
    pub async fn create(name: &str) -> Option<Self> {
        let server = server();
        if let Err(e) = reachable(&server) {
            skipped(&format!("{name}: {e}"));
            return None;
        }
        let run = format!(
            "sagashop_{name}_{}_{}",
            std::process::id(),
            sagashop::clock::Clock::system().now_ms()
        );
        Some(Self { server, run })
    }

    /// The URL of `db` for this test (the database is created when the app opens it).
    pub fn url(&self, db: ServiceDb) -> String {
        format!("{}/{}", self.server, self.name(db))
    }

    fn name(&self, db: ServiceDb) -> String {
        database_name(&self.run, db)
    }

    /// Rows of `table` in this set's database `db` (an invariant checked behind the API).
    pub async fn count(&self, db: ServiceDb, table: &str) -> i64 {
        count_rows(&self.server, &self.name(db), table, "TRUE").await
    }

    /// Points every service database of `databases` at this set.
    pub fn configure(&self, databases: &mut DatabaseOptions) {
        databases.account_database_url = Some(self.url(ServiceDb::Account).into());
        databases.product_database_url = Some(self.url(ServiceDb::Product).into());
        databases.order_database_url = Some(self.url(ServiceDb::Order).into());
        databases.payment_database_url = Some(self.url(ServiceDb::Payment).into());
        databases.saga_database_url = Some(self.url(ServiceDb::Saga).into());
    }
}

/// Reports a test that cannot run because a server it needs is unreachable (`reason`): in CI
/// (`CI` set) it fails; elsewhere it says `SKIPPED: <reason>` and the caller returns.
pub fn skipped(reason: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "the servers are required in CI; {reason}"
    );
    // Straight to the process's stderr, past the test harness's output capture, so the skip
    // shows in a plain `cargo test` run.
    let _ = writeln!(std::io::stderr(), "SKIPPED: {reason}");
}

/// Whether the MariaDB server at `server` takes a connection (the error says why not).
pub fn reachable(server: &str) -> anyhow::Result<()> {
    let server = server.to_owned();
    on_own_runtime(move || async move {
        AsyncMysqlConnection::establish(&server)
            .await
            .map_err(|e| anyhow::anyhow!("MariaDB at {server} is unreachable: {e}"))?;
        Ok(())
    })
}

/// Rows of `table` in `database` on `server` where `filter` (SQL) holds, read directly.
pub async fn count_rows(server: &str, database: &str, table: &str, filter: &str) -> i64 {
    use diesel::sql_types::BigInt;
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let mut conn = AsyncMysqlConnection::establish(server).await.unwrap();
    let query = format!("SELECT COUNT(*) AS n FROM `{database}`.`{table}` WHERE {filter}");
    let found: Count = diesel::sql_query(query)
        .get_result(&mut conn)
        .await
        .unwrap();
    found.n
}

/// The name of the service database `db` of the set named `prefix` (as `scripts/cluster.sh`
/// names a cluster's databases too).
pub fn database_name(prefix: &str, db: ServiceDb) -> String {
    format!("{prefix}_{}", db.name())
}

/// The names of every service database of the set named `prefix`.
pub fn database_names(prefix: &str) -> Vec<String> {
    ServiceDb::ALL
        .iter()
        .map(|db| database_name(prefix, *db))
        .collect()
}

/// Drops the databases `names` (those that exist) on `server`.
pub fn drop_databases(server: &str, names: Vec<String>) -> anyhow::Result<()> {
    let server = server.to_owned();
    on_own_runtime(move || async move {
        let mut conn = AsyncMysqlConnection::establish(&server).await?;
        for name in names {
            diesel::sql_query(format!("DROP DATABASE IF EXISTS `{name}`"))
                .execute(&mut conn)
                .await?;
        }
        Ok(())
    })
}

/// Runs `work` to completion on a thread and a runtime of its own, for callers that cannot
/// await: a drop (whose own runtime may be the one unwinding) or a synchronous helper.
fn on_own_runtime<T, F>(work: impl FnOnce() -> F + Send + 'static) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: Future<Output = anyhow::Result<T>>,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(work())
    })
    .join()
    .unwrap_or_else(|_| Err(anyhow::anyhow!("panicked")))
}

impl Drop for Databases {
    /// Drops the databases, whether the test passed or not.
    fn drop(&mut self) {
        match drop_databases(&self.server, database_names(&self.run)) {
            Ok(()) => {}
            Err(e) if !std::thread::panicking() => panic!("dropping {}: {e}", self.run),
            Err(_) => eprintln!("could not drop the databases {}_*", self.run),
        }
    }
}
