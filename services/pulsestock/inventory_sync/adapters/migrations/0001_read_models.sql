-- Read models of inventory-sync: folds of the ledger, rebuildable from the log.

CREATE TABLE stock_levels (
    sku          text   NOT NULL,
    warehouse_id text   NOT NULL,
    on_hand      bigint NOT NULL,
    reserved     bigint NOT NULL,
    safety_hold  bigint NOT NULL DEFAULT 0,
    version      bigint NOT NULL,
    PRIMARY KEY (sku, warehouse_id),
    CHECK (0 <= reserved AND reserved <= on_hand)
);

CREATE TABLE active_reservations (
    reservation_id   text PRIMARY KEY,
    sku              text   NOT NULL,
    channel          int    NOT NULL,
    channel_order_id text   NOT NULL,
    warehouse_id     text   NOT NULL,
    quantity         bigint NOT NULL,
    expires_at       timestamptz
);
CREATE INDEX active_reservations_expiry ON active_reservations (expires_at)
    WHERE expires_at IS NOT NULL;

CREATE TABLE channel_quantities (
    sku        text   NOT NULL,
    channel    int    NOT NULL,
    quantity   bigint NOT NULL CHECK (quantity >= 0),
    version    bigint NOT NULL,
    PRIMARY KEY (sku, channel)
);

-- Written by the ledger writer in the transaction of the append (an inline index): which
-- SKUs an order touched, so a cancellation knows which streams to release.
CREATE TABLE order_index (
    channel          int  NOT NULL,
    channel_order_id text NOT NULL,
    sku              text NOT NULL,
    PRIMARY KEY (channel, channel_order_id, sku)
);

-- What each channel has been told and has confirmed, per SKU (channel sync).
CREATE TABLE channel_sync_state (
    channel                 int         NOT NULL,
    sku                     text        NOT NULL,
    desired_quantity        bigint      NOT NULL,
    desired_position        bigint      NOT NULL,
    last_sent_quantity      bigint,
    last_confirmed_quantity bigint,
    last_confirmed_at       timestamptz,
    last_reconciled_at      timestamptz,
    consecutive_failures    int         NOT NULL DEFAULT 0,
    last_error              text        NOT NULL DEFAULT '',
    next_attempt_at         timestamptz NOT NULL DEFAULT '-infinity',
    dead_lettered           boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (channel, sku)
);
CREATE INDEX channel_sync_state_due ON channel_sync_state (channel, next_attempt_at)
    WHERE last_confirmed_quantity IS DISTINCT FROM desired_quantity AND NOT dead_lettered;
