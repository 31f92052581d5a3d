//! Opening a service database: pick the backend from the configured URL, create the database
//! if needed, apply its embedded migrations (on a blocking thread, see CRATES.md A1), pool it.

use std::path::Path;

use diesel::Connection;
use diesel::SqliteConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use super::{DbError, DbPool};
use crate::config::{DatabaseOptions, ServiceDb};
use crate::secrets::DatabaseUrl;

const ACCOUNT: EmbeddedMigrations = embed_migrations!("migrations/account");
const PRODUCT: EmbeddedMigrations = embed_migrations!("migrations/product");
const ORDER: EmbeddedMigrations = embed_migrations!("migrations/order");
const PAYMENT: EmbeddedMigrations = embed_migrations!("migrations/payment");
const SAGA: EmbeddedMigrations = embed_migrations!("migrations/saga");
/// The saga store's SQLite-only layout (after the portable set): what SQLite writes cheaper
/// with DDL that MySQL does not share.
const SAGA_SQLITE: EmbeddedMigrations = embed_migrations!("migrations/saga-sqlite");

fn migrations(db: ServiceDb) -> EmbeddedMigrations {
    match db {
        ServiceDb::Account => ACCOUNT,
        ServiceDb::Product => PRODUCT,
        ServiceDb::Order => ORDER,
        ServiceDb::Payment => PAYMENT,
        ServiceDb::Saga => SAGA,
    }
}

/// Where a service database lives, resolved from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbLocation {
    /// A MySQL/MariaDB database (its URL may carry a password: it prints redacted).
    Mysql(DatabaseUrl),
    /// A SQLite file path.
    Sqlite(String),
}

impl DbLocation {
    /// The configured URL, or the SQLite file `<data dir>/<service>.db` when none is set.
    pub fn resolve(databases: &DatabaseOptions, db: ServiceDb) -> Self {
        match databases.database_url(db) {
            Some(url) if url.is_mysql() => DbLocation::Mysql(url.clone()),
            Some(url) => {
                DbLocation::Sqlite(url.expose().trim_start_matches("sqlite://").to_owned())
            }
            None => DbLocation::Sqlite(
                databases
                    .data_dir
                    .join(format!("{}.db", db.name()))
                    .to_string_lossy()
                    .into_owned(),
            ),
        }
    }
}

/// Creates (if needed), migrates and pools one service database.
pub async fn open(databases: &DatabaseOptions, db: ServiceDb) -> Result<DbPool, DbError> {
    let location = DbLocation::resolve(databases, db);
    migrate(&location, db).await?;
    match location {
        DbLocation::Mysql(url) => DbPool::mysql(url.expose(), databases.db_pool_size),
        DbLocation::Sqlite(path) => DbPool::sqlite(&path, databases.sqlite_connections.max(1)),
    }
}

/// Applies the pending migrations of one service database.
pub async fn migrate(location: &DbLocation, db: ServiceDb) -> Result<(), DbError> {
    let setup = |e: &dyn std::fmt::Display| DbError::Setup(format!("{} database: {e}", db.name()));
    match location {
        DbLocation::Mysql(url) => create_mysql_database(url).await?,
        DbLocation::Sqlite(path) => {
            if let Some(dir) = Path::new(path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir).map_err(|e| setup(&e))?;
            }
        }
    }
    // A driver's message may quote the URL: never show its password.
    let scrub = |text: String| match location {
        DbLocation::Mysql(url) => url.scrub(&text),
        DbLocation::Sqlite(_) => text,
    };
    let location = location.clone();
    let applied = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let text = |e: &dyn std::fmt::Display| e.to_string();
        let applied = match &location {
            DbLocation::Mysql(url) => {
                let mut conn =
                    <AsyncConnectionWrapper<AsyncMysqlConnection> as Connection>::establish(
                        url.expose(),
                    )
                    .map_err(|e| text(&e))?;
                // Nodes starting together take turns: one migrates, the others then find
                // nothing pending.
                let lock = migration_lock_name(url);
                hold_named_lock(&mut conn, &lock, MIGRATION_LOCK_WAIT_SECONDS)?;
                let applied = conn.run_pending_migrations(migrations(db)).map(|_| ());
                release_named_lock(&mut conn, &lock);
                applied
            }
            DbLocation::Sqlite(path) => {
                let mut conn = SqliteConnection::establish(path).map_err(|e| text(&e))?;
                // Wait for a lock rather than fail at once: a process that just closed the
                // file (a restart on the same data directory) may still be checkpointing it.
                for pragma in ["PRAGMA busy_timeout = 10000", "PRAGMA journal_mode = WAL"] {
                    diesel::RunQueryDsl::execute(diesel::sql_query(pragma), &mut conn)
                        .map_err(|e| text(&e))?;
                }
                let portable = conn.run_pending_migrations(migrations(db)).map(|_| ());
                match (portable, db) {
                    (Ok(()), ServiceDb::Saga) => {
                        conn.run_pending_migrations(SAGA_SQLITE).map(|_| ())
                    }
                    (other, _) => other,
                }
            }
        };
        applied.map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| setup(&e))?;
    applied.map_err(|e| setup(&scrub(e)))
}

