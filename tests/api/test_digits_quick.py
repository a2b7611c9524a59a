"""The quick digits study from studies/, submitted over HTTP and run by two workers."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from live_server import LiveServer

from qsearch.client import Client
from qsearch.search.results import study_result
from qsearch.storage import open_optuna_storage

SPEC = Path(__file__).parents[2] / "studies" / "digits_quick.yaml"


@pytest.mark.slow
def test_digits_quick_matches_storage(server: LiveServer, client: Client) -> None:
    created = client.create_study(SPEC)
    finished = client.wait("digits_quick", timeout=400)
    trials = client.list_trials("digits_quick", limit=1000)
    front = client.pareto("digits_quick")
    storage = open_optuna_storage(server.storage_url)
    stored = study_result(optuna.load_study(study_name="digits_quick", storage=storage))

    assert created["progress"]["n_trials"] == 24
    assert finished["status"] == "completed"
    # Two workers share the study, and it still runs exactly n_trials trials.
    assert trials["count"] == len(stored.trials) == 24
    assert {trial["state"] for trial in trials["data"]} == {"complete"}
    assert [(t["number"], t["params"], t["values"]) for t in trials["data"]] == [
        (t.number, t.params, t.values) for t in stored.trials
    ]
    assert [t["number"] for t in front] == [t.number for t in stored.pareto_front]
    assert finished["best_trial"]["number"] == stored.best_trial.number
    assert len(front) >= 2
