//! Prepared statements a connection keeps.
//!
//! diesel marks every UPDATE, and every INSERT on MySQL, as unsafe to cache: a changeset with
//! `None` fields, or a `DEFAULT` value, would change the SQL behind a cache key made from the
//! query's type. So each of them is prepared, executed and closed on every call, three
//! messages to the server where one would do; on MySQL that was most of a saga's round trips.
//! Our statements do not vary that way, and a query without a static id is cached under its
//! SQL text anyway (two shapes, two entries), so [`Reusable`] lets the connection keep them.

use diesel::backend::Backend;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::result::QueryResult;

/// A statement whose prepared form the connection may keep and execute again.
#[derive(Debug, Clone, Copy)]
pub struct Reusable<Q>(pub Q);

impl<Q, DB> QueryFragment<DB> for Reusable<Q>
where
    DB: Backend,
    Q: QueryFragment<DB>,
{
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _: &DB) -> QueryResult<bool> {
        Ok(true)
    }
}

/// No static id: the statement cache keys it by its SQL text and bind types.
impl<Q> QueryId for Reusable<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}
