"""The gRPC edge every service shares: server start-up, interceptors, error mapping, clients."""

from pulsestock.grpckit.client import insecure_channel
from pulsestock.grpckit.server import GrpcServer

__all__ = ["GrpcServer", "insecure_channel"]
