DROP TABLE step_ledger; DROP TABLE orders;
