-- Loading a SKU looks up the videos and live sessions that feature it.
CREATE INDEX videos_by_sku ON videos USING gin (skus);
CREATE INDEX live_state_by_sku ON live_state USING gin (skus);
