ALTER TABLE customers DROP COLUMN token_version;
