//! The account database: customers and their credentials.

use super::reusable::Reusable;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::ids::storable;
use super::schema::customers;
use super::{DbError, DbPool};
use crate::backend_queries;
use crate::domain::ids::CustomerId;

/// A customer row as stored.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = customers)]
pub struct Customer {
    pub id: CustomerId,
    pub active: bool,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub email_key: String,
    pub address: String,
    pub phone_number: String,
    pub password_hash: String,
    pub created_at: i64,
    /// Raised by every change that must end the sessions opened before it (an email change):
    /// refresh tokens carry the version they were issued at and are refused once it is stale.
    pub token_version: i64,
}

/// Personal fields changed by `PUT /api/account/info/person`.
#[derive(Debug, Clone, AsChangeset)]
#[diesel(table_name = customers)]
pub struct PersonChange<'a> {
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub email: &'a str,
    pub email_key: &'a str,
}

/// Shipping fields changed by `PUT /api/account/info/shipping`.
#[derive(Debug, Clone, AsChangeset)]
#[diesel(table_name = customers)]
pub struct ShippingChange<'a> {
    pub address: &'a str,
    pub phone_number: &'a str,
}

backend_queries! {
    async fn insert(conn: &mut Conn, c: &Customer) -> Result<(), DbError> {
        Reusable(diesel::insert_into(customers::table).values(c)).execute(conn).await?;
        Ok(())
    }

    async fn by_id(conn: &mut Conn, id: CustomerId) -> Result<Option<Customer>, DbError> {
        Ok(customers::table
            .find(id)
            .select(Customer::as_select())
            .first(conn)
            .await
            .optional()?)
    }

    async fn by_email_key(conn: &mut Conn, key: &str) -> Result<Option<Customer>, DbError> {
        Ok(customers::table
            .filter(customers::email_key.eq(key))
            .select(Customer::as_select())
            .first(conn)
            .await
            .optional()?)
    }

    async fn update_person(conn: &mut Conn, id: CustomerId, change: &PersonChange<'_>) -> Result<(), DbError> {
        // One statement: the version moves only when the stored email (by its unique key)
        // really changes, and only if the change itself is written (not on `Duplicate`).
        // The version is assigned first: MySQL evaluates SET left to right, so a later
        // assignment would already see the new email_key.
        use diesel::sql_types::BigInt;
        let bump = diesel::dsl::case_when::<_, _, BigInt>(
            customers::email_key.ne(change.email_key),
            1i64.into_sql::<BigInt>(),
        )
        .otherwise(0i64.into_sql::<BigInt>());
        Reusable(diesel::update(customers::table.find(id))
            .set((customers::token_version.eq(customers::token_version + bump), change)))
            .execute(conn)
            .await?;
        Ok(())
    }

    async fn update_shipping(conn: &mut Conn, id: CustomerId, change: &ShippingChange<'_>) -> Result<(), DbError> {
        Reusable(diesel::update(customers::table.find(id)).set(change)).execute(conn).await?;
        Ok(())
    }
}

/// Repository of the account database.
#[derive(Clone)]
pub struct Accounts {
    pool: DbPool,
}

impl Accounts {
    /// Repository over an opened account database.
    pub fn new(pool: DbPool) -> Self {
        Self { pool }
    }

    /// Stores a new customer; `Duplicate` when the email or phone is taken.
    pub async fn insert(&self, customer: &Customer) -> Result<(), DbError> {
        insert(&self.pool, customer).await
    }

    /// The customer with this id.
    pub async fn by_id(&self, id: CustomerId) -> Result<Option<Customer>, DbError> {
        if !storable(id) {
            return Ok(None);
        }
        by_id(&self.pool, id).await
    }

    /// The customer whose email has this unique key (see `domain::email::unique_key`).
    pub async fn by_email_key(&self, key: &str) -> Result<Option<Customer>, DbError> {
        by_email_key(&self.pool, key).await
    }

    /// Changes name and email; `Duplicate` when the email belongs to someone else. A new email
    /// (another unique key) raises the token version, so older refresh tokens stop working.
    pub async fn update_person(
        &self,
        id: CustomerId,
        change: &PersonChange<'_>,
    ) -> Result<(), DbError> {
        update_person(&self.pool, id, change).await
    }

    /// Changes address and phone; `Duplicate` when the phone belongs to someone else.
    pub async fn update_shipping(
        &self,
        id: CustomerId,
        change: &ShippingChange<'_>,
    ) -> Result<(), DbError> {
        update_shipping(&self.pool, id, change).await
    }
}
