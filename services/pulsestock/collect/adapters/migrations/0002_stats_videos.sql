-- Videos known only from stats files or posts: what ingest was told about each (so a restart
-- does not register them again with a later published_at).
CREATE TABLE stats_videos (
    video_id     text PRIMARY KEY,
    skus         text[]      NOT NULL,
    creator_id   text        NOT NULL,
    published_at timestamptz NOT NULL
);
