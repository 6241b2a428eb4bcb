"""Token usage read from upstream answers as they pass (issue 18), never delaying a byte.

OpenAI- and Anthropic-shaped answers say how many tokens a call took in a `usage` object:

- a JSON answer at its top level: OpenAI `{"prompt_tokens", "completion_tokens"}` (chat
  completions, embeddings), OpenAI Responses and Anthropic `{"input_tokens", "output_tokens"}`,
  Anthropic adding `cache_creation_input_tokens` and `cache_read_input_tokens`;
- an event stream in its events: OpenAI chat in a last chunk with `"usage": {...}` when the
  client set `stream_options.include_usage` (earlier chunks carry `"usage": null`), OpenAI
  Responses in `response.completed`'s `response.usage`, Anthropic in `message_start`'s
  `message.usage` (input) and `message_delta`'s `usage` (output, cumulative).

`UsageTap` is fed each chunk after it has been handed on (`UpstreamResponse.observe`) and keeps
bounded memory: for a stream only the current event, at most `MAX_EVENT_BYTES` (a longer event is
skipped), parsed only when it names `"usage"`; for a JSON body only its last `JSON_TAIL_BYTES`,
where vendors put `usage`, searched once at the end. Counts merge field by field, later values
replacing earlier ones (Anthropic's are cumulative). Input tokens include cached ones (OpenAI's
`prompt_tokens` already do; Anthropic's cache fields are added), as OpenTelemetry's
`gen_ai.usage.input_tokens` asks. A missing, malformed or out-of-range count counts nothing;
nothing here raises into a call. Compressed answers (`Content-Encoding`) are not read.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from services.common.usage_rules import MAX_TOKENS

MAX_EVENT_BYTES = 64 * 1024
"""The most bytes of one stream event kept and parsed; a longer event is skipped."""
JSON_TAIL_BYTES = 64 * 1024
"""The bytes at the end of a JSON answer searched for its `usage`."""
_TAIL_TRIES = 8
_USAGE_KEY = b'"usage"'
_WHITESPACE = b" \t\r\n"
_COUNT_FIELDS = (
    "prompt_tokens",
    "completion_tokens",
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)
_decoder = json.JSONDecoder()


@dataclass(frozen=True)
class TokenUsage:
    """Tokens one answer reported."""

    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class UsageReport:
    """One answer's usage, for one user's call to one provider and model."""

    user_id: str
    provider: str
    model: str
    usage: TokenUsage


class UsageSink(Protocol):
    def record(self, report: UsageReport) -> None:
        """Take a report at once (never block, never raise): counted and sent on later."""


class UsageCounts:
    """Count fields merged from the `usage` objects of one answer."""

    def __init__(self) -> None:
        self._fields: dict[str, int] = {}

    def merge(self, usage: object) -> None:
        """Take the valid counts of a `usage` object; anything else is ignored."""
        if not isinstance(usage, Mapping):
            return
        for name in _COUNT_FIELDS:
            value = usage.get(name)
            if type(value) is int and 0 <= value <= MAX_TOKENS:
                self._fields[name] = value

    def usage(self) -> TokenUsage | None:
        """The tokens counted, or None when no input or output count was seen."""
        f = self._fields
        if "prompt_tokens" in f or "completion_tokens" in f:
            inputs, outputs = f.get("prompt_tokens"), f.get("completion_tokens")
        else:
            inputs, outputs = f.get("input_tokens"), f.get("output_tokens")
        if inputs is None and outputs is None:
            return None
        cached = f.get("cache_creation_input_tokens", 0) + f.get("cache_read_input_tokens", 0)
        total_in = (inputs or 0) + cached
        return TokenUsage(min(total_in, MAX_TOKENS), outputs or 0)


def usage_of_event(event: object) -> object:
    """The `usage` object of one parsed stream event or JSON answer, if it has one: at its top
    level, or in Anthropic's `message` or OpenAI Responses' `response`."""
    if not isinstance(event, dict):
        return None
    usage = event.get("usage")
    if usage is None:
        for wrapper in ("message", "response"):
            inner = event.get(wrapper)
            if isinstance(inner, dict) and inner.get("usage") is not None:
                return inner["usage"]
    return usage


class SseUsageScanner:
    """Reads the `data:` of server-sent events as they pass; parses those naming `usage`."""

    def __init__(self, counts: UsageCounts) -> None:
        self._counts = counts
        self._line = bytearray()  # the unfinished line
        self._data = bytearray()  # the current event's data
        self._skipping = False  # the current event (or line) passed MAX_EVENT_BYTES

    def feed(self, chunk: bytes) -> None:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                self._keep(chunk[start:])
                return
            self._keep(chunk[start:end])
            self._line_done()
            start = end + 1

    def _keep(self, piece: bytes) -> None:
        if self._skipping or not piece:
            return
        if len(self._line) + len(self._data) + len(piece) > MAX_EVENT_BYTES:
            self._skipping = True
            self._line.clear()
            self._data.clear()
            return
        self._line += piece

    def _line_done(self) -> None:
        line = bytes(self._line).rstrip(b"\r")
        self._line.clear()
        if not line:  # a blank line ends the event
            if not self._skipping and self._data:
                self._event(bytes(self._data))
            self._data.clear()
            self._skipping = False
            return
        if self._skipping or not line.startswith(b"data:"):
            return
        value = line[5:]
        if value.startswith(b" "):
            value = value[1:]
        if self._data:
            self._data += b"\n"
        self._data += value

    def _event(self, data: bytes) -> None:
        if _USAGE_KEY not in data:
            return
        try:
            event = json.loads(data)
        except ValueError:
            return
        self._counts.merge(usage_of_event(event))


class JsonTailScanner:
    """Keeps the last `JSON_TAIL_BYTES` of a JSON answer; finds its `usage` at the end."""

    def __init__(self, counts: UsageCounts) -> None:
        self._counts = counts
        self._chunks: deque[bytes] = deque()
        self._size = 0

    def feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._size += len(chunk)
        while self._size - len(self._chunks[0]) >= JSON_TAIL_BYTES:
            self._size -= len(self._chunks.popleft())

    def finish(self) -> None:
        tail = b"".join(self._chunks)[-JSON_TAIL_BYTES:]
        self._chunks.clear()
        self._counts.merge(usage_in_json_tail(tail))


def usage_in_json_tail(tail: bytes) -> object:
    """The object of the last `"usage": {...}` member in `tail` that parses, or None."""
    end = len(tail)
    for _ in range(_TAIL_TRIES):
        at = tail.rfind(_USAGE_KEY, 0, end)
        if at < 0:
            return None
        end = at
        if at > 0 and tail[at - 1 : at] == b"\\":
            continue  # inside a string
        i = at + len(_USAGE_KEY)
        while i < len(tail) and tail[i] in _WHITESPACE:
            i += 1
        if tail[i : i + 1] != b":":
            continue
        i += 1
        while i < len(tail) and tail[i] in _WHITESPACE:
            i += 1
        if tail[i : i + 1] != b"{":
            continue
        try:
            value, _ = _decoder.raw_decode(tail[i:].decode("utf-8", "replace"))
        except ValueError:
            continue
        return value
    return None


def _header(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


class UsageTap:
    """What one answer reported, read as its chunks pass (`feed`); `usage()` at the end."""

    def __init__(self, stream: bool) -> None:
        self._counts = UsageCounts()
        self._sse = SseUsageScanner(self._counts) if stream else None
        self._json = None if stream else JsonTailScanner(self._counts)

    @classmethod
    def for_answer(cls, status: int, headers: Sequence[tuple[str, str]]) -> UsageTap | None:
        """A tap for a successful event stream or JSON answer; None for any other."""
        if not 200 <= status < 300 or _header(headers, "content-encoding") not in (
            None,
            "identity",
        ):
            return None
        media = (_header(headers, "content-type") or "").partition(";")[0].strip().lower()
        if media == "text/event-stream":
            return cls(stream=True)
        if media == "application/json" or media.endswith("+json"):
            return cls(stream=False)
        return None

    def feed(self, chunk: bytes) -> None:
        """Read one chunk; never raises."""
        try:
            if self._sse is not None:
                self._sse.feed(chunk)
            elif self._json is not None:
                self._json.feed(chunk)
        except Exception:  # a bug here must never fail a call
            self._sse = self._json = None

    def usage(self) -> TokenUsage | None:
        """The tokens the answer reported, or None; never raises."""
        try:
            if self._json is not None:
                self._json.finish()
                self._json = None
            return self._counts.usage()
        except Exception:
            return None
