from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProviderKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROVIDER_KIND_UNSPECIFIED: _ClassVar[ProviderKind]
    PROVIDER_KIND_OPENAI: _ClassVar[ProviderKind]
    PROVIDER_KIND_ANTHROPIC: _ClassVar[ProviderKind]
    PROVIDER_KIND_CUSTOM: _ClassVar[ProviderKind]

class OnMissingCredential(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ON_MISSING_CREDENTIAL_UNSPECIFIED: _ClassVar[OnMissingCredential]
    ON_MISSING_CREDENTIAL_WARN: _ClassVar[OnMissingCredential]
    ON_MISSING_CREDENTIAL_ERROR: _ClassVar[OnMissingCredential]
PROVIDER_KIND_UNSPECIFIED: ProviderKind
PROVIDER_KIND_OPENAI: ProviderKind
PROVIDER_KIND_ANTHROPIC: ProviderKind
PROVIDER_KIND_CUSTOM: ProviderKind
ON_MISSING_CREDENTIAL_UNSPECIFIED: OnMissingCredential
ON_MISSING_CREDENTIAL_WARN: OnMissingCredential
ON_MISSING_CREDENTIAL_ERROR: OnMissingCredential

class HeaderValues(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, values: _Optional[_Iterable[str]] = ...) -> None: ...

class Provider(_message.Message):
    __slots__ = ("name", "kind", "base_url", "headers", "models", "on_missing_credential")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: HeaderValues
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[HeaderValues, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    BASE_URL_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    ON_MISSING_CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: ProviderKind
    base_url: str
    headers: _containers.MessageMap[str, HeaderValues]
    models: _containers.RepeatedScalarFieldContainer[str]
    on_missing_credential: OnMissingCredential
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[ProviderKind, str]] = ..., base_url: _Optional[str] = ..., headers: _Optional[_Mapping[str, HeaderValues]] = ..., models: _Optional[_Iterable[str]] = ..., on_missing_credential: _Optional[_Union[OnMissingCredential, str]] = ...) -> None: ...

class CreateProviderRequest(_message.Message):
    __slots__ = ("user_id", "provider")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    provider: Provider
    def __init__(self, user_id: _Optional[str] = ..., provider: _Optional[_Union[Provider, _Mapping]] = ...) -> None: ...

class GetProviderRequest(_message.Message):
    __slots__ = ("user_id", "name")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    name: str
    def __init__(self, user_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class ListProvidersRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class ListProvidersResponse(_message.Message):
    __slots__ = ("providers",)
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    providers: _containers.RepeatedCompositeFieldContainer[Provider]
    def __init__(self, providers: _Optional[_Iterable[_Union[Provider, _Mapping]]] = ...) -> None: ...

class UpdateProviderRequest(_message.Message):
    __slots__ = ("user_id", "provider")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    provider: Provider
    def __init__(self, user_id: _Optional[str] = ..., provider: _Optional[_Union[Provider, _Mapping]] = ...) -> None: ...

class ProviderResponse(_message.Message):
    __slots__ = ("provider", "warnings")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    provider: Provider
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, provider: _Optional[_Union[Provider, _Mapping]] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteProviderRequest(_message.Message):
    __slots__ = ("user_id", "name")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    name: str
    def __init__(self, user_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class DeleteProviderResponse(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...
