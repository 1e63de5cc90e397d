-- The reconciler's watermark per channel: the latest update time of an order it has pulled
-- from that channel's API. The next pull asks from it minus an overlap.
CREATE TABLE reconcile_watermarks (
    source          text        PRIMARY KEY,
    updated_through timestamptz NOT NULL,
    pulled_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);
