-- Which SKUs a review is due for: a material forecast.updated marks one due at once; the
-- schedule reviews hourly while a pulse is on and daily otherwise.
CREATE TABLE replenishment_reviews (
    sku            text PRIMARY KEY,
    due            boolean     NOT NULL DEFAULT true,
    pulse_on       boolean     NOT NULL DEFAULT false,
    last_review_at timestamptz,
    trigger        text        NOT NULL DEFAULT 'forecast_updated'
);
CREATE INDEX replenishment_reviews_due ON replenishment_reviews (due, last_review_at);

-- Every recommendation (the log has them too, in `replenishment-<sku>`), written in the same
-- transaction as its event; the plan of a SKU is its latest.
CREATE TABLE recommendations (
    recommendation_id text PRIMARY KEY,
    sku               text        NOT NULL,
    reviewed_at       timestamptz NOT NULL,
    data              bytea       NOT NULL,  -- pulsestock.v1.ReplenishmentRecommended
    purchase_order_id text
);
CREATE INDEX recommendations_by_sku ON recommendations (sku, reviewed_at DESC);
