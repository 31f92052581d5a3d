-- The partitioned saga store. Portable DDL (SQLite, MySQL 8, MariaDB): tables that change
-- shape are rebuilt and renamed, because SQLite cannot alter a primary key.
--
-- A saga belongs to partition mix(customer_id) % P. Each partition numbers its own step-log
-- entries inside the committing transaction (next_seq), under the owner's epoch (fencing).
-- Rows carried over from the single-sequence store get partition -1 here; the node assigns
-- them on its first start, and every partition's sequence starts above the old maximum.
CREATE TABLE partitions (
    partition_id INTEGER NOT NULL PRIMARY KEY,
    owner_node INTEGER NOT NULL,
    epoch BIGINT NOT NULL,
    lease_expires_at BIGINT NOT NULL,
    next_seq BIGINT NOT NULL
);
CREATE TABLE store_meta (
    name VARCHAR(64) NOT NULL PRIMARY KEY,
    value VARCHAR(255) NOT NULL
);

CREATE TABLE sagas_v2 (
    purchase_id BIGINT NOT NULL PRIMARY KEY,
    partition_id INTEGER NOT NULL,
    customer_id BIGINT NOT NULL,
    items TEXT NOT NULL,
    currency_code VARCHAR(2) NOT NULL,
    amount BIGINT NOT NULL,
    state VARCHAR(64) NOT NULL,
    finished BOOLEAN NOT NULL,
    version BIGINT NOT NULL,
    attempts INTEGER NOT NULL,
    retry_since BIGINT NOT NULL,
    quarantine TEXT,
    retry_requested BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
INSERT INTO sagas_v2
SELECT purchase_id, -1, customer_id, items, currency_code, amount, state, finished,
       1, 0, 0, NULL, FALSE, created_at, updated_at
FROM sagas;
DROP TABLE sagas;
ALTER TABLE sagas_v2 RENAME TO sagas;
CREATE INDEX sagas_unfinished ON sagas (finished, partition_id, purchase_id);
CREATE INDEX sagas_retry_requested ON sagas (retry_requested);

CREATE TABLE saga_events_v2 (
    partition_id INTEGER NOT NULL,
    event_id BIGINT NOT NULL,
    purchase_id BIGINT NOT NULL,
    saga_seq INTEGER NOT NULL,
    customer_id BIGINT NOT NULL,
    step VARCHAR(32) NOT NULL,
    status VARCHAR(32) NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (partition_id, event_id)
);
INSERT INTO saga_events_v2
SELECT -1, e.event_id, e.purchase_id,
       (SELECT COUNT(*) FROM saga_events o
        WHERE o.purchase_id = e.purchase_id AND o.event_id <= e.event_id),
       e.customer_id, e.step, e.status, e.created_at
FROM saga_events e;
DROP TABLE saga_events;
ALTER TABLE saga_events_v2 RENAME TO saga_events;
CREATE UNIQUE INDEX saga_events_by_saga ON saga_events (purchase_id, saga_seq);
CREATE INDEX saga_events_by_customer ON saga_events (customer_id, event_id);
