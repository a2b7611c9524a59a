"""Study snapshots: trial order, lookups, and when the cache reads a study again."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

from api.schemas import StudyProgress, StudyPublic, TrialPublic
from api.snapshots import SnapshotCache, StudySnapshot, trial_public
from qsearch.search.results import TrialRecord
from qsearch.service.registry import StudyRow

NOW = dt.datetime(2026, 1, 1, 12, 0, 0)


def row(status: str = "completed", updated_at: dt.datetime = NOW) -> StudyRow:
    return StudyRow(
        name="s",
        spec={},
        fingerprint="f",
        status=status,
        n_trials=3,
        claimed=3,
        cancel_requested=False,
        error=None,
        created_at=NOW,
        updated_at=updated_at,
    )


def trial(number: int, state: str = "complete", **metrics: Any) -> TrialPublic:
    return TrialPublic(
        number=number,
        state=state,
        params={},
        values=None,
        metrics=metrics,
        curve=[],
        feasible=True,
        infeasible_reason=None,
        fail_reason=None,
        datetime_start=None,
        datetime_complete=None,
        duration_s=None,
    )


def snapshot(study_row: StudyRow, trials: list[TrialPublic], running: int = 0) -> StudySnapshot:
    progress = StudyProgress(
        n_trials=3, complete=len(trials), pruned=0, failed=0, running=running, waiting=0
    )
    study = StudyPublic(
        name="s",
        status=study_row.status,
        error=None,
        spec={},
        progress=progress,
        baseline=None,
        best_trial=None,
        pareto_front=[],
        created_at=NOW,
        updated_at=NOW,
    )
    return StudySnapshot(row=study_row, taken_at=0.0, trials=trials, study=study)


def test_sort_by_metric_puts_missing_last() -> None:
    trials = [
        trial(0, val_accuracy=0.5),
        trial(1),
        trial(2, val_accuracy=0.9),
        trial(3, val_accuracy=0.5),
    ]
    taken = snapshot(row(), trials)

    ascending = taken.sorted_trials("val_accuracy", descending=False)
    descending = taken.sorted_trials("val_accuracy", descending=True)

    assert [t.number for t in ascending] == [0, 3, 2, 1]
    assert [t.number for t in descending] == [2, 0, 3, 1]


def test_sort_by_number_descending() -> None:
    taken = snapshot(row(), [trial(0), trial(1), trial(2)])

    assert [t.number for t in taken.sorted_trials("number", descending=True)] == [2, 1, 0]


def test_trial_lookup() -> None:
    taken = snapshot(row(), [trial(0), trial(2)])

    assert taken.trial(2).number == 2
    assert taken.trial(1) is None
    assert taken.trial(-1) is None


def test_trial_public_duration() -> None:
    record = TrialRecord(
        number=4,
        state="FAIL",
        params={"bw_w": 4},
        values=None,
        metrics={},
        fail_reason="cancelled",
        datetime_start="2026-01-01T12:00:00",
        datetime_complete="2026-01-01T12:00:02.500000",
    )

    public = trial_public(record)

    assert public.state == "fail"
    assert public.duration_s == 2.5
    assert public.fail_reason == "cancelled"


class CountingReader:
    def __init__(self, running: int = 0) -> None:
        self.reads = 0
        self.running = running

    def __call__(self, study_row: StudyRow) -> StudySnapshot:
        self.reads += 1
        return dataclasses.replace(
            snapshot(study_row, [trial(0)], running=self.running), taken_at=_clock[0]
        )


_clock = [100.0]


@pytest.fixture(autouse=True)
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    _clock[0] = 100.0
    monkeypatch.setattr("api.snapshots.time.monotonic", lambda: _clock[0])


def test_finished_study_read_once() -> None:
    reader = CountingReader()
    cache = SnapshotCache(reader, ttl_s=1.0)

    cache.get(row())
    _clock[0] += 3600
    cache.get(row())

    assert reader.reads == 1


def test_active_study_read_again_after_ttl() -> None:
    reader = CountingReader()
    cache = SnapshotCache(reader, ttl_s=1.0)

    cache.get(row("running"))
    _clock[0] += 0.5
    cache.get(row("running"))
    _clock[0] += 1.0
    cache.get(row("running"))

    assert reader.reads == 2


def test_cancelled_study_with_running_trial_read_again() -> None:
    reader = CountingReader(running=1)
    cache = SnapshotCache(reader, ttl_s=1.0)

    cache.get(row("cancelled"))
    _clock[0] += 2.0
    cache.get(row("cancelled"))

    assert reader.reads == 2


def test_changed_row_read_again() -> None:
    reader = CountingReader()
    cache = SnapshotCache(reader, ttl_s=1.0)

    cache.get(row())
    cache.get(row(updated_at=NOW + dt.timedelta(seconds=1)))

    assert reader.reads == 2


def test_cache_size_bounded() -> None:
    reader = CountingReader()
    cache = SnapshotCache(reader, ttl_s=1.0, max_size=2)

    for name in ("a", "b", "c", "a"):
        cache.get(dataclasses.replace(row(), name=name))

    assert reader.reads == 4


def test_slow_active_study_read_less_often() -> None:
    reader = CountingReader()
    cache = SnapshotCache(
        lambda study_row: dataclasses.replace(reader(study_row), build_s=0.5), ttl_s=1.0
    )

    cache.get(row("running"))
    _clock[0] += 1.5
    cache.get(row("running"))
    _clock[0] += 1.0
    cache.get(row("running"))

    assert reader.reads == 2
