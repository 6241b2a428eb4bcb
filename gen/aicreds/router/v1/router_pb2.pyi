from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Header(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class InvokeRequest(_message.Message):
    __slots__ = ("user_id", "provider_name", "model", "method", "path", "query", "headers", "body")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    provider_name: str
    model: str
    method: str
    path: str
    query: str
    headers: _containers.RepeatedCompositeFieldContainer[Header]
    body: bytes
    def __init__(self, user_id: _Optional[str] = ..., provider_name: _Optional[str] = ..., model: _Optional[str] = ..., method: _Optional[str] = ..., path: _Optional[str] = ..., query: _Optional[str] = ..., headers: _Optional[_Iterable[_Union[Header, _Mapping]]] = ..., body: _Optional[bytes] = ...) -> None: ...

class ResponseHead(_message.Message):
    __slots__ = ("status", "headers")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    status: int
    headers: _containers.RepeatedCompositeFieldContainer[Header]
    def __init__(self, status: _Optional[int] = ..., headers: _Optional[_Iterable[_Union[Header, _Mapping]]] = ...) -> None: ...

class InvokeResponse(_message.Message):
    __slots__ = ("head", "chunk")
    HEAD_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    head: ResponseHead
    chunk: bytes
    def __init__(self, head: _Optional[_Union[ResponseHead, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class InvokeBufferedRequest(_message.Message):
    __slots__ = ("call", "max_body_bytes")
    CALL_FIELD_NUMBER: _ClassVar[int]
    MAX_BODY_BYTES_FIELD_NUMBER: _ClassVar[int]
    call: InvokeRequest
    max_body_bytes: int
    def __init__(self, call: _Optional[_Union[InvokeRequest, _Mapping]] = ..., max_body_bytes: _Optional[int] = ...) -> None: ...

class InvokeBufferedResponse(_message.Message):
    __slots__ = ("head", "body", "warnings")
    HEAD_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    head: ResponseHead
    body: bytes
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, head: _Optional[_Union[ResponseHead, _Mapping]] = ..., body: _Optional[bytes] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class PreviewRequest(_message.Message):
    __slots__ = ("user_id", "provider_name")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_NAME_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    provider_name: str
    def __init__(self, user_id: _Optional[str] = ..., provider_name: _Optional[str] = ...) -> None: ...

class PreviewResponse(_message.Message):
    __slots__ = ("headers", "warnings")
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    headers: _containers.RepeatedCompositeFieldContainer[Header]
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, headers: _Optional[_Iterable[_Union[Header, _Mapping]]] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class CheckUpstreamRequest(_message.Message):
    __slots__ = ("base_url",)
    BASE_URL_FIELD_NUMBER: _ClassVar[int]
    base_url: str
    def __init__(self, base_url: _Optional[str] = ...) -> None: ...

class CheckUpstreamResponse(_message.Message):
    __slots__ = ("allowed", "reason", "resolved")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_FIELD_NUMBER: _ClassVar[int]
    allowed: bool
    reason: str
    resolved: bool
    def __init__(self, allowed: _Optional[bool] = ..., reason: _Optional[str] = ..., resolved: _Optional[bool] = ...) -> None: ...
