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


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id and the fields."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
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
        return json.dumps(line, default=str)


def configure_logging(service: str, level: str = "INFO") -> None:
    """Send every log record to stderr as JSON lines at `level`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
