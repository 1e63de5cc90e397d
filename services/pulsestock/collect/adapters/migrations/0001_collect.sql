-- Creators who authorised the app. Their OAuth grant is stored encrypted (Fernet, key
-- COLLECT_TOKEN_KEY) and never enters the event log; the rest is the projection of their
-- CreatorConnected / CreatorDisconnected events, written in the same transaction.
CREATE TABLE creators (
    open_id               text PRIMARY KEY,
    default_skus          text[]      NOT NULL,
    seller_id             text        NOT NULL,
    channel               int         NOT NULL,
    grant_sealed          bytea,                 -- encrypted JSON of the token pair
    needs_reauthorisation boolean     NOT NULL DEFAULT false,
    reason                text        NOT NULL DEFAULT '',
    updated_at            timestamptz NOT NULL
);

-- Operator mappings: the projection of VideoMapped (same transaction as the event).
CREATE TABLE video_skus (
    video_id text PRIMARY KEY,
    skus     text[] NOT NULL
);

-- Videos found on creators' lists, and the checkpoint a restarted collector resumes from:
-- what ingest was last told about each and the last samples pushed.
CREATE TABLE videos (
    video_id        text PRIMARY KEY,
    open_id         text        NOT NULL,
    created_at      timestamptz NOT NULL,
    title           text        NOT NULL DEFAULT '',
    registered_skus text[],                      -- NULL: not registered with ingest yet
    samples         jsonb       NOT NULL DEFAULT '[]'  -- [[unix_s, views, likes, shares], ...]
);
CREATE INDEX videos_by_creator ON videos (open_id);

-- How far each tailed stats file has been applied.
CREATE TABLE file_offsets (
    path        text PRIMARY KEY,
    byte_offset bigint      NOT NULL,
    next_line   bigint      NOT NULL,
    header      text[],
    updated_at  timestamptz NOT NULL
);
