"""Routes of the trial resource: pages, single trials, the Pareto front, the best trial and CSV."""

from __future__ import annotations

import csv
import io
import json
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response

from api.deps import StoreDep
from api.errors import no_best_trial, trial_not_found
from api.routes.responses import json_response
from api.schemas import (
    MAX_SKIP,
    Message,
    SortOrder,
    TrialPublic,
    TrialSortKey,
    TrialsPublic,
    TrialState,
)
from qsearch.search.results import METRIC_ATTRS

router = APIRouter(prefix="/studies/{name}", tags=["trials"])

NOT_FOUND = {404: {"model": Message}}


@router.get("/trials", response_model=TrialsPublic, responses=NOT_FOUND)
def read_trials(
    name: str,
    store: StoreDep,
    skip: Annotated[int, Query(ge=0, le=MAX_SKIP)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    state: TrialState | None = None,
    sort_by: TrialSortKey = "number",
    order: SortOrder = "asc",
) -> Response:
    """List a study's trials, filtered by state and sorted by number or a metric."""
    snapshot = store.snapshot(name)
    trials = snapshot.sorted_trials(sort_by, descending=order == "desc")
    if state is not None:
        trials = [trial for trial in trials if trial.state == state]
    return json_response(snapshot.trials_json(trials[skip : skip + limit], len(trials)))


CSV_RESPONSE = {200: {"content": {"text/csv": {}}, "description": "One row per trial"}}


@router.get("/trials.csv", response_class=Response, responses={**CSV_RESPONSE, **NOT_FOUND})
def read_trials_csv(name: str, store: StoreDep) -> Response:
    """Download every trial of a study as CSV, one row per trial."""
    trials = store.snapshot(name).trials
    return Response(
        trials_csv(trials),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}-trials.csv"'},
    )


@router.get("/trials/{number}", response_model=TrialPublic, responses=NOT_FOUND)
def read_trial(name: str, number: int, store: StoreDep) -> Response:
    """Read one trial: parameters, metrics, per-epoch curve, state, timing and failure reason."""
    snapshot = store.snapshot(name)
    trial = snapshot.trial(number)
    if trial is None:
        raise HTTPException(status_code=404, detail=trial_not_found(name, number))
    return json_response(snapshot.trial_json(trial))


@router.get("/pareto", response_model=TrialsPublic, responses=NOT_FOUND)
def read_pareto_front(name: str, store: StoreDep) -> Response:
    """List the trials on the Pareto front of a study's objectives."""
    snapshot = store.snapshot(name)
    front = snapshot.study.pareto_front
    return json_response(snapshot.trials_json(front, len(front)))


@router.get("/best", response_model=TrialPublic, responses=NOT_FOUND)
def read_best_trial(name: str, store: StoreDep) -> Response:
    """Read the feasible trial with the highest validation accuracy."""
    snapshot = store.snapshot(name)
    best = snapshot.study.best_trial
    if best is None:
        raise HTTPException(status_code=404, detail=no_best_trial(name))
    return json_response(snapshot.trial_json(best))


def trials_csv(trials: list[TrialPublic]) -> str:
    """Return the trials as CSV: fixed columns, then one column per parameter, value and metric."""
    param_names = sorted({key for trial in trials for key in trial.params})
    value_names = sorted({key for trial in trials for key in trial.values or {}})
    metric_names = [key for key in METRIC_ATTRS if any(key in trial.metrics for trial in trials)]
    fixed = ["number", "state", "feasible", "datetime_start", "datetime_complete", "duration_s"]
    reasons = ["fail_reason", "infeasible_reason", "curve"]

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        fixed
        + [f"params_{key}" for key in param_names]
        + [f"values_{key}" for key in value_names]
        + metric_names
        + reasons
    )
    for trial in trials:
        values = trial.values or {}
        writer.writerow(
            [
                trial.number,
                trial.state,
                trial.feasible,
                trial.datetime_start.isoformat() if trial.datetime_start else "",
                trial.datetime_complete.isoformat() if trial.datetime_complete else "",
                trial.duration_s if trial.duration_s is not None else "",
            ]
            + [trial.params.get(key, "") for key in param_names]
            + [values.get(key, "") for key in value_names]
            + [trial.metrics.get(key, "") for key in metric_names]
            + [trial.fail_reason or "", trial.infeasible_reason or "", json.dumps(trial.curve)]
        )
    return buffer.getvalue()
