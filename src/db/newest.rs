//! The newest id each service database has stored, so a node can refuse to start with a
//! clock that went backwards behind them (its new ids would collide with or sort before old
//! ones).

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::schema::{customers, products, sagas};
use super::{DbError, DbPool};
use crate::backend_queries;

backend_queries! {
    async fn newest_customer(conn: &mut Conn) -> Result<Option<i64>, DbError> {
        Ok(customers::table.select(diesel::dsl::max(customers::id)).first(conn).await?)
    }

    async fn newest_product(conn: &mut Conn) -> Result<Option<i64>, DbError> {
        Ok(products::table.select(diesel::dsl::max(products::id)).first(conn).await?)
    }

    async fn newest_purchase(conn: &mut Conn) -> Result<Option<i64>, DbError> {
        Ok(sagas::table.select(diesel::dsl::max(sagas::purchase_id)).first(conn).await?)
    }
}

/// The newest stored id among customers, products and purchases, in whichever of those
/// databases this node opened (0 when there is none).
pub async fn newest_id(
    accounts: Option<&DbPool>,
    products: Option<&DbPool>,
    sagas: Option<&DbPool>,
) -> Result<u64, DbError> {
    let mut found = Vec::with_capacity(3);
    if let Some(pool) = accounts {
        found.push(newest_customer(pool).await?);
    }
    if let Some(pool) = products {
        found.push(newest_product(pool).await?);
    }
    if let Some(pool) = sagas {
        found.push(newest_purchase(pool).await?);
    }
    Ok(found.into_iter().flatten().max().unwrap_or(0).max(0) as u64)
}
