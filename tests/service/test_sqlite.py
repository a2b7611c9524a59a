"""SQLite, the embedded default: the API and the dashboard read while two workers write.

WAL mode lets readers run beside a writer, and the busy timeout makes a
second writer wait instead of failing with "database is locked".
"""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path

import optuna

from qsearch.search.results import study_result

from .conftest import QSEARCH, TINY_SPEC, Processes, trials_by_state, wait_for


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _read_until(stop: threading.Event, urls: list[str], storage: str, errors: list[str]) -> int:
    reads = 0
    while not stop.is_set():
        for url in urls:
            status, body = _get(url)
            if status != 200:
                errors.append(f"GET {url}: {status} {body[:200]!r}")
            reads += 1
        try:
            study_result(optuna.load_study(study_name="wal", storage=storage))
        except KeyError:
            pass  # no worker has created the study yet
        except Exception as error:
            errors.append(f"study_result: {type(error).__name__}: {error}")
        reads += 1
    return reads


def test_sqlite_readers_beside_workers(tmp_path: Path, processes: Processes):
    storage = f"sqlite:///{tmp_path / 'qsearch.db'}"
    api_port, dashboard_port = _free_port(), _free_port()
    api = processes.start(
        [*QSEARCH, "serve", "--storage", storage, "--workers", "0", "--port", str(api_port)]
    )
    dashboard = processes.start(
        [*QSEARCH, "dashboard", "--storage", storage, "--port", str(dashboard_port)]
    )
    api_url = f"http://127.0.0.1:{api_port}"
    dashboard_url = f"http://127.0.0.1:{dashboard_port}"

    def answers(url: str) -> bool:
        try:
            return _get(url)[0] == 200
        except OSError:
            return False

    wait_for(lambda: answers(f"{api_url}/healthz"), 120, "the API did not start")
    wait_for(lambda: answers(f"{dashboard_url}/api/studies"), 120, "the dashboard did not start")
    request = urllib.request.Request(
        f"{api_url}/studies",
        data=json.dumps({**TINY_SPEC, "name": "wal", "n_trials": 8}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 201

    stop = threading.Event()
    errors: list[str] = []
    urls = [
        f"{api_url}/studies/wal",
        f"{api_url}/studies/wal/trials",
        f"{api_url}/studies",
        f"{dashboard_url}/api/studies",
    ]
    reads: list[int] = []
    reader = threading.Thread(
        target=lambda: reads.append(_read_until(stop, urls, storage, errors)), daemon=True
    )
    reader.start()
    workers = processes.worker(storage, "--study", "wal", "--concurrency", "2", "--exit-when-idle")
    try:
        assert processes.wait(workers, 180) == 0, processes.log(workers)
    finally:
        stop.set()
        reader.join(timeout=60)

    assert errors == []
    assert reads[0] > 20
    trials = trials_by_state(storage, "wal")
    assert list(trials) == ["COMPLETE"]
    assert len(trials["COMPLETE"]) == 8
    for process in (workers, api, dashboard):
        assert "database is locked" not in processes.log(process)
    study = json.loads(_get(f"{api_url}/studies/wal")[1])
    assert study["status"] == "completed"
