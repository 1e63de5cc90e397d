-- Each channel order as the join of every notification seen of it (domain/orders.py), and
-- the revision of the last OrderChanged published for it.
CREATE TABLE channel_orders (
    channel          int    NOT NULL,
    channel_order_id text   NOT NULL,
    facts            jsonb  NOT NULL,
    revision         bigint NOT NULL DEFAULT 0,
    updated_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (channel, channel_order_id)
);

-- What became of each delivery: 'changed', 'unchanged', 'ignored: <why>' (so the channel
-- stops retrying and an operator can see what was not acted on).
ALTER TABLE webhook_deliveries ADD COLUMN outcome text NOT NULL DEFAULT '';
