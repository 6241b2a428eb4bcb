"""One call through the router (SPEC 3.3), independent of gRPC.

1. `Router.prepare` asks the vault, in one `Resolve` (`Router.resolve`), for the provider and the
   values of exactly the keys its headers reference; then `prepared_call` substitutes them and
   builds the upstream URL, headers and body.
   A value bound to hosts (SPEC 2.9) is substituted only if the call's origin matches them
   (`host_binding`); otherwise it is left out like a missing one, with its own warning.
   The result carries the warnings, so the caller can report them even if the call then fails.
2. `PreparedCall.check_missing` fails the call (`CredentialMissing`, `CredentialNotAllowed`)
   when the provider says `on_missing_credential: error` and a key is missing or not allowed
   for the host - before anything is sent upstream.
3. `Router.stream` sends it and yields the upstream's response as it arrives; `Router.fetch`
   sends it through `stream` and returns the whole answer at once, up to a body limit. With a
   tracer, the exchange is a CLIENT span (`upstream_span.py`).
4. When the answer ends, the tokens it reported (`usage.UsageTap`, fed each chunk after it was
   handed on) go to the usage sink, for the user, the provider and the model the call asked for,
   and onto the span (`gen_ai.usage.*`).

`Router.check_upstream` answers, without sending anything, whether the egress policy lets calls
reach a base URL (asked by the gateway when a provider is saved, SPEC 2.3). A provider check
(`provider_check.py`) sends a provider's model list through this same path.

Plaintext credential values live only in the objects of one call; nothing here caches them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

from opentelemetry.trace import Span, Tracer

from services.common.after_answer import after_answer
from services.common.errors import AicredsError, InvalidArgument
from services.common.header_bounds import HeaderBounds
from services.common.header_masking import mask_credential_value, mask_header_value
from services.common.usage_rules import usage_model
from services.router.body_model import rewrite_model
from services.router.errors import (
    BadInvokeRequest,
    CredentialMissing,
    CredentialNotAllowed,
    EgressRefused,
    UpstreamUnavailable,
    UpstreamUnresolved,
)
from services.router.headers import check_headers_size, upstream_request_headers
from services.router.host_binding import values_for_origin
from services.router.metrics import RouterMetrics
from services.router.placeholders import substitute_headers
from services.router.transport import (
    UpstreamClient,
    UpstreamRequest,
    UpstreamResponse,
    UpstreamTarget,
    base_url_errors,
    base_url_host_port,
    checked_base_url_errors,
)
from services.router.upstream_span import end_upstream_span, record_usage, start_upstream_span
from services.router.usage import TokenUsage, UsageReport, UsageSink, UsageTap

_log = logging.getLogger("aicreds.router")
_METHOD = re.compile(r"[A-Z]{1,16}")
_URL_UNSAFE = re.compile(r"[\x00-\x20\x7f#]")

#: The most body bytes `Router.fetch` collects: half the 64 MiB gRPC message limit, so that a
#: whole answer and its headers always fit one message.
MAX_BUFFERED_BODY = 32 * 1024 * 1024


ProviderKind = Literal["openai", "anthropic", "custom"]
"""Which API a provider speaks (the vault's `ProviderKind`)."""


@dataclass(frozen=True)
class ProviderConfig:
    """A provider as the vault resolved it (header values may hold literal secrets)."""

    name: str
    base_url: str
    headers: tuple[tuple[str, tuple[str, ...]], ...] = field(repr=False)
    on_missing_error: bool = False
    kind: ProviderKind = "custom"


@dataclass(frozen=True)
class Resolution:
    """The vault's answer for one call."""

    provider: ProviderConfig
    values: Mapping[str, str] = field(repr=False)
    missing_keys: tuple[str, ...] = ()
    upstream_model: str = ""
    # Key -> bound hosts, for the values that are bound (SPEC 2.9); others go to any host.
    value_hosts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


class ResolveSource(Protocol):
    """Where resolutions come from (the vault, or a fake in tests)."""

    async def resolve(
        self, user_id: str, *, provider_name: str | None, model: str | None, timeout: float
    ) -> Resolution: ...


@dataclass(frozen=True)
class InvokeCall:
    """What the caller asked for."""

    user_id: str
    provider_name: str | None
    model: str | None
    method: str
    path: str
    # The caller's query may carry a key (`?key=...`): never in a repr.
    query: str = field(default="", repr=False)
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    body: bytes = field(default=b"", repr=False)


@dataclass(frozen=True)
class PreparedCall:
    """A call ready to send, and what substitution noticed."""

    provider_name: str
    request: UpstreamRequest
    target: UpstreamTarget
    warnings: tuple[str, ...]
    missing_keys: tuple[str, ...]
    refuse_missing: bool
    refused_keys: tuple[str, ...] = ()
    provider_kind: ProviderKind = "custom"
    user_id: str = ""
    # The model the call names upstream (after an alias's rewrite), "" when it names none.
    model: str = ""

    def check_missing(self) -> None:
        """Raise CredentialMissing if a key is missing, CredentialNotAllowed if a key is bound
        to other hosts, and the provider says `error`."""
        if self.refuse_missing and self.missing_keys:
            raise CredentialMissing(self.missing_keys)
        if self.refuse_missing and self.refused_keys:
            raise CredentialNotAllowed(self.refused_keys)


@dataclass(frozen=True)
class BufferedAnswer:
    """The upstream's whole answer: status, headers (hop-by-hop removed) and body."""

    status: int
    headers: Sequence[tuple[str, str]]
    body: bytes = field(repr=False)


@dataclass(frozen=True)
class UpstreamCheck:
    """The egress policy's answer for a base URL (SPEC 2.3: checked when a provider is saved)."""

    allowed: bool
    reason: str = ""
    resolved: bool = True


@dataclass(frozen=True)
class PreviewResult:
    """A provider's headers as a call would send them, substituted values masked."""

    headers: tuple[tuple[str, str], ...]
    warnings: tuple[str, ...]


def upstream_url(base_url: str, path: str, query: str) -> str:
    """`base_url` + `path`, with the base URL's query and then `query`; the result must stay on
    the base URL's origin."""
    return upstream_target(base_url, path, query).url


def upstream_target(base_url: str, path: str, query: str) -> UpstreamTarget:
    """`upstream_url`, parsed once per call (the upstream client and the log line use it).

    Raises:
        BadInvokeRequest: the path or query could leave the base URL.
        UpstreamUnavailable: the base URL is not one the router can send to (the vault does
            not store such URLs).
    """
    if _URL_UNSAFE.search(path) or _URL_UNSAFE.search(query):
        raise BadInvokeRequest("path and query may not hold spaces, control characters or '#'")
    if "?" in path:
        raise BadInvokeRequest("path may not hold '?'; the query string goes in `query`")
    if any(segment in ("..", ".") for segment in path.split("/")):
        raise BadInvokeRequest("path may not hold '.' or '..' segments")
    scheme, netloc, base_path, base_query, _ = urlsplit(base_url)
    joined_path = base_path.rstrip("/") + "/" + path.lstrip("/")
    # The vault refuses a base URL with a query (provider_rules.base_url_problem); one stored
    # before that rule is still honoured, both queries kept. Neither is logged or in an error.
    joined_query = "&".join(q for q in (base_query, query) if q)
    url = urlunsplit((scheme, netloc, joined_path, joined_query, ""))
    with base_url_errors():
        built = UpstreamTarget(url)
        base = UpstreamTarget(base_url)
    if built.key != base.key:
        raise BadInvokeRequest("path must stay on the provider's base URL")
    return built


def _upstream_host_port(base_url: str) -> tuple[str, int]:
    """The host and port a call to `base_url` connects to; InvalidArgument if it has none."""
    with checked_base_url_errors():
        return base_url_host_port(base_url)


def _checked_method(call: InvokeCall) -> str:
    method = call.method.upper()
    if not _METHOD.fullmatch(method):
        raise BadInvokeRequest("method must be an HTTP method such as POST")
    return method


def prepared_call(call: InvokeCall, resolution: Resolution, bounds: HeaderBounds) -> PreparedCall:
    """`call` made ready to send with the vault's `resolution`: substituted, headers filtered,
    the URL built (the second half of `Router.prepare`)."""
    method = _checked_method(call)
    provider = resolution.provider
    target = upstream_target(provider.base_url, call.path, call.query)
    values: Mapping[str, str] = resolution.values
    refused: tuple[str, ...] = ()
    if resolution.value_hosts:
        # Bound values only for the origin this call connects to (SPEC 2.9).
        allowed = values_for_origin(
            values,
            resolution.value_hosts,
            scheme=target.scheme,
            host=target.origin.host.decode("ascii"),
            port=target.port,
        )
        values, refused = allowed.values, allowed.refused_keys
    # Bounded while substituting (SPEC 3.5): raises HeaderTooLarge before a value passes its
    # bound, then again for the whole request with the caller's forwarded headers.
    substituted = substitute_headers(provider.headers, values, bounds=bounds, refused=refused)
    headers = upstream_request_headers(substituted.headers, call.headers)
    check_headers_size(headers, bounds)
    body = call.body
    model = call.model or ""
    if call.model and resolution.upstream_model and resolution.upstream_model != call.model:
        body = rewrite_model(body, resolution.upstream_model)
        model = resolution.upstream_model
    return PreparedCall(
        provider_name=provider.name,
        request=UpstreamRequest(method, target.url, headers, body, target),
        target=target,
        warnings=substituted.warnings,
        missing_keys=substituted.missing_keys,
        refuse_missing=provider.on_missing_error,
        refused_keys=substituted.refused_keys,
        provider_kind=provider.kind,
        user_id=call.user_id,
        model=model,
    )


def _deadline_left(deadline: float) -> float:
    return deadline - asyncio.get_running_loop().time()


def _log_upstream_call(
    prepared: PreparedCall,
    response: UpstreamResponse | None,
    head_ms: float | None,
    elapsed: float,
    outcome: str,
) -> None:
    """One line per upstream call: where, what came back, how long. No query, no headers."""
    target = prepared.target
    _log.info(
        "upstream call",
        extra={
            "fields": {
                "provider": prepared.provider_name,
                "upstream": target.origin_text,
                "method": prepared.request.method,
                "path": target.path,
                "status": response.status if response else None,
                "outcome": outcome,
                "head_ms": head_ms,
                "ms": round(elapsed * 1000, 3),
                "chunks": response.chunks_received if response else 0,
                "bytes": response.bytes_received if response else 0,
            }
        },
    )


class Router:
    """Prepares and sends calls: the vault on one side, the upstream client on the other."""

    def __init__(
        self,
        vault: ResolveSource,
        upstream: UpstreamClient,
        vault_timeout: float,
        header_bounds: HeaderBounds | None = None,
        metrics: RouterMetrics | None = None,
        usage: UsageSink | None = None,
        *,
        tracer: Tracer | None = None,
    ):
        self._vault = vault
        self._upstream = upstream
        self._vault_timeout = vault_timeout
        self._header_bounds = header_bounds or HeaderBounds()
        self._metrics = metrics
        self._usage = usage
        self._tracer = tracer

    @property
    def header_bounds(self) -> HeaderBounds:
        """The size bounds every prepared call's headers are held to."""
        return self._header_bounds

    async def resolve(
        self, user_id: str, provider_name: str | None, model: str | None, *, deadline: float
    ) -> Resolution:
        """Ask the vault, in one `Resolve`, for the provider and its referenced values."""
        if not provider_name and not model:
            raise InvalidArgument("name a provider_name or a model")
        timeout = min(self._vault_timeout, _deadline_left(deadline))
        return await self._vault.resolve(
            user_id, provider_name=provider_name or None, model=model or None, timeout=timeout
        )

    async def prepare(self, call: InvokeCall, *, deadline: float) -> PreparedCall:
        """Resolve and substitute; raises for a request that cannot be sent."""
        _checked_method(call)  # before the vault decrypts anything for a request refused anyway
        resolution = await self.resolve(
            call.user_id, call.provider_name, call.model, deadline=deadline
        )
        return prepared_call(call, resolution, self._header_bounds)

    @contextlib.asynccontextmanager
    async def stream(
        self, prepared: PreparedCall, *, deadline: float
    ) -> AsyncIterator[UpstreamResponse]:
        """Send a prepared call (after `check_missing`); yield the response as it arrives."""
        prepared.check_missing()
        started = time.perf_counter()
        response: UpstreamResponse | None = None
        head_ms: float | None = None
        outcome = "ok"
        tap: UsageTap | None = None
        span: Span | None = None
        if self._tracer is not None:
            span = start_upstream_span(
                self._tracer,
                prepared.request.method,
                prepared.target,
                provider_name=prepared.provider_name,
                provider_kind=prepared.provider_kind,
                model=prepared.model,
            )
        try:
            async with self._upstream.stream(prepared.request, deadline=deadline) as response:
                head_ms = round((time.perf_counter() - started) * 1000, 3)
                if self._usage is not None:
                    tap = UsageTap.for_answer(response.status, response.headers)
                    if tap is not None:
                        response.observe(tap.feed)
                yield response
        except AicredsError as err:
            outcome = err.reason
            raise
        except BaseException as err:  # cancelled, or a bug the interceptor reports
            cancelled = isinstance(err, asyncio.CancelledError | GeneratorExit)
            outcome = "cancelled" if cancelled else "error"
            raise
        finally:
            elapsed = time.perf_counter() - started
            if span is None:  # reported once the call is answered (`after_answer`)
                after_answer(self._report, prepared, response, head_ms, elapsed, outcome, tap)
            else:  # the span carries the usage: reported now, before the span ends
                usage = self._report(prepared, response, head_ms, elapsed, outcome, tap)
                if usage is not None:
                    record_usage(span, usage.input_tokens, usage.output_tokens)
                status = response.status if response else None
                end_upstream_span(span, status, None if outcome == "ok" else outcome)

    def _report(
        self,
        prepared: PreparedCall,
        response: UpstreamResponse | None,
        head_ms: float | None,
        elapsed: float,
        outcome: str,
        tap: UsageTap | None,
    ) -> TokenUsage | None:
        """What one upstream exchange reports: its log line, its metrics, and the tokens its
        answer reported to the usage sink (an answer without usage counts nothing)."""
        _log_upstream_call(prepared, response, head_ms, elapsed, outcome)
        if self._metrics is not None:
            self._metrics.upstream_call(
                prepared.provider_name,
                response.status if response else None,
                None if head_ms is None else head_ms / 1000,
                elapsed,
                egress_refused=outcome == EgressRefused.reason,
            )
        usage = tap.usage() if tap is not None else None
        if usage is not None and self._usage is not None and prepared.user_id:
            model = usage_model(prepared.model)
            self._usage.record(UsageReport(prepared.user_id, prepared.provider_name, model, usage))
        return usage

    async def fetch(
        self, prepared: PreparedCall, *, deadline: float, max_body: int = MAX_BUFFERED_BODY
    ) -> BufferedAnswer:
        """Send a prepared call like `stream` (same checks, errors, deadline, log line) and
        return the whole answer.

        Raises:
            UpstreamUnavailable: the body is longer than `max_body` bytes (the upstream
                connection is closed at once).
        """
        async with self.stream(prepared, deadline=deadline) as response:
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.chunks():
                size += len(chunk)
                if size > max_body:
                    raise UpstreamUnavailable(
                        f"the upstream's answer is longer than {max_body} bytes, the most a"
                        " buffered call returns"
                    )
                chunks.append(chunk)
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            return BufferedAnswer(response.status, response.headers, body)

    async def check_upstream(self, base_url: str, *, deadline: float) -> UpstreamCheck:
        """Whether the egress policy lets calls reach `base_url`'s host; nothing is sent.

        A name that does not resolve now is allowed (`resolved` False): it may resolve later,
        and every call resolves and checks it again on the address it connects to.
        """
        host, port = _upstream_host_port(base_url)
        try:
            await self._upstream.checked_addresses(host, port, deadline=deadline)
        except EgressRefused as err:
            return UpstreamCheck(allowed=False, reason=err.message)
        except UpstreamUnresolved:
            return UpstreamCheck(allowed=True, resolved=False)
        return UpstreamCheck(allowed=True)

    async def preview(self, user_id: str, provider_name: str, *, deadline: float) -> PreviewResult:
        """The provider's headers after substitution, every substituted value masked.

        A sensitive header value that the provider API masks (SPEC 2.3: a literal secret) is
        MASKED here too, so that Preview never shows more than the provider API does.
        """
        if not provider_name:
            raise InvalidArgument("provider_name is required")
        resolution = await self.resolve(user_id, provider_name, None, deadline=deadline)
        lines: list[tuple[str, Sequence[str]]] = []
        for name, values in resolution.provider.headers:
            lines.append((name, [mask_header_value(name, v) for v in values]))
        usable: Mapping[str, str] = resolution.values
        refused: tuple[str, ...] = ()
        if resolution.value_hosts:
            # The same origin check as a call's (`prepared_call`): what Preview shows is what
            # a call would send.
            host, port = _upstream_host_port(resolution.provider.base_url)
            allowed = values_for_origin(
                resolution.values,
                resolution.value_hosts,
                scheme=urlsplit(resolution.provider.base_url).scheme,
                host=host,
                port=port,
            )
            usable, refused = allowed.values, allowed.refused_keys
        substituted = substitute_headers(
            lines, usable, lambda _key, value: mask_credential_value(value), refused=refused
        )
        return PreviewResult(substituted.headers, substituted.warnings)
