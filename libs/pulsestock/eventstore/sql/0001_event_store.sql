-- The event log, the transactional outbox, projection checkpoints and consumer dedup records.
-- Applied in every service schema (search_path is set to it).

CREATE TABLE events (
    global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id       text        NOT NULL,
    stream_version  bigint      NOT NULL CHECK (stream_version > 0),
    event_id        uuid        NOT NULL UNIQUE,
    type            text        NOT NULL,
    data            bytea       NOT NULL,
    metadata        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- The key is the optimistic-concurrency check.
    UNIQUE (stream_id, stream_version)
);

CREATE FUNCTION forbid_event_log_changes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only: % on events is not allowed', TG_OP;
END;
$$;

CREATE TRIGGER events_are_append_only
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION forbid_event_log_changes();

CREATE TRIGGER events_are_never_truncated
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION forbid_event_log_changes();

-- Rows wait here until the relay has published them to JetStream (then it deletes them).
CREATE TABLE outbox (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id   uuid        NOT NULL,
    subject    text        NOT NULL,
    type       text        NOT NULL,
    data       bytea       NOT NULL,
    headers    jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- One row per projection; advanced in the same transaction as the projection's rows.
CREATE TABLE projection_checkpoints (
    name       text PRIMARY KEY,
    position   bigint      NOT NULL DEFAULT 0 CHECK (position >= 0),
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- What each consumer has applied: delivery is at least once, effects are exactly once.
CREATE TABLE applied_messages (
    consumer   text        NOT NULL,
    event_id   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (consumer, event_id)
);
