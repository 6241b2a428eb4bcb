"""Responses that a servicer serializes itself, where it builds them, and their registration.

grpc serializes a handler's response on the event loop's thread, in one C call that holds the
interpreter lock throughout: for a list of 30 MiB of providers about 0.1 s (more on a busy
machine) in which no other user's request takes a step. A servicer that builds a large response
on a worker thread (`bulk_reads`) therefore serializes it there too, piece by piece
(`concatenated`), and hands grpc the bytes; `add_service` registers a service whose responses
may be such bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
import grpc.aio
from google.protobuf.descriptor import FileDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass


def concatenated(pieces: Iterable[Message]) -> bytes:
    """The serialization of the message that holds all the elements of `pieces`: messages of
    one type whose fields are all repeated or maps, each holding some of the elements.

    Protobuf encodes a repeated field (or a map) as its elements one after another, each with
    the field's key, so encodings concatenate: the result is byte for byte the serialization
    of the whole message for a repeated field, and the same map for a map field (a map has no
    order). Each piece is serialized in a call of its own, so a thread doing this hands the
    interpreter lock on between pieces; only the final join copies everything in one call.
    """
    return b"".join([piece.SerializeToString() for piece in pieces])


def _serialized(response: Message | bytes) -> bytes:
    """A response as grpc sends it: bytes a servicer serialized already pass through."""
    return response if isinstance(response, bytes) else response.SerializeToString()


def _handler(method: MethodDescriptor) -> Any:
    """The grpc handler factory for a method of this kind (unary or streaming either way)."""
    if method.client_streaming:
        if method.server_streaming:
            return grpc.stream_stream_rpc_method_handler
        return grpc.stream_unary_rpc_method_handler
    if method.server_streaming:
        return grpc.unary_stream_rpc_method_handler
    return grpc.unary_unary_rpc_method_handler


def add_service(server: grpc.aio.Server, file: FileDescriptor, name: str, servicer: Any) -> None:
    """Register the service `name` of `file` as the generated `add_..._to_server` does,
    except that any of its methods may answer bytes it serialized already."""
    service = file.services_by_name[name]
    handlers = {
        method.name: _handler(method)(
            getattr(servicer, method.name),
            request_deserializer=GetMessageClass(method.input_type).FromString,
            response_serializer=_serialized,
        )
        for method in service.methods
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)
