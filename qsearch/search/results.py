"""Study results read back from Optuna: trials, the Pareto front and the best trial."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

# Trial user attributes that are metrics, in display order.
METRIC_ATTRS = (
    "val_accuracy",
    "test_accuracy",
    "accuracy_drop",
    "weight_memory_bits",
    "weight_memory_bytes",
    "bitops",
    "macs",
    "weights",
    "biases",
    "parameters",
    "train_seconds",
)


@dataclass(frozen=True)
class TrialRecord:
    """One trial as qsearch reports it."""

    number: int
    state: str
    params: dict[str, Any]
    values: dict[str, float] | None
    metrics: dict[str, Any]
    curve: list[float] = field(default_factory=list)
    feasible: bool = True
    infeasible_reason: str | None = None
    fail_reason: str | None = None
    datetime_start: str | None = None
    datetime_complete: str | None = None

    @property
    def trained(self) -> bool:
        return self.state == "COMPLETE" and self.feasible

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StudyResult:
    """A finished or running study: its trials, Pareto front, best trial and baseline."""

    name: str
    objectives: list[str]
    directions: list[str]
    trials: list[TrialRecord]
    pareto_front: list[TrialRecord]
    best_trial: TrialRecord | None
    baseline: dict[str, Any] | None
    n_trials: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "objectives": self.objectives,
            "directions": self.directions,
            "n_trials": self.n_trials,
            "baseline": self.baseline,
            "best_trial": self.best_trial.to_dict() if self.best_trial else None,
            "pareto_front": [trial.to_dict() for trial in self.pareto_front],
            "trials": [trial.to_dict() for trial in self.trials],
        }


def trial_record(trial: optuna.trial.FrozenTrial, objectives: Sequence[str]) -> TrialRecord:
    attrs = trial.user_attrs
    # Metrics live in one "metrics" mapping; trials written by older
    # versions hold them as separate attributes.
    merged = {**attrs, **attrs.get("metrics", {})}
    values = None
    if trial.values is not None:
        values = dict(zip(objectives, trial.values, strict=False))
    return TrialRecord(
        number=trial.number,
        state=trial.state.name,
        params=dict(trial.params),
        values=values,
        metrics={key: merged[key] for key in METRIC_ATTRS if key in merged},
        # A finished trial's curve is in its metrics, a running one's in
        # the attribute that progress writes update.
        curve=list(merged.get("curve", [])),
        feasible="infeasible_reason" not in attrs,
        infeasible_reason=attrs.get("infeasible_reason"),
        fail_reason=attrs.get("fail_reason"),
        datetime_start=trial.datetime_start.isoformat() if trial.datetime_start else None,
        datetime_complete=(
            trial.datetime_complete.isoformat() if trial.datetime_complete else None
        ),
    )


def _signed(
    values: dict[str, float], objectives: Sequence[str], directions: Sequence[str]
) -> list[float]:
    # Turn every objective into one to minimize.
    return [
        values[name] if direction == "minimize" else -values[name]
        for name, direction in zip(objectives, directions, strict=True)
    ]


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """True if `a` is no worse than `b` everywhere and better somewhere (all minimized)."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(
        x < y for x, y in zip(a, b, strict=True)
    )


def pareto_front(
    trials: Sequence[TrialRecord], objectives: Sequence[str], directions: Sequence[str]
) -> list[TrialRecord]:
    """Return the trained, feasible trials that no other such trial dominates, by number."""
    candidates = [
        t
        for t in trials
        if t.trained and t.values is not None and all(math.isfinite(v) for v in t.values.values())
    ]
    signed = {t.number: _signed(t.values, objectives, directions) for t in candidates}
    if len(objectives) == 2:
        keep = _front_of_two(signed)
        return [t for t in candidates if t.number in keep]
    return [
        t
        for t in candidates
        if not any(dominates(signed[o.number], signed[t.number]) for o in candidates)
    ]


def _front_of_two(signed: dict[int, list[float]]) -> set[int]:
    # Sweep in order of the first objective, so a study of thousands of
    # trials needs O(n log n) instead of comparing every pair.
    order = sorted(signed, key=lambda number: (signed[number][0], signed[number][1]))
    keep: set[int] = set()
    best_second = math.inf  # over points with a strictly smaller first value
    index = 0
    while index < len(order):
        first = signed[order[index]][0]
        group = []
        while index < len(order) and signed[order[index]][0] == first:
            group.append(order[index])
            index += 1
        lowest = signed[group[0]][1]
        if lowest < best_second:
            keep.update(number for number in group if signed[number][1] == lowest)
        best_second = min(best_second, lowest)
    return keep


def best_trial(trials: Sequence[TrialRecord]) -> TrialRecord | None:
    """Return the trained, feasible trial with the highest validation accuracy.

    Ties go to the smaller weight memory, then to the earlier trial.
    """
    candidates = [t for t in trials if t.trained and "val_accuracy" in t.metrics]
    if not candidates:
        return None
    return min(
        candidates,
        key=lambda t: (
            -t.metrics["val_accuracy"],
            t.metrics.get("weight_memory_bits", 0),
            t.number,
        ),
    )


def study_result(study: optuna.Study) -> StudyResult:
    """Read a study's trials from storage and compute its Pareto front and best trial."""
    attrs = study.user_attrs
    spec = attrs.get("spec", {})
    objectives = list(spec.get("objectives") or ["accuracy"])
    directions = [d.name.lower() for d in study.directions]
    trials = [trial_record(t, objectives) for t in study.get_trials(deepcopy=False)]
    return StudyResult(
        name=study.study_name,
        objectives=objectives,
        directions=directions,
        trials=trials,
        pareto_front=pareto_front(trials, objectives, directions),
        best_trial=best_trial(trials),
        baseline=attrs.get("baseline"),
        n_trials=spec.get("n_trials"),
    )


FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


# Fail reasons of trials that do not count against the budget. A trial
# failed by the heartbeat after a worker crash has no reason at all.
UNCOUNTED_FAIL_REASONS = (None, "interrupted", "cancelled")


def is_counted(trial: optuna.trial.FrozenTrial) -> bool:
    """Return True if a finished trial counts against the budget.

    COMPLETE and PRUNED trials count, and so does a FAIL with a recorded
    reason. A trial failed by an interruption (Ctrl-C, a worker shutdown),
    a cancellation, or the heartbeat after its worker crashed (no reason
    recorded) does not count, so a rerun trains a replacement.
    """
    if trial.state not in FINISHED_STATES:
        return False
    if trial.state == TrialState.FAIL:
        return trial.user_attrs.get("fail_reason") not in UNCOUNTED_FAIL_REASONS
    return True


def counted_trials(study: optuna.Study) -> int:
    """Count the finished trials that count against the budget (see `is_counted`)."""
    trials = study.get_trials(deepcopy=False, states=FINISHED_STATES)
    return sum(1 for trial in trials if is_counted(trial))


def counts_toward_budget(trial: TrialRecord) -> bool:
    """True for a finished trial that uses up one trial of the budget."""
    if trial.state in ("COMPLETE", "PRUNED"):
        return True
    return trial.state == "FAIL" and trial.fail_reason not in UNCOUNTED_FAIL_REASONS
