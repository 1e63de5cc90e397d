"""The FulfillmentService gRPC servicer. Its RPCs answer UNIMPLEMENTED until their issues land."""

from pulsestock.v1 import fulfillment_pb2_grpc


class FulfillmentServiceServicer(fulfillment_pb2_grpc.FulfillmentServiceServicer):
    """RPCs not built yet answer UNIMPLEMENTED: the generated base class does that."""
