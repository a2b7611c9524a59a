"""Worker processes: claim trial slots of registered studies and run the trials.

Any number of workers, on one machine or many, share one database. Each
trial runs under Optuna's heartbeat, so a trial whose worker died is
failed after the grace period, its slot is released and it is retried
with the same parameters (see qsearch.service.recovery).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import optuna
import sqlalchemy
import torch
from optuna.exceptions import (
    ExperimentalWarning,
    StorageInternalError,
    UpdateFinishedTrialError,
)
from optuna.trial import FrozenTrial, TrialState

from qsearch.data import DatasetSplits
from qsearch.search.heap import frozen_heap
from qsearch.search.objective import Objective
from qsearch.search.results import is_counted
from qsearch.search.spec import StudySpec, load_spec
from qsearch.search.study import (
    builtin_model_factory,
    ensure_baseline,
    load_splits,
    open_study,
    record_data,
)
from qsearch.service import registry
from qsearch.service.recovery import (
    StaleTrialCallback,
    StudyRecovery,
    complete_if_done,
    retry_trial,
)
from qsearch.storage.engine import open_optuna_storage
from qsearch.storage.locks import create_schema, database_lock

logger = logging.getLogger(__name__)

# Trial user attribute naming the worker that ran it, as "host:pid".
WORKER_ATTR = "worker"

# Errors of an unreachable or failing database: the worker waits and retries.
STORAGE_ERRORS = (
    registry.StorageUnavailableError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    StorageInternalError,
)

# Longest wait in seconds between attempts at reaching the storage at start-up.
MAX_START_DELAY_S = 30.0

# Environment variables that set WorkerSettings fields.
SETTINGS_ENV = {
    "poll_interval_s": "QSEARCH_POLL_INTERVAL",
    "heartbeat_interval_s": "QSEARCH_HEARTBEAT_INTERVAL",
    "grace_period_s": "QSEARCH_GRACE_PERIOD",
    "max_retry": "QSEARCH_MAX_RETRY",
}


@dataclass(frozen=True)
class WorkerSettings:
    """Polling, heartbeat and retry settings of a worker, with times in seconds.

    A trial whose heartbeat is older than `grace_period_s` is failed and
    retried up to `max_retry` times with the same parameters.
    """

    poll_interval_s: float = 1.0
    heartbeat_interval_s: int = 5
    grace_period_s: int = 30
    max_retry: int = 3
    data_root: str | None = None

    def __post_init__(self) -> None:
        if self.poll_interval_s <= 0:
            raise ValueError(f"poll_interval_s must be positive, but got {self.poll_interval_s!r}.")
        if self.heartbeat_interval_s < 1:
            raise ValueError(
                f"heartbeat_interval_s must be at least 1, but got {self.heartbeat_interval_s!r}."
            )
        if self.grace_period_s <= self.heartbeat_interval_s:
            raise ValueError(
                "grace_period_s must be greater than heartbeat_interval_s, or live trials are "
                f"failed, but got {self.grace_period_s!r} <= {self.heartbeat_interval_s!r}."
            )
        if self.max_retry < 0:
            raise ValueError(f"max_retry must be at least 0, but got {self.max_retry!r}.")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> WorkerSettings:
        """Settings from QSEARCH_POLL_INTERVAL, QSEARCH_HEARTBEAT_INTERVAL,
        QSEARCH_GRACE_PERIOD and QSEARCH_MAX_RETRY, with `overrides` on top."""
        environ = os.environ if environ is None else environ
        types = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for name, variable in SETTINGS_ENV.items():
            text = environ.get(variable)
            if text is None or text == "":
                continue
            convert = float if types[name] == "float" else int
            try:
                values[name] = convert(text)
            except ValueError:
                kind = "a number" if convert is float else "a whole number"
                raise ValueError(f"{variable} must be {kind}, but got {text!r}.") from None
        return cls(**{**values, **overrides})


@dataclass
class _StudyContext:
    fingerprint: str
    spec: StudySpec
    splits: DatasetSplits
    study: optuna.Study
    objective: Objective
    finished: list[FrozenTrial] = field(default_factory=list)
    # Number of the trial that the current optimize call created, if any.
    current: int | None = None


def open_heartbeat_storage(url: str, settings: WorkerSettings) -> optuna.storages.RDBStorage:
    """Optuna storage with heartbeats; a stale trial is retried and releases its slot."""
    with warnings.catch_warnings():
        # Optuna marks heartbeats experimental; workers depend on them by design.
        warnings.simplefilter("ignore", ExperimentalWarning)
        return open_optuna_storage(
            url,
            heartbeat_interval=settings.heartbeat_interval_s,
            grace_period=settings.grace_period_s,
            heartbeat_stale_trial_callback=StaleTrialCallback(url, settings.max_retry),
        )


def _safe_url(url: str) -> str:
    return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)


class Worker:
    """Run trials of registered studies until stopped.

    `study` limits the worker to one study. Setting `stop_event` (or
    calling `stop`) interrupts the running trial within one batch: it is
    recorded as failed with the reason "interrupted", queued again with the
    same parameters and its slot released, and `run` returns.
    """

    def __init__(
        self,
        storage_url: str,
        *,
        study: str | None = None,
        settings: WorkerSettings | None = None,
        stop_event: threading.Event | None = None,
    ) -> None:
        self.url = storage_url
        self.only = study
        self.settings = settings or WorkerSettings()
        self.stop_event = stop_event or threading.Event()
        self.identity = f"{socket.gethostname()}:{os.getpid()}"
        self._storage = open_heartbeat_storage(storage_url, self.settings)
        create_schema(storage_url, lambda: registry.create_tables(storage_url))
        self._recovery = StudyRecovery(
            storage_url,
            self._storage,
            self._storage.get_heartbeat_stale_trial_callback(),
            self.settings.grace_period_s,
        )
        self._contexts: dict[str, _StudyContext] = {}
        self._storage_failures = 0
        self._reported_missing = False
        self._next_recovery = 0.0
        self._active = True

    def stop(self) -> None:
        self.stop_event.set()

    def run(self, *, exit_when_idle: bool = False) -> int:
        """Run trials until stopped (or, with `exit_when_idle`, until no study is active).

        A study is active while it is queued or running in the registry, so
        an idle worker waits for other workers' trials and takes over the
        retries of trials whose worker died. Returns the number of trials
        this worker ran.
        """
        logger.info("worker %s started on %s", self.identity, _safe_url(self.url))
        with frozen_heap():
            ran = self._run_loop(exit_when_idle)
        logger.info("worker %s stopped after %d trials", self.identity, ran)
        return ran

    def _run_loop(self, exit_when_idle: bool) -> int:
        ran = 0
        while not self.stop_event.is_set():
            try:
                name = registry.next_runnable_study(self.url, self.only)
                if name is not None:
                    ran += self.run_one_trial(name)
                    active = True
                else:
                    active = self._recover_when_due()
            except STORAGE_ERRORS as error:
                self._report_storage_failure(error)
                self.stop_event.wait(self.settings.poll_interval_s)
                continue
            self._report_storage_back()

            if name is None:
                if exit_when_idle and not active:
                    break
                self.stop_event.wait(self.settings.poll_interval_s)
        return ran

    def _recover_when_due(self) -> bool:
        # Recovery reads every trial of each running study, and its repairs
        # wait for a grace period anyway, so once per heartbeat interval is
        # enough; the idle poll (every poll interval) stays cheap.
        now = time.monotonic()
        if now >= self._next_recovery:
            self._active = self.recover_studies()
            self._next_recovery = now + self.settings.heartbeat_interval_s
        return self._active

    def recover_studies(self) -> bool:
        """Repair running studies whose workers died; True if any study is still active."""
        active = False
        for row in self._active_rows():
            if row.status == registry.RUNNING:
                active |= self._recovery.check(row)
            else:
                active = True
        return active

    def run_one_trial(self, name: str) -> bool:
        """Claim a slot of study `name` and run one trial; False if no trial ran."""
        try:
            context = self._context(name)
        except KeyboardInterrupt:
            if not self.stop_event.is_set():
                raise
            return False  # stopped while waiting for or training the baseline
        except STORAGE_ERRORS:
            raise
        except Exception as error:
            # The spec, dataset or model cannot be built: no trial could run.
            logger.warning("study %s cannot start: %s", name, error, exc_info=True)
            registry.set_status(self.url, name, registry.FAILED, f"{type(error).__name__}: {error}")
            return False
        if not registry.claim_trial_slot(self.url, name):
            return False  # another worker took the last slot

        context.finished.clear()
        context.current = None
        try:
            context.study.optimize(
                self._objective(context),
                n_trials=1,
                catch=(Exception,),
                callbacks=[lambda _study, trial: context.finished.append(trial)],
            )
        except KeyboardInterrupt:
            self._settle_interrupted(name, context)
            raise
        except Exception as error:
            if self._dropped_late_result(context, error):
                return True
            if context.current is None:
                # No trial was created, so nothing else will release the slot.
                registry.release_trial_slot(self.url, name)
            raise

        trial = context.finished[-1] if context.finished else None
        if trial is None or not is_counted(trial):
            if trial is not None and trial.user_attrs.get("fail_reason") == "interrupted":
                retry_trial(context.study, trial, self.settings.max_retry)
            registry.release_trial_slot(self.url, name)
        if trial is not None:
            logger.info(
                "trial %d of study %s finished: %s %s",
                trial.number,
                name,
                trial.state.name,
                trial.values if trial.values is not None else trial.user_attrs.get("fail_reason"),
            )
        if complete_if_done(self.url, context.study, context.spec.n_trials):
            self._contexts.pop(name, None)
        return True

    def _objective(self, context: _StudyContext) -> Any:
        def objective(trial: optuna.Trial) -> list[float]:
            context.current = trial.number
            trial.set_user_attr(WORKER_ATTR, self.identity)
            return context.objective(trial)

        return objective

    def _stored_trial(self, context: _StudyContext) -> FrozenTrial | None:
        for trial in context.study.get_trials(deepcopy=False):
            if trial.number == context.current:
                return trial
        return None

    def _dropped_late_result(self, context: _StudyContext, error: Exception) -> bool:
        # Optuna refuses to store a result for a trial that is already
        # finished: UpdateFinishedTrialError from a write during the trial,
        # ValueError ("Cannot tell a FAIL trial") at its end.
        if context.current is None:
            return False
        if not isinstance(error, (ValueError, UpdateFinishedTrialError)):
            return False
        trial = self._stored_trial(context)
        if trial is None or not trial.state.is_finished():
            return False
        logger.warning(
            "dropped the late result of trial %d of study %s: it was already marked %s, "
            "because its heartbeat stopped for longer than the grace period (%s: %s)",
            trial.number,
            context.study.study_name,
            trial.state.name,
            type(error).__name__,
            error,
        )
        return True

    def _settle_interrupted(self, name: str, context: _StudyContext) -> None:
        # A KeyboardInterrupt that escaped Optuna (a second Ctrl-C or
        # SIGTERM). Leave a RUNNING trial to the heartbeat.
        trial = self._stored_trial(context) if context.current is not None else None
        if trial is not None and trial.state == TrialState.RUNNING:
            return
        if trial is not None and is_counted(trial):
            return
        if trial is not None:
            retry_trial(context.study, trial, self.settings.max_retry)
        registry.release_trial_slot(self.url, name)

    def _context(self, name: str) -> _StudyContext:
        row = registry.get_study(self.url, name)
        context = self._contexts.get(name)
        if context is not None and context.fingerprint == row.fingerprint:
            return context

        spec = load_spec(row.spec)
        splits = load_splits(spec, self.settings.data_root)
        factory = builtin_model_factory(spec)
        # One worker at a time creates the study and trains its float
        # baseline; the others wait and then find the baseline stored.
        with database_lock(self.url, f"study/{name}", interrupt=self.stop_event):
            # Workers sharing a study must not share a sampler seed, or they
            # would sample the same configurations; the process id tells them
            # apart. Parallel trials are not reproducible in any case.
            n_stored = _count_stored_trials(self._storage, name)
            study = open_study(
                spec,
                self.url,
                optuna_storage=self._storage,
                sampler_seed=(spec.seed + n_stored + 7919 * os.getpid()) % 2**32,
            )
            record_data(study, splits)
            baseline = ensure_baseline(study, spec, splits, factory, self.stop_event)
        objective = Objective(
            spec,
            splits,
            factory,
            self.url,
            baseline_accuracy=baseline.get("val_accuracy"),
            should_stop=lambda: registry.is_cancelled(self.url, name),
            interrupt=self.stop_event,
        )
        context = _StudyContext(row.fingerprint, spec, splits, study, objective)
        self._contexts[name] = context
        return context

    def _active_rows(self) -> list[registry.StudyRow]:
        if self.only is None:
            rows = []
            for status in registry.ACTIVE_STATUSES:
                rows += registry.list_studies(self.url, status=status, limit=10_000)[0]
            return rows
        try:
            row = registry.get_study(self.url, self.only)
        except registry.StudyNotFoundError:
            if not self._reported_missing:
                logger.info("study %s is not registered (yet)", self.only)
                self._reported_missing = True
            return []
        return [row] if row.status in registry.ACTIVE_STATUSES else []

    def _report_storage_failure(self, error: Exception) -> None:
        self._storage_failures += 1
        # Warn once per outage; the retries every poll interval log at DEBUG.
        level = logging.WARNING if self._storage_failures == 1 else logging.DEBUG
        logger.log(
            level,
            "worker %s cannot use the storage, retrying every %.1f s: %s",
            self.identity,
            self.settings.poll_interval_s,
            error,
        )

    def _report_storage_back(self) -> None:
        if self._storage_failures:
            logger.warning(
                "worker %s reached the storage again after %d failed attempts",
                self.identity,
                self._storage_failures,
            )
            self._storage_failures = 0


def threads_per_worker(workers: int) -> int:
    """Torch threads per worker process: $OMP_NUM_THREADS if set, else the cores shared out.

    Cores are those this process may run on (its CPU affinity), at least
    one thread per worker.
    """
    text = os.environ.get("OMP_NUM_THREADS", "")
    if text.isdigit() and int(text) >= 1:
        return int(text)
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, workers))


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # A worker is a service: its start, stop and trial lines go to the log.
    logging.getLogger("qsearch").setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:
        optuna.logging.set_verbosity(optuna.logging.WARNING)


def _stop_on_signals(stop: threading.Event, *, ignore_sigint: bool = False) -> None:
    def on_signal(signum: int, _frame: Any) -> None:
        # The first signal stops the running trial within one batch; a
        # second one raises KeyboardInterrupt wherever the worker is.
        if stop.is_set():
            raise KeyboardInterrupt
        logger.info("received %s; stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    # Pool children leave Ctrl-C to their parent, which forwards SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN if ignore_sigint else on_signal)


def _stop_with_parent(stop: threading.Event) -> None:
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()
        logger.warning("worker %d lost its parent process; stopping", os.getpid())
        stop.set()

    threading.Thread(target=watch, name="qsearch-parent-watch", daemon=True).start()


def _start_worker(
    storage_url: str, study: str | None, settings: WorkerSettings, stop: threading.Event
) -> Worker | None:
    """Create the worker, waiting for the database to be reachable; None if stopped first."""
    delay_s = settings.poll_interval_s
    for attempt in itertools.count(1):
        try:
            return Worker(storage_url, study=study, settings=settings, stop_event=stop)
        except STORAGE_ERRORS as error:
            # Warn once; a database that is still starting is normal in a
            # container deployment.
            level = logging.WARNING if attempt == 1 else logging.DEBUG
            logger.log(
                level,
                "worker %d cannot reach the storage %s, retrying for as long as it runs: %s",
                os.getpid(),
                _safe_url(storage_url),
                error,
            )
        if stop.wait(delay_s):
            return None
        delay_s = min(MAX_START_DELAY_S, 2 * delay_s)
    return None


def run_worker_process(
    storage_url: str,
    study: str | None,
    threads: int,
    settings: WorkerSettings,
    *,
    exit_when_idle: bool = False,
    verbose: bool = False,
    in_pool: bool = False,
) -> int:
    """Run one worker in this process until a signal (or idleness) stops it.

    Returns the exit status: 0 after a clean stop, 130 after a second
    SIGINT or SIGTERM. `in_pool` marks a child of `worker_command`.
    """
    _configure_logging(verbose)
    torch.set_num_threads(threads)
    stop = threading.Event()
    _stop_on_signals(stop, ignore_sigint=in_pool)
    _stop_with_parent(stop)
    try:
        worker = _start_worker(storage_url, study, settings, stop)
        if worker is not None:
            worker.run(exit_when_idle=exit_when_idle)
    except KeyboardInterrupt:
        logger.warning("worker %d interrupted", os.getpid())
        return 130
    return 0


def _pool_child(*args: Any, **kwargs: Any) -> None:
    sys.exit(run_worker_process(*args, **kwargs))


def _run_pool(
    storage_url: str,
    study: str | None,
    concurrency: int,
    settings: WorkerSettings,
    *,
    exit_when_idle: bool,
    verbose: bool,
) -> int:
    threads = threads_per_worker(concurrency)
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(
            target=_pool_child,
            args=(storage_url, study, threads, settings),
            kwargs={"exit_when_idle": exit_when_idle, "verbose": verbose, "in_pool": True},
            name=f"qsearch-worker-{index}",
        )
        for index in range(concurrency)
    ]
    # Children inherit an ignored SIGINT, so Ctrl-C reaches only this
    # process, which forwards it once as SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for process in processes:
        process.start()
    logger.info(
        "started %d worker processes with %d torch threads each on %s",
        concurrency,
        threads,
        _safe_url(storage_url),
    )

    def forward(signum: int, _frame: Any) -> None:
        logger.info("received %s; stopping %d workers", signal.Signals(signum).name, concurrency)
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)

    running = {process.sentinel: process for process in processes}
    while running:
        for sentinel in multiprocessing.connection.wait(list(running)):
            process = running.pop(sentinel)
            process.join()
            if process.exitcode != 0:
                logger.warning("%s exited with status %s", process.name, process.exitcode)
    return 0 if all(process.exitcode == 0 for process in processes) else 1


def worker_command(args: argparse.Namespace) -> int:
    """`qsearch worker`: run `args.concurrency` worker processes on `args.storage`.

    One worker runs in this process; more run as spawned children that
    share the cores, one torch thread pool each. SIGINT or SIGTERM stops
    them: each running trial is interrupted, recorded as failed with the
    reason "interrupted" and queued again with the same parameters.
    Settings come from the QSEARCH_* variables of `WorkerSettings.from_env`.
    """
    if args.concurrency < 1:
        raise ValueError(f"--concurrency must be at least 1, but got {args.concurrency}.")
    settings = WorkerSettings.from_env(data_root=args.data_root)
    verbose = bool(getattr(args, "verbose", False))
    if args.concurrency == 1:
        return run_worker_process(
            args.storage,
            args.study,
            threads_per_worker(1),
            settings,
            exit_when_idle=args.exit_when_idle,
            verbose=verbose,
        )
    return _run_pool(
        args.storage,
        args.study,
        args.concurrency,
        settings,
        exit_when_idle=args.exit_when_idle,
        verbose=verbose,
    )


def _count_stored_trials(storage: optuna.storages.BaseStorage, name: str) -> int:
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return 0
    return len(storage.get_all_trials(study_id, deepcopy=False))
