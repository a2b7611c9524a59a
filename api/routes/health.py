"""Route of the health check: the storage responds and every worker process is alive."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import SettingsDep, StoreDep, WorkersDep
from api.schemas import HealthPublic, WorkersPublic
from qsearch.service import registry

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    response_model=HealthPublic,
    responses={503: {"model": HealthPublic, "description": "Storage or a worker is down"}},
)
def read_health(store: StoreDep, workers: WorkersDep, settings: SettingsDep) -> JSONResponse:
    """Check that the storage responds and that every worker process is alive."""
    try:
        store.ensure_tables()
        registry.ping(store.url)
        storage_ok = True
    except registry.StorageUnavailableError as error:
        logger.warning("health check: %s", error)
        storage_ok = False

    alive, expected, restarts = workers.counts() if workers is not None else (0, 0, 0)
    healthy = storage_ok and alive >= expected
    health = HealthPublic(
        status="ok" if healthy else "unavailable",
        storage="ok" if storage_ok else "unavailable",
        workers=WorkersPublic(alive=alive, expected=expected, restarts=restarts),
    )
    headers = {} if healthy else {"Retry-After": str(settings.retry_after_s)}
    return JSONResponse(health.model_dump(), status_code=200 if healthy else 503, headers=headers)
