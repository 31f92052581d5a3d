-- Back to the single-sequence store (event ids stay as they are; partition data is lost).
CREATE TABLE sagas_v1 (
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
INSERT INTO sagas_v1
SELECT purchase_id, customer_id, items, currency_code, amount, state, finished, attempts,
       0, 0, created_at, updated_at
FROM sagas;
DROP TABLE sagas;
ALTER TABLE sagas_v1 RENAME TO sagas;
CREATE INDEX sagas_finished ON sagas (finished, owner_node);
CREATE TABLE saga_events_v1 (
    event_id BIGINT NOT NULL PRIMARY KEY,
    purchase_id BIGINT NOT NULL,
    customer_id BIGINT NOT NULL,
    step VARCHAR(32) NOT NULL,
    status VARCHAR(32) NOT NULL,
    created_at BIGINT NOT NULL
);
INSERT INTO saga_events_v1
SELECT event_id, purchase_id, customer_id, step, status, created_at FROM saga_events;
DROP TABLE saga_events;
ALTER TABLE saga_events_v1 RENAME TO saga_events;
CREATE INDEX saga_events_customer ON saga_events (customer_id, event_id);
CREATE INDEX saga_events_purchase ON saga_events (purchase_id, event_id);
DROP TABLE store_meta;
DROP TABLE partitions;
