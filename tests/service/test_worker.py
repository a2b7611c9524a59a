"""The worker and its recovery in this process, on a fresh PostgreSQL database."""

from __future__ import annotations

import logging
import threading
import time
import warnings

import optuna
import pytest
import torch
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from qsearch.search import objective as objective_module
from qsearch.search.results import counted_trials
from qsearch.search.spec import load_spec
from qsearch.search.study import open_study
from qsearch.service import registry
from qsearch.service.recovery import StaleTrialCallback, StudyRecovery, retry_trial
from qsearch.service.worker import (
    WORKER_ATTR,
    Worker,
    WorkerSettings,
    open_heartbeat_storage,
    threads_per_worker,
)
from qsearch.storage.locks import database_lock

from .conftest import submit, trials_by_state

SETTINGS = WorkerSettings(poll_interval_s=0.1, heartbeat_interval_s=1, grace_period_s=3)


@pytest.fixture(autouse=True)
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _retried_number(trial: optuna.trial.FrozenTrial) -> int | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)


def test_worker_settings_from_env():
    settings = WorkerSettings.from_env(
        {
            "QSEARCH_HEARTBEAT_INTERVAL": "2",
            "QSEARCH_GRACE_PERIOD": "7",
            "QSEARCH_MAX_RETRY": "0",
            "QSEARCH_POLL_INTERVAL": "0.5",
        },
        data_root="/data",
    )

    assert settings == WorkerSettings(
        poll_interval_s=0.5,
        heartbeat_interval_s=2,
        grace_period_s=7,
        max_retry=0,
        data_root="/data",
    )
    assert WorkerSettings.from_env({}) == WorkerSettings()


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"QSEARCH_GRACE_PERIOD": "soon"}, "QSEARCH_GRACE_PERIOD must be a whole number"),
        ({"QSEARCH_HEARTBEAT_INTERVAL": "1.5"}, "QSEARCH_HEARTBEAT_INTERVAL must be a whole"),
        ({"QSEARCH_HEARTBEAT_INTERVAL": "0"}, "heartbeat_interval_s must be at least 1"),
        (
            {"QSEARCH_HEARTBEAT_INTERVAL": "5", "QSEARCH_GRACE_PERIOD": "5"},
            "grace_period_s must be greater than heartbeat_interval_s",
        ),
        ({"QSEARCH_MAX_RETRY": "-1"}, "max_retry must be at least 0"),
        ({"QSEARCH_POLL_INTERVAL": "0"}, "poll_interval_s must be positive"),
    ],
)
def test_worker_settings_invalid(environ, message):
    with pytest.raises(ValueError, match=message):
        WorkerSettings.from_env(environ)


def test_threads_per_worker_shares_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: set(range(8)))

    assert threads_per_worker(1) == 8
    assert threads_per_worker(3) == 2
    assert threads_per_worker(16) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads_per_worker(2) == 3


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_database_lock_excludes_other_holders(backend, pg_url, tmp_path):
    url = pg_url if backend == "postgresql" else f"sqlite:///{tmp_path / 'lock.db'}"
    interrupt = threading.Event()
    outcome = []

    def contend() -> None:
        try:
            with database_lock(url, "test", interrupt=interrupt, poll_interval_s=0.02):
                outcome.append("acquired")
        except KeyboardInterrupt:
            outcome.append("interrupted")

    with database_lock(url, "test"):
        waiter = threading.Thread(target=contend)
        waiter.start()
        time.sleep(0.3)
        assert outcome == []
        interrupt.set()
        waiter.join(timeout=5)
    assert outcome == ["interrupted"]

    interrupt.clear()
    waiter = threading.Thread(target=contend)
    waiter.start()
    waiter.join(timeout=5)
    assert outcome == ["interrupted", "acquired"]


def test_worker_runs_study_to_budget(pg_url):
    submit(pg_url, "budget", n_trials=3)

    ran = Worker(pg_url, settings=SETTINGS).run(exit_when_idle=True)

    trials = trials_by_state(pg_url, "budget")
    assert ran == 3
    assert list(trials) == ["COMPLETE"]
    assert len(trials["COMPLETE"]) == 3
    assert all(WORKER_ATTR in trial.user_attrs for trial in trials["COMPLETE"])
    row = registry.get_study(pg_url, "budget")
    assert row.status == registry.COMPLETED
    assert row.claimed == 3


