-- Live sessions: their last sample and heat, so a restart resumes them too.
CREATE TABLE live_state (
    live_id          text PRIMARY KEY,
    skus             text[]      NOT NULL,
    last_observed_at timestamptz NOT NULL,
    viewers          bigint      NOT NULL,
    interactions     bigint      NOT NULL,
    orders_so_far    bigint      NOT NULL,
    heat             double precision NOT NULL
);
