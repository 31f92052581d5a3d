//! A MySQL named lock held for as long as a node lives. The server releases it when the
//! holder's connection closes, which includes the holder dying, so a restarted node gets it
//! back at once while a second live holder is refused.

use std::time::Duration;

use diesel::sql_types::{Integer, Nullable, Text};
use diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl};
use tokio::sync::oneshot;

use super::DbError;
use crate::secrets::DatabaseUrl;

/// How often the holding connection is used, so the server never closes it as idle.
const KEEP_ALIVE: Duration = Duration::from_secs(60);

/// A held named lock; dropping it releases the lock.
pub struct NamedLock {
    _release: oneshot::Sender<()>,
}

/// Takes the named lock `name` on the server of `url` without waiting. `None` when another
/// connection holds it.
pub async fn try_hold(url: &DatabaseUrl, name: &str) -> Result<Option<NamedLock>, DbError> {
    let mut conn = AsyncMysqlConnection::establish(url.expose())
        .await
        .map_err(|e| DbError::Unavailable(url.scrub(&e.to_string())))?;
    let got: Option<i32> = diesel::select(
        diesel::dsl::sql::<Nullable<Integer>>("GET_LOCK(")
            .bind::<Text, _>(name)
            .sql(", 0)"),
    )
    .get_result(&mut conn)
    .await?;
    if got != Some(1) {
        return Ok(None);
    }
    let (release, mut released) = oneshot::channel::<()>();
    let name = name.to_owned();
    actix_rt::spawn(async move {
        let mut tick = tokio::time::interval(KEEP_ALIVE);
        loop {
            tokio::select! {
                _ = &mut released => break,
                _ = tick.tick() => {
                    if let Err(e) = diesel::sql_query("SELECT 1").execute(&mut conn).await {
                        tracing::error!(lock = %name, error = %e, "the connection holding a named lock failed; the lock is lost");
                        break;
                    }
                }
            }
        }
    });
    Ok(Some(NamedLock { _release: release }))
}
