"""Terminal output of the CLI: the progress bar and the result tables."""

from __future__ import annotations

from typing import Any

import optuna
from tqdm import tqdm

from qsearch.search.objective import format_bytes
from qsearch.search.results import (
    StudyResult,
    TrialRecord,
    counts_toward_budget,
    study_result,
)


class ProgressBar:
    """Trials done of the budget, the best accuracy so far and the time left."""

    def __init__(self, total: int | None, spec: Any, disable: bool = False) -> None:
        self.bar = tqdm(
            total=total, unit="trial", desc=spec.name, disable=disable, dynamic_ncols=True
        )
        self.started = False

    def update(self, done: int, total: int | None, study: optuna.Study) -> None:
        if not self.started:
            # A resumed study starts part-way; the rate and the time left
            # count only the trials of this run.
            self.bar.initial = done
            self.started = True
        self.bar.n = done
        best = study_result(study).best_trial
        if best is not None:
            self.bar.set_postfix(
                best=f"{best.metrics['val_accuracy']:.4f} "
                f"@ {format_bytes(best.metrics['weight_memory_bytes'])}"
            )
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _row(trial: TrialRecord) -> list[str]:
    params = ", ".join(f"{k}={_short(v)}" for k, v in sorted(trial.params.items()))
    metrics = trial.metrics
    accuracy = f"{metrics['val_accuracy']:.4f}" if "val_accuracy" in metrics else "-"
    test = f"{metrics['test_accuracy']:.4f}" if "test_accuracy" in metrics else "-"
    memory = (
        format_bytes(metrics["weight_memory_bytes"]) if "weight_memory_bytes" in metrics else "-"
    )
    bitops = f"{metrics['bitops']:.3g}" if "bitops" in metrics else "-"
    state = trial.state if trial.feasible else "INFEASIBLE"
    note = trial.infeasible_reason or trial.fail_reason or ""
    return [str(trial.number), state, accuracy, test, memory, bitops, params, note]


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def format_table(trials: list[TrialRecord]) -> str:
    header = ["trial", "state", "val acc", "test acc", "weights", "BitOPs", "params", "note"]
    rows = [header, *(_row(t) for t in trials)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def print_study(result: StudyResult, all_trials: bool = False, budget: int | None = None) -> None:
    budget = budget if budget is not None else result.n_trials
    done = sum(1 for t in result.trials if counts_toward_budget(t))
    uncounted = sum(1 for t in result.trials if t.state == "FAIL" and not counts_toward_budget(t))
    line = f"\nStudy {result.name}: {done} trials done" + (f" of {budget}" if budget else "")
    if uncounted:
        line += f" ({uncounted} interrupted, cancelled or lost trials not counted)"
    print(line)
    if result.baseline and "error" in result.baseline:
        print(f"Float baseline failed: {result.baseline['error']}")
    elif result.baseline:
        print(
            f"Float baseline: val acc {result.baseline['val_accuracy']:.4f}, weights "
            f"{format_bytes(result.baseline['weight_memory_bytes'])}"
        )
    if all_trials:
        print("\nTrials:")
        print(format_table(result.trials))
    objectives = ", ".join(
        f"{o} ({d})" for o, d in zip(result.objectives, result.directions, strict=True)
    )
    print(f"\nPareto front over {objectives}: {len(result.pareto_front)} trials")
    front = sorted(result.pareto_front, key=lambda t: t.metrics.get("weight_memory_bits", 0))
    print(format_table(front))
    if result.best_trial is not None:
        best = result.best_trial
        print(
            f"\nBest trial: {best.number} (val acc {best.metrics['val_accuracy']:.4f}, "
            f"weights {format_bytes(best.metrics['weight_memory_bytes'])})"
        )


__all__ = ["ProgressBar", "format_table", "print_study"]
