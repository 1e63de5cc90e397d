"""gRPC servicers, NATS consumers and HTTP endpoints of fulfillment."""
