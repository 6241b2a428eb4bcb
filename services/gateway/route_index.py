"""Route lookup by the path's first segment, with Starlette's own matching rules.

Starlette's `Router` tries every route in order on every request (a regular expression each);
with the REST v2, operational and model endpoints that is some twenty tries before
`/v1/chat/completions`. A route whose path starts with a literal segment (`/v1/...`,
`/api/...`, `/healthz`) can only match paths with that first segment, so `RouteIndex` tries only
the routes of the request's first segment, in their original order, plus any route whose
first segment is not literal (`/{name}`, a `Mount`). What wins is what Starlette's `Router`
would pick: the first route matching path and method, else the first matching the path only
(which answers 405), else none (404).
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette._utils import get_route_path
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Scope


def first_segment(path: str) -> str:
    """`/v1/chat/completions` -> `v1`; `/healthz` -> `healthz`; `/` -> ``."""
    return path[1:].partition("/")[0]


def _literal_first_segment(route: BaseRoute) -> str | None:
    """The first segment every path `route` matches starts with, if it is fixed."""
    if not isinstance(route, Route):
        return None
    segment = first_segment(route.path)
    return segment if segment and "{" not in segment else None


class RouteIndex:
    """The routes of an application, indexed by the first segment of their path."""

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        segments = [_literal_first_segment(route) for route in routes]
        self._unindexed = tuple(r for r, s in zip(routes, segments, strict=True) if s is None)
        self._by_segment: dict[str, tuple[BaseRoute, ...]] = {
            segment: tuple(r for r, s in zip(routes, segments, strict=True) if s in (segment, None))
            for segment in {s for s in segments if s is not None}
        }

    def match(self, scope: Scope) -> tuple[BaseRoute | None, Scope]:
        """The route serving an HTTP `scope` and its child scope (path parameters, endpoint).

        A route that matches the path but not the method is returned too; its `handle` answers
        405. No route: `(None, {})`.
        """
        segment = first_segment(get_route_path(scope))
        partial: tuple[BaseRoute, Scope] | None = None
        for route in self._by_segment.get(segment, self._unindexed):
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                return route, child_scope
            if match is Match.PARTIAL and partial is None:
                partial = (route, child_scope)
        return partial if partial is not None else (None, {})
