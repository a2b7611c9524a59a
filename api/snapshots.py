"""Study snapshots: a study's trials read from Optuna once and reused across requests.

Reading every trial of a study and computing its Pareto front costs far more
than a request may take, so the API keeps one snapshot per study:

- A snapshot whose registry row was compared less than `TTL_S` ago is
  served without touching the database, so a client that polls gets a
  change (a new trial, an epoch, a status) at most that late. This
  process's own cancel and delete drop the snapshot at once.
- After that the registry row is read again. A snapshot of a finished study
  with no running trial never changes, so it is kept while the row is the
  same; a snapshot of an active study is read again from Optuna, but no
  sooner than `REBUILD_FACTOR` times the duration of its last read, so a
  large active study cannot keep the API process busy reading it.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import optuna

from api.schemas import StudyProgress, StudyPublic, TrialPublic
from qsearch.search.results import TrialRecord, study_result
from qsearch.service.registry import ACTIVE_STATUSES, StudyRow

logger = logging.getLogger(__name__)

TTL_S = 1.0
REBUILD_FACTOR = 4.0
MAX_SNAPSHOTS = 64


def trial_public(record: TrialRecord) -> TrialPublic:
    """Convert a qsearch trial record to its API form."""
    start = dt.datetime.fromisoformat(record.datetime_start) if record.datetime_start else None
    complete = (
        dt.datetime.fromisoformat(record.datetime_complete) if record.datetime_complete else None
    )
    duration = (complete - start).total_seconds() if start and complete else None
    return TrialPublic(
        number=record.number,
        state=record.state.lower(),
        params=record.params,
        values=record.values,
        metrics=record.metrics,
        curve=record.curve,
        feasible=record.feasible,
        infeasible_reason=record.infeasible_reason,
        fail_reason=record.fail_reason,
        datetime_start=start,
        datetime_complete=complete,
        duration_s=duration,
    )


@dataclass
class StudySnapshot:
    """A study's registry row and its trials at one moment, ready to serve."""

    row: StudyRow
    # time.monotonic() when the trials were read, and when the row was last compared.
    taken_at: float
    trials: list[TrialPublic]
    study: StudyPublic
    # Sorted trial lists by (sort key, descending), and the JSON of each trial
    # and of the study. Each is filled on first use, so that a request that
    # hits the cache only joins bytes.
    _orders: dict[tuple[str, bool], list[TrialPublic]] = field(default_factory=dict)
    _trial_json: dict[int, bytes] = field(default_factory=dict)
    _study_json: bytes | None = None
    checked_at: float = field(default=0.0)
    # Seconds that reading the trials and building this snapshot took.
    build_s: float = 0.0

    def __post_init__(self) -> None:
        self.checked_at = self.checked_at or self.taken_at

    @property
    def final(self) -> bool:
        """True when nothing can change the trials without also changing the registry row."""
        return self.row.status not in ACTIVE_STATUSES and self.study.progress.running == 0

    def trial(self, number: int) -> TrialPublic | None:
        """Return trial `number`, or None."""
        if 0 <= number < len(self.trials) and self.trials[number].number == number:
            return self.trials[number]
        return next((trial for trial in self.trials if trial.number == number), None)

    def study_json(self) -> bytes:
        """Return the study as JSON."""
        if self._study_json is None:
            self._study_json = self.study.model_dump_json().encode()
        return self._study_json

    def trial_json(self, trial: TrialPublic) -> bytes:
        """Return one trial of this snapshot as JSON."""
        encoded = self._trial_json.get(trial.number)
        if encoded is None:
            encoded = self._trial_json[trial.number] = trial.model_dump_json().encode()
        return encoded

    def trials_json(self, trials: list[TrialPublic], count: int) -> bytes:
        """Return `trials` of this snapshot as the JSON of a TrialsPublic page."""
        return page_json([self.trial_json(trial) for trial in trials], count)

    def sorted_trials(self, sort_by: str, descending: bool) -> list[TrialPublic]:
        """Return the trials ordered by number or a metric; trials without the metric go last."""
        key = (sort_by, descending)
        if key not in self._orders:
            self._orders[key] = _sort(self.trials, sort_by, descending)
        return self._orders[key]


