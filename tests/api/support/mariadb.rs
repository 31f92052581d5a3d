//! The MariaDB tests' server: found, or the test is reported as skipped (outside CI) or fails
//! (in CI, `CI` set); and a guard that drops the test's databases even when the test fails.

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
        if let Err(e) = AsyncMysqlConnection::establish(&server).await {
            let reason = format!("{name}: MariaDB at {server} is unreachable: {e}");
            assert!(
                std::env::var_os("CI").is_none(),
                "MariaDB is required in CI; {reason}"
            );
            // Straight to the process's stderr, past the test harness's output capture, so the
            // skip shows in a plain `cargo test` run.
            let _ = writeln!(std::io::stderr(), "SKIPPED: {reason}");
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
        format!("{}_{}", self.run, db.name())
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

impl Drop for Databases {
    /// Drops the databases on a thread of its own (a drop cannot await, and the test's
    /// runtime may be the one unwinding), whether the test passed or not.
    fn drop(&mut self) {
        let server = self.server.clone();
        let names: Vec<String> = ServiceDb::ALL.iter().map(|db| self.name(*db)).collect();
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let mut conn = AsyncMysqlConnection::establish(&server).await?;
                for name in names {
                    diesel::sql_query(format!("DROP DATABASE IF EXISTS `{name}`"))
                        .execute(&mut conn)
                        .await?;
                }
                anyhow::Ok(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) if !std::thread::panicking() => panic!("dropping {}: {e}", self.run),
            Err(_) if !std::thread::panicking() => panic!("dropping {} panicked", self.run),
            _ => eprintln!("could not drop the databases {}_*", self.run),
        }
    }
}
