"""gRPC clients of the services and the live event feed."""
