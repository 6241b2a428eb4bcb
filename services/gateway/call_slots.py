"""Concurrent model calls per user: a slot is held from admission until the answer ends.

`CallSlots.acquire(user)` returns a `CallSlot` or None when the user already has `limit` calls
in flight; `CallSlot.release()` gives it back (idempotent). Only users with a call in flight
have an entry, so the table is bounded by the calls in flight. In memory, per replica: like
the rate limiter, a shared store can implement the same two methods.

`CallSlots.hold` takes a slot for an admitted request (429 `rate_limited` when there is none)
and records it in the request's scope; `held_for_the_answer` wraps the model endpoints so that
the slot is released when the answer has been sent, or the handler failed, or the request was
cancelled (the client went away mid-stream).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from services.gateway.endpoint_table import PlainEndpoint, PlainHandler
from services.gateway.errors import ApiError

#: ASGI scope key of the slot a model call holds.
SLOT_SCOPE_KEY = "aicreds.call_slot"


@dataclass
class CallSlot:
    """One call's hold on its user's allowance."""

    _slots: CallSlots = field(repr=False)
    user_id: str
    _released: bool = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._slots._give_back(self.user_id)


class CallSlots:
    """At most `limit` calls in flight per user."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._in_flight: dict[str, int] = {}

    def in_flight(self, user_id: str) -> int:
        return self._in_flight.get(user_id, 0)

    def acquire(self, user_id: str) -> CallSlot | None:
        count = self._in_flight.get(user_id, 0)
        if count >= self.limit:
            return None
        self._in_flight[user_id] = count + 1
        return CallSlot(self, user_id)

    def hold(self, request: Request, user_id: str) -> None:
        """Take a slot for this request, or raise 429 with the rate-limit headers (the
        middleware adds the admission's own headers to every error it renders)."""
        slot = self.acquire(user_id)
        if slot is None:
            raise ApiError(
                429,
                "rate_limited",
                f"too many model calls in flight for this user (at most {self.limit}); "
                "retry when one has ended",
                headers={
                    "X-RateLimit-Limit": str(self.limit),
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": "1",
                    "Retry-After": "1",
                },
            )
        request.scope[SLOT_SCOPE_KEY] = slot

    def _give_back(self, user_id: str) -> None:
        count = self._in_flight.get(user_id, 0) - 1
        if count > 0:
            self._in_flight[user_id] = count
        else:
            self._in_flight.pop(user_id, None)


class _ReleasingAnswer(Response):
    """`answer`, then the slot released, however sending it ends."""

    def __init__(self, answer: Response, slot: CallSlot) -> None:
        self._answer = answer
        self._slot = slot
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._answer(scope, receive, send)
        finally:
            self._slot.release()


def _releasing(handler: PlainHandler) -> PlainHandler:
    async def handle(request: Request) -> Response:
        try:
            answer = await handler(request)
        except BaseException:
            _release(request.scope)
            raise
        slot = request.scope.pop(SLOT_SCOPE_KEY, None)
        return answer if slot is None else _ReleasingAnswer(answer, slot)

    return handle


def _release(scope: Scope) -> None:
    slot = scope.pop(SLOT_SCOPE_KEY, None)
    if slot is not None:
        slot.release()


def held_for_the_answer(endpoints: Iterable[PlainEndpoint]) -> list[PlainEndpoint]:
    """`endpoints` whose handlers give back a slot taken by `CallSlots.hold` once answered."""
    return [dataclasses.replace(e, handler=_releasing(e.handler)) for e in endpoints]
