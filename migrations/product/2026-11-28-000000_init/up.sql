-- Portable DDL: MySQL 8, MariaDB and SQLite all accept it. Ids come from the application.
CREATE TABLE products (
    id BIGINT NOT NULL PRIMARY KEY,
    name VARCHAR(256) NOT NULL,
    description TEXT NOT NULL,
    brand_name VARCHAR(256) NOT NULL,
    price BIGINT NOT NULL,
    inventory BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
-- What a purchase took from each product, so a rollback restores exactly that, once.
CREATE TABLE reservations (
    purchase_id BIGINT NOT NULL,
    product_id BIGINT NOT NULL,
    amount BIGINT NOT NULL,
    PRIMARY KEY (purchase_id, product_id)
);
-- One row per purchase: what this service did for it (applied, failed, compensated).
-- Written in the same transaction as the effect, so a redelivered command is answered from it.
CREATE TABLE step_ledger (
    purchase_id BIGINT NOT NULL PRIMARY KEY,
    status VARCHAR(16) NOT NULL,
    detail VARCHAR(255) NOT NULL,
    updated_at BIGINT NOT NULL
);
