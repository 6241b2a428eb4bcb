"""`JsonFormatter`: one JSON object per record, its fields and time exactly as documented."""

from __future__ import annotations

import json
import logging
import time

from services.common import request_context
from services.common.logging import JsonFormatter


def _record(created: float, **fields: object) -> logging.LogRecord:
    record = logging.LogRecord("aicreds.access", logging.INFO, __file__, 1, "rpc %s", ("x",), None)
    record.created = created
    record.msecs = (created - int(created)) * 1000
    record.fields = fields
    return record


def test_a_line_has_every_field() -> None:
    token = request_context._request_id.set("req-1")
    try:
        line = json.loads(JsonFormatter("vault").format(_record(1_700_000_000.25, code="OK")))
    finally:
        request_context._request_id.reset(token)
    assert line == {
        "time": "2023-11-14T22:13:20.250Z",
        "level": "INFO",
        "service": "vault",
        "logger": "aicreds.access",
        "message": "rpc x",
        "request_id": "req-1",
        "code": "OK",
    }


def test_the_time_follows_every_record_across_seconds() -> None:
    formatter = JsonFormatter("router")
    for created in (1_700_000_000.999, 1_700_000_001.0, 1_700_000_000.5, 1_700_003_600.042):
        expected = (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
            + f".{int((created - int(created)) * 1000):03d}Z"
        )
        assert json.loads(formatter.format(_record(created)))["time"] == expected


def test_values_that_json_cannot_hold_are_strings() -> None:
    line = json.loads(JsonFormatter("gateway").format(_record(0.0, path=object)))
    assert line["path"] == str(object)


def test_a_bound_request_id_is_on_the_line_until_unbound() -> None:
    formatter = JsonFormatter("gateway")
    token = request_context.bind_request_id("req-http")
    try:
        assert json.loads(formatter.format(_record(1.0)))["request_id"] == "req-http"
    finally:
        request_context.unbind_request_id(token)
    assert "request_id" not in json.loads(formatter.format(_record(1.0)))
