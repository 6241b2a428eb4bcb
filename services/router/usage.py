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
bounded memory: for a stream only the unfinished event, at most `MAX_EVENT_BYTES` (a longer event
is skipped), an event parsed only when it holds a `"usage"` object, and a chunk without the key
searched but not copied (`SseUsageScanner`); for a JSON body only its last `JSON_TAIL_BYTES`,
where vendors put `usage`, searched once at the end. Counts merge field by field, later values
replacing earlier ones (Anthropic's are cumulative). Input tokens include cached ones (OpenAI's
`prompt_tokens` already do; Anthropic's cache fields are added), as OpenTelemetry's
`gen_ai.usage.input_tokens` asks. A missing, malformed or out-of-range count counts nothing;
nothing here raises into a call. Compressed answers (`Content-Encoding`) are not read.
"""

from __future__ import annotations

import json
import re
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
# `"usage"` as the name of an object: only an event holding one is parsed.
_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')
# A blank line: the end of an event (lines end with LF or CRLF).
_EVENT_END = re.compile(rb"\n\r?\n")
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
    """Finds the server-sent events that hold a `usage` object and parses only those.

    Fed every chunk of a stream, so the common chunk costs a few searches and no copy: a chunk
    of whole events without `"usage"` (a chat completion's deltas) is searched for its last
    event end and for the key, and dropped. Only the unfinished event at the end of what was
    fed is kept, and the next chunk searched from where it joins it; an event longer than
    `MAX_EVENT_BYTES` is skipped (while it lasts, only its last two bytes are kept, to see where
    it ends). An event is parsed only when `"usage"` names an object (OpenAI's earlier chunks
    say `"usage": null`). Lines end with LF or CRLF (a lone CR, which SSE also allows, is not
    taken for one).
    """

    def __init__(self, counts: UsageCounts) -> None:
        self._counts = counts
        self._pending = bytearray()  # the unfinished event at the end of what was fed
        self._skipping = False  # that event passed MAX_EVENT_BYTES: it is dropped to its end

    def feed(self, chunk: bytes) -> None:
        pending = self._pending
        data: bytes | bytearray = chunk
        joined_at = 0
        if pending:
            # A blank line may begin in the last two bytes kept.
            joined_at = max(0, len(pending) - 2)
            pending += chunk
            data = pending
        end = _events_end(data, joined_at)
        start = 0
        if end and self._skipping:
            first = _EVENT_END.search(data)  # the skipped event ends at the first blank line
            start = first.end() if first is not None else end
            self._skipping = False
        if end > start and data.find(_USAGE_KEY, start, end) >= 0:
            for event in _EVENT_END.split(data[start:end]):
                self._event(event)
        rest = len(data) - end
        if self._skipping or rest > MAX_EVENT_BYTES:
            self._skipping = True
            self._pending = bytearray(data[-2:])
        elif data is pending:
            del pending[:end]
        elif rest:
            self._pending = bytearray(data[end:])

    def _event(self, event: bytes | bytearray) -> None:
        """One whole event: its data parsed when it holds a `usage` object."""
        if len(event) > MAX_EVENT_BYTES or _USAGE_OBJECT.search(event) is None:
            return
        values = []
        for line in event.split(b"\n"):
            line = line.rstrip(b"\r")
            if line.startswith(b"data:"):
                value = line[5:]
                values.append(value[1:] if value.startswith(b" ") else value)
        try:
            parsed = json.loads(b"\n".join(values))
        except ValueError:
            return
        self._counts.merge(usage_of_event(parsed))


def _events_end(data: bytes | bytearray, start: int) -> int:
    """Where the last whole event in `data` ends (just after its blank line), or 0 when no
    blank line ends in `data[start:]`."""
    lf = data.rfind(b"\n\n", start)
    crlf = data.rfind(b"\n\r\n", start)
    return max(lf + 2 if lf >= 0 else 0, crlf + 3 if crlf >= 0 else 0)


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
