"""Routes of the study resource: submit, list, read, cancel and delete studies."""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from api import crud
from api.caps import check_caps
from api.config import Settings
from api.deps import SettingsDep, StoreDep
from api.errors import UNSUPPORTED_MEDIA_TYPE
from api.routes.responses import json_response
from api.schemas import MAX_SKIP, Message, SpecErrorsPublic, StudiesPublic, StudyPublic, StudyStatus
from api.snapshots import page_json
from qsearch.search.spec import SpecError, StudySpec, load_spec

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/studies", tags=["studies"])

JSON_TYPES = ("application/json",)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")

EXAMPLE_SPEC = {
    "name": "digits_tiny",
    "dataset": {"name": "digits"},
    "model": {"name": "digits_cnn", "params": {"channels": [4, 8]}},
    "sampler": {"name": "random"},
    "training": {"epochs": 2},
    "n_trials": 4,
}
# The body is read raw so that YAML and JSON share one route; this documents it.
SPEC_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A study spec, as `qsearch run` reads it, in JSON or YAML.",
        "content": {
            "application/json": {"schema": {"type": "object"}, "example": EXAMPLE_SPEC},
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}


def parse_spec(body: bytes, content_type: str | None, settings: Settings) -> StudySpec:
    """Parse and check a spec body; raise SpecError with every problem found."""
    media_type = (content_type or JSON_TYPES[0]).partition(";")[0].strip().lower()
    if media_type not in JSON_TYPES + YAML_TYPES:
        raise HTTPException(status_code=415, detail=UNSUPPORTED_MEDIA_TYPE)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SpecError([("", f"the request body is not UTF-8 text: {error}")]) from None

    try:
        if media_type in JSON_TYPES:
            spec = load_spec(_json_mapping(text))
        else:
            # load_spec reads a one-line string ending in .yaml or .json as a file
            # path. The newline makes it document text, so no server file is read.
            spec = load_spec(text + "\n")
    except RecursionError:
        raise SpecError([("", "the study spec is nested too deeply to parse")]) from None

    problems = check_caps(spec, settings)
    if problems:
        raise SpecError(problems)
    return spec


def _json_mapping(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except ValueError as error:
        raise SpecError([("", f"the request body is not valid JSON: {error}")]) from None
    if data is None:
        raise SpecError([("", "the study spec is empty; send a JSON object")])
    if not isinstance(data, dict):
        raise SpecError(
            [("", f"a study spec must be a JSON object, but got {type(data).__name__}")]
        )
    return data


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    for key in keys:
        if keys.count(key) > 1:
            raise ValueError(f"duplicate key {key!r}")
    return dict(pairs)


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number that a study spec can use")


@router.post(
    "",
    status_code=201,
    response_model=StudyPublic,
    responses={
        200: {"model": StudyPublic, "description": "The identical spec exists already"},
        409: {"model": Message, "description": "The name holds a different spec"},
        413: {"model": Message},
        415: {"model": Message},
        422: {"model": SpecErrorsPublic, "description": "Invalid spec or over a server cap"},
    },
    openapi_extra=SPEC_BODY,
)
async def create_study(request: Request, store: StoreDep, settings: SettingsDep) -> Response:
    """Queue a study from a spec in JSON or YAML."""
    body = await request.body()
    spec = await run_in_threadpool(parse_spec, body, request.headers.get("content-type"), settings)
    snapshot, created = await run_in_threadpool(crud.submit_study, store, spec)
    if not created:
        return json_response(snapshot.study_json())
    return json_response(
        snapshot.study_json(), status_code=201, headers={"Location": f"/studies/{spec.name}"}
    )


@router.get("", response_model=StudiesPublic)
def read_studies(
    store: StoreDep,
    skip: Annotated[int, Query(ge=0, le=MAX_SKIP)] = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    status: StudyStatus | None = None,
) -> Response:
    """List studies, newest first."""
    snapshots, count = crud.list_studies(store, skip=skip, limit=limit, status=status)
    return json_response(page_json([snapshot.study_json() for snapshot in snapshots], count))


@router.get("/{name}", response_model=StudyPublic, responses={404: {"model": Message}})
def read_study(name: str, store: StoreDep) -> Response:
    """Read a study: spec, status, progress, baseline, best trial and Pareto front."""
    return json_response(store.snapshot(name).study_json())


@router.post(
    "/{name}/cancel",
    response_model=StudyPublic,
    responses={404: {"model": Message}, 409: {"model": Message}},
)
def cancel_study(name: str, store: StoreDep) -> Response:
    """Cancel a queued or running study; running trials stop at an epoch's end."""
    return json_response(crud.cancel_study(store, name).study_json())


@router.delete(
    "/{name}", status_code=204, responses={404: {"model": Message}, 409: {"model": Message}}
)
def delete_study(name: str, store: StoreDep) -> Response:
    """Delete a finished study with its trials and weights."""
    crud.delete_study(store, name)
    return Response(status_code=204)
