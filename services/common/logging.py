"""JSON-lines logging for every service.

A log call passes structured data as `extra={"fields": {...}}`; the formatter merges it into the
line. Never put a credential value, token or key into a field or a message.

Protobuf messages print every field in their `str`/`repr` (a `ResolveResponse` its decrypted
values, a `CreateTokenResponse` its token). So that none reaches a log line by mistake, the
formatter (and `RedactingFilter`, which `configure_logging` puts on the handler for any other
formatter) renders a message found in a record's `msg`, `args` or `fields` with `redact`: the
type and its fields, secret-named ones (`SECRET_FIELDS`: values, tokens, sessions, bodies,
queries...) replaced by `<redacted>`, recursively. An exception in the same places is rendered as
its type only, as `exc_info` already is: its text may quote a message or a value.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any

from google.protobuf.message import Message

from services.common.log_buffering import BufferedStreamHandler, write_tracebacks_in_turn
from services.common.request_context import current_request_id
from services.common.tracing import current_trace_ids

REDACTED = "<redacted>"
SECRET_FIELDS = frozenset(
    {
        "value",
        "values",
        "token",
        "session",
        "credentials",
        "secret",
        "password",
        "plaintext",
        "body",
        "chunk",
        "query",
        "cookie",
    }
)
"""Protobuf field names whose content `redact` never shows (lower case)."""
SECRET_NAME_PARTS = ("secret", "passw", "plaintext", "credential", "cookie")
SECRET_NAME_SUFFIXES = ("_token", "_value", "_values", "_session", "_secret", "_key")


def is_secret_field(name: str) -> bool:
    """Whether a protobuf field of this name may hold a value, token or other secret."""
    lowered = name.lower()
    return (
        lowered in SECRET_FIELDS
        or any(part in lowered for part in SECRET_NAME_PARTS)
        or lowered.endswith(SECRET_NAME_SUFFIXES)
    )


def _render_message(message: Message) -> str:
    parts = []
    for field, value in message.ListFields():
        if is_secret_field(field.name):
            shown = REDACTED
        else:
            shown = _render_value(value)
        parts.append(f"{field.name}={shown}")
    return f"{message.DESCRIPTOR.name}({', '.join(parts)})"


def _render_value(value: Any) -> str:
    if isinstance(value, Message):
        return _render_message(value)
    if isinstance(value, Mapping):  # a map field: keys are names, values may be messages
        return "{" + ", ".join(f"{k!r}: {_render_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple) or type(value).__name__.startswith("Repeated"):
        return "[" + ", ".join(_render_value(v) for v in value) + "]"
    return repr(value)


def redact(value: Any) -> Any:
    """`value` as a log line may show it: a protobuf message as `redact`ed text, an exception as
    its type name, containers (dict, list, tuple) element by element; anything else as it is.
    Never changes `value`."""
    if isinstance(value, Message):
        return _render_message(value)
    if isinstance(value, BaseException):
        return type(value).__name__
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, tuple):
        return tuple(redact(v) for v in value)
    return value


# What log fields and arguments almost always are; checked by exact type first (a subclass takes
# the long way), since every record's every field is checked, twice.
_PLAIN_TYPES = frozenset({str, int, float, bool, type(None)})


def _needs_redaction(value: Any) -> bool:
    if type(value) in _PLAIN_TYPES:
        return False
    if isinstance(value, Message | BaseException):
        return True
    if isinstance(value, dict):
        values: Any = value.values()
    elif isinstance(value, list | tuple):
        values = value
    else:
        return False
    for item in values:
        if type(item) not in _PLAIN_TYPES and _needs_redaction(item):
            return True
    return False


def redacted_message(record: logging.LogRecord) -> str:
    """`record.getMessage()` with every message and exception in `msg` and `args` redacted."""
    if not (_needs_redaction(record.msg) or _needs_redaction(record.args)):
        return record.getMessage()
    msg = str(redact(record.msg))
    args = record.args
    if not args:
        return msg
    if isinstance(args, Mapping):
        return msg % {k: redact(v) for k, v in args.items()}
    return msg % tuple(redact(v) for v in args)


class RedactingFilter(logging.Filter):
    """Rewrites a record in place so that no formatter can print a protobuf message or an
    exception's text from its `msg`, `args` or `fields` (see `redact`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _needs_redaction(record.msg) or _needs_redaction(record.args):
            record.msg = redacted_message(record)
            record.args = None
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and _needs_redaction(fields):
            setattr(record, "fields", redact(fields))  # noqa: B010 - not a declared attribute
        return True


# json.dumps(line, default=str) builds a new encoder on every call; this is the same encoder.
_encode = json.JSONEncoder(default=str).encode


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, trace and span ids
    (when a span is current: `services.common.tracing`) and the fields."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service
        # The last record's second, formatted (one tuple: read and replaced at once); records
        # come many to a second.
        self._second: tuple[int, str] = (-1, "")

    def _time(self, record: logging.LogRecord) -> str:
        second, text = self._second
        if int(record.created) != second:
            second = int(record.created)
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, text)
        return f"{text}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self._time(record),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "message": redacted_message(record),
        }
        request_id = current_request_id()
        if request_id:
            line["request_id"] = request_id
        trace_ids = current_trace_ids()
        if trace_ids is not None:
            line["trace_id"], line["span_id"] = trace_ids
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(redact(fields) if _needs_redaction(fields) else fields)
        if record.exc_info and record.exc_info[0] is not None:
            # The exception type only: its text may hold a secret.
            line["error"] = record.exc_info[0].__name__
        return _encode(line)


#: Libraries whose DEBUG traces repr() requests and exceptions: h11's errors quote the header
#: value they refuse (a substituted credential), httpx's request lines carry the query. Held at
#: WARNING whatever the service's level; the router logs its own line per upstream call.
QUIET_LIBRARIES = ("httpcore", "httpx", "h11")


def configure_logging(service: str, level: str = "INFO") -> None:
    """Send every log record to stderr as JSON lines at `level` (`QUIET_LIBRARIES` at
    WARNING at most), written in batches off the logging thread (`log_buffering`: within
    0.1 s, WARNING and above at once, nothing lost on exit)."""
    # A record's source file, thread and process are looked up for every record unless turned
    # off (the logging HOWTO's "Optimization"); the JSON lines show none of them.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = BufferedStreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    write_tracebacks_in_turn(handler)
    for name in QUIET_LIBRARIES:
        library = logging.getLogger(name)
        library.setLevel(max(logging.WARNING, root.level))
