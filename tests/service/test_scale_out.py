"""Worker processes sharing one PostgreSQL study: budgets, crashes, pauses and shutdowns.

"Exactly n_trials" means: `counted_trials` (COMPLETE, PRUNED, and FAIL
with a recorded reason) equals the budget, and with nothing failing on
purpose every counted trial is COMPLETE. A crashed trial shows as a FAIL
without a reason, which does not count, and its retry carries the same
parameters.
"""

from __future__ import annotations

import signal
import socket
import warnings
from pathlib import Path

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from qsearch.search.results import counted_trials
from qsearch.service import registry
from qsearch.service.worker import WORKER_ATTR

from .conftest import Processes, shared_storage, submit, trials_by_state, wait_for

# A trial of the tiny CNN with 60 epochs takes roughly 4 s on one thread
# of a 2-core machine, long enough to stop a worker in the middle of it.
# Its first progress write comes one second in, which leaves about 3 s.
LONG_EPOCHS = 60


def _retried_number(trial: FrozenTrial) -> int | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)


def _worker_pid(trial: FrozenTrial) -> int | None:
    worker = trial.user_attrs.get(WORKER_ATTR)
    return int(worker.rsplit(":", 1)[1]) if worker else None


def _running_trial(url: str, name: str, pid: int | None = None) -> FrozenTrial | None:
    """A RUNNING trial of study `name` (of worker `pid`) that has written its curve."""
    try:
        study = optuna.load_study(study_name=name, storage=shared_storage(url))
    except KeyError:
        return None
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get("curve") and (pid is None or _worker_pid(trial) == pid):
            return trial
    return None


def _assert_exact_budget(url: str, name: str, n_trials: int) -> dict[str, list[FrozenTrial]]:
    trials = trials_by_state(url, name)
    study = optuna.load_study(study_name=name, storage=shared_storage(url))
    assert counted_trials(study) == n_trials
    assert len(trials["COMPLETE"]) == n_trials
    assert "RUNNING" not in trials
    assert "WAITING" not in trials
    row = registry.get_study(url, name)
    assert row.status == registry.COMPLETED
    assert row.claimed == n_trials
    # Workers sharing a study sample from differently seeded samplers.
    configurations = [tuple(sorted(t.params.items())) for t in trials["COMPLETE"]]
    assert len(set(configurations)) == len(configurations)
    return trials


def _children(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def test_two_worker_processes_finish_budget(pg_url, processes: Processes):
    submit(pg_url, "two", n_trials=8, epochs=8)

    pool = processes.worker(pg_url, "--study", "two", "--concurrency", "2", "--exit-when-idle")

    assert processes.wait(pool, 180) == 0, processes.log(pool)
    trials = _assert_exact_budget(pg_url, "two", 8)
    assert list(trials) == ["COMPLETE"]
    assert len({t.user_attrs[WORKER_ATTR] for t in trials["COMPLETE"]}) == 2
    assert processes.log(pool).count("training the float baseline") == 1


def test_four_worker_processes_finish_budget(pg_url, processes: Processes):
    submit(pg_url, "four", n_trials=8, epochs=4)

    workers = [processes.worker(pg_url, "--study", "four", "--exit-when-idle") for _ in range(4)]

    for worker in workers:
        assert processes.wait(worker, 180) == 0, processes.log(worker)
    trials = _assert_exact_budget(pg_url, "four", 8)
    assert list(trials) == ["COMPLETE"]
    assert len({t.user_attrs[WORKER_ATTR] for t in trials["COMPLETE"]}) > 1
    logs = "".join(processes.log(worker) for worker in workers)
    assert logs.count("training the float baseline") == 1
    assert "Traceback" not in logs


def test_sigkill_mid_trial_retried_with_same_params(pg_url, processes: Processes):
    submit(pg_url, "crash", n_trials=4, epochs=LONG_EPOCHS)
    victim = processes.worker(pg_url, "--study", "crash", "--exit-when-idle")
    survivor = processes.worker(pg_url, "--study", "crash", "--exit-when-idle")

    killed = wait_for(
        lambda: _running_trial(pg_url, "crash", victim.pid), 120, "the victim ran no trial"
    )
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=10) == -signal.SIGKILL

    assert processes.wait(survivor, 180) == 0, processes.log(survivor)
    trials = _assert_exact_budget(pg_url, "crash", 4)
    (failed,) = trials["FAIL"]
    assert failed.number == killed.number
    assert "fail_reason" not in failed.user_attrs
    (retry,) = [t for t in trials["COMPLETE"] if _retried_number(t) == killed.number]
    assert retry.params == failed.params
    assert f"trial {killed.number} of study crash lost its worker" in processes.log(survivor)


