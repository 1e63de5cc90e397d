"""PostgreSQL, NATS, peer gRPC and channel API adapters of inventory_sync."""
