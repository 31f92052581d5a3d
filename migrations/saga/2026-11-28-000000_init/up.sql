-- Portable DDL. One row per saga (its state is derived from the step log and cached here).
CREATE TABLE sagas (
    purchase_id BIGINT NOT NULL PRIMARY KEY,
    customer_id BIGINT NOT NULL,
    items TEXT NOT NULL,
    currency_code VARCHAR(2) NOT NULL,
    amount BIGINT NOT NULL,
    state VARCHAR(64) NOT NULL,
    finished BOOLEAN NOT NULL,
    attempts INTEGER NOT NULL,
    owner_node INTEGER NOT NULL,
    lease_expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX sagas_finished ON sagas (finished, owner_node);
-- The append-only step log: the truth a saga is recovered from, and what SSE streams.
CREATE TABLE saga_events (
    event_id BIGINT NOT NULL PRIMARY KEY,
    purchase_id BIGINT NOT NULL,
    customer_id BIGINT NOT NULL,
    step VARCHAR(32) NOT NULL,
    status VARCHAR(32) NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX saga_events_customer ON saga_events (customer_id, event_id);
CREATE INDEX saga_events_purchase ON saga_events (purchase_id, event_id);
