-- The step log without its customer index. A customer's entries all lie in the customer's
-- partition, so the log is read through its key (partition, event id), filtering on the
-- customer. The index cost every entry a write at a random place (one per customer), which
-- was the biggest share of the pages each commit writes. Portable DDL (SQLite cannot drop an
-- index with MySQL's syntax, nor MySQL with SQLite's): the table is rebuilt without it.
CREATE TABLE saga_events_v3 (
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
INSERT INTO saga_events_v3
SELECT partition_id, event_id, purchase_id, saga_seq, customer_id, step, status, created_at
FROM saga_events;
DROP TABLE saga_events;
ALTER TABLE saga_events_v3 RENAME TO saga_events;
CREATE UNIQUE INDEX saga_events_by_saga ON saga_events (purchase_id, saga_seq);
