-- Portable DDL: MySQL 8, MariaDB and SQLite all accept it. Ids come from the application.
CREATE TABLE customers (
    id BIGINT NOT NULL PRIMARY KEY,
    active BOOLEAN NOT NULL,
    first_name VARCHAR(50) NOT NULL,
    last_name VARCHAR(50) NOT NULL,
    email VARCHAR(320) NOT NULL,
    email_key VARCHAR(320) NOT NULL,
    address VARCHAR(1024) NOT NULL,
    phone_number VARCHAR(20) NOT NULL,
    password_hash VARCHAR(255) NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX customers_email_key ON customers (email_key);
CREATE UNIQUE INDEX customers_phone_number ON customers (phone_number);
