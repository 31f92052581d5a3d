-- Finished sagas' step logs are kept for a while (--retain-days), then pruned. A pruned saga
-- keeps its row (its state column is then the truth); each partition remembers the newest
-- event id it pruned, so a stream resumed from before it can say that events are gone.
ALTER TABLE partitions ADD COLUMN pruned_up_to BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sagas ADD COLUMN log_pruned BOOLEAN NOT NULL DEFAULT FALSE;
-- By id, not by updated_at: every transition rewrites updated_at, and an index on it would
-- be rewritten with it. Ids are time-ordered, so old ids are old sagas.
CREATE INDEX sagas_prunable ON sagas (finished, log_pruned, purchase_id);
