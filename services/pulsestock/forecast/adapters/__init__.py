"""PostgreSQL, NATS, peer gRPC and channel API adapters of forecast."""
