"""Worker processes: claim trial slots of registered studies and run the trials.

Any number of workers, on one machine or many, share one database. Each
trial runs under Optuna's heartbeat, so a trial whose worker died is
failed after the grace period, its slot is released and Optuna retries it
with the same parameters.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field

import optuna
import torch
from optuna.storages import RetryFailedTrialCallback
from optuna.trial import FrozenTrial, TrialState

from qsearch.data import DatasetSplits
from qsearch.search.objective import Objective
from qsearch.search.results import counted_trials
from qsearch.search.spec import StudySpec, load_spec
from qsearch.search.study import (
    builtin_model_factory,
    ensure_baseline,
    load_splits,
    open_study,
    record_data,
)
from qsearch.service import registry
from qsearch.storage.engine import engine_kwargs

logger = logging.getLogger(__name__)

# Fail reasons whose trials do not count against the budget.
UNCOUNTED_REASONS = ("interrupted", "cancelled")


@dataclass(frozen=True)
class WorkerSettings:
    """How a worker polls, beats and retries."""

    poll_interval_s: float = 1.0
    heartbeat_interval_s: int = 5
    grace_period_s: int = 30
    max_retry: int = 3
    data_root: str | None = None


@dataclass
class _StudyContext:
    spec: StudySpec
    splits: DatasetSplits
    study: optuna.Study
    objective: Objective
    finished: list[FrozenTrial] = field(default_factory=list)


def open_heartbeat_storage(url: str, settings: WorkerSettings) -> optuna.storages.RDBStorage:
    """Optuna storage with heartbeats; a stale trial releases its slot and is retried."""
    retry = RetryFailedTrialCallback(max_retry=settings.max_retry)

    def on_stale_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        logger.warning(
            "trial %d of study %s lost its worker; retrying it", trial.number, study.study_name
        )
        registry.release_trial_slot(url, study.study_name)
        retry(study, trial)

    return optuna.storages.RDBStorage(
        url,
        engine_kwargs=engine_kwargs(url),
        heartbeat_interval=settings.heartbeat_interval_s,
        grace_period=settings.grace_period_s,
        heartbeat_stale_trial_callback=on_stale_trial,
    )


class Worker:
    """Run trials of registered studies until stopped.

    `study` limits the worker to one study. `stop` ends the loop between
    trials; a running trial finishes first.
    """

    def __init__(
        self, storage_url: str, *, study: str | None = None, settings: WorkerSettings | None = None
    ) -> None:
        self.url = storage_url
        self.only = study
        self.settings = settings or WorkerSettings()
        self.stop_event = threading.Event()
        self._storage = open_heartbeat_storage(storage_url, self.settings)
        self._contexts: dict[str, _StudyContext] = {}
        registry.create_tables(storage_url)

    def stop(self) -> None:
        self.stop_event.set()

    def run(self, *, exit_when_idle: bool = False) -> int:
        """Run trials until stopped (or, with `exit_when_idle`, until none is left).

        Returns the number of trials this worker ran.
        """
        ran = 0
        logger.info("worker %d started on %s", os.getpid(), self.url)
        while not self.stop_event.is_set():
            try:
                name = registry.next_runnable_study(self.url, self.only)
            except registry.StorageUnavailableError as error:
                logger.warning("worker %d cannot reach the storage: %s", os.getpid(), error)
                self.stop_event.wait(self.settings.poll_interval_s)
                continue
            if name is None:
                if exit_when_idle:
                    break
                self.stop_event.wait(self.settings.poll_interval_s)
                continue
            if self.run_one_trial(name):
                ran += 1
        logger.info("worker %d stopped after %d trials", os.getpid(), ran)
        return ran

    def run_one_trial(self, name: str) -> bool:
        """Claim a slot of study `name` and run one trial; False if no slot was free."""
        try:
            context = self._context(name)
        except Exception as error:
            logger.warning("study %s cannot start: %s", name, error)
            registry.set_status(self.url, name, registry.FAILED, str(error))
            return False
        if not registry.claim_trial_slot(self.url, name):
            self._finish_if_done(name, context)
            return False

        context.finished.clear()
        try:
            context.study.optimize(
                context.objective,
                n_trials=1,
                catch=(Exception,),
                callbacks=[lambda _study, trial: context.finished.append(trial)],
            )
        except optuna.exceptions.UpdateFinishedTrialError as error:
            # The heartbeat failed this trial while it ran (the worker was
            # paused too long); its slot is already released and a retry queued.
            logger.warning("dropping a late result for study %s: %s", name, error)
            return True
        except KeyboardInterrupt:
            registry.release_trial_slot(self.url, name)
            raise

        trial = context.finished[-1] if context.finished else None
        if trial is None or (
            trial.state == TrialState.FAIL
            and trial.user_attrs.get("fail_reason") in UNCOUNTED_REASONS
        ):
            registry.release_trial_slot(self.url, name)
        self._finish_if_done(name, context)
        return True

    def _finish_if_done(self, name: str, context: _StudyContext) -> None:
        budget = context.spec.n_trials
        if budget is None:
            return
        running = context.study.get_trials(
            deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)
        )
        if not running and counted_trials(context.study) >= budget:
            registry.set_status(self.url, name, registry.COMPLETED)

    def _context(self, name: str) -> _StudyContext:
        if name in self._contexts:
            return self._contexts[name]
        row = registry.get_study(self.url, name)
        spec = load_spec(row.spec)
        splits = load_splits(spec, self.settings.data_root)
        factory = builtin_model_factory(spec)
        study = open_study(spec, self.url, optuna_storage=self._storage)
        record_data(study, splits)
        baseline = ensure_baseline(study, spec, splits, factory)
        objective = Objective(
            spec,
            splits,
            factory,
            self.url,
            baseline_accuracy=baseline["val_accuracy"],
            should_stop=lambda: registry.is_cancelled(self.url, name),
        )
        context = _StudyContext(spec, splits, study, objective)
        self._contexts[name] = context
        return context


def run_worker_process(
    storage_url: str, study: str | None, threads: int, settings: WorkerSettings
) -> None:
    """Entry point of one worker process (for multiprocessing)."""
    torch.set_num_threads(threads)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    worker = Worker(storage_url, study=study, settings=settings)
    try:
        worker.run()
    except KeyboardInterrupt:
        logger.info("worker %d interrupted", os.getpid())


def threads_per_worker(workers: int) -> int:
    """Share the machine's cores among worker processes, at least one thread each."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))
