-- Open backorders (order lines sold without stock): what each still owes, so GetStock can
-- say how many units are owed (a replenishment's inventory position counts them).
CREATE TABLE backorders (
    sku              text   NOT NULL,
    channel          int    NOT NULL,
    channel_order_id text   NOT NULL,
    owed             bigint NOT NULL CHECK (owed > 0),
    PRIMARY KEY (sku, channel, channel_order_id)
);
