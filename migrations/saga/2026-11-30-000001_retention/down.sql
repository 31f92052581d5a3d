DROP INDEX sagas_prunable ON sagas;
ALTER TABLE sagas DROP COLUMN log_pruned;
ALTER TABLE partitions DROP COLUMN pruned_up_to;
