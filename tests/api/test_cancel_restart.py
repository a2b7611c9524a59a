"""Cancelling a running study, and restarting the server in the middle of a study."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import optuna
import pytest
from live_server import LiveServer

from qsearch.client import Client
from qsearch.search.results import study_result
from qsearch.service import registry
from qsearch.storage import open_optuna_storage
from tests.tiny_spec import tiny_spec

TRAINING = {"batch_size": 128, "lr": 0.01}


def poll(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}")


@pytest.fixture(scope="module")
def one_worker(launch: Any) -> LiveServer:
    return launch(workers=1)


def study_trials(server: LiveServer, name: str) -> list[Any]:
    """Return the study's trials as stored by Optuna."""
    storage = open_optuna_storage(server.storage_url)
    return study_result(optuna.load_study(study_name=name, storage=storage)).trials


def running_trial(client: Client, name: str) -> dict[str, Any] | None:
    """Return a running trial that has written its curve, or None."""
    trials = client.list_trials(name, state="running")["data"]
    return next((trial for trial in trials if trial["curve"]), None)


def test_cancel_stops_running_trial(one_worker: LiveServer) -> None:
    # Enough epochs that the cancel lands while the trial still trains, even
    # on a fast machine; a cancel seen after the last epoch is not a stop.
    spec = tiny_spec("long", n_trials=20, training={"epochs": 150, **TRAINING})
    with one_worker.client() as client, one_worker.http() as http:
        client.create_study(spec)
        trial = poll(lambda: running_trial(client, "long"), 120, "a running trial")

        busy_delete = http.delete("/studies/long")
        cancelled = http.post("/studies/long/cancel")
        stopped = poll(
            lambda: client.list_trials("long", state="running")["count"] == 0, 30, "the stop"
        )
        trials_after_stop = client.list_trials("long")["count"]
        time.sleep(3)  # longer than a worker's poll interval
        study = client.get_study("long")
        again = http.post("/studies/long/cancel")
        stored = {t.number: t for t in study_trials(one_worker, "long")}
        deleted = http.delete("/studies/long")

    assert busy_delete.status_code == 409
    assert busy_delete.json() == {
        "detail": "study 'long' is running; cancel it before deleting it."
    }
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert stopped
    stopped_trial = stored[trial["number"]]
    assert stopped_trial.state == "FAIL"
    assert stopped_trial.fail_reason == "cancelled"
    assert len(stopped_trial.curve) < 150
    assert study["status"] == "cancelled"
    assert study["progress"]["running"] == 0
    assert study["progress"]["complete"] + study["progress"]["failed"] == trials_after_stop
    assert again.status_code == 409
    assert again.json() == {
        "detail": "study 'long' has already finished with status cancelled; there is nothing "
        "to cancel."
    }
    assert deleted.status_code == 204


def test_restart_mid_study_loses_nothing(one_worker: LiveServer) -> None:
    spec = tiny_spec("resumed", n_trials=6, training={"epochs": 10, **TRAINING})
    with one_worker.client() as client:
        client.create_study(spec)
        poll(
            lambda: client.get_study("resumed")["progress"]["complete"] >= 1,
            120,
            "the first complete trial",
        )

    exit_code = one_worker.stop()
    row = registry.get_study(one_worker.storage_url, "resumed")
    one_worker.start()
    with one_worker.client() as client:
        after_restart = client.get_study("resumed")
        finished = client.wait("resumed", timeout=120)
        trials = client.list_trials("resumed")["data"]

    assert exit_code == 0
    assert row.status == "running"
    assert after_restart["status"] in ("queued", "running")
    assert after_restart["progress"]["complete"] >= 1
    assert finished["status"] == "completed"
    assert finished["progress"]["complete"] == 6
    failed = [trial for trial in trials if trial["state"] == "fail"]
    assert [trial["fail_reason"] for trial in failed] == ["interrupted"] * len(failed)
    assert "stopped 1 worker processes" in (one_worker.folder / "serve-0.log").read_text()
