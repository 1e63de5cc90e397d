-- What inventory-sync knows of each warehouse, from fulfillment's master data
-- (fulfillment.warehouse_set events): where it is, what kind, which channels it fulfils.
-- New reservations are placed by the routing rule over these (domain/placement.py).
CREATE TABLE warehouse_sites (
    warehouse_id text        PRIMARY KEY,
    region       text        NOT NULL,
    kind         text        NOT NULL,
    channels     text[]      NOT NULL,
    set_at       timestamptz NOT NULL
);
