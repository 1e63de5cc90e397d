"""Server reflection under both names clients ask for: `grpc.reflection.v1` (the stable name
that current grpcurl, Postman and grpcui try first) and `grpc.reflection.v1alpha` (older
clients).

grpcio-reflection ships only v1alpha (checked up to 1.85.1, the latest release). The v1
protocol is the same messages under another package, field for field (numbers, types and
oneofs are identical), so v1alpha's servicer answers a v1 call byte for byte: the v1 method is
routed to the same servicer with v1alpha's (de)serialisers. v1's file descriptor (v1alpha's,
renamed) is added to the default pool so that the v1 service is itself listed and describable.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_reflection.v1alpha import reflection as v1alpha
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2

V1ALPHA_SERVICE_NAME: str = v1alpha.SERVICE_NAME
V1_PACKAGE = "grpc.reflection.v1"
V1_SERVICE_NAME = f"{V1_PACKAGE}.ServerReflection"
V1_FILE_NAME = "grpc/reflection/v1/reflection.proto"


def _v1_file() -> FileDescriptor:
    """v1's file descriptor in the default pool: the one already there (another library may
    have registered it), or v1alpha's with the package renamed."""
    pool = descriptor_pool.Default()
    try:
        return pool.FindFileByName(V1_FILE_NAME)
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    v1alpha_pb2.DESCRIPTOR.CopyToProto(proto)
    old, new = f".{proto.package}.", f".{V1_PACKAGE}."
    proto.name, proto.package = V1_FILE_NAME, V1_PACKAGE
    for message in proto.message_type:
        for field in message.field:
            if field.type_name.startswith(old):
                field.type_name = new + field.type_name[len(old) :]
    for service in proto.service:
        for method in service.method:
            method.input_type = new + method.input_type[len(old) :]
            method.output_type = new + method.output_type[len(old) :]
    # The options of the real v1 file: not deprecated, its own Java and Go packages.
    proto.options.Clear()
    proto.options.java_multiple_files = True
    proto.options.java_package = "io.grpc.reflection.v1"
    proto.options.java_outer_classname = "ServerReflectionProto"
    proto.options.go_package = "google.golang.org/grpc/reflection/grpc_reflection_v1"
    pool.Add(proto)
    return pool.FindFileByName(V1_FILE_NAME)


V1_DESCRIPTOR = _v1_file()
# v1's own message classes, for clients that speak only v1 (the server does not need them).
V1ServerReflectionRequest: type[Message] = GetMessageClass(
    V1_DESCRIPTOR.message_types_by_name["ServerReflectionRequest"]
)
V1ServerReflectionResponse: type[Message] = GetMessageClass(
    V1_DESCRIPTOR.message_types_by_name["ServerReflectionResponse"]
)


def enable_server_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serves reflection on `server` as v1 and v1alpha, listing `service_names` and both
    reflection services."""
    names = [*service_names, V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME]
    servicer = v1alpha.aio.ReflectionServicer(names)
    v1alpha.enable_server_reflection(names, server)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=v1alpha_pb2.ServerReflectionRequest.FromString,
        response_serializer=v1alpha_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(V1_SERVICE_NAME, {"ServerReflectionInfo": handler}),)
    )
