"""Work a call leaves until its answer is on its way: its log lines, metrics, usage report.

On a long-lived stream (the vault's `ResolveStream`, the router's `InvokeBufferedStream`) a call
is a task of its own that puts its answer in the stream's queue (`stream_answers`); the stream's
writer sends it on its next step. What the call's task does after that, or just before it in
code that only reports (the router's upstream-call line, the access-log line, metrics, the usage
report), runs before the writer's step and so delays the answer: at one call at a time about
55 µs per call in the router and 40 µs in the vault, of a call's 1.3 ms through the stack.

Such work goes through `after_answer`. In a call whose task began with `defer_until_answered`,
it waits, in order, until the task calls `answered` with its answer queued; it then runs from
the event loop right after the writer's step (`call_soon` keeps the loop's first-in, first-out
order, and queueing the answer woke the writer first), in the call's context, so a log line
still carries the call's request id. Anywhere else (a unary RPC, a test) it runs at once.

Nothing here waits: deferred work runs within the same turn of the event loop, and whatever it
reports (a duration) the caller measured before deferring it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from functools import partial

_log = logging.getLogger("aicreds")

Deferred = list[Callable[[], object]]

_deferred: contextvars.ContextVar[Deferred | None] = contextvars.ContextVar(
    "aicreds_after_answer", default=None
)


def after_answer(work: Callable[..., object], *args: object) -> None:
    """Run `work(*args)` once the current call is answered, or now outside such a call."""
    deferred = _deferred.get()
    if deferred is None:
        work(*args)
    else:
        deferred.append(partial(work, *args))


def defer_until_answered() -> Deferred:
    """From here on, in this task's context, `after_answer` defers; returns what `answered`
    takes. Call it first in the task of one call (each task has its own copy of the context)."""
    deferred: Deferred = []
    _deferred.set(deferred)
    return deferred


def answered(deferred: Deferred) -> None:
    """The call's answer is queued: run what it deferred right after the writer's step. Later
    `after_answer` work of this task runs at once."""
    _deferred.set(None)
    if deferred:
        asyncio.get_running_loop().call_soon(_run, deferred)


def _run(deferred: Deferred) -> None:
    for work in deferred:
        try:
            work()
        except Exception as err:  # a report failed: never the call, already answered
            # The type only: an exception's text may carry a secret.
            _log.error("reporting a call failed", extra={"fields": {"error": type(err).__name__}})
