-- Issue 14: channel quantities per catalogue listing, and orders the catalogue cannot resolve.

-- Each channel's quantity of each SKU as the ledger projects it (ChannelQuantityChanged): the
-- input a listing's quantity is computed from (min over its stock items of level / units).
CREATE TABLE channel_sku_levels (
    channel  int    NOT NULL,
    sku      text   NOT NULL,
    quantity bigint NOT NULL,
    position bigint NOT NULL,
    PRIMARY KEY (channel, sku)
);

-- The sync state is per channel listing now. `listing` names it: a catalogue listing's key
-- (`tiktok_shop:1729…`, with `ids` the channel ids pushed to), or, on a channel without a
-- catalogue, the SKU itself under the naming convention (`ids` NULL). `skus`: the stock items
-- its quantity draws on.
ALTER TABLE channel_sync_state RENAME COLUMN sku TO listing;
ALTER TABLE channel_sync_state ADD COLUMN ids jsonb;
ALTER TABLE channel_sync_state ADD COLUMN skus text[] NOT NULL DEFAULT '{}';
UPDATE channel_sync_state SET skus = ARRAY[listing];
CREATE INDEX channel_sync_state_skus ON channel_sync_state USING gin (skus);

-- A channel order whose lines the catalogue could not resolve: recorded with its latest
-- message (OrderPlaced or OrderChanged), never reserved by guess, until its listing is mapped.
CREATE TABLE unresolved_orders (
    channel          int         NOT NULL,
    channel_order_id text        NOT NULL,
    marketplace_id   text        NOT NULL DEFAULT '',
    lines            jsonb       NOT NULL,  -- [{"sku":…, "listing_id":…}] that did not resolve
    message_type     text        NOT NULL,
    message          bytea       NOT NULL,
    revision         bigint      NOT NULL DEFAULT 0,
    first_seen       timestamptz NOT NULL,
    last_seen        timestamptz NOT NULL,
    cancelled        boolean     NOT NULL DEFAULT false,
    resolved_at      timestamptz,
    PRIMARY KEY (channel, channel_order_id)
);
CREATE INDEX unresolved_orders_open ON unresolved_orders (last_seen DESC) WHERE resolved_at IS NULL;
