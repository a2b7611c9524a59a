"""Every error status of the API with its exact detail, on a live server without workers.

Without workers a submitted study stays queued, so no test here trains.
The server has a token and low caps, and its data root holds a symlink
that points outside it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_server import TOKEN, LiveServer

from qsearch.client import ApiError, Client
from tests.tiny_spec import tiny_spec

CAPS = {
    "QSEARCH_MAX_N_TRIALS": "50",
    "QSEARCH_MAX_EPOCHS": "20",
    "QSEARCH_MAX_MODEL_PARAMETERS": "100000",
    "QSEARCH_MAX_ACTIVE_STUDIES": "3",
}
PROBE_MODULE = "qsearch_import_probe"


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A module that writes a marker file when imported, to catch any import by name."""
    folder = tmp_path_factory.mktemp("probe")
    (folder / f"{PROBE_MODULE}.py").write_text(
        "import os, pathlib\n"
        "pathlib.Path(os.environ['PROBE_MARKER']).write_text('imported')\n"
        "def boom(*args, **kwargs):\n"
        "    return 'boom'\n"
    )
    return {"folder": folder, "marker": folder / "imported.txt"}


@pytest.fixture(scope="module")
def api_server(
    launch: Any, probe: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> LiveServer:
    folder = tmp_path_factory.mktemp("errors")
    outside = tmp_path_factory.mktemp("outside")
    (outside / "x.npz").write_bytes(b"")
    (folder / "data").mkdir()
    (folder / "data" / "outside").symlink_to(outside, target_is_directory=True)
    env = {**CAPS, "PYTHONPATH": str(probe["folder"]), "PROBE_MARKER": str(probe["marker"])}
    return launch(workers=0, env=env, folder=folder)


@pytest.fixture
def http(api_server: LiveServer) -> Iterator[httpx.Client]:
    with api_server.http() as client:
        yield client
        # Leave no study queued, so the active-study cap starts from zero in every test.
        for study in client.get("/studies", params={"status": "queued", "limit": 100}).json()[
            "data"
        ]:
            client.post(f"/studies/{study['name']}/cancel")


def spec_errors(response: httpx.Response) -> list[dict[str, str]]:
    assert response.status_code == 422, response.text
    return response.json()["detail"]


def test_missing_token_returns_401(api_server: LiveServer) -> None:
    response = httpx.get(f"{api_server.url}/studies")

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {
        "detail": "missing API token; send the header 'Authorization: Bearer <token>'"
    }


@pytest.mark.parametrize("path", ["/studies", "/healthz", "/docs", "/openapi.json", "/dashboard"])
def test_wrong_token_returns_401(api_server: LiveServer, path: str) -> None:
    response = httpx.get(f"{api_server.url}{path}", headers={"Authorization": "Bearer nope"})

    assert response.status_code == 401
    assert response.json() == {"detail": "invalid API token"}


def test_login_sets_cookie(api_server: LiveServer) -> None:
    with httpx.Client(base_url=api_server.url) as browser:
        login = browser.get("/login", params={"token": TOKEN, "next": "/docs"})
        docs = browser.get("/docs")

    assert login.status_code == 303
    assert login.headers["location"] == "/docs"
    assert "HttpOnly" in login.headers["set-cookie"]
    assert "SameSite=strict" in login.headers["set-cookie"]
    assert docs.status_code == 200


def test_login_wrong_token_returns_401(api_server: LiveServer) -> None:
    response = httpx.get(f"{api_server.url}/login", params={"token": "nope"})

    assert response.status_code == 401
    assert response.json() == {"detail": "invalid API token"}
    assert "set-cookie" not in response.headers


def test_login_rejects_offsite_redirect(api_server: LiveServer) -> None:
    response = httpx.get(f"{api_server.url}/login", params={"token": TOKEN, "next": "//evil"})

    assert response.status_code == 422


def test_token_not_in_access_log(api_server: LiveServer) -> None:
    httpx.get(f"{api_server.url}/login", params={"token": TOKEN})

    assert "GET /login?token=<redacted>" in api_server.log()
    assert TOKEN not in api_server.log()


def test_body_over_limit_returns_413(http: httpx.Client) -> None:
    response = http.post("/studies", content=b" " * (1024 * 1024 + 1))

    assert response.status_code == 413
    assert response.json() == {
        "detail": "request body too large; a study spec may have at most 1048576 bytes"
    }


def test_chunked_body_over_limit_returns_413(http: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b" " * 65536

    response = http.post("/studies", content=chunks())

    assert response.status_code == 413
    assert response.json() == {
        "detail": "request body too large; a study spec may have at most 1048576 bytes"
    }


def test_unsupported_content_type_returns_415(http: httpx.Client) -> None:
    response = http.post("/studies", content=b"name: x", headers={"Content-Type": "text/plain"})

    assert response.status_code == 415
    assert response.json() == {
        "detail": "unsupported content type; send application/json or application/yaml"
    }


@pytest.mark.parametrize(
    ("changes", "loc", "msg"),
    [
        (
            {"bogus": 1},
            "bogus",
            "unknown key 'bogus'; allowed keys are: name, seed, dataset, model, search_space, "
            "objectives, constraints, sampler, pruner, training, n_trials, timeout",
        ),
        (
            {"training": {"epochs": "two"}},
            "training.epochs",
            "Input should be a valid integer, but got 'two'",
        ),
        (
            {"n_trials": 51},
            "n_trials",
            "n_trials must be at most 50 on this server, but got 51",
        ),
        (
            {"training": {"epochs": 21}},
            "training.epochs",
            "epochs must be at most 20 on this server, but got 21",
        ),
        (
            {"search_space": {"epochs": {"type": "int", "low": 1, "high": 30}}},
            "search_space.epochs",
            "epochs must be at most 20 on this server, but got 30",
        ),
        (
            {"model": {"name": "digits_cnn", "params": {"channels": [512, 512]}}},
            "model.params",
            "the model must have at most 100000 parameters on this server, but these params "
            "give 2447882",
        ),
        (
            {"model": {"name": "digits_cnn", "params": {"channels": [4]}}},
            "model.params",
            "model 'digits_cnn' cannot be built: digits_cnn parameter 'channels' must be two "
            "positive integers, but got [4].",
        ),
        (
            {"n_trials": None, "timeout": 10},
            "n_trials",
            "n_trials is missing; the server runs a study until n_trials trials count",
        ),
        (
            {"timeout": 10},
            "timeout",
            "timeout is not supported by the server, but got 10.0; remove it",
        ),
        (
            {"dataset": {"name": "npz", "path": "/etc/passwd"}},
            "dataset.path",
            "dataset path '/etc/passwd' is absolute; give a path relative to the data root",
        ),
        (
            {"dataset": {"name": "npz", "path": "../x.npz"}},
            "dataset.path",
            "dataset path '../x.npz' contains '..'; give a path inside the data root",
        ),
        (
            {"dataset": {"name": "npz", "path": "outside/x.npz"}},
            "dataset.path",
            "dataset path 'outside/x.npz' resolves outside the server's data root; "
            "give a path inside it",
        ),
        (
            {"dataset": {"name": "npz", "path": "missing.npz"}},
            "dataset.path",
            "dataset file 'missing.npz' not found in the server's data root",
        ),
    ],
)
def test_invalid_spec_returns_422(
    http: httpx.Client, changes: dict[str, Any], loc: str, msg: str
) -> None:
    response = http.post("/studies", json=tiny_spec("invalid", **changes))

    assert spec_errors(response) == [{"loc": loc, "msg": msg}]


@pytest.mark.parametrize(
    ("body", "content_type", "msg"),
    [
        (
            '{"a": 1, "a": 2}',
            "application/json",
            "the request body is not valid JSON: duplicate key 'a'",
        ),
        ("[1]", "application/json", "a study spec must be a JSON object, but got list"),
        ("null", "application/json", "the study spec is empty; send a JSON object"),
        (
            '{"n_trials": NaN}',
            "application/json",
            "the request body is not valid JSON: NaN is not a number that a study spec can use",
        ),
        (
            "/etc/passwd.yaml",
            "application/yaml",
            "a study spec must be a mapping of keys to values, but got str",
        ),
    ],
)
def test_unreadable_body_returns_422(
    http: httpx.Client, body: str, content_type: str, msg: str
) -> None:
    response = http.post("/studies", content=body, headers={"Content-Type": content_type})

    assert spec_errors(response) == [{"loc": "", "msg": msg}]


@pytest.mark.parametrize(
    ("body", "content_type", "loc"),
    [
        (
            {"model": {"name": "digits_cnn", "qconfig": {"_target_": f"{PROBE_MODULE}.boom"}}},
            None,
            "model.qconfig._target_",
        ),
        ({"model": {"name": PROBE_MODULE}}, None, "model.name"),
        ({"sampler": {"name": f"{PROBE_MODULE}.boom"}}, None, "sampler"),
        ({"dataset": {"name": PROBE_MODULE}}, None, "dataset.name"),
        (f"!!python/object/apply:{PROBE_MODULE}.boom []", "application/yaml", ""),
        (f"name: !!python/name:{PROBE_MODULE}.boom", "application/yaml", ""),
        (f"name: x\nmodel: !!python/module:{PROBE_MODULE}", "application/yaml", ""),
    ],
)
def test_python_names_rejected_without_import(
    http: httpx.Client, probe: dict[str, Path], body: Any, content_type: str | None, loc: str
) -> None:
    if content_type is None:
        response = http.post("/studies", json=tiny_spec("named", **body))
    else:
        response = http.post("/studies", content=body, headers={"Content-Type": content_type})

    assert [error["loc"] for error in spec_errors(response)] == [loc]
    assert not probe["marker"].exists()


def test_import_probe_works(probe: dict[str, Path], tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"
    env = {**os.environ, "PYTHONPATH": str(probe["folder"]), "PROBE_MARKER": str(marker)}

    subprocess.run([sys.executable, "-c", f"import {PROBE_MODULE}"], env=env, check=True)

    assert marker.exists()


def test_active_study_cap_returns_422(http: httpx.Client) -> None:
    for index in range(3):
        assert http.post("/studies", json=tiny_spec(f"active{index}")).status_code == 201

    response = http.post("/studies", json=tiny_spec("active3"))

    assert spec_errors(response) == [
        {
            "loc": "",
            "msg": "the server runs at most 3 queued or running studies, and 3 are active; "
            "wait for one to finish or cancel one.",
        }
    ]


def test_study_not_found_returns_404(http: httpx.Client) -> None:
    for path in (
        "/studies/nope",
        "/studies/nope/trials",
        "/studies/nope/trials/0",
        "/studies/nope/pareto",
        "/studies/nope/best",
        "/studies/nope/trials.csv",
    ):
        response = http.get(path)
        assert response.status_code == 404, path
        assert response.json() == {"detail": "study 'nope' not found"}, path
    assert http.post("/studies/nope/cancel").json() == {"detail": "study 'nope' not found"}
    assert http.delete("/studies/nope").json() == {"detail": "study 'nope' not found"}


@pytest.mark.parametrize("name", ["no%00pe", "x" * 101, "%2E%2E", "-dash"])
def test_impossible_name_returns_404(http: httpx.Client, name: str) -> None:
    response = http.get(f"/studies/{name}")

    assert response.status_code == 404
    assert response.json()["detail"].endswith(" not found")


def test_huge_skip_returns_422(http: httpx.Client) -> None:
    response = http.get("/studies", params={"skip": 8069473395034464190464})

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "skip"]


def test_trial_not_found_returns_404(http: httpx.Client) -> None:
    http.post("/studies", json=tiny_spec("waiting-trial"))

    response = http.get("/studies/waiting-trial/trials/7")

    assert response.status_code == 404
    assert response.json() == {"detail": "trial 7 of study 'waiting-trial' not found"}


def test_best_without_trials_returns_404(http: httpx.Client) -> None:
    http.post("/studies", json=tiny_spec("waiting-best"))

    response = http.get("/studies/waiting-best/best")

    assert response.status_code == 404
    assert response.json() == {"detail": "study 'waiting-best' has no completed feasible trial yet"}


def test_delete_queued_study_returns_409(http: httpx.Client) -> None:
    http.post("/studies", json=tiny_spec("waiting-delete"))

    response = http.delete("/studies/waiting-delete")

    assert response.status_code == 409
    assert response.json() == {
        "detail": "study 'waiting-delete' is queued; cancel it before deleting it."
    }


def test_cancel_finished_study_returns_409(http: httpx.Client) -> None:
    http.post("/studies", json=tiny_spec("once"))
    first = http.post("/studies/once/cancel")

    second = http.post("/studies/once/cancel")

    assert first.status_code == 200
    assert first.json()["status"] == "cancelled"
    assert second.status_code == 409
    assert second.json() == {
        "detail": "study 'once' has already finished with status cancelled; there is nothing "
        "to cancel."
    }


def test_dashboard_write_returns_405(http: httpx.Client) -> None:
    response = http.post("/api/studies", json={})

    assert response.status_code == 405
    assert response.json() == {
        "detail": "the dashboard is read-only here; change studies through the /studies API"
    }


def test_query_out_of_range_returns_422(http: httpx.Client) -> None:
    response = http.get("/studies", params={"limit": 0})

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "limit"]


def test_client_error_carries_status_and_message(api_server: LiveServer) -> None:
    with Client(api_server.url, token=TOKEN) as client, pytest.raises(ApiError) as raised:
        client.get_study("nope")

    assert raised.value.status == 404
    assert raised.value.message == "study 'nope' not found"
    assert str(raised.value) == "HTTP 404: study 'nope' not found"


def test_client_spec_error_lists_problems(api_server: LiveServer) -> None:
    with Client(api_server.url, token=TOKEN) as client, pytest.raises(ApiError) as raised:
        client.create_study(tiny_spec("invalid", n_trials=51))

    assert raised.value.status == 422
    assert (
        raised.value.message == "n_trials: n_trials must be at most 50 on this server, but got 51"
    )


def test_storage_unavailable_returns_503(
    launch: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.mktemp("down")
    missing = folder / "not-yet"
    server = launch(workers=0, token=None, storage_url=f"sqlite:///{missing / 'qsearch.db'}")

    studies = httpx.get(f"{server.url}/studies")
    health = httpx.get(f"{server.url}/healthz")
    missing.mkdir()
    recovered = httpx.get(f"{server.url}/studies")

    assert studies.status_code == 503
    assert studies.headers["retry-after"] == "5"
    assert studies.json() == {
        "detail": "storage unavailable; retry after the number of seconds in Retry-After"
    }
    assert health.status_code == 503
    assert health.json()["storage"] == "unavailable"
    assert recovered.status_code == 200
    assert recovered.json() == {"data": [], "count": 0}
