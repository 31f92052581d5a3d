-- The owner epoch of the newest saga owner that ran a command for the purchase: a command
-- from an older owner (a stale orchestrator of the partition) is refused, neither applied
-- nor replayed. Existing rows start at 0, as do commands from nodes that send no epoch.
-- Portable DDL: MySQL 8, MariaDB and SQLite all accept it.
ALTER TABLE step_ledger ADD COLUMN owner_epoch BIGINT NOT NULL DEFAULT 0;
