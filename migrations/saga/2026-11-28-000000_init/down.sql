DROP TABLE saga_events; DROP TABLE sagas;
