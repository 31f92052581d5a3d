-- Finished sagas' step logs are kept for a while (--retain-days), then pruned. A pruned saga
-- keeps its row (its state column is then the truth); each partition remembers the newest
-- event id it pruned, so a stream resumed from before it can say that events are gone.
ALTER TABLE partitions ADD COLUMN pruned_up_to BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sagas ADD COLUMN log_pruned BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX sagas_prunable ON sagas (finished, log_pruned, updated_at);
