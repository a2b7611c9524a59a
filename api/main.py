"""The FastAPI application: routers, error handlers, authentication, body limit and dashboard.

`qsearch serve` builds the app with `create_app(settings, workers)` and runs
it under uvicorn beside its worker processes. `uvicorn --factory
api.main:create_app` runs the API alone, with settings from `QSEARCH_*`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Security
from fastapi.security import HTTPBearer
from fastapi_offline import FastAPIOffline
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from api.config import MAX_BODY_BYTES, Settings
from api.crud import StudyStore
from api.dashboard import DashboardMiddleware
from api.deps import WorkerMonitor
from api.errors import install_error_handlers
from api.routes import health, login, studies, trials
from api.schemas import Message
from api.security import BodySizeLimitMiddleware, TokenAuthMiddleware
from qsearch import __version__
from qsearch.service.registry import StorageUnavailableError

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Submit quantization searches as study specs, follow their trials and read
their Pareto fronts. Worker processes run the trials; this API never trains.

When the server has an API token, send `Authorization: Bearer <token>` with
every request, or open `/login?token=<token>` once in a browser.
"""

# Swagger UI's script and styles are served from this path, not from a CDN.
DOCS_STATIC_PATH = "/docs-static"


def create_app(settings: Settings | None = None, workers: WorkerMonitor | None = None) -> FastAPI:
    """Build the API on `settings` (default: from the environment).

    `workers` reports the worker processes for /healthz; None means none
    are expected (the API alone, with `qsearch worker` elsewhere).
    """
    settings = settings or Settings.from_env()
    store = StudyStore(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            store.ensure_tables()
        except StorageUnavailableError as error:
            # The server still starts, and requests get 503 until the storage is back.
            logger.warning("storage %s is unavailable at start-up: %s", _safe_url(settings), error)
        logger.info(
            "API started on storage %s, authentication %s",
            _safe_url(settings),
            "on" if settings.api_token else "off",
        )
        yield

    # The scheme only documents the header in OpenAPI; TokenAuthMiddleware enforces it.
    security = [HTTPBearer(auto_error=False)] if settings.api_token else []
    app = FastAPIOffline(
        title="qsearch",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        redoc_url=None,
        static_url=DOCS_STATIC_PATH,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.workers = workers

    # Every route can fail these ways, and the middleware and handlers return them.
    shared_responses: dict[int | str, dict[str, Any]] = {503: {"model": Message}}
    if settings.api_token:
        shared_responses[401] = {"model": Message}
    for router in (studies.router, trials.router, health.router):
        app.include_router(
            router,
            dependencies=[Security(scheme) for scheme in security],
            responses=shared_responses,
        )
    app.include_router(login.router)
    install_error_handlers(app, retry_after_s=settings.retry_after_s)

    # The last middleware added runs first: the token check, then the body
    # limit, then the split between the dashboard and the API routes.
    app.add_middleware(
        DashboardMiddleware, storage=store.optuna_storage, retry_after_s=settings.retry_after_s
    )
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(TokenAuthMiddleware, token=settings.token_bytes())
    return app


def _safe_url(settings: Settings) -> str:
    """Return the storage URL with any password hidden, for logs."""
    try:
        return make_url(settings.storage_url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid storage URL>"
