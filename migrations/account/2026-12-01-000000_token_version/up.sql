-- Refresh tokens carry the account's token version; raising it (an email change) rejects
-- every refresh token issued before. Existing accounts start at 0, as do tokens without it.
-- Portable DDL: MySQL 8, MariaDB and SQLite all accept it.
ALTER TABLE customers ADD COLUMN token_version BIGINT NOT NULL DEFAULT 0;
