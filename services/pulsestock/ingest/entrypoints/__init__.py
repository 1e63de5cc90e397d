"""gRPC servicers, NATS consumers and HTTP endpoints of ingest."""
