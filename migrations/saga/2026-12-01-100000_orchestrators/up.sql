-- Live orchestrators: each renews its row with its partition leases (expiry on the database's
-- clock, in ms), so every orchestrator can count the live ones and take a fair share.
CREATE TABLE orchestrators (
    node_id INTEGER NOT NULL PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
