import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CheckOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHECK_OUTCOME_UNSPECIFIED: _ClassVar[CheckOutcome]
    CHECK_OUTCOME_ACCEPTED: _ClassVar[CheckOutcome]
    CHECK_OUTCOME_KEY_REJECTED: _ClassVar[CheckOutcome]
    CHECK_OUTCOME_UNREACHABLE: _ClassVar[CheckOutcome]
    CHECK_OUTCOME_REFUSED_BY_POLICY: _ClassVar[CheckOutcome]
    CHECK_OUTCOME_UPSTREAM_ERROR: _ClassVar[CheckOutcome]
    CHECK_OUTCOME_CREDENTIAL_MISSING: _ClassVar[CheckOutcome]
CHECK_OUTCOME_UNSPECIFIED: CheckOutcome
CHECK_OUTCOME_ACCEPTED: CheckOutcome
CHECK_OUTCOME_KEY_REJECTED: CheckOutcome
CHECK_OUTCOME_UNREACHABLE: CheckOutcome
CHECK_OUTCOME_REFUSED_BY_POLICY: CheckOutcome
CHECK_OUTCOME_UPSTREAM_ERROR: CheckOutcome
CHECK_OUTCOME_CREDENTIAL_MISSING: CheckOutcome

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

class InvokeBufferedStreamRequest(_message.Message):
    __slots__ = ("id", "call", "cancel", "stream", "credit", "request_id", "timeout_ms")
    ID_FIELD_NUMBER: _ClassVar[int]
    CALL_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    CREDIT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    id: int
    call: InvokeBufferedRequest
    cancel: bool
    stream: InvokeRequest
    credit: int
    request_id: str
    timeout_ms: int
    def __init__(self, id: _Optional[int] = ..., call: _Optional[_Union[InvokeBufferedRequest, _Mapping]] = ..., cancel: _Optional[bool] = ..., stream: _Optional[_Union[InvokeRequest, _Mapping]] = ..., credit: _Optional[int] = ..., request_id: _Optional[str] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class InvokeBufferedStreamResponse(_message.Message):
    __slots__ = ("id", "response", "error", "part", "end", "draining", "warnings", "more", "takes_streamed")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    TAKES_STREAMED_FIELD_NUMBER: _ClassVar[int]
    id: int
    response: InvokeBufferedResponse
    error: CallError
    part: InvokeResponse
    end: bool
    draining: bool
    warnings: _containers.RepeatedScalarFieldContainer[str]
    more: _containers.RepeatedCompositeFieldContainer[InvokeBufferedStreamResponse]
    takes_streamed: bool
    def __init__(self, id: _Optional[int] = ..., response: _Optional[_Union[InvokeBufferedResponse, _Mapping]] = ..., error: _Optional[_Union[CallError, _Mapping]] = ..., part: _Optional[_Union[InvokeResponse, _Mapping]] = ..., end: _Optional[bool] = ..., draining: _Optional[bool] = ..., warnings: _Optional[_Iterable[str]] = ..., more: _Optional[_Iterable[_Union[InvokeBufferedStreamResponse, _Mapping]]] = ..., takes_streamed: _Optional[bool] = ...) -> None: ...

class CallError(_message.Message):
    __slots__ = ("code", "message", "reason")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    reason: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

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

class CheckProviderRequest(_message.Message):
    __slots__ = ("user_id", "provider_name")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_NAME_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    provider_name: str
    def __init__(self, user_id: _Optional[str] = ..., provider_name: _Optional[str] = ...) -> None: ...

class CheckProviderResponse(_message.Message):
    __slots__ = ("outcome", "status", "message", "warnings", "checked_at")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    CHECKED_AT_FIELD_NUMBER: _ClassVar[int]
    outcome: CheckOutcome
    status: int
    message: str
    warnings: _containers.RepeatedScalarFieldContainer[str]
    checked_at: _timestamp_pb2.Timestamp
    def __init__(self, outcome: _Optional[_Union[CheckOutcome, str]] = ..., status: _Optional[int] = ..., message: _Optional[str] = ..., warnings: _Optional[_Iterable[str]] = ..., checked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
