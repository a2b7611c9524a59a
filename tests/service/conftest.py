"""Fixtures for the service tests: a fresh PostgreSQL database, studies and worker processes.

PostgreSQL is expected on 127.0.0.1:5432 with trust authentication;
QSEARCH_TEST_POSTGRES (a libpq connection string to an administrative
database) points elsewhere. Each test module gets its own database,
dropped afterwards.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
import pytest

from qsearch.search.spec import load_spec
from qsearch.service import registry
from tests.tiny_spec import tiny_spec

POSTGRES_ADMIN = os.environ.get(
    "QSEARCH_TEST_POSTGRES", "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
)
QSEARCH = [sys.executable, "-m", "qsearch.cli"]

# Small heartbeat and grace periods keep the crash tests short; one torch
# thread per worker keeps several workers from oversubscribing two cores.
WORKER_ENV = {
    "QSEARCH_HEARTBEAT_INTERVAL": "1",
    "QSEARCH_GRACE_PERIOD": "3",
    "QSEARCH_POLL_INTERVAL": "0.2",
    "OMP_NUM_THREADS": "1",
}

TINY_SPEC = tiny_spec(n_trials=8)


def _load_root_conftest() -> Any:
    # tests/ is not a package, so `import conftest` would find whichever
    # conftest.py pytest imported last; load the root one by its path.
    path = Path(__file__).resolve().parents[1] / "conftest.py"
    spec = importlib.util.spec_from_file_location("qsearch_tests_root_conftest", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


require_service = _load_root_conftest().require_service


def _admin_connection() -> Any:
    import psycopg

    return psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=5)


@contextmanager
def _postgres_database() -> Iterator[str]:
    try:
        import psycopg
        from psycopg import sql
    except ImportError as error:
        require_service(False, f"psycopg is not installed: {error}")
    try:
        admin = _admin_connection()
    except psycopg.OperationalError as error:
        require_service(False, f"PostgreSQL is not reachable ({POSTGRES_ADMIN}): {error}")

    name = f"qsearch_test_{secrets.token_hex(4)}"
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        user, host, port = admin.info.user, admin.info.host, admin.info.port
    try:
        yield f"postgresql+psycopg://{user}@{host}:{port}/{name}"
    finally:
        with _admin_connection() as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """SQLAlchemy URL of a new PostgreSQL database, shared by a module and dropped after it."""
    with _postgres_database() as url:
        yield url


@pytest.fixture
def empty_pg_url() -> Iterator[str]:
    """SQLAlchemy URL of a new, empty PostgreSQL database for one test."""
    with _postgres_database() as url:
        yield url


def submit(url: str, name: str, **changes: Any) -> dict[str, Any]:
    """Register a copy of TINY_SPEC named `name`, with top-level keys or training keys changed."""
    spec_dict = copy.deepcopy(TINY_SPEC)
    spec_dict["name"] = name
    for key, value in changes.items():
        if key in ("epochs", "batch_size"):
            spec_dict["training"][key] = value
        else:
            spec_dict[key] = value
    spec = load_spec(spec_dict)
    registry.create_tables(url)
    registry.submit_study(url, spec.name, spec.to_json_dict(), spec.fingerprint(), spec.n_trials)
    return spec_dict


@functools.cache
def shared_storage(url: str) -> optuna.storages.RDBStorage:
    """Return one Optuna storage per URL for the test process.

    A URL string given to `optuna.load_study` builds a new engine with its
    own connection pool on every call, and a test that polls for a minute
    would exhaust PostgreSQL's connection limit that way.
    """
    return optuna.storages.RDBStorage(url)


def trials_by_state(url: str, name: str) -> dict[str, list[optuna.trial.FrozenTrial]]:
    study = optuna.load_study(study_name=name, storage=shared_storage(url))
    grouped: dict[str, list[optuna.trial.FrozenTrial]] = {}
    for trial in study.get_trials(deepcopy=False):
        grouped.setdefault(trial.state.name, []).append(trial)
    return grouped


def wait_for(condition: Any, timeout_s: float, message: str, interval_s: float = 0.2) -> Any:
    """Poll `condition()` until it returns a true value; fail with `message` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)
    pytest.fail(f"{message} (waited {timeout_s:.0f} s)")


class Processes:
    """Start qsearch commands as subprocesses with their output in log files; stop them all."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[tuple[subprocess.Popen, Path]] = []

    def start(
        self, args: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.Popen:
        log = self.log_dir / f"process-{len(self.started)}.log"
        with log.open("wb") as handle:
            process = subprocess.Popen(
                args,
                stdout=handle,
                stderr=subprocess.STDOUT,
                env={**os.environ, **WORKER_ENV, **(env or {})},
                cwd=cwd,
            )
        self.started.append((process, log))
        return process

    def worker(self, url: str, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        return self.start([*QSEARCH, "worker", "--storage", url, *extra], env=env)

    def log(self, process: subprocess.Popen) -> str:
        for started, path in self.started:
            if started is process:
                return path.read_text(errors="replace")
        raise LookupError(f"process {process.pid} was not started here")

    def wait(self, process: subprocess.Popen, timeout_s: float) -> int:
        try:
            return process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"process {process.args} did not exit within {timeout_s} s; its log:\n"
                f"{self.log(process)[-4000:]}"
            )

    def stop_all(self) -> None:
        for process, _ in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process, _ in self.started:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    yield started
    started.stop_all()
