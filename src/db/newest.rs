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

/// The newest stored id among customers, products and purchases (0 when there is none).
pub async fn newest_id(
    accounts: &DbPool,
    products: &DbPool,
    sagas: &DbPool,
) -> Result<u64, DbError> {
    let found = [
        newest_customer(accounts).await?,
        newest_product(products).await?,
        newest_purchase(sagas).await?,
    ];
    Ok(found.into_iter().flatten().max().unwrap_or(0).max(0) as u64)
}
