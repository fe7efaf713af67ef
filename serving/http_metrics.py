"""Bounded ``endpoint`` labels for BentoML's HTTP request metrics (``/metrics``).

BentoML 1.4 records every HTTP request in ``bentoml_service_request_total``,
``..._request_duration_seconds`` and ``..._request_in_progress`` with ``endpoint=<raw request path>``
(``RunnerTrafficMetricsMiddleware`` in ``bentoml._internal.server.http.instruments``). That middleware
is the outermost one of the app ``_bentoml_impl.server.app.ServiceAppFactory`` builds: it runs before
the request guard (:class:`serving.security.RequestGuard`, added with ``add_asgi_middleware``, always
inside it) and before routing. So every invented path, even one refused with a 401 or answered with a
404, created a new label series, and ``/predict%00`` put a NUL byte into a label: any client could grow
the ``/metrics`` output, the Prometheus files and the server's memory without bound.

BentoML has no hook to place a middleware outside its metrics middleware or to choose the label, so
:func:`install` replaces the class BentoML instantiates (it is imported from its module each time an
app is built) with :class:`BoundedEndpointMetrics`, a subclass that records

- the route template for a path the app routes (``/predict``, ``/metadata``, ``/static_content/{path}``;
  whatever the method, so ``GET /predict`` still counts as ``/predict`` with code 405), and
- :data:`UNMATCHED` for every other path (unknown paths, trailing slashes, control characters),

and hands the inner app the original request unchanged: authentication, routing and the error bodies
do not see the difference. Nothing else in BentoML's metrics changes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from starlette.routing import BaseRoute, Match, Mount

from serving.security import ASGIApp, Receive, Scope, Send

logger = logging.getLogger(__name__)

UNMATCHED = "unmatched"
"""The ``endpoint`` label of requests to paths no route serves (a fixed value, not a path)."""
_ORIGINAL_SCOPE = "strata.original_scope"


def route_label(routes: Iterable[BaseRoute], scope: Scope, prefix: str = "") -> str | None:
    """The template of the route that serves ``scope`` (as Starlette's router picks it), or None.

    The first full match wins, else the first partial one (a known path with another method: 405).
    Mounted apps with routes of their own are searched; a mount without (static files) is one template.
    """
    partial: str | None = None
    for route in routes:
        match, child = route.matches(scope)
        if match == Match.NONE:
            continue
        label: str | None
        if isinstance(route, Mount) and route.routes:
            label = route_label(route.routes, {**scope, **child}, prefix + route.path)
        else:
            label = prefix + route.path_format if hasattr(route, "path_format") else None
        if label is None:
            continue
        if match == Match.FULL:
            return label
        partial = partial or label
    return partial


class _RestoreScope:
    """Inside the metrics middleware: give the rest of the app the request's original scope."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope.get(_ORIGINAL_SCOPE, scope), receive, send)


def _bounded_metrics_class(base: type[Any]) -> type[Any]:
    class BoundedEndpointMetrics(base):  # type: ignore[misc,valid-type]
        """BentoML's request-metrics middleware with the ``endpoint`` label bounded (module docstring)."""

        def __init__(self, app: ASGIApp, **options: Any) -> None:
            super().__init__(_RestoreScope(app), **options)
            self._known: set[str] = set()  # paths whose label is the path itself (at most one per route)

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] in ("http", "websocket") and scope["path"] not in self._known:
                path = scope["path"]
                app = scope.get("app")
                label = route_label(getattr(app, "routes", ()), scope) or UNMATCHED
                if label == path:
                    self._known.add(path)
                else:  # the metrics middleware reads scope["path"]; _RestoreScope undoes this for the app
                    scope = {**scope, "path": label, _ORIGINAL_SCOPE: scope}
            await super().__call__(scope, receive, send)

    return BoundedEndpointMetrics


def install() -> bool:
    """Make BentoML build its request-metrics middleware with bounded labels (idempotent).

    Must run before the app is built (importing :mod:`serving.service` does it). Returns False, with
    a warning, if this BentoML version has no such middleware where 1.4 has it.
    """
    try:
        from bentoml._internal.server.http import instruments
    except ImportError:
        logger.warning("BentoML's request metrics not found: /metrics endpoint labels are not bounded")
        return False
    base = getattr(instruments, "RunnerTrafficMetricsMiddleware", None)
    if not isinstance(base, type):
        logger.warning("BentoML's request metrics not found: /metrics endpoint labels are not bounded")
        return False
    if getattr(base, "_strata_bounded", False):
        return True
    bounded = _bounded_metrics_class(base)
    bounded._strata_bounded = True  # type: ignore[attr-defined]
    instruments.RunnerTrafficMetricsMiddleware = bounded  # type: ignore[misc]
    return True


__all__ = ["UNMATCHED", "install", "route_label"]
