-- A video's last accepted sample moves onto its row. Samples lock that row (it exists from
-- registration on), which serialises a video's writers, and under READ COMMITTED the lock
-- returns the row's newest version: the check "not older, not backwards" reads fresh values.
ALTER TABLE videos
    ADD COLUMN last_observed_at timestamptz,
    ADD COLUMN last_views       bigint,
    ADD COLUMN last_likes       bigint,
    ADD COLUMN last_shares      bigint,
    ADD COLUMN last_comments    bigint;

UPDATE videos v
   SET last_observed_at = l.observed_at, last_views = l.views, last_likes = l.likes,
       last_shares = l.shares, last_comments = l.comments
  FROM video_latest l
 WHERE l.video_id = v.video_id;

DROP TABLE video_latest;

-- Every accepted live sample, so a retried stream's older samples are recognised (as for
-- videos); live_latest stays the row a session's writers lock.
CREATE TABLE live_samples (
    live_id       text        NOT NULL,
    observed_at   timestamptz NOT NULL,
    viewers       bigint      NOT NULL,
    interactions  bigint      NOT NULL,
    orders_so_far bigint      NOT NULL,
    PRIMARY KEY (live_id, observed_at)
);

-- Duplicates of a session's last sample are recognised by all three counts.
ALTER TABLE live_latest ADD COLUMN viewers bigint NOT NULL DEFAULT 0;
