"""The study and trial routes on a live server whose workers run the tiny study to completion."""

from __future__ import annotations

import csv
import io
from typing import Any

import optuna
import pytest
import yaml
from live_server import LiveServer

from qsearch.client import Client
from qsearch.search.results import study_result
from qsearch.storage import open_optuna_storage
from tests.tiny_spec import tiny_spec


def stored_result(server: LiveServer, name: str) -> Any:
    storage = open_optuna_storage(server.storage_url)
    return study_result(optuna.load_study(study_name=name, storage=storage))


def test_create_study_returns_201_with_location(server: LiveServer) -> None:
    with server.http() as http:
        response = http.post("/studies", json=tiny_spec("created", n_trials=1))

    assert response.status_code == 201
    assert response.headers["location"] == "/studies/created"
    study = response.json()
    assert study["name"] == "created"
    assert study["status"] in ("queued", "running")
    assert study["progress"]["n_trials"] == 1
    assert study["spec"]["model"]["params"] == {"channels": [4, 8]}


def test_create_identical_spec_returns_200(server: LiveServer) -> None:
    with server.http() as http:
        first = http.post("/studies", json=tiny_spec("twice", n_trials=1))
        second = http.post("/studies", json=tiny_spec("twice", n_trials=1))

    assert first.status_code == 201
    assert second.status_code == 200
    assert "location" not in second.headers
    assert second.json()["created_at"] == first.json()["created_at"]


def test_create_yaml_spec_same_as_json(server: LiveServer) -> None:
    body = yaml.safe_dump(tiny_spec("twice", n_trials=1))
    with server.http() as http:
        response = http.post("/studies", content=body, headers={"Content-Type": "application/yaml"})

    assert response.status_code == 200
    assert response.json()["name"] == "twice"


def test_create_different_spec_returns_409(server: LiveServer) -> None:
    with server.http() as http:
        http.post("/studies", json=tiny_spec("clash", n_trials=1))
        response = http.post("/studies", json=tiny_spec("clash", n_trials=2))

    assert response.status_code == 409
    assert response.json() == {
        "detail": "study 'clash' already exists with a different spec; choose another name "
        "or delete the existing study first."
    }


def test_study_matches_storage(server: LiveServer, finished_tiny: dict[str, Any]) -> None:
    result = stored_result(server, "tiny")

    assert finished_tiny["progress"] == {
        "n_trials": 4,
        "complete": 4,
        "pruned": 0,
        "failed": 0,
        "running": 0,
        "waiting": 0,
    }
    assert finished_tiny["baseline"] == result.baseline
    assert finished_tiny["best_trial"]["number"] == result.best_trial.number
    assert [t["number"] for t in finished_tiny["pareto_front"]] == [
        t.number for t in result.pareto_front
    ]


def test_trials_match_storage(client: Client, server: LiveServer, finished_tiny: Any) -> None:
    result = stored_result(server, "tiny")
    page = client.list_trials("tiny")

    assert page["count"] == len(result.trials) == 4
    for served, stored in zip(page["data"], result.trials, strict=True):
        assert served["number"] == stored.number
        assert served["state"] == stored.state.lower()
        assert served["params"] == stored.params
        assert served["values"] == stored.values
        assert served["metrics"] == stored.metrics
        assert served["curve"] == stored.curve
        assert len(served["curve"]) == 2
        assert served["duration_s"] > 0


def test_pareto_matches_storage(client: Client, server: LiveServer, finished_tiny: Any) -> None:
    result = stored_result(server, "tiny")

    front = client.pareto("tiny")

    assert [trial["number"] for trial in front] == [trial.number for trial in result.pareto_front]
    assert [trial["values"] for trial in front] == [trial.values for trial in result.pareto_front]


def test_best_matches_storage(client: Client, server: LiveServer, finished_tiny: Any) -> None:
    result = stored_result(server, "tiny")

    assert client.best("tiny")["number"] == result.best_trial.number


def test_trials_page_and_count(client: Client, finished_tiny: Any) -> None:
    page = client.list_trials("tiny", skip=1, limit=2)

    assert page["count"] == 4
    assert [trial["number"] for trial in page["data"]] == [1, 2]


def test_trials_filter_by_state(client: Client, finished_tiny: Any) -> None:
    assert client.list_trials("tiny", state="complete")["count"] == 4
    assert client.list_trials("tiny", state="fail") == {"data": [], "count": 0}


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_trials_sort_by_metric(client: Client, finished_tiny: Any, order: str) -> None:
    page = client.list_trials("tiny", sort_by="weight_memory_bytes", order=order)

    memory = [trial["metrics"]["weight_memory_bytes"] for trial in page["data"]]
    assert memory == sorted(memory, reverse=order == "desc")


def test_trial_detail(client: Client, finished_tiny: Any) -> None:
    trial = client.get_trial("tiny", 2)

    assert trial["number"] == 2
    assert trial["state"] == "complete"
    assert trial["fail_reason"] is None
    assert set(trial["params"]) == {"bw_w", "bw_f", "power_of_2", "noise_prob"}
    assert trial["datetime_complete"] > trial["datetime_start"]


def test_trials_csv(client: Client, finished_tiny: Any) -> None:
    rows = list(csv.DictReader(io.StringIO(client.trials_csv("tiny"))))

    assert [row["number"] for row in rows] == ["0", "1", "2", "3"]
    assert {row["state"] for row in rows} == {"complete"}
    assert "params_bw_w" in rows[0]
    assert "values_accuracy" in rows[0]
    assert "val_accuracy" in rows[0]


def test_list_studies(client: Client, finished_tiny: Any) -> None:
    page = client.list_studies(status="completed", limit=100)

    assert "tiny" in [study["name"] for study in page["data"]]
    assert page["count"] == len(page["data"])
    assert {study["status"] for study in page["data"]} == {"completed"}


def test_delete_finished_study(server: LiveServer, client: Client) -> None:
    client.create_study(tiny_spec("doomed", n_trials=1))
    client.wait("doomed", timeout=120)

    with server.http() as http:
        deleted = http.delete("/studies/doomed")
        missing = http.get("/studies/doomed")

    assert deleted.status_code == 204
    assert missing.status_code == 404
    assert missing.json() == {"detail": "study 'doomed' not found"}
    storage = open_optuna_storage(server.storage_url)
    assert "doomed" not in [s.study_name for s in optuna.get_all_study_summaries(storage)]


def test_health_reports_workers(client: Client) -> None:
    assert client.health() == {
        "status": "ok",
        "storage": "ok",
        "workers": {"alive": 2, "expected": 2, "restarts": 0},
    }
