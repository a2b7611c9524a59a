"""Dependencies that routes declare with `Annotated`: the settings, the store and the workers."""

from __future__ import annotations

from typing import Annotated, Protocol

from fastapi import Depends, Request

from api.config import Settings
from api.crud import StudyStore


class WorkerMonitor(Protocol):
    """Status source of the worker processes that `qsearch serve` started, for /healthz."""

    def counts(self) -> tuple[int, int, int]:
        """Return (alive, expected, restarts)."""
        ...


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> StudyStore:
    return request.app.state.store


def get_workers(request: Request) -> WorkerMonitor | None:
    return request.app.state.workers


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[StudyStore, Depends(get_store)]
WorkersDep = Annotated[WorkerMonitor | None, Depends(get_workers)]