def test_paused_worker_late_result_dropped(pg_url, processes: Processes):
    submit(pg_url, "pause", n_trials=4, epochs=LONG_EPOCHS)
    paused = processes.worker(pg_url, "--study", "pause", "--exit-when-idle")
    other = processes.worker(pg_url, "--study", "pause", "--exit-when-idle")

    trial = wait_for(
        lambda: _running_trial(pg_url, "pause", paused.pid), 120, "the paused worker ran no trial"
    )
    paused.send_signal(signal.SIGSTOP)
    try:
        wait_for(
            lambda: trials_by_state(pg_url, "pause").get("FAIL"),
            60,
            "the other worker did not fail the paused worker's trial",
        )
    finally:
        paused.send_signal(signal.SIGCONT)

    assert processes.wait(paused, 180) == 0, processes.log(paused)
    assert processes.wait(other, 180) == 0, processes.log(other)
    assert f"dropped the late result of trial {trial.number} of study pause" in processes.log(
        paused
    )
    trials = _assert_exact_budget(pg_url, "pause", 4)
    (failed,) = trials["FAIL"]
    assert failed.number == trial.number
    (retry,) = [t for t in trials["COMPLETE"] if _retried_number(t) == trial.number]
    assert retry.params == failed.params


def test_sigterm_stops_pool_cleanly(pg_url, processes: Processes):
    submit(pg_url, "term", n_trials=20, epochs=LONG_EPOCHS)
    pool = processes.worker(pg_url, "--study", "term", "--concurrency", "2")
    wait_for(lambda: _running_trial(pg_url, "term"), 120, "the pool ran no trial")

    pool.send_signal(signal.SIGTERM)

    assert processes.wait(pool, 30) == 0, processes.log(pool)
    trials = trials_by_state(pg_url, "term")
    assert "RUNNING" not in trials
    interrupted = trials["FAIL"]
    assert {t.user_attrs["fail_reason"] for t in interrupted} == {"interrupted"}
    # Every interrupted configuration is queued again. The second worker may
    # pick up the first one's retry before its own SIGTERM arrives; then two
    # interrupted trials share one configuration and one queued retry.
    assert {tuple(sorted(t.params.items())) for t in trials["WAITING"]} == {
        tuple(sorted(t.params.items())) for t in interrupted
    }
    study = optuna.load_study(study_name="term", storage=shared_storage(pg_url))
    assert registry.get_study(pg_url, "term").claimed == counted_trials(study)


def test_pool_children_stop_when_parent_dies(pg_url, processes: Processes):
    pool = processes.worker(pg_url, "--study", "nothing_yet", "--concurrency", "2")
    wait_for(lambda: processes.log(pool).count("started on") == 2, 120, "the workers did not start")
    children = _children(pool.pid)
    assert len(children) >= 2

    pool.send_signal(signal.SIGKILL)
    pool.wait(timeout=10)

    def children_gone() -> bool:
        return not any(Path(f"/proc/{pid}").exists() for pid in children)

    wait_for(children_gone, 30, f"the workers {children} outlived their parent")
    assert processes.log(pool).count("lost its parent process; stopping") == 2


def test_worker_waits_for_unreachable_database(processes: Processes):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # free once the socket closes: nothing listens there
    worker = processes.worker(f"postgresql+psycopg://postgres@127.0.0.1:{port}/none")
    wait_for(
        lambda: "cannot reach the storage" in processes.log(worker), 60, "no warning was logged"
    )
    assert worker.poll() is None

    worker.send_signal(signal.SIGTERM)

    assert processes.wait(worker, 30) == 0, processes.log(worker)
