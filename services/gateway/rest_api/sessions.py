"""`/api/v2/sessions` (SPEC 2.5): browser sessions.

`POST` (authenticated by an API token, not by another session) asks the vault for a session
made from that token and sets it as an `HttpOnly; SameSite=Strict` cookie (`Secure` unless
`GATEWAY_COOKIE_SECURE=false`); the secret is never in the body. `DELETE /current` ends the
session of the cookie, if any, and clears the cookie; the vault revokes the tokens minted through
that session with it, so the cached answers for the session and the user go at once, on this
replica and, with a revocation feed, on the others (`revocations.py`).
"""

from __future__ import annotations

import time

from services.gateway.admission import expired_session_cookie, session_cookie
from services.gateway.auth import session_cookie_name
from services.gateway.clients import VaultClient
from services.gateway.endpoint_table import ApiCall, Endpoint, Reply
from services.gateway.revocations import Revocations
from services.gateway.schemas import TIMESTAMP, envelope, obj, timestamp_json

BASE = "/api/v2/sessions"


def endpoints(
    vault: VaultClient, revocations: Revocations, *, session_ttl: int, cookie_secure: bool
) -> list[Endpoint]:
    """The session operations: stored by `vault`; an ended session goes to `revocations`.
    `session_ttl` (seconds) and `cookie_secure` are the settings of the same names.
    """

    cookie_name = session_cookie_name(cookie_secure)

    async def create_session(call: ApiCall) -> Reply:
        created = await vault.create_session(call.user_id, call.principal.token_id, session_ttl)
        expires_at = timestamp_json(created, "expires_at")
        if created.HasField("expires_at"):
            max_age = int(created.expires_at.seconds - time.time())
        else:
            max_age = session_ttl
        cookie = session_cookie(created.session, max_age=max_age, secure=cookie_secure)
        return Reply(
            {"session_id": created.session_id, "expires_at": expires_at},
            status=201,
            headers={"Set-Cookie": cookie},
        )

    async def end_session(call: ApiCall) -> Reply:
        revoked = False
        session = call.request.cookies.get(cookie_name)
        if session:
            revoked = await vault.revoke_session(call.user_id, session)
            await revocations.session_ended(call.user_id, session)
        cookie = expired_session_cookie(cookie_secure)
        return Reply({"revoked": revoked}, headers={"Set-Cookie": cookie})

    return [
        Endpoint(
            "POST",
            BASE,
            create_session,
            "Log in: start a browser session",
            "sessions",
            envelope(
                obj(
                    {"session_id": {"type": "string"}, "expires_at": TIMESTAMP},
                    ["session_id", "expires_at"],
                )
            ),
            success_status=201,
            token_only=True,
            response_headers={"Set-Cookie": f"{cookie_name}=...; HttpOnly; SameSite=Strict"},
        ),
        Endpoint(
            "DELETE",
            BASE + "/current",
            end_session,
            "Log out: end the current session",
            "sessions",
            envelope(obj({"revoked": {"type": "boolean"}}, ["revoked"])),
            response_headers={"Set-Cookie": "clears the session cookie"},
        ),
    ]
