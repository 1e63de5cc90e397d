-- What ingest must remember to validate and deduplicate what comes in.

CREATE TABLE videos (
    video_id          text PRIMARY KEY,
    skus              text[]      NOT NULL,
    creator_id        text        NOT NULL,
    creator_followers bigint      NOT NULL,
    published_at      timestamptz NOT NULL,
    channel           int         NOT NULL,
    registered_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- The last accepted sample of each video: later samples must not go backwards.
CREATE TABLE video_latest (
    video_id    text PRIMARY KEY REFERENCES videos (video_id),
    observed_at timestamptz NOT NULL,
    views       bigint      NOT NULL,
    likes       bigint      NOT NULL,
    shares      bigint      NOT NULL,
    comments    bigint      NOT NULL
);

-- Every accepted sample's key and counters: a retried stream's older samples are recognised.
CREATE TABLE video_samples (
    video_id    text        NOT NULL,
    observed_at timestamptz NOT NULL,
    views       bigint      NOT NULL,
    likes       bigint      NOT NULL,
    shares      bigint      NOT NULL,
    comments    bigint      NOT NULL,
    PRIMARY KEY (video_id, observed_at)
);

CREATE TABLE live_latest (
    live_id       text PRIMARY KEY,
    observed_at   timestamptz NOT NULL,
    interactions  bigint      NOT NULL,
    orders_so_far bigint      NOT NULL
);

-- Orders and webhook deliveries already turned into events (dedup beyond JetStream's window).
CREATE TABLE recorded_orders (
    channel          int  NOT NULL,
    channel_order_id text NOT NULL,
    kind             text NOT NULL,
    recorded_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (channel, channel_order_id, kind)
);

-- Webhook deliveries already taken (each channel retries deliveries for hours).
CREATE TABLE webhook_deliveries (
    source      text NOT NULL,
    delivery_id text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (source, delivery_id)
);