def _reap_after_first_epoch(monkeypatch, url: str, name: str, reaped: list[int]) -> None:
    """Make the first trial of study `name` fail by the heartbeat check after its first epoch.

    That is what another worker does to a trial whose worker paused for
    longer than the grace period; the paused worker then resumes.
    """
    original_train = objective_module.train

    def train(*args, on_epoch=None, **kwargs):
        def epoch_then_reap(result):
            if not reaped:
                storage = optuna.storages.RDBStorage(url)
                study = optuna.load_study(study_name=name, storage=storage)
                (running,) = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                storage.set_trial_state_values(running._trial_id, TrialState.FAIL)
                StaleTrialCallback(url, max_retry=3)(study, storage.get_trial(running._trial_id))
                reaped.append(running.number)
            on_epoch(result)

        return original_train(*args, on_epoch=epoch_then_reap, **kwargs)

    monkeypatch.setattr(objective_module, "train", train)


def test_worker_drops_late_result(pg_url, monkeypatch, caplog):
    submit(pg_url, "late", n_trials=3)
    reaped: list[int] = []
    _reap_after_first_epoch(monkeypatch, pg_url, "late", reaped)

    with caplog.at_level(logging.WARNING, logger="qsearch"):
        ran = Worker(pg_url, study="late", settings=SETTINGS).run(exit_when_idle=True)

    assert reaped == [0]
    assert "dropped the late result of trial 0 of study late" in caplog.text
    trials = trials_by_state(pg_url, "late")
    assert ran == 4
    assert [trial.number for trial in trials["FAIL"]] == [0]
    assert "fail_reason" not in trials["FAIL"][0].user_attrs
    assert len(trials["COMPLETE"]) == 3
    (retry,) = [t for t in trials["COMPLETE"] if _retried_number(t) == 0]
    assert retry.params == trials["FAIL"][0].params
    study = optuna.load_study(study_name="late", storage=pg_url)
    assert counted_trials(study) == 3
    assert registry.get_study(pg_url, "late").status == registry.COMPLETED


def test_worker_stop_requeues_running_trial(pg_url, monkeypatch):
    submit(pg_url, "stopped", n_trials=2)
    worker = Worker(pg_url, study="stopped", settings=SETTINGS)
    original_train = objective_module.train

    def train(*args, on_epoch=None, **kwargs):
        def epoch_then_stop(result):
            on_epoch(result)
            worker.stop()  # as SIGTERM does

        return original_train(*args, on_epoch=epoch_then_stop, **kwargs)

    monkeypatch.setattr(objective_module, "train", train)
    assert worker.run(exit_when_idle=True) == 1

    trials = trials_by_state(pg_url, "stopped")
    (interrupted,) = trials["FAIL"]
    (queued,) = trials["WAITING"]
    assert interrupted.user_attrs["fail_reason"] == "interrupted"
    assert queued.params == interrupted.params
    assert registry.get_study(pg_url, "stopped").claimed == 0

    monkeypatch.setattr(objective_module, "train", original_train)
    assert Worker(pg_url, study="stopped", settings=SETTINGS).run(exit_when_idle=True) == 2
    trials = trials_by_state(pg_url, "stopped")
    assert len(trials["COMPLETE"]) == 2
    assert "WAITING" not in trials
    assert [t.params for t in trials["COMPLETE"] if _retried_number(t) == 0] == [interrupted.params]


def _recovery_study(url: str, name: str, grace_period_s: float = 0.0):
    spec = submit(url, name, n_trials=2)
    storage = open_heartbeat_storage(url, SETTINGS)
    study = open_study(load_spec(spec), url, optuna_storage=storage)
    recovery = StudyRecovery(
        url, storage, StaleTrialCallback(url, max_retry=3), grace_period_s=grace_period_s
    )
    return study, recovery


def test_recovery_releases_lost_slot(pg_url):
    _, recovery = _recovery_study(pg_url, "lost_slot")
    assert registry.claim_trial_slot(pg_url, "lost_slot")

    assert recovery.check(registry.get_study(pg_url, "lost_slot"))
    assert registry.get_study(pg_url, "lost_slot").claimed == 1
    # A slot claimed meanwhile restarts the observation.
    assert registry.claim_trial_slot(pg_url, "lost_slot")
    recovery.check(registry.get_study(pg_url, "lost_slot"))
    assert registry.get_study(pg_url, "lost_slot").claimed == 2

    recovery.check(registry.get_study(pg_url, "lost_slot"))
    assert registry.get_study(pg_url, "lost_slot").claimed == 0


