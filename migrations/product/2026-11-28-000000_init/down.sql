DROP TABLE step_ledger; DROP TABLE reservations; DROP TABLE products;
