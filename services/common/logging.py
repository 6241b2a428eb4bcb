"""JSON-lines logging for every service.

A log call passes structured data as `extra={"fields": {...}}`; the formatter merges it into the
line. Never put a credential value, token or key into a field or a message.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from services.common.request_context import current_request_id

# json.dumps(line, default=str) builds a new encoder on every call; this is the same encoder.
_encode = json.JSONEncoder(default=str).encode


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id and the fields."""

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
            "message": record.getMessage(),
        }
        request_id = current_request_id()
        if request_id:
            line["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
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
    WARNING at most)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in QUIET_LIBRARIES:
        library = logging.getLogger(name)
        library.setLevel(max(logging.WARNING, root.level))