def _sort(trials: list[TrialPublic], sort_by: str, descending: bool) -> list[TrialPublic]:
    if sort_by == "number":
        return sorted(trials, key=lambda trial: trial.number, reverse=descending)

    def metric(trial: TrialPublic) -> float | None:
        value = trial.metrics.get(sort_by)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return value if math.isfinite(value) else None

    present = [trial for trial in trials if metric(trial) is not None]
    missing = [trial for trial in trials if metric(trial) is None]
    # Python's sort is stable, so equal metrics keep the order of trial numbers.
    present.sort(key=lambda trial: metric(trial), reverse=descending)  # type: ignore[arg-type,return-value]
    return present + missing


def take_snapshot(row: StudyRow, storage: optuna.storages.BaseStorage) -> StudySnapshot:
    """Read the study's trials from Optuna; a study no worker has opened yet has none."""
    started = time.monotonic()
    try:
        # The sampler is never used here; passing one skips building the default.
        study = optuna.load_study(
            study_name=row.name, storage=storage, sampler=optuna.samplers.RandomSampler()
        )
    except KeyError:
        result = None
    else:
        result = study_result(study)

    trials = [trial_public(record) for record in result.trials] if result else []
    states = collections.Counter(trial.state for trial in trials)
    progress = StudyProgress(
        n_trials=row.n_trials,
        complete=states["complete"],
        pruned=states["pruned"],
        failed=states["fail"],
        running=states["running"],
        waiting=states["waiting"],
    )
    by_number = {trial.number: trial for trial in trials}
    study_public = StudyPublic(
        name=row.name,
        status=row.status,
        error=row.error,
        spec=row.spec,
        progress=progress,
        baseline=result.baseline if result else None,
        best_trial=by_number[result.best_trial.number] if result and result.best_trial else None,
        pareto_front=[by_number[t.number] for t in result.pareto_front] if result else [],
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
    now = time.monotonic()
    return StudySnapshot(
        row=row, taken_at=now, trials=trials, study=study_public, build_s=now - started
    )


class SnapshotCache:
    """The latest snapshot of each recently read study, at most `max_size` of them."""

    def __init__(
        self,
        read: Callable[[StudyRow], StudySnapshot],
        *,
        ttl_s: float = TTL_S,
        max_size: int = MAX_SNAPSHOTS,
    ) -> None:
        self._read = read
        self._ttl_s = ttl_s
        self._max_size = max_size
        self._snapshots: collections.OrderedDict[str, StudySnapshot] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._study_locks: dict[str, threading.Lock] = {}

    def get_by_name(self, name: str, read_row: Callable[[], StudyRow]) -> StudySnapshot:
        """Return a snapshot of study `name`; `read_row` is called only when the TTL has passed."""
        with self._lock:
            snapshot = self._snapshots.get(name)
        if snapshot is not None and time.monotonic() - snapshot.checked_at < self._ttl_s:
            return snapshot
        return self.get(read_row())

    def get(self, row: StudyRow) -> StudySnapshot:
        """Return a snapshot of `row`'s study that is current enough to serve."""
        snapshot = self._fresh(row)
        if snapshot is not None:
            return snapshot
        # One reader per study, so a burst of requests does not read the same trials many times.
        with self._study_lock(row.name):
            snapshot = self._fresh(row)
            if snapshot is not None:
                return snapshot
            snapshot = self._read(row)
            with self._lock:
                self._snapshots[row.name] = snapshot
                self._snapshots.move_to_end(row.name)
                while len(self._snapshots) > self._max_size:
                    evicted, _ = self._snapshots.popitem(last=False)
                    self._study_locks.pop(evicted, None)
            logger.debug("read %d trials of study %s", len(snapshot.trials), row.name)
            return snapshot

    def invalidate(self, name: str) -> None:
        """Drop the snapshot of study `name`."""
        with self._lock:
            self._snapshots.pop(name, None)

    def _fresh(self, row: StudyRow) -> StudySnapshot | None:
        with self._lock:
            snapshot = self._snapshots.get(row.name)
        if snapshot is None or snapshot.row != row:
            return None
        now = time.monotonic()
        max_age = max(self._ttl_s, REBUILD_FACTOR * snapshot.build_s)
        if snapshot.final or now - snapshot.taken_at < max_age:
            snapshot.checked_at = now
            return snapshot
        return None

    def _study_lock(self, name: str) -> threading.Lock:
        with self._lock:
            return self._study_locks.setdefault(name, threading.Lock())


def page_json(items: list[bytes], count: int) -> bytes:
    """Join JSON items into the JSON of a page: {"data": [...], "count": count}."""
    return b'{"data":[' + b",".join(items) + b'],"count":' + str(count).encode() + b"}"
