"""The ForecastService gRPC servicer. Its RPCs answer UNIMPLEMENTED until their issues land."""

from pulsestock.v1 import forecast_pb2_grpc


class ForecastServiceServicer(forecast_pb2_grpc.ForecastServiceServicer):
    """RPCs not built yet answer UNIMPLEMENTED: the generated base class does that."""
