-- The W3C trace context (traceparent, then a space and the tracestate if any) of the span
-- that accepted the saga: its spans after a restart or a takeover continue that trace. NULL
-- when the saga was accepted without trace export. Written once, with the row.
ALTER TABLE sagas ADD COLUMN trace_context VARCHAR(600) NULL;
