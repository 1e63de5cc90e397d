-- The read model of purchase orders: one row per order, written in the same transaction as
-- the events of its stream `po-<id>` (so a reader sees an order as soon as its command has
-- answered), and rebuildable from those streams (PurchaseOrders.rebuild_read_model).
CREATE TABLE purchase_orders (
    purchase_order_id text PRIMARY KEY,
    supplier_id       text        NOT NULL,
    warehouse_id      text        NOT NULL,
    status            int         NOT NULL,
    skus              text[]      NOT NULL,
    version           bigint      NOT NULL,
    updated_at        timestamptz NOT NULL,
    state             bytea       NOT NULL  -- pulsestock.v1.PurchaseOrder
);
CREATE INDEX purchase_orders_by_sku ON purchase_orders USING gin (skus);

-- Receipts whose stock inventory-sync refused for good (not a transient failure): kept for
-- an operator, never retried blindly and never silently dropped.
CREATE TABLE stock_receipt_failures (
    command_id   text PRIMARY KEY,
    purchase_order_id text NOT NULL,
    receipt_id   text        NOT NULL,
    sku          text        NOT NULL,
    quantity     bigint      NOT NULL,
    status_code  text        NOT NULL,
    message      text        NOT NULL,
    failed_at    timestamptz NOT NULL DEFAULT now()
);
