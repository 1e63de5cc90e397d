-- forecast's inputs, folded from ingest's and signal's events, and its published forecasts.
-- Every forecast is a pure function of these tables, so a restart (or another replica)
-- computes the same numbers from them; ForecastUpdated events are the log, `sku_forecasts`
-- the projection of their latest per SKU.

-- Net demand per SKU and hour (orders placed minus their cancelled units).
CREATE TABLE demand_hours (
    sku      text        NOT NULL,
    hour     timestamptz NOT NULL,
    quantity double precision NOT NULL,
    PRIMARY KEY (sku, hour)
);

-- What each order line currently counts in demand_hours, so a later state of the order
-- (a cancellation, a partial cancellation, a redelivery) moves it by the difference only.
CREATE TABLE order_lines (
    channel          int         NOT NULL,
    channel_order_id text        NOT NULL,
    sku              text        NOT NULL,
    hour             timestamptz NOT NULL,
    counted          double precision NOT NULL,
    revision         bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (channel, channel_order_id, sku)
);

-- The SKU's reach per hour: the latest heat signal published in that hour.
CREATE TABLE heat_hours (
    sku           text        NOT NULL,
    hour          timestamptz NOT NULL,
    as_of         timestamptz NOT NULL,
    heat          double precision NOT NULL,
    view_velocity double precision NOT NULL,
    PRIMARY KEY (sku, hour)
);

CREATE TABLE sku_pulses (
    pulse_id    text PRIMARY KEY,
    sku         text        NOT NULL,
    detected_at timestamptz NOT NULL,
    ended_at    timestamptz
);
CREATE INDEX sku_pulses_by_sku ON sku_pulses (sku, detected_at);

-- A finished pulse's excess orders against its reach: the data the conversion priors are
-- fitted from (empirical Bayes over every SKU's past pulses).
CREATE TABLE pulse_outcomes (
    pulse_id text PRIMARY KEY,
    sku      text NOT NULL,
    orders   double precision NOT NULL,
    reach    double precision NOT NULL
);

CREATE TABLE live_samples (
    live_id       text        NOT NULL,
    observed_at   timestamptz NOT NULL,
    viewers       double precision NOT NULL,
    interactions  double precision NOT NULL,
    orders_so_far double precision NOT NULL,
    PRIMARY KEY (live_id, observed_at)
);

-- Per SKU: the latest time any input showed (the forecast's origin) and what was published.
CREATE TABLE sku_forecasts (
    sku               text PRIMARY KEY,
    as_of             timestamptz NOT NULL,
    version           bigint      NOT NULL DEFAULT 0,
    published_as_of   timestamptz,
    published_day     double precision,
    published_day_p90 double precision,
    published_pulse   text        NOT NULL DEFAULT '',
    model             text        NOT NULL DEFAULT '',
    forecast          bytea
);
