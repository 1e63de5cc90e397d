-- signal's state: what it knows of each video, each SKU's heat, pulses and rules.
-- Snapshots (updated with every processed batch) so a restart resumes where it stopped.

CREATE TABLE videos (
    video_id          text PRIMARY KEY,
    skus              text[]      NOT NULL,
    creator_followers bigint      NOT NULL,
    published_at      timestamptz NOT NULL,
    channel           int         NOT NULL
);

CREATE TABLE video_state (
    video_id         text PRIMARY KEY,
    last_observed_at timestamptz NOT NULL,
    samples          jsonb       NOT NULL,
    detector         jsonb       NOT NULL,
    heat             double precision NOT NULL
);

CREATE TABLE sku_heat (
    sku           text PRIMARY KEY,
    heat          double precision NOT NULL,
    view_velocity double precision NOT NULL,
    like_rate     double precision NOT NULL,
    share_rate    double precision NOT NULL,
    as_of         timestamptz NOT NULL,
    published_at  timestamptz
);

CREATE TABLE pulses (
    pulse_id    text PRIMARY KEY,
    sku         text        NOT NULL,
    phase       text        NOT NULL,
    hot_channel text        NOT NULL,
    detected_at timestamptz NOT NULL,
    ended_at    timestamptz,
    peak_heat   double precision NOT NULL,
    evidence    jsonb       NOT NULL,
    video_ids   text[]      NOT NULL
);
CREATE UNIQUE INDEX one_active_pulse_per_sku ON pulses (sku) WHERE phase <> 'ended';

CREATE TABLE rules (
    scope text PRIMARY KEY,  -- 'sku:<code>' or 'seller:<id>'
    rules jsonb NOT NULL
);
