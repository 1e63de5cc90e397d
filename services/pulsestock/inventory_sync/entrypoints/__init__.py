"""gRPC servicers, NATS consumers and HTTP endpoints of inventory_sync."""
