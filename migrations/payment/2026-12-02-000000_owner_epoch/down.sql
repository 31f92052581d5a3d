ALTER TABLE step_ledger DROP COLUMN owner_epoch;
