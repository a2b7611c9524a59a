"""Error responses: one fixed detail per failure, and the handlers that map exceptions to them.

Every route returns the same status for the same failure: a missing
study is 404, a name clash or a finished study is 409, a bad spec or a
server cap is 422, and a storage failure is 503 with Retry-After.
"""

from __future__ import annotations

import logging
import threading
import time

import optuna
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from api.config import MAX_BODY_BYTES
from qsearch.search.spec import SpecError
from qsearch.service.registry import (
    StorageUnavailableError,
    StudyExistsError,
    StudyLimitError,
    StudyNotFoundError,
    StudyStateError,
)

logger = logging.getLogger(__name__)

MISSING_TOKEN = "missing API token; send the header 'Authorization: Bearer <token>'"
INVALID_TOKEN = "invalid API token"
BODY_TOO_LARGE = f"request body too large; a study spec may have at most {MAX_BODY_BYTES} bytes"
UNSUPPORTED_MEDIA_TYPE = "unsupported content type; send application/json or application/yaml"
STORAGE_UNAVAILABLE = "storage unavailable; retry after the number of seconds in Retry-After"
DASHBOARD_READ_ONLY = "the dashboard is read-only here; change studies through the /studies API"

# Seconds between two warnings about the storage, so an outage does not flood the log.
_STORAGE_WARNING_INTERVAL_S = 10.0


def study_not_found(name: str) -> str:
    return f"study {name!r} not found"


def trial_not_found(name: str, number: int) -> str:
    return f"trial {number} of study {name!r} not found"


def no_best_trial(name: str) -> str:
    return f"study {name!r} has no completed feasible trial yet"


def spec_error_body(error: SpecError) -> dict[str, list[dict[str, str]]]:
    """Return the 422 body for an invalid spec: the path and the reason of each problem."""
    return {"detail": [{"loc": path, "msg": message} for path, message in error.errors]}


class _StorageWarnings:
    """Log a storage failure at most once per interval, with the count of those not logged."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = -_STORAGE_WARNING_INTERVAL_S
        self._suppressed = 0

    def warn(self, request: Request, error: Exception) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._last < _STORAGE_WARNING_INTERVAL_S:
                self._suppressed += 1
                return
            suppressed, self._suppressed, self._last = self._suppressed, 0, now
        logger.warning(
            "storage unavailable during %s %s (%d similar failures not logged): %s: %s",
            request.method,
            request.url.path,
            suppressed,
            type(error).__name__,
            str(error).splitlines()[0] if str(error) else "",
        )


def install_error_handlers(app: FastAPI, *, retry_after_s: int) -> None:
    """Register the handlers that turn qsearch's exceptions into JSON error responses."""
    storage_warnings = _StorageWarnings()

    async def storage_unavailable(request: Request, error: Exception) -> JSONResponse:
        storage_warnings.warn(request, error)
        return JSONResponse(
            {"detail": STORAGE_UNAVAILABLE},
            status_code=503,
            headers={"Retry-After": str(retry_after_s)},
        )

    async def not_found(_request: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=404)

    async def conflict(_request: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=409)

    async def over_limit(_request: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"detail": [{"loc": "", "msg": str(error)}]}, status_code=422)

    async def invalid_spec(_request: Request, error: Exception) -> JSONResponse:
        spec_error = error if isinstance(error, SpecError) else SpecError([("", str(error))])
        return JSONResponse(spec_error_body(spec_error), status_code=422)

    for storage_error in (
        StorageUnavailableError,
        SQLAlchemyError,
        optuna.exceptions.StorageInternalError,
    ):
        app.add_exception_handler(storage_error, storage_unavailable)
    app.add_exception_handler(StudyNotFoundError, not_found)
    app.add_exception_handler(StudyExistsError, conflict)
    app.add_exception_handler(StudyStateError, conflict)
    app.add_exception_handler(StudyLimitError, over_limit)
    app.add_exception_handler(SpecError, invalid_spec)
