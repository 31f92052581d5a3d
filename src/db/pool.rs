//! One pool type for both backends: MySQL through diesel-async, SQLite through its sync
//! wrapper. Repositories write each query once and [`backend_queries!`] compiles it per backend.

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

/// A pool's connections at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUsage {
    /// Connections open (in use or idle).
    pub open: usize,
    /// Open connections nobody holds.
    pub idle: usize,
    /// Most connections the pool opens.
    pub max: usize,
}

/// A service database's connection pool, whichever backend serves it.
#[derive(Clone)]
pub enum DbPool {
    Mysql(Pool<AsyncMysqlConnection>),
    Sqlite(Pool<SqliteConn>),
}

impl DbPool {
    /// Pool over a MySQL/MariaDB URL. A checkout is not pinged first (a round trip per
    /// transaction): a connection that broke fails its next statement, which the caller
    /// retries or reports, and the pool then discards it.
    pub fn mysql(url: &str, size: usize) -> Result<Self, DbError> {
        let mut config = ManagerConfig::<AsyncMysqlConnection>::default();
        config.recycling_method = RecyclingMethod::Fast;
        let manager =
            AsyncDieselConnectionManager::<AsyncMysqlConnection>::new_with_config(url, config);
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

    /// How many connections the pool holds, how many are free, and its maximum (metrics).
    pub fn usage(&self) -> PoolUsage {
        let status = match self {
            DbPool::Mysql(p) => p.status(),
            DbPool::Sqlite(p) => p.status(),
        };
        PoolUsage {
            open: status.size,
            idle: status.available,
            max: status.max_size,
        }
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

/// Writes database code once and compiles it once per backend.
///
/// diesel-async has no connection type that serves both MySQL and SQLite, and a query's
/// diesel type is only executable on a concrete connection (a generic version needs one
/// `where` bound per query shape). So the same text is compiled twice, with `Conn` standing
/// for each connection type. Two forms:
///
/// **Query functions**, whose first parameter is `&mut Conn`:
///
/// ```text
/// backend_queries! {
///     /// The product with this id.
///     pub async fn by_id(conn: &mut Conn, id: i64) -> Result<Option<Product>, DbError> {
///         /* diesel code on `conn` */
///     }
/// }
/// ```
///
/// expands to one copy per backend, plus a function of the same name that runs it on a
/// connection from a [`DbPool`] (the return type must be `Result<_, DbError>`):
///
/// ```text
/// mod mysql {
///     use super::*;
///     pub type Conn = diesel_async::AsyncMysqlConnection;
///     pub async fn by_id(conn: &mut Conn, id: i64) -> Result<Option<Product>, DbError> { /* .. */ }
/// }
/// mod sqlite { /* the same, with `pub type Conn = SqliteConn;` */ }
///
/// /// The product with this id.
/// pub async fn by_id(pool: &DbPool, id: i64) -> Result<Option<Product>, DbError> {
///     match pool {
///         DbPool::Mysql(p) => mysql::by_id(&mut *p.get().await?, id).await,
///         DbPool::Sqlite(p) => sqlite::by_id(&mut *p.get().await?, id).await,
///     }
/// }
/// ```
///
/// Inside a backend module the functions call each other's same-backend copy by name.
///
/// **A trait implementation** for both connection types, so that generic code (`C: Trait`)
/// can run backend-specific queries (see `db::ledger`):
///
/// ```text
/// backend_queries! {
///     impl Ledger for Conn { /* methods on `&mut self` */ }
/// }
/// // expands to
/// impl Ledger for diesel_async::AsyncMysqlConnection { /* .. */ }
/// impl Ledger for SqliteConn { /* .. */ }
/// ```
#[macro_export]
macro_rules! backend_queries {
    (impl $trait:ident for Conn { $($body:tt)* }) => {
        impl $trait for diesel_async::AsyncMysqlConnection { $($body)* }
        impl $trait for $crate::db::pool::SqliteConn { $($body)* }
    };
    ($(
        $(#[$attr:meta])*
        $vis:vis async fn $name:ident($conn:ident: &mut Conn $(, $arg:ident: $ty:ty)* $(,)?)
            -> $ret:ty $body:block
    )*) => {
        mod mysql {
            use super::*;
            pub type Conn = diesel_async::AsyncMysqlConnection;
            $(pub async fn $name($conn: &mut Conn $(, $arg: $ty)*) -> $ret $body)*
        }
        mod sqlite {
            use super::*;
            pub type Conn = $crate::db::pool::SqliteConn;
            $(pub async fn $name($conn: &mut Conn $(, $arg: $ty)*) -> $ret $body)*
        }
        $(
            $(#[$attr])*
            $vis async fn $name(pool: &$crate::db::DbPool $(, $arg: $ty)*) -> $ret {
                match pool {
                    $crate::db::DbPool::Mysql(p) => mysql::$name(&mut *p.get().await?, $($arg),*).await,
                    $crate::db::DbPool::Sqlite(p) => sqlite::$name(&mut *p.get().await?, $($arg),*).await,
                }
            }
        )*
    };
}
