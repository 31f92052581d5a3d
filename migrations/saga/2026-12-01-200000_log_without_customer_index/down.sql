CREATE INDEX saga_events_by_customer ON saga_events (customer_id, event_id);
