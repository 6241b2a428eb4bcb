"""No protobuf message that carries a value, token or session can print it into a log line:
logged as the message, as an argument, in `extra` (fields or not), inside a container, or
quoted in an exception's text, through the services' logging configuration."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from aicreds.router.v1 import router_pb2
from aicreds.vault.v1 import auth_pb2, credentials_pb2, providers_pb2

from services.common.logging import REDACTED, configure_logging, redact

VALUE = "sk-live-LOGVALUE-0123456789abcdef"
TOKEN = "sk-aic-LOGTOKEN-0123456789abcdefghijklmnop"
SESSION = "sess-LOGSESSION-0123456789abcdef"
HEADER = "Bearer sk-live-LOGHEADER-0123456789"
BODY = b'{"prompt": "LOGBODY-secret"}'
SECRETS = (VALUE, TOKEN, SESSION, "LOGHEADER", "LOGBODY", "LOGQUERY")


def _provider() -> providers_pb2.Provider:
    return providers_pb2.Provider(
        name="openai",
        base_url="https://api.openai.com/v1",
        headers={"Authorization": providers_pb2.HeaderValues(values=[HEADER])},
    )


MESSAGES = [
    credentials_pb2.ResolveResponse(provider=_provider(), values={"openai_api_key": VALUE}),
    credentials_pb2.GetCredentialsResponse(credentials={"k": VALUE}),
    credentials_pb2.ReplaceCredentialsRequest(user_id="u", credentials={"k": VALUE}),
    credentials_pb2.GetCredentialResponse(key="k", value=VALUE),
    credentials_pb2.PutCredentialRequest(user_id="u", key="k", value=VALUE),
    credentials_pb2.PutCredentialResponse(key="k", value=VALUE),
    auth_pb2.CreateTokenResponse(token=TOKEN, info=auth_pb2.TokenInfo(id="t1", prefix="sk-aic-L")),
    auth_pb2.AuthenticateRequest(token=TOKEN),
    auth_pb2.AuthenticateRequest(session=SESSION),
    auth_pb2.CreateSessionResponse(session=SESSION, session_id="s1"),
    auth_pb2.RevokeSessionRequest(user_id="u", session=SESSION),
    providers_pb2.CreateProviderRequest(user_id="u", provider=_provider()),
    router_pb2.InvokeRequest(
        user_id="u",
        provider_name="openai",
        query="key=LOGQUERY",
        headers=[router_pb2.Header(name="Authorization", value=HEADER)],
        body=BODY,
    ),
]


class _Written:
    """What the service's handler wrote to `buffer`, once it has flushed."""

    def __init__(self, handler: logging.Handler, buffer: io.StringIO) -> None:
        self._handler = handler
        self._buffer = buffer

    def getvalue(self) -> str:
        self._handler.flush()
        return self._buffer.getvalue()


@pytest.fixture
def service_log() -> Iterator[_Written]:
    """The services' logging configuration, writing to a buffer."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging("test", "DEBUG")
    (handler,) = root.handlers
    assert isinstance(handler, logging.StreamHandler)
    buffer = io.StringIO()
    handler.setStream(buffer)
    # The handler writes in batches; flushing first gives every line logged so far.
    yield _Written(handler, buffer)
    root.handlers[:], level = saved
    root.setLevel(level)
    for name in ("httpcore", "httpx", "h11"):
        logging.getLogger(name).setLevel(logging.NOTSET)


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_a_message_logged_any_way_shows_no_secret(service_log: _Written, message: object) -> None:
    before = message.SerializeToString()  # type: ignore[attr-defined]
    log = logging.getLogger("aicreds.test")
    log.info(message)
    log.info("answer %s", message)
    log.info("answer %r", message)
    log.info("answer %(m)s", {"m": message})
    log.info("answer", extra={"fields": {"answer": message, "many": [message, (message,)]}})
    log.info("answer", extra={"answer": message})
    try:
        raise RuntimeError(f"could not handle {message}")
    except RuntimeError as err:
        log.exception("failed")
        log.warning("failed: %s", err)
        log.warning("failed", extra={"fields": {"error": err}})
    text = service_log.getvalue()
    assert text.count("\n") == 9
    for secret in SECRETS:
        assert secret not in text
    assert type(message).__name__ in text  # still says what it was
    # Redaction reads the message; it never changes it.
    assert message.SerializeToString() == before  # type: ignore[attr-defined]


def test_redact_keeps_names_and_masks_values() -> None:
    shown = redact(MESSAGES[0])
    assert "ResolveResponse(" in shown and "openai" in shown and "api.openai.com" in shown
    assert f"values={REDACTED}" in shown
    assert VALUE not in shown and "LOGHEADER" not in shown
    token = redact(MESSAGES[6])
    assert f"token={REDACTED}" in token and "id='t1'" in token


def test_plain_records_are_unchanged(service_log: _Written) -> None:
    logging.getLogger("aicreds.test").info("%s calls, %d ok", "two", 2, extra={"fields": {"n": 1}})
    line = service_log.getvalue()
    assert '"message": "two calls, 2 ok"' in line and '"n": 1' in line
