"""Repair what a dead worker leaves behind, so every study still reaches its budget.

A worker can die at any point (SIGKILL, an out-of-memory kill, a lost
machine). What it leaves, and what repairs it:

- A RUNNING trial whose heartbeat stopped. Optuna's `fail_stale_trials`
  fails it once the grace period has passed, and `StaleTrialCallback`
  queues a retry with the same parameters and releases its trial slot.
- A RUNNING trial with no heartbeat at all, because the worker died
  between creating the trial and its first heartbeat. `StudyRecovery`
  fails it the same way once it has looked so for a grace period.
- A claimed trial slot without a trial, because the worker died between
  claiming the slot and creating the trial. `StudyRecovery` releases it
  once the study's row has not changed for a grace period.

Workers with nothing to run call `StudyRecovery.check` on running
studies, so a study whose slots are all claimed still finishes.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import time
import warnings
from collections.abc import Callable

import optuna
import sqlalchemy as sa
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from qsearch.search.results import counted_trials, is_counted
from qsearch.service import registry
from qsearch.storage.locks import database_lock

try:
    from optuna.storages import RetryHeartbeatStaleTrialCallback as _RetryCallback
except ImportError:  # Optuna before 4.9 has only the older name.
    from optuna.storages import RetryFailedTrialCallback as _RetryCallback

logger = logging.getLogger(__name__)

# Study system attribute, followed by a trial number, marking a stale
# trial whose retry and slot release are done.
HANDLED_ATTR_PREFIX = "qsearch:stale_handled:"

# Optuna's heartbeat table. NOTE: this is Optuna's internal schema, checked
# against Optuna 5.1. After a rename every RUNNING trial would look
# heartbeat-less, so check it when upgrading Optuna.
_heartbeats = sa.table("trial_heartbeats", sa.column("trial_id"))


def retry_trial(study: optuna.Study, trial: FrozenTrial, max_retry: int) -> bool:
    """Queue a new trial with `trial`'s parameters; False once it was retried `max_retry` times.

    The retry carries Optuna's `failed_trial` and `retry_history` system
    attributes (read them with RetryFailedTrialCallback.retried_trial_number)
    and no user attributes, so no metric of the failed run shows on it.
    """
    retries = len(trial.system_attrs.get("retry_history", [])) + 1
    if retries > max_retry:
        logger.warning(
            "trial %d of study %s is not retried: its parameters failed %d times",
            trial.number,
            study.study_name,
            retries,
        )
        return False

    clean = copy.deepcopy(trial)
    clean.user_attrs = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        _RetryCallback(max_retry=max_retry)(study, clean)
    logger.info(
        "queued retry %d of %d for trial %d of study %s",
        retries,
        max_retry,
        trial.number,
        study.study_name,
    )
    return True


class StaleTrialCallback:
    """Heartbeat callback: retry a trial whose worker died, then release its trial slot.

    The retry is queued before the slot is released, so the worker that
    takes the slot runs the retry rather than a new sample. Each failed
    trial is handled once, even when two workers both marked it failed:
    on SQLite, Optuna's check-then-update of the trial state is not atomic
    between processes.
    """

    def __init__(self, storage_url: str, max_retry: int) -> None:
        self.storage_url = storage_url
        self.max_retry = max_retry

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        storage = study._storage
        marker = f"{HANDLED_ATTR_PREFIX}{trial.number}"
        with database_lock(self.storage_url, f"stale/{study.study_name}"):
            if marker in storage.get_study_system_attrs(study._study_id):
                logger.debug(
                    "trial %d of study %s was already handled", trial.number, study.study_name
                )
                return
            storage.set_study_system_attr(study._study_id, marker, True)
            logger.warning(
                "trial %d of study %s lost its worker (no heartbeat within the grace period) "
                "and is marked failed",
                trial.number,
                study.study_name,
            )
            retry_trial(study, trial, self.max_retry)
            registry.release_trial_slot(self.storage_url, study.study_name)


def complete_if_done(storage_url: str, study: optuna.Study, budget: int | None) -> bool:
    """Mark the study completed once its budget is counted and no trial runs; True if it is."""
    if budget is None:
        return False
    if study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        return False
    if counted_trials(study) < budget:
        return False
    registry.set_status(storage_url, study.study_name, registry.COMPLETED)
    return True


class StudyRecovery:
    """Find and repair trials and trial slots that dead workers left in running studies.

    Observations persist between calls, because two of the repairs act
    only on a state that lasted a whole grace period.
    """

    def __init__(
        self,
        storage_url: str,
        storage: optuna.storages.RDBStorage,
        on_stale_trial: Callable[[optuna.Study, FrozenTrial], None],
        grace_period_s: float,
    ) -> None:
        self.storage_url = storage_url
        self.storage = storage
        self.on_stale_trial = on_stale_trial
        self.grace_period_s = grace_period_s
        self._studies: dict[str, optuna.Study] = {}
        # study name -> {trial_id: monotonic time it was first seen RUNNING
        # without a heartbeat}.
        self._no_heartbeat_since: dict[str, dict[int, float]] = {}
        # study name -> (claimed, updated_at, monotonic time) of a row that
        # claimed more slots than its trials hold.
        self._slot_gap_since: dict[str, tuple[int, dt.datetime, float]] = {}

    def check(self, row: registry.StudyRow) -> bool:
        """Repair the running study `row` and complete it if done; True while it stays active.

        Read `row` before calling: the lost-slot check relies on the row
        being older than the trials it reads.
        """
        study = self._study(row.name)
        if study is None:
            return True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        self._fail_trials_without_heartbeat(study)
        if complete_if_done(self.storage_url, study, row.n_trials):
            self._studies.pop(row.name, None)
            return False
        self._release_lost_slots(row, study)
        return True

    def _study(self, name: str) -> optuna.Study | None:
        if name not in self._studies:
            try:
                # The sampler is never used: this study object only reads
                # trials and fails stale ones.
                self._studies[name] = optuna.load_study(
                    study_name=name, storage=self.storage, sampler=optuna.samplers.RandomSampler()
                )
            except KeyError:
                return None  # registered, but no worker has created the Optuna study yet
        return self._studies[name]

    def _fail_trials_without_heartbeat(self, study: optuna.Study) -> None:
        # NOTE: every trial of a registered study comes from a worker, and
        # workers send heartbeats. A `qsearch run` on a registered study
        # (no heartbeats) would see its trials failed here.
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        previous = self._no_heartbeat_since.pop(study.study_name, {})
        if not running:
            return
        with self.storage.engine.connect() as connection:
            beating = set(
                connection.execute(
                    sa.select(_heartbeats.c.trial_id).where(
                        _heartbeats.c.trial_id.in_([trial._trial_id for trial in running])
                    )
                ).scalars()
            )

        now = time.monotonic()
        silent = {}
        for trial in running:
            if trial._trial_id in beating:
                continue
            since = previous.get(trial._trial_id)
            if since is None or now - since < self.grace_period_s:
                silent[trial._trial_id] = now if since is None else since
                continue
            try:
                failed = self.storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            except UpdateFinishedTrialError:
                failed = False  # its worker or another one finished it meanwhile
            if failed:
                logger.info(
                    "trial %d of study %s sent no heartbeat in %.0f s",
                    trial.number,
                    study.study_name,
                    now - since,
                )
                self.on_stale_trial(study, self.storage.get_trial(trial._trial_id))
        self._no_heartbeat_since[study.study_name] = silent

    def _release_lost_slots(self, row: registry.StudyRow, study: optuna.Study) -> None:
        trials = study.get_trials(deepcopy=False)
        slots_held = sum(is_counted(trial) or trial.state == TrialState.RUNNING for trial in trials)
        if row.claimed <= slots_held:
            self._slot_gap_since.pop(row.name, None)
            return

        # A worker between its claim and Optuna's ask also shows a gap, but
        # only for milliseconds, and every claim changes updated_at. A gap
        # on the same row for a whole grace period has lost its worker.
        # NOTE: a worker paused for longer than the grace period inside that
        # window would still create its trial, one more than n_trials.
        seen = self._slot_gap_since.get(row.name)
        if seen is None or seen[:2] != (row.claimed, row.updated_at):
            self._slot_gap_since[row.name] = (row.claimed, row.updated_at, time.monotonic())
            return
        if time.monotonic() - seen[2] < self.grace_period_s:
            return
        del self._slot_gap_since[row.name]
        released = registry.reset_trial_slots(
            self.storage_url,
            row.name,
            slots_held,
            seen_claimed=row.claimed,
            seen_updated_at=row.updated_at,
        )
        if released:
            logger.warning(
                "released %d trial slots of study %s that no trial held (their worker died)",
                row.claimed - slots_held,
                row.name,
            )
