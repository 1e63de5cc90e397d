-- GetOrderHolds: where a channel order's lines are held, looked up by the order.
CREATE INDEX active_reservations_by_order ON active_reservations (channel, channel_order_id);
