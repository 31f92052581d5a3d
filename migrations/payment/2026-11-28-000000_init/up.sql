-- Portable DDL: the payment id is the purchase id.
CREATE TABLE payments (
    id BIGINT NOT NULL PRIMARY KEY,
    customer_id BIGINT NOT NULL,
    currency_code VARCHAR(2) NOT NULL,
    amount BIGINT NOT NULL
);
-- One row per purchase: what this service did for it (applied, failed, compensated).
-- Written in the same transaction as the effect, so a redelivered command is answered from it.
CREATE TABLE step_ledger (
    purchase_id BIGINT NOT NULL PRIMARY KEY,
    status VARCHAR(16) NOT NULL,
    detail VARCHAR(255) NOT NULL,
    updated_at BIGINT NOT NULL
);
