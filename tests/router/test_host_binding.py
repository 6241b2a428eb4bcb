"""The router's side of credential host binding (SPEC 2.9): a bound value is substituted only
into calls to a matching origin, by calls, provider checks and Preview alike (pure: no
network)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import pytest

from services.common.header_bounds import HeaderBounds
from services.router.errors import BadInvokeRequest, CredentialMissing, CredentialNotAllowed
from services.router.host_binding import values_for_origin
from services.router.invocation import (
    InvokeCall,
    ProviderConfig,
    Resolution,
    Router,
    prepared_call,
)
from services.router.placeholders import substitute_headers
from services.router.provider_check import CheckOutcome, ProviderChecker

SECRET = "sk-bound-secret-0123456789abcdef"
FREE = "free-value-0123456789abcdef"
HEADERS = (
    ("authorization", ("Bearer {{credential:bound}}",)),
    ("x-other", ("{{credential:free}}",)),
    ("x-missing", ("{{credential:absent}}",)),
)


def _resolution(
    base_url: str, hosts: Mapping[str, tuple[str, ...]], error: bool = False
) -> Resolution:
    provider = ProviderConfig("p", base_url, HEADERS, on_missing_error=error)
    return Resolution(provider, {"bound": SECRET, "free": FREE}, ("absent",), "", hosts)


def _call() -> InvokeCall:
    return InvokeCall("alice", "p", None, "POST", "/chat/completions")


def _header(headers: Sequence[tuple[str, str]], name: str) -> str:
    return next(value for key, value in headers if key == name)


@pytest.mark.parametrize(
    ("base_url", "hosts", "allowed"),
    [
        ("https://api.openai.com/v1", ("api.openai.com",), True),
        ("https://API.OPENAI.COM:443/v1", ("api.openai.com",), True),
        ("https://api.openai.com:8443/v1", ("api.openai.com",), False),
        # A port-less binding never lets the value travel in clear over plain http.
        ("http://api.openai.com/v1", ("api.openai.com",), False),
        ("http://api.openai.com:443/v1", ("api.openai.com",), False),
        ("http://api.openai.com/v1", ("api.openai.com:80",), True),
        ("https://evil.example/v1", ("api.openai.com",), False),
        ("https://x.openai.azure.com/", ("*.openai.azure.com",), True),
        ("https://openai.azure.com/", ("*.openai.azure.com",), False),
        ("http://127.0.0.1:8080/v1", ("127.0.0.1:8080",), True),
        ("http://[::1]:8443/v1", ("[::1]:8443",), True),
        ("http://[::1]:8444/v1", ("[::1]:8443",), False),
        ("https://evil.example/v1", (), True),  # no binding: any host
    ],
)
def test_a_bound_value_is_substituted_only_for_a_matching_origin(
    base_url: str, hosts: tuple[str, ...], allowed: bool
) -> None:
    prepared = prepared_call(
        _call(), _resolution(base_url, {"bound": hosts} if hosts else {}), HeaderBounds()
    )
    headers = prepared.request.headers
    assert _header(headers, "x-other") == FREE
    assert "Credential not found: absent" in prepared.warnings
    if allowed:
        assert _header(headers, "authorization") == f"Bearer {SECRET}"
        assert prepared.refused_keys == ()
        assert not any("not allowed" in w for w in prepared.warnings)
    else:
        assert _header(headers, "authorization") == "Bearer {{credential:bound}}"
        assert prepared.refused_keys == ("bound",)
        assert "Credential not allowed for host: bound" in prepared.warnings
        assert "Credential not found: bound" not in prepared.warnings
        assert all(SECRET not in w for w in prepared.warnings)


def test_on_missing_error_refuses_a_call_to_another_host_before_sending() -> None:
    resolution = _resolution("https://evil.example/v1", {"bound": ("api.openai.com",)}, True)
    provider = ProviderConfig("p", "https://evil.example/v1", HEADERS[:2], on_missing_error=True)
    resolution = Resolution(provider, resolution.values, (), "", resolution.value_hosts)
    with pytest.raises(CredentialNotAllowed) as caught:
        prepared_call(_call(), resolution, HeaderBounds()).check_missing()
    assert caught.value.reason == "credential_not_allowed"
    assert caught.value.message == "Credential not allowed for host: bound"
    # A missing key is still reported as missing first.
    with pytest.raises(CredentialMissing):
        prepared_call(
            _call(),
            _resolution("https://evil.example/", {"bound": ("a.example",)}, True),
            HeaderBounds(),
        ).check_missing()


def test_values_for_origin_keeps_unbound_values() -> None:
    allowed = values_for_origin(
        {"a": "1", "b": "2"}, {"b": ("b.example",)}, scheme="https", host="a.example", port=443
    )
    assert allowed.values == {"a": "1"}
    assert allowed.refused_keys == ("b",)
    substituted = substitute_headers(
        [("h", ["{{credential:a}} {{credential:b}}"])], allowed.values, refused={"b"}
    )
    assert substituted.headers == (("h", "1 {{credential:b}}"),)
    assert substituted.warnings == ("Credential not allowed for host: b",)
    assert substituted.missing_keys == ()
    assert substituted.refused_keys == ("b",)


class _Vault:
    def __init__(self, resolution: Resolution) -> None:
        self.resolution = resolution

    async def resolve(self, user_id: str, **_: object) -> Resolution:
        return self.resolution


async def test_preview_shows_what_a_call_would_send() -> None:
    resolution = _resolution("https://evil.example/v1", {"bound": ("api.openai.com",)})
    router = Router(_Vault(resolution), upstream=None, vault_timeout=5)  # type: ignore[arg-type]
    deadline = asyncio.get_running_loop().time() + 5
    preview = await router.preview("alice", "p", deadline=deadline)
    assert _header(preview.headers, "authorization") == "Bearer {{credential:bound}}"
    assert "Credential not allowed for host: bound" in preview.warnings
    assert SECRET not in str(preview)


async def test_a_provider_check_reports_a_credential_bound_elsewhere_as_an_outcome() -> None:
    provider = ProviderConfig("p", "https://evil.example/v1", HEADERS[:2], on_missing_error=True)
    resolution = Resolution(provider, {"bound": SECRET, "free": FREE}, (), "", {"bound": ("a.b",)})
    router = Router(_Vault(resolution), upstream=None, vault_timeout=5)  # type: ignore[arg-type]
    deadline = asyncio.get_running_loop().time() + 5
    check = await ProviderChecker(router).check("alice", "p", deadline=deadline)
    assert check.outcome is CheckOutcome.CREDENTIAL_MISSING
    assert check.status == 0
    assert "Credential not allowed for host: bound" in check.message
    assert "nothing was sent" in check.message
    assert SECRET not in check.message


async def test_a_bad_method_is_refused_before_the_vault_is_asked() -> None:
    class Counting(_Vault):
        calls = 0

        async def resolve(self, user_id: str, **_: object) -> Resolution:
            Counting.calls += 1
            return self.resolution

    vault = Counting(_resolution("https://api.openai.com/v1", {}))
    router = Router(vault, upstream=None, vault_timeout=5)  # type: ignore[arg-type]
    call = InvokeCall("alice", "p", None, "PO ST", "/chat/completions")
    with pytest.raises(BadInvokeRequest):
        await router.prepare(call, deadline=asyncio.get_running_loop().time() + 5)
    assert Counting.calls == 0
