//! One pool type for both backends: MySQL through diesel-async, SQLite through its sync
//! wrapper. Repositories write each query once and [`backend_queries!`] expands it per backend.

use diesel::SqliteConnection;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::sync_connection_wrapper::{SpawnBlocking, SyncConnectionWrapper};
use diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::DbError;

/// Runs each SQLite call right where it is awaited instead of on tokio's blocking pool.
///
/// A SQLite call takes microseconds (plus an fsync at commit), far less than two thread
/// hand-offs per statement. Each service actor owns its database on its own arbiter thread,
/// so running inline keeps a transaction on one thread from BEGIN to COMMIT, without a
/// context switch per statement.
#[derive(Debug, Clone, Copy, Default)]
pub struct Inline;

impl SpawnBlocking for Inline {
    fn spawn_blocking<'a, R>(
        &mut self,
        task: impl FnOnce() -> R + Send + 'static,
    ) -> BoxFuture<'a, Result<R, Box<dyn std::error::Error + Send + Sync + 'static>>>
    where
        R: Send + 'static,
    {
        Box::pin(std::future::ready(Ok(task())))
    }

    fn get_runtime() -> Self {
        Inline
    }
}

/// The embedded backend's connection type.
pub type SqliteConn = SyncConnectionWrapper<SqliteConnection, Inline>;

/// A service database's connection pool, whichever backend serves it.
#[derive(Clone)]
pub enum DbPool {
    Mysql(Pool<AsyncMysqlConnection>),
    Sqlite(Pool<SqliteConn>),
}

impl DbPool {
    /// Pool over a MySQL/MariaDB URL.
    pub fn mysql(url: &str, size: usize) -> Result<Self, DbError> {
        let manager = AsyncDieselConnectionManager::<AsyncMysqlConnection>::new(url);
        Pool::builder(manager)
            .max_size(size)
            .build()
            .map(DbPool::Mysql)
            .map_err(|e| DbError::Setup(e.to_string()))
    }

    /// Pool over a SQLite file. SQLite has one writer at a time; the pool hands out `size`
    /// connections (1 serializes every call in-process, instead of in SQLite's busy handler,
    /// which sleeps). A local file cannot drop a connection, so checkouts are not pinged.
    pub fn sqlite(path: &str, size: usize) -> Result<Self, DbError> {
        let mut config = ManagerConfig::<SqliteConn>::default();
        config.recycling_method = RecyclingMethod::Fast;
        config.custom_setup = Box::new(|url| {
            let url = url.to_owned();
            async move {
                let mut conn = SqliteConn::establish(&url).await?;
                for pragma in [
                    "PRAGMA busy_timeout = 10000",
                    "PRAGMA foreign_keys = ON",
                    "PRAGMA synchronous = FULL",
                ] {
                    diesel::sql_query(pragma)
                        .execute(&mut conn)
                        .await
                        .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                }
                Ok(conn)
            }
            .boxed()
        });
        let manager = AsyncDieselConnectionManager::<SqliteConn>::new_with_config(path, config);
        Pool::builder(manager)
            .max_size(size)
            .build()
            .map(DbPool::Sqlite)
            .map_err(|e| DbError::Setup(e.to_string()))
    }

    /// Checks that a connection can be had and answers a trivial query (readiness).
    pub async fn ping(&self) -> Result<(), DbError> {
        let query = diesel::sql_query("SELECT 1");
        match self {
            DbPool::Mysql(p) => query.execute(&mut *p.get().await?).await?,
            DbPool::Sqlite(p) => query.execute(&mut *p.get().await?).await?,
        };
        Ok(())
    }
}

/// Defines the given query functions twice, once per backend, in modules `mysql_queries` and
/// `sqlite_queries`, each with its own `Conn` type. Call them through [`on_conn!`].
#[macro_export]
macro_rules! backend_queries {
    ($($item:item)*) => {
        #[allow(unused_imports)]
        pub mod mysql_queries {
            use super::*;
            /// The connection these queries run on.
            pub type Conn = diesel_async::AsyncMysqlConnection;
            use $crate::db::ledger::mysql_queries as ledger;
            $($item)*
        }
        #[allow(unused_imports)]
        pub mod sqlite_queries {
            use super::*;
            /// The connection these queries run on.
            pub type Conn = $crate::db::pool::SqliteConn;
            use $crate::db::ledger::sqlite_queries as ledger;
            $($item)*
        }
    };
}

/// Runs a query function from [`backend_queries!`] on a pooled connection of `pool`.
#[macro_export]
macro_rules! on_conn {
    ($pool:expr, $f:ident($($arg:expr),* $(,)?)) => {
        match &$pool {
            $crate::db::DbPool::Mysql(p) => {
                let mut conn = p.get().await?;
                mysql_queries::$f(&mut conn, $($arg),*).await
            }
            $crate::db::DbPool::Sqlite(p) => {
                let mut conn = p.get().await?;
                sqlite_queries::$f(&mut conn, $($arg),*).await
            }
        }
    };
}