def test_recovery_keeps_slot_within_grace_period(pg_url):
    _, recovery = _recovery_study(pg_url, "young_slot", grace_period_s=60)
    assert registry.claim_trial_slot(pg_url, "young_slot")

    recovery.check(registry.get_study(pg_url, "young_slot"))
    recovery.check(registry.get_study(pg_url, "young_slot"))

    assert registry.get_study(pg_url, "young_slot").claimed == 1


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_recovery_fails_trial_without_heartbeat(pg_url):
    study, recovery = _recovery_study(pg_url, "silent")
    assert registry.claim_trial_slot(pg_url, "silent")
    # A trial created by a worker that died before its first heartbeat.
    trial = study.ask()
    trial.suggest_int("bw_w", 2, 8)

    recovery.check(registry.get_study(pg_url, "silent"))
    assert trials_by_state(pg_url, "silent").keys() == {"RUNNING"}
    recovery.check(registry.get_study(pg_url, "silent"))

    trials = trials_by_state(pg_url, "silent")
    assert [t.number for t in trials["FAIL"]] == [trial.number]
    (queued,) = trials["WAITING"]
    assert queued.params == trials["FAIL"][0].params
    assert _retried_number(queued) == trial.number
    assert registry.get_study(pg_url, "silent").claimed == 0


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_recovery_fails_trial_with_stale_heartbeat(pg_url):
    study, recovery = _recovery_study(pg_url, "stale")
    assert registry.claim_trial_slot(pg_url, "stale")
    trial = study.ask()
    trial.suggest_int("bw_w", 2, 8)
    study._storage.record_heartbeat(trial._trial_id)

    recovery.check(registry.get_study(pg_url, "stale"))
    assert trials_by_state(pg_url, "stale").keys() == {"RUNNING"}
    time.sleep(SETTINGS.grace_period_s + 1)
    recovery.check(registry.get_study(pg_url, "stale"))

    trials = trials_by_state(pg_url, "stale")
    assert [t.number for t in trials["FAIL"]] == [trial.number]
    assert [t.params for t in trials["WAITING"]] == [trials["FAIL"][0].params]
    assert registry.get_study(pg_url, "stale").claimed == 0


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_retry_trial_stops_at_max_retry(pg_url):
    study, _ = _recovery_study(pg_url, "retries")
    trial = study.ask()
    trial.suggest_int("bw_w", 2, 8)
    study.tell(trial, state=TrialState.FAIL)
    failed = study.trials[-1]

    assert retry_trial(study, failed, max_retry=1)
    (queued,) = study.get_trials(states=(TrialState.WAITING,))
    assert not retry_trial(study, queued, max_retry=1)
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 1


def test_worker_survives_storage_outage(pg_url, monkeypatch, caplog):
    submit(pg_url, "outage", n_trials=2)
    worker = Worker(pg_url, study="outage", settings=SETTINGS)
    original = registry.next_runnable_study
    failures = iter([True, True, True])

    def flaky(url, only=None):
        if next(failures, False):
            raise registry.StorageUnavailableError("storage error: OperationalError: gone")
        return original(url, only)

    monkeypatch.setattr(registry, "next_runnable_study", flaky)
    with caplog.at_level(logging.DEBUG, logger="qsearch"):
        assert worker.run(exit_when_idle=True) == 2

    warnings_logged = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage().split(",")[0] for r in warnings_logged] == [
        f"worker {worker.identity} cannot use the storage",
        f"worker {worker.identity} reached the storage again after 3 failed attempts",
    ]
    assert registry.get_study(pg_url, "outage").status == registry.COMPLETED


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_stale_trial_callback_handles_trial_once(pg_url):
    study, _ = _recovery_study(pg_url, "twice")
    assert registry.claim_trial_slot(pg_url, "twice")
    assert registry.claim_trial_slot(pg_url, "twice")
    trial = study.ask()
    trial.suggest_int("bw_w", 2, 8)
    study.tell(trial, state=TrialState.FAIL)
    failed = study.trials[-1]
    callback = StaleTrialCallback(pg_url, max_retry=3)

    # Two workers that both marked the trial failed (possible on SQLite).
    callback(study, failed)
    callback(study, failed)

    assert len(study.get_trials(states=(TrialState.WAITING,))) == 1
    assert registry.get_study(pg_url, "twice").claimed == 1
