-- The seller of each video: a seller's rules apply to the SKUs its videos feature.
ALTER TABLE videos ADD COLUMN seller_id text NOT NULL DEFAULT '';
