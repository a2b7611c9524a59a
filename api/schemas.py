"""Request and response schemas of the HTTP API.

Each resource has one family: `*Public` for one item and `*sPublic` with
`data` and `count` for a page. The study spec itself is not modelled here:
`qsearch.search.spec.StudySpec` validates it, so the API accepts exactly
what `qsearch run` accepts.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, Field

from qsearch.search.results import METRIC_ATTRS
from qsearch.service.registry import STATUSES

# Built from the registry's statuses and the metrics of qsearch.search.results,
# so the OpenAPI enums follow them; the subscript unpacks the tuple.
StudyStatus = Literal[STATUSES]  # type: ignore[valid-type]
TrialSortKey = Literal[("number", *METRIC_ATTRS)]  # type: ignore[valid-type]

# Optuna's trial states, lower-cased like the study status.
TrialState = Literal["complete", "pruned", "fail", "running", "waiting"]
SortOrder = Literal["asc", "desc"]

# Largest `skip` of a page. Databases take OFFSET as a 64-bit integer, and no
# study list or trial list comes near this many rows.
MAX_SKIP = 1_000_000_000


class TrialPublic(BaseModel):
    """One trial: its sampled parameters, objective values, metrics and per-epoch curve."""

    number: int
    state: TrialState
    params: dict[str, Any]
    # Objective name -> value, as Optuna recorded it; null until the trial completes.
    values: dict[str, float] | None
    metrics: dict[str, Any]
    # Validation accuracy after each epoch.
    curve: list[float]
    feasible: bool
    infeasible_reason: str | None
    fail_reason: str | None
    datetime_start: dt.datetime | None
    datetime_complete: dt.datetime | None
    duration_s: float | None


class TrialsPublic(BaseModel):
    """One page of trials and the number of trials that match the filter."""

    data: list[TrialPublic]
    count: int


class StudyProgress(BaseModel):
    """Trials by state against the budget; failed trials that do not count are included."""

    n_trials: int | None
    complete: int
    pruned: int
    failed: int
    running: int
    waiting: int


class StudyPublic(BaseModel):
    """A study: its spec, status, progress, float baseline, best trial and Pareto front."""

    name: str
    status: StudyStatus
    # The worker's reason for a failed study, or null.
    error: str | None
    spec: dict[str, Any]
    progress: StudyProgress
    baseline: dict[str, Any] | None
    best_trial: TrialPublic | None
    pareto_front: list[TrialPublic]
    created_at: dt.datetime
    updated_at: dt.datetime


class StudiesPublic(BaseModel):
    """One page of studies, newest first, and the number of studies that match the filter."""

    data: list[StudyPublic]
    count: int


class SpecErrorPublic(BaseModel):
    """One problem in a submitted spec: the dotted path of the field (empty for the whole
    document) and the reason."""

    loc: str
    msg: str


class SpecErrorsPublic(BaseModel):
    """The 422 response to an invalid spec."""

    detail: list[SpecErrorPublic]


class Message(BaseModel):
    """An error response with one fixed message."""

    detail: str


class WorkersPublic(BaseModel):
    """Worker processes that `qsearch serve` started; both counts are 0 without a pool."""

    alive: int = Field(ge=0)
    expected: int = Field(ge=0)
    restarts: int = Field(ge=0)


class HealthPublic(BaseModel):
    """Health of the storage and of the worker processes."""

    status: Literal["ok", "unavailable"]
    storage: Literal["ok", "unavailable"]
    workers: WorkersPublic
