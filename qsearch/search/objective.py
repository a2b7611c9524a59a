"""The Optuna objective: one quantization-aware training per trial."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import optuna
import torch
from torch import nn

from qsearch.data import DatasetSplits
from qsearch.quant import model_cost, qconfig_from_target
from qsearch.search.samplers import CONSTRAINTS_ATTR, constraint_limits
from qsearch.storage import save_state_dict
from qsearch.training import (
    NonFiniteError,
    TrainingConfig,
    TrainingInterrupted,
    evaluate,
    train,
)

if TYPE_CHECKING:
    from qsearch.search.spec import StudySpec

logger = logging.getLogger(__name__)

# A model factory takes (input_shape, num_classes, qconfig or None) and
# returns the model; qconfig None asks for the float baseline.
ModelFactory = Callable[[tuple[int, ...], int, Any], nn.Module]

# Metric name -> user attribute and display unit, for the objectives.
OBJECTIVE_METRICS = {
    "accuracy": "val_accuracy",
    "weight_memory": "weight_memory_bytes",
    "bitops": "bitops",
}


# User attribute that contains a trial's metrics and seed as one mapping.
METRICS_ATTR = "metrics"
# A running trial's validation accuracy per epoch so far; the finished
# trial's full curve is in its metrics.
CURVE_ATTR = "curve"
# Seconds between a running trial's progress writes (its curve) and cancel
# checks. Each is a storage transaction, and a small model's epoch can take
# a tenth of a second, so a trial shorter than this writes only its result.
PROGRESS_INTERVAL_S = 1.0


class TrialStopped(Exception):
    """Raised inside a trial when its study was cancelled."""


def format_bytes(value: float) -> str:
    """Format a byte count as B or KiB with one decimal, e.g. "12.3 KiB"."""
    if value < 1024:
        return f"{value:g} B"
    return f"{value / 1024:.1f} KiB"


def trial_seed(spec_seed: int, trial_number: int) -> int:
    """Seed of a trial's weights and noise masks: the spec's seed plus the trial number."""
    return spec_seed + trial_number


def build_qconfig(spec: StudySpec, params: Mapping[str, Any]) -> Any:
    """Build one trial's qconfig: the spec's base qconfig with the sampled keys over it."""
    return qconfig_from_target(spec.qconfig_block_for(params))


def training_config(spec: StudySpec, params: Mapping[str, Any]) -> TrainingConfig:
    """Return one trial's training settings: the spec's, with searched settings over them."""
    return TrainingConfig(**spec.training_for(params).model_dump())


def cost_metrics(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, Any]:
    cost = model_cost(model, torch.zeros(1, *input_shape))
    return cost.totals()


def check_constraints(spec: StudySpec, metrics: Mapping[str, Any]) -> tuple[list[float], str]:
    """Return the constraint values (> 0 violated) and the reason if any is violated."""
    values = []
    reasons = []
    for metric, limit in constraint_limits(spec).items():
        value = float(metrics[metric])
        values.append(value - limit)
        if value > limit:
            if metric == "weight_memory_bytes":
                reasons.append(f"weight memory {format_bytes(value)} exceeds {format_bytes(limit)}")
            else:
                reasons.append(f"BitOPs {value:.4g} exceed {limit:.4g}")
    return values, "; ".join(reasons)


class Objective:
    """Train and evaluate one quantized configuration per Optuna trial.

    Cost follows from the configuration, so constraints are checked before
    training: an infeasible configuration is recorded with its reason and
    zero accuracy, never trained, and the sampler learns of it through the
    `constraints` user attribute. Trained weights go to the storage.
    """

    def __init__(
        self,
        spec: StudySpec,
        splits: DatasetSplits,
        model_factory: ModelFactory,
        storage_url: str | None,
        *,
        baseline_accuracy: float | None = None,
        should_stop: Callable[[], bool] | None = None,
        interrupt: threading.Event | None = None,
    ) -> None:
        self.spec = spec
        self.splits = splits
        self.model_factory = model_factory
        self.storage_url = storage_url
        self.baseline_accuracy = baseline_accuracy
        self.should_stop = should_stop
        self.interrupt = interrupt
        self.single_objective = len(spec.objectives) == 1

    def __call__(self, trial: optuna.Trial) -> list[float]:
        try:
            return self._run(trial)
        except optuna.TrialPruned:
            raise
        except (KeyboardInterrupt, TrainingInterrupted):
            trial.set_user_attr("fail_reason", "interrupted")
            raise
        except TrialStopped:
            trial.set_user_attr("fail_reason", "cancelled")
            raise
        except NonFiniteError as error:
            trial.set_user_attr("fail_reason", str(error))
            raise
        except Exception as error:
            trial.set_user_attr("fail_reason", f"{type(error).__name__}: {error}")
            raise

    def _run(self, trial: optuna.Trial) -> list[float]:
        spec = self.spec
        params = spec.suggest_values(trial)
        qconfig = build_qconfig(spec, params)
        config = training_config(spec, params)
        seed = trial_seed(spec.seed, trial.number)

        torch.manual_seed(seed)
        model = self.model_factory(self.splits.input_shape, self.splits.num_classes, qconfig)
        metrics: dict[str, Any] = {"seed": seed, **cost_metrics(model, self.splits.input_shape)}
        # One attribute for all metrics: each attribute is a storage
        # transaction, and a trial of a small model trains in about a second.
        trial.set_user_attr(METRICS_ATTR, metrics)

        constraint_values, reason = check_constraints(spec, metrics)
        if constraint_values:
            trial.set_user_attr(CONSTRAINTS_ATTR, constraint_values)
        if reason:
            trial.set_user_attr("infeasible_reason", reason)
            logger.info("trial %d is infeasible, not trained: %s", trial.number, reason)
            return self._values({**metrics, "val_accuracy": 0.0})

        started = time.perf_counter()
        curve: list[float] = []
        losses: list[float] = []
        synced = {"at": time.monotonic(), "epochs": 0}

        def write_curve() -> None:
            trial.set_user_attr(CURVE_ATTR, curve)
            synced.update(at=time.monotonic(), epochs=len(curve))

        def on_epoch(result: Any) -> None:
            curve.append(result.val_accuracy)
            losses.append(result.train_loss)
            if time.monotonic() - synced["at"] >= PROGRESS_INTERVAL_S:
                write_curve()
                if self.should_stop is not None and self.should_stop():
                    raise TrialStopped("the study was cancelled")
            if self.single_objective:
                trial.report(result.val_accuracy, result.epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(
                        f"validation accuracy {result.val_accuracy:.4f} after epoch "
                        f"{result.epoch} is below the pruner's threshold"
                    )

        try:
            train(
                model,
                self.splits.x_train,
                self.splits.y_train,
                self.splits.x_val,
                self.splits.y_val,
                config,
                seed=seed,
                on_epoch=on_epoch,
                interrupt=self.interrupt,
            )
        except BaseException:
            # A trial that fails, is pruned or stops keeps the curve it reached.
            if synced["epochs"] < len(curve):
                try:
                    write_curve()
                except Exception as error:
                    # The training failure is the one to report.
                    logger.warning("trial %d: saving its curve failed: %s", trial.number, error)
            raise
        metrics["train_seconds"] = time.perf_counter() - started
        metrics["val_accuracy"] = curve[-1]
        if self.splits.x_test is not None and self.splits.y_test is not None:
            metrics["test_accuracy"] = evaluate(model, self.splits.x_test, self.splits.y_test)
        if self.baseline_accuracy is not None:
            metrics["accuracy_drop"] = self.baseline_accuracy - metrics["val_accuracy"]
        # The result is one transaction: the metrics with both curves.
        trial.set_user_attr(METRICS_ATTR, {**metrics, CURVE_ATTR: curve, "loss_curve": losses})

        if self.storage_url is not None:
            save_state_dict(self.storage_url, spec.name, trial.number, model.state_dict())
        return self._values(metrics)

    def _values(self, metrics: Mapping[str, Any]) -> list[float]:
        return [float(metrics[OBJECTIVE_METRICS[name]]) for name in self.spec.objectives]
