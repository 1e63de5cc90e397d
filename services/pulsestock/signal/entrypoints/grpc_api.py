"""The SignalService gRPC servicer. Its RPCs answer UNIMPLEMENTED until their issues land."""

from pulsestock.v1 import signal_pb2_grpc


class SignalServiceServicer(signal_pb2_grpc.SignalServiceServicer):
    """RPCs not built yet answer UNIMPLEMENTED: the generated base class does that."""
