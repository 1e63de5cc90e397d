-- Recent demand of each SKU by channel and buyer region, from ingest's OrderPlaced: units,
-- decayed exponentially (half-life DemandShares.HALF_LIFE) to `as_of`, the latest placed_at
-- folded in. Decay is applied towards whichever of the two times is later, so orders
-- folded in any order give the same weight. Pre-positioning transfers split the SKU's
-- forecast between warehouses by these weights.
CREATE TABLE demand_shares (
    sku          text             NOT NULL,
    channel      int              NOT NULL,
    buyer_region text             NOT NULL,
    weight       double precision NOT NULL,
    as_of        timestamptz      NOT NULL,
    PRIMARY KEY (sku, channel, buyer_region)
);

-- Every planned transfer (the log has it too, in `transfers-<sku>`), written in the same
-- transaction as its TransferPlanned; `executed` (TransferExecuted) once inventory-sync has
-- moved its stock.
CREATE TABLE transfers (
    transfer_id text PRIMARY KEY,
    sku         text        NOT NULL,
    planned_at  timestamptz NOT NULL,
    data        bytea       NOT NULL,  -- pulsestock.v1.TransferPlanned
    executed    bytea                  -- pulsestock.v1.TransferExecuted
);
CREATE INDEX transfers_by_sku ON transfers (sku, planned_at DESC);

-- The latest PlanTransfers of each SKU: only its transfers may still be executed (an older
-- plan was made on stock and a forecast that have moved since).
CREATE TABLE transfer_plans (
    sku          text PRIMARY KEY,
    planned_at   timestamptz NOT NULL,
    transfer_ids text[]      NOT NULL
);
