"""AuthService over gRPC: tokens, sessions and Authenticate (thin: convert, call, convert)."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc.aio
from aicreds.vault.v1 import auth_pb2 as pb
from aicreds.vault.v1 import auth_pb2_grpc
from google.protobuf.timestamp_pb2 import Timestamp

from services.vault.servicers import caller_name
from services.vault.sessions import SessionService
from services.vault.tokens import Authentication, AuthFailure, Parent, TokenInfo, TokenService

_FAILURES = {
    AuthFailure.MALFORMED: pb.AUTH_FAILURE_MALFORMED,
    AuthFailure.UNKNOWN: pb.AUTH_FAILURE_UNKNOWN,
    AuthFailure.REVOKED: pb.AUTH_FAILURE_REVOKED,
    AuthFailure.EXPIRED: pb.AUTH_FAILURE_EXPIRED,
}


def timestamp(seconds: float | None) -> Timestamp | None:
    """Unix seconds as a Timestamp, at the microsecond the store keeps (so values round-trip)."""
    if seconds is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(datetime.fromtimestamp(seconds, UTC))
    return stamp


def token_info(info: TokenInfo) -> pb.TokenInfo:
    return pb.TokenInfo(
        id=info.id,
        user_id=info.user_id,
        name=info.name,
        prefix=info.prefix,
        scopes=info.scopes,
        created_at=timestamp(info.created_at),
        last_used_at=timestamp(info.last_used_at),
        expires_at=timestamp(info.expires_at),
        revoked_at=timestamp(info.revoked_at),
        parent_token_id=info.parent_token_id or "",
        parent_session_id=info.parent_session_id or "",
    )


def authenticate_response(result: Authentication) -> pb.AuthenticateResponse:
    return pb.AuthenticateResponse(
        authenticated=result.authenticated,
        failure=_FAILURES[result.failure] if result.failure else pb.AUTH_FAILURE_UNSPECIFIED,
        user_id=result.user_id,
        token_id=result.token_id,
        token_prefix=result.token_prefix,
        scopes=result.scopes,
        expires_at=timestamp(result.expires_at),
        session_id=result.session_id,
    )


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, tokens: TokenService, sessions: SessionService) -> None:
        self._tokens = tokens
        self._sessions = sessions

    async def CreateToken(
        self, request: pb.CreateTokenRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateTokenResponse:
        created = await self._tokens.create(
            caller_name(),
            request.user_id,
            name=request.name,
            scopes=list(request.scopes),
            expires_in_seconds=request.expires_in_seconds,
            parent=Parent(request.parent_token_id, request.parent_session_id),
        )
        return pb.CreateTokenResponse(token=created.token, info=token_info(created.info))

    async def ListTokens(
        self, request: pb.ListTokensRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListTokensResponse:
        tokens = await self._tokens.list(request.user_id)
        return pb.ListTokensResponse(tokens=[token_info(t) for t in tokens])

    async def RevokeToken(
        self, request: pb.RevokeTokenRequest, context: grpc.aio.ServicerContext
    ) -> pb.TokenInfo:
        info = await self._tokens.revoke(caller_name(), request.user_id, request.token_id)
        return token_info(info)

    async def CreateSession(
        self, request: pb.CreateSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateSessionResponse:
        created = await self._sessions.create(
            caller_name(), request.user_id, request.token_id, ttl_seconds=request.ttl_seconds
        )
        return pb.CreateSessionResponse(
            session=created.secret,
            session_id=created.info.id,
            expires_at=timestamp(created.info.expires_at),
        )

    async def RevokeSession(
        self, request: pb.RevokeSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.RevokeSessionResponse:
        revoked = await self._sessions.revoke(caller_name(), request.user_id, request.session)
        return pb.RevokeSessionResponse(revoked=revoked)

    async def Authenticate(
        self, request: pb.AuthenticateRequest, context: grpc.aio.ServicerContext
    ) -> pb.AuthenticateResponse:
        presented = request.WhichOneof("credential")
        if presented == "token":
            result = await self._tokens.authenticate(request.token)
        elif presented == "session":
            result = await self._sessions.authenticate(request.session)
        else:
            result = Authentication.refused(AuthFailure.MALFORMED)
        return authenticate_response(result)
