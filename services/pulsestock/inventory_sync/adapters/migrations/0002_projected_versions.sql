-- How far the read model has folded each SKU's ledger (its stream version), so a query can
-- wait for a command's own write (read your writes) without guessing from the levels: an
-- event that moves no stock (a channel quantity, a policy) still advances it.
CREATE TABLE projected_versions (
    sku     text   PRIMARY KEY,
    version bigint NOT NULL
);
