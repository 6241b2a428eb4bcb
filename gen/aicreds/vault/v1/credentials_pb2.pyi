from aicreds.vault.v1 import providers_pb2 as _providers_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetCredentialsRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class GetCredentialsResponse(_message.Message):
    __slots__ = ("credentials",)
    class CredentialsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    credentials: _containers.ScalarMap[str, str]
    def __init__(self, credentials: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ReplaceCredentialsRequest(_message.Message):
    __slots__ = ("user_id", "credentials")
    class CredentialsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    credentials: _containers.ScalarMap[str, str]
    def __init__(self, user_id: _Optional[str] = ..., credentials: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ReplaceCredentialsResponse(_message.Message):
    __slots__ = ("credentials",)
    class CredentialsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    credentials: _containers.ScalarMap[str, str]
    def __init__(self, credentials: _Optional[_Mapping[str, str]] = ...) -> None: ...

class GetCredentialRequest(_message.Message):
    __slots__ = ("user_id", "key")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    key: str
    def __init__(self, user_id: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class GetCredentialResponse(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class PutCredentialRequest(_message.Message):
    __slots__ = ("user_id", "key", "value")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    key: str
    value: str
    def __init__(self, user_id: _Optional[str] = ..., key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class PutCredentialResponse(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class DeleteCredentialRequest(_message.Message):
    __slots__ = ("user_id", "key")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    key: str
    def __init__(self, user_id: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class DeleteCredentialResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class DeleteCredentialsRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class DeleteCredentialsResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...

class KeyNames(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, keys: _Optional[_Iterable[str]] = ...) -> None: ...

class ResolveRequest(_message.Message):
    __slots__ = ("user_id", "keys", "provider_name", "model")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    keys: KeyNames
    provider_name: str
    model: str
    def __init__(self, user_id: _Optional[str] = ..., keys: _Optional[_Union[KeyNames, _Mapping]] = ..., provider_name: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class ResolveResponse(_message.Message):
    __slots__ = ("provider", "values", "missing_keys", "upstream_model", "value_hosts")
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class ValueHostsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: HostList
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[HostList, _Mapping]] = ...) -> None: ...
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    MISSING_KEYS_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_MODEL_FIELD_NUMBER: _ClassVar[int]
    VALUE_HOSTS_FIELD_NUMBER: _ClassVar[int]
    provider: _providers_pb2.Provider
    values: _containers.ScalarMap[str, str]
    missing_keys: _containers.RepeatedScalarFieldContainer[str]
    upstream_model: str
    value_hosts: _containers.MessageMap[str, HostList]
    def __init__(self, provider: _Optional[_Union[_providers_pb2.Provider, _Mapping]] = ..., values: _Optional[_Mapping[str, str]] = ..., missing_keys: _Optional[_Iterable[str]] = ..., upstream_model: _Optional[str] = ..., value_hosts: _Optional[_Mapping[str, HostList]] = ...) -> None: ...

class ResolveStreamRequest(_message.Message):
    __slots__ = ("id", "request", "request_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    request: ResolveRequest
    request_id: str
    def __init__(self, id: _Optional[int] = ..., request: _Optional[_Union[ResolveRequest, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class ResolveStreamResponse(_message.Message):
    __slots__ = ("id", "response", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: int
    response: ResolveResponse
    error: ResolveError
    def __init__(self, id: _Optional[int] = ..., response: _Optional[_Union[ResolveResponse, _Mapping]] = ..., error: _Optional[_Union[ResolveError, _Mapping]] = ...) -> None: ...

class ResolveError(_message.Message):
    __slots__ = ("code", "message", "reason")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    reason: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class HostList(_message.Message):
    __slots__ = ("hosts",)
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    hosts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, hosts: _Optional[_Iterable[str]] = ...) -> None: ...

class GetCredentialHostsRequest(_message.Message):
    __slots__ = ("user_id", "key")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    key: str
    def __init__(self, user_id: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class GetCredentialHostsResponse(_message.Message):
    __slots__ = ("hosts",)
    class HostsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: HostList
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[HostList, _Mapping]] = ...) -> None: ...
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    hosts: _containers.MessageMap[str, HostList]
    def __init__(self, hosts: _Optional[_Mapping[str, HostList]] = ...) -> None: ...

class SetCredentialHostsRequest(_message.Message):
    __slots__ = ("user_id", "key", "hosts")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    key: str
    hosts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, user_id: _Optional[str] = ..., key: _Optional[str] = ..., hosts: _Optional[_Iterable[str]] = ...) -> None: ...

class SetCredentialHostsResponse(_message.Message):
    __slots__ = ("key", "hosts")
    KEY_FIELD_NUMBER: _ClassVar[int]
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    key: str
    hosts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, key: _Optional[str] = ..., hosts: _Optional[_Iterable[str]] = ...) -> None: ...
