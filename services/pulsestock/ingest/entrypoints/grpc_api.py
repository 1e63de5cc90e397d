"""The IngestService gRPC servicer. Its RPCs answer UNIMPLEMENTED until their issue lands."""

from pulsestock.v1 import ingest_pb2_grpc


class IngestServiceServicer(ingest_pb2_grpc.IngestServiceServicer):
    """RPCs not built yet answer UNIMPLEMENTED: the generated base class does that."""
