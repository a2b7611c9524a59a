"""Optuna dashboard, served read-only by the API process on the same storage.

The dashboard's page loads `/static/bundle.js` and its script fetches
`/api/...` from the site root (optuna-dashboard 0.21 has no URL prefix
setting), so besides `/dashboard` those root paths go to the dashboard's
WSGI app too. None of them collides with a qsearch route.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import optuna
import optuna_dashboard
from a2wsgi import WSGIMiddleware
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import DASHBOARD_READ_ONLY, STORAGE_UNAVAILABLE
from qsearch.service.registry import StorageUnavailableError

logger = logging.getLogger(__name__)

DASHBOARD_PATH = "/dashboard"
# Paths under the site root that the dashboard's page and script request.
DASHBOARD_ROOT_PREFIXES = ("/api/", "/static/", "/csv/", "/artifacts/")
DASHBOARD_ROOT_PATHS = ("/favicon.ico",)
# The dashboard can also delete studies, edit notes and tell trials. Here it
# only shows them, so that no study vanishes under a worker that runs it.
READ_METHODS = ("GET", "HEAD")


def is_dashboard_path(path: str) -> bool:
    """True for a path that belongs to the dashboard."""
    return (
        path == DASHBOARD_PATH
        or path.startswith(DASHBOARD_PATH + "/")
        or path.startswith(DASHBOARD_ROOT_PREFIXES)
        or path in DASHBOARD_ROOT_PATHS
    )


class DashboardMiddleware:
    """Send dashboard paths to optuna-dashboard and every other request to `app`.

    The dashboard app is built on its first request, so a server whose
    storage is down at start-up still starts and returns 503 until it is back.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        storage: Callable[[], optuna.storages.BaseStorage],
        retry_after_s: int,
    ) -> None:
        self.app = app
        self.storage = storage
        self.retry_after_s = retry_after_s
        self._dashboard: ASGIApp | None = None
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_dashboard_path(scope["path"]):
            await self.app(scope, receive, send)
            return

        if scope["method"] not in READ_METHODS:
            response = JSONResponse(
                {"detail": DASHBOARD_READ_ONLY},
                status_code=405,
                headers={"Allow": ", ".join(READ_METHODS)},
            )
            await response(scope, receive, send)
            return

        try:
            # Opening the storage blocks, so it runs off the event loop.
            dashboard = await run_in_threadpool(self._get_dashboard)
        except (StorageUnavailableError, SQLAlchemyError, optuna.exceptions.StorageInternalError):
            logger.warning("the dashboard cannot open the storage", exc_info=True)
            response = JSONResponse(
                {"detail": STORAGE_UNAVAILABLE},
                status_code=503,
                headers={"Retry-After": str(self.retry_after_s)},
            )
            await response(scope, receive, send)
            return
        await dashboard(_with_accept_encoding(scope), receive, send)

    def _get_dashboard(self) -> ASGIApp:
        with self._lock:
            if self._dashboard is None:
                wsgi_app = optuna_dashboard.wsgi(self.storage())
                self._dashboard = WSGIMiddleware(wsgi_app, workers=4)  # type: ignore[arg-type]
                logger.info("optuna-dashboard is served under %s", DASHBOARD_PATH)
            return self._dashboard


def _with_accept_encoding(scope: Scope) -> Scope:
    # optuna-dashboard 0.21 reads request.headers["Accept-Encoding"] for static
    # files, and returns 500 to a client that sends none (curl, scripts).
    headers = scope.get("headers", [])
    if any(name == b"accept-encoding" for name, _ in headers):
        return scope
    return {**scope, "headers": [*headers, (b"accept-encoding", b"identity")]}
