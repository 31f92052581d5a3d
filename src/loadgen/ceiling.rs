//! The ceiling probe: how many durable single-row transactions per second the store itself
//! commits at a given concurrency, through the same pool and client library as sagashop.
//! A saga can never be faster than its durable writes; this says how close we are.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use diesel::sql_types::BigInt;
use diesel_async::{AsyncConnection, RunQueryDsl};
use serde::Serialize;

use sagashop::backend_queries;
use sagashop::config::ServiceDb;
use sagashop::db::open::{DbLocation, create_mysql_database, migrate};
use sagashop::db::{DbError, DbPool};
use sagashop::secrets::DatabaseUrl;

backend_queries! {
    pub async fn create_table(conn: &mut Conn) -> Result<(), DbError> {
        diesel::sql_query("DROP TABLE IF EXISTS ceiling_probe").execute(conn).await?;
        diesel::sql_query("CREATE TABLE ceiling_probe (id BIGINT NOT NULL PRIMARY KEY, v BIGINT NOT NULL)")
            .execute(conn)
            .await?;
        Ok(())
    }

    pub async fn commit_one(conn: &mut Conn, id: i64) -> Result<(), DbError> {
        conn.transaction::<(), DbError, _>(async |c| {
            diesel::sql_query("INSERT INTO ceiling_probe (id, v) VALUES (?, 1)")
                .bind::<BigInt, _>(id)
                .execute(c)
                .await?;
            Ok(())
        })
        .await
    }
}

/// What the probe measured.
#[derive(Debug, Clone, Serialize)]
pub struct Ceiling {
    pub backend: String,
    pub concurrency: usize,
    pub commits: u64,
    pub seconds: f64,
    pub commits_per_second: f64,
}

/// Commits single-row transactions from `concurrency` tasks for `duration`. `target` is a
/// `mysql://` URL (its database is created if missing) or a SQLite file path; `None` uses a
/// SQLite file in a temporary directory with sagashop's embedded settings.
pub async fn probe(
    target: Option<&DatabaseUrl>,
    concurrency: usize,
    pool_size: usize,
    duration: Duration,
) -> anyhow::Result<Ceiling> {
    let tmp = tempfile::tempdir()?;
    let (pool, backend) = match target {
        Some(url) if url.is_mysql() => {
            create_mysql_database(url).await?;
            (DbPool::mysql(url.expose(), pool_size)?, "mysql")
        }
        Some(path) => (DbPool::sqlite(path.expose(), pool_size)?, "sqlite"),
        None => {
            let path = tmp.path().join("ceiling.db");
            let path = path.to_string_lossy().into_owned();
            migrate(&DbLocation::Sqlite(path.clone()), ServiceDb::Saga).await?;
            (DbPool::sqlite(&path, pool_size)?, "sqlite")
        }
    };
    create_table(&pool).await?;
    let next_id = Rc::new(Cell::new(0i64));
    let commits = Rc::new(Cell::new(0u64));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (pool, next_id, commits) = (pool.clone(), next_id.clone(), commits.clone());
        tasks.push(actix_rt::spawn(async move {
            while Instant::now() < deadline {
                let id = next_id.get();
                next_id.set(id + 1);
                let done: Result<(), DbError> = async { commit_one(&pool, id).await }.await;
                done?;
                commits.set(commits.get() + 1);
            }
            Ok::<_, DbError>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(Ceiling {
        backend: backend.to_owned(),
        concurrency,
        commits: commits.get(),
        seconds,
        commits_per_second: commits.get() as f64 / seconds,
    })
}