/// Seconds a node waits for another node's migration of the same database to finish.
const MIGRATION_LOCK_WAIT_SECONDS: u32 = 300;

/// The named lock guarding one database's migrations (named locks are server-wide, and
/// their names at most 64 characters).
fn migration_lock_name(url: &DatabaseUrl) -> String {
    let name = split_mysql_url(url.expose())
        .map(|(_, name)| name)
        .unwrap_or_default();
    let mut lock = format!("sagashop-migrate-{name}");
    lock.truncate(64);
    lock
}

/// Takes a MySQL named lock on a blocking connection, waiting up to `wait` seconds.
fn hold_named_lock(
    conn: &mut AsyncConnectionWrapper<AsyncMysqlConnection>,
    name: &str,
    wait: u32,
) -> Result<(), String> {
    use diesel::sql_types::{Integer, Nullable, Text, Unsigned};
    let got: Option<i32> = diesel::RunQueryDsl::get_result(
        diesel::select(
            diesel::dsl::sql::<Nullable<Integer>>("GET_LOCK(")
                .bind::<Text, _>(name)
                .sql(", ")
                .bind::<Unsigned<Integer>, _>(wait)
                .sql(")"),
        ),
        conn,
    )
    .map_err(|e| e.to_string())?;
    match got {
        Some(1) => Ok(()),
        _ => Err(format!(
            "another node held the migration lock `{name}` for {wait} s"
        )),
    }
}

/// Gives a named lock back (closing the connection would too).
fn release_named_lock(conn: &mut AsyncConnectionWrapper<AsyncMysqlConnection>, name: &str) {
    use diesel::sql_types::{Integer, Nullable, Text};
    let _: Result<Option<i32>, _> = diesel::RunQueryDsl::get_result(
        diesel::select(
            diesel::dsl::sql::<Nullable<Integer>>("RELEASE_LOCK(")
                .bind::<Text, _>(name)
                .sql(")"),
        ),
        conn,
    );
}

/// Creates the database named in a MySQL URL when the server does not have it yet, with a
/// character set that holds any name a customer types.
pub async fn create_mysql_database(url: &DatabaseUrl) -> Result<(), DbError> {
    let (server, name) = split_mysql_url(url.expose())
        .ok_or_else(|| DbError::Setup(format!("MySQL URL without a database name: {url}")))?;
    let server = DatabaseUrl::new(server);
    let mut conn = AsyncMysqlConnection::establish(server.expose())
        .await
        .map_err(|e| {
            let e = server.scrub(&e.to_string());
            DbError::Setup(format!("cannot connect to MySQL at {server}: {e}"))
        })?;
    diesel::sql_query(format!(
        "CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
    ))
    .execute(&mut conn)
    .await?;
    Ok(())
}

/// `mysql://u:p@h:3306/db?x=y` -> (`mysql://u:p@h:3306?x=y`, `db`).
fn split_mysql_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("mysql://")?;
    let (path_part, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let (authority, name) = path_part.split_once('/')?;
    if name.is_empty() || name.contains('`') || name.contains('/') {
        return None;
    }
    let server = match query {
        Some(q) => format!("mysql://{authority}/?{q}"),
        None => format!("mysql://{authority}"),
    };
    Some((server, name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_url_splits_into_server_and_database() {
        assert_eq!(
            split_mysql_url("mysql://root@127.0.0.1:3306/shop_order"),
            Some(("mysql://root@127.0.0.1:3306".into(), "shop_order".into()))
        );
        assert_eq!(split_mysql_url("mysql://root@127.0.0.1:3306"), None);
    }

    #[test]
    fn unset_urls_become_sqlite_files_in_the_data_dir() {
        let config = crate::config::Config::embedded("/tmp/x");
        assert_eq!(
            DbLocation::resolve(&config.databases, ServiceDb::Order),
            DbLocation::Sqlite("/tmp/x/order.db".into())
        );
    }

    #[actix_rt::test]
    async fn errors_name_the_database_without_its_password() {
        let no_name = DatabaseUrl::new("mysql://root:hunter2@127.0.0.1:1");
        let unreachable = DatabaseUrl::new("mysql://root:hunter2@127.0.0.1:1/shop");
        for url in [no_name, unreachable] {
            let message = create_mysql_database(&url).await.unwrap_err().to_string();
            assert!(message.contains("root:***@127.0.0.1:1"), "{message}");
            assert!(!message.contains("hunter2"), "{message}");
        }
    }
}
