"""Create or resume a study and run its trials: the Python entry point."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna
import torch
from torch import nn

from qsearch.data import DatasetSplits, load_dataset
from qsearch.models import build_model
from qsearch.search.datasets import as_splits
from qsearch.search.heap import frozen_heap
from qsearch.search.objective import ModelFactory, Objective, cost_metrics, training_config
from qsearch.search.results import StudyResult, counted_trials, study_result
from qsearch.search.samplers import make_pruner, make_sampler
from qsearch.search.spec import StudySpec, load_spec
from qsearch.storage import DEFAULT_STORAGE, open_optuna_storage
from qsearch.storage.artifacts import delete_study_weights
from qsearch.training import (
    NonFiniteError,
    TrainingInterrupted,
    evaluate,
    resolve_device,
    train,
)

logger = logging.getLogger(__name__)

SPEC_ATTR = "spec"
FINGERPRINT_ATTR = "spec_fingerprint"
BASELINE_ATTR = "baseline"
DATA_ATTR = "data"
DATA_ROOT_ENV = "QSEARCH_DATA_ROOT"

# Called after each finished trial with (counted trials, budget, study).
ProgressCallback = Callable[[int, int | None, optuna.Study], None]


class StudyConflictError(ValueError):
    """Raised when a study name is taken by a study with a different spec."""


def builtin_model_factory(spec: StudySpec) -> ModelFactory:
    """Return a factory that builds the spec's built-in model with its parameters."""

    def factory(input_shape: tuple[int, ...], num_classes: int, qconfig: Any) -> nn.Module:
        return build_model(
            spec.model.name,
            input_shape=input_shape,
            num_classes=num_classes,
            qconfig=qconfig,
            params=spec.model.params,
        )

    return factory


def load_splits(spec: StudySpec, data_root: str | os.PathLike | None = None) -> DatasetSplits:
    """Load the spec's dataset; paths resolve under `data_root` or $QSEARCH_DATA_ROOT."""
    root = data_root or os.environ.get(DATA_ROOT_ENV) or Path.cwd()
    return load_dataset(
        spec.dataset.name,
        seed=spec.seed,
        data_root=root,
        path=spec.dataset.path,
        **spec.dataset.options,
    )


def open_study(
    spec: StudySpec,
    storage: str | None = None,
    *,
    optuna_storage: optuna.storages.BaseStorage | None = None,
    sampler_seed: int | None = None,
) -> optuna.Study:
    """Create the spec's study, or load it if a study with the same spec exists.

    Raises StudyConflictError when the name belongs to a different spec
    that already has trials; a study without trials takes the new spec.
    Budgets (n_trials, timeout) are not part of the comparison, so a
    study can be resumed with a larger budget. `optuna_storage` replaces
    the storage opened from the URL (workers pass one with heartbeats).

    The sampler is seeded with `sampler_seed`, by default the spec's seed
    plus the number of trials already stored. A fresh study therefore
    samples reproducibly, and a resumed one does not repeat the
    configurations of its first run.
    """
    storage_url = storage or DEFAULT_STORAGE
    study = optuna.create_study(
        study_name=spec.name,
        storage=optuna_storage or open_optuna_storage(storage_url),
        directions=spec.directions(),
        sampler=make_sampler(spec, sampler_seed),
        pruner=make_pruner(spec),
        load_if_exists=True,
    )
    n_existing = len(study.get_trials(deepcopy=False))
    if sampler_seed is None and n_existing:
        study.sampler = make_sampler(spec, spec.seed + n_existing)

    fingerprint = spec.fingerprint()
    stored = study.user_attrs.get(FINGERPRINT_ATTR)
    if stored is not None and stored != fingerprint and n_existing:
        changed = _changed_fields(study.user_attrs.get(SPEC_ATTR, {}), spec.to_json_dict())
        raise StudyConflictError(
            f"study {spec.name!r} already exists in {storage_url} with a different spec "
            f"(changed: {', '.join(changed) or 'search space'}); give the new spec another "
            f"name, or delete the old study first with: qsearch delete {spec.name}"
        )
    if stored != fingerprint:
        if stored is not None:
            # Nothing was trained under the old spec, so nothing is lost.
            logger.info("study %s has no trials; replacing its spec", spec.name)
            study.set_user_attr(BASELINE_ATTR, None)
        study.set_user_attr(FINGERPRINT_ATTR, fingerprint)
        logger.info("created study %s in %s", spec.name, storage_url)
    else:
        logger.info("resuming study %s: %d trials counted", spec.name, counted_trials(study))
    # Keep the latest budget, so readers see what the study runs to.
    study.set_user_attr(SPEC_ATTR, spec.to_json_dict())
    return study


def _changed_fields(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    ignored = ("n_trials", "timeout")
    keys = sorted(set(old) | set(new))
    return [key for key in keys if key not in ignored and old.get(key) != new.get(key)]


def check_model(factory: ModelFactory, splits: DatasetSplits, spec: StudySpec) -> None:
    """Build the float model on the meta device and run one sample through it.

    This catches bad model parameters, a model that does not fit the
    dataset's input shape and a factory that returns no module, before a
    study is created, and without allocating the weights.
    """
    resolve_device(spec.training.device)
    try:
        with torch.device("meta"):
            model = factory(splits.input_shape, splits.num_classes, None)
            if not isinstance(model, nn.Module):
                raise ValueError(
                    f"the model factory returned {type(model).__name__}; it must return a "
                    "torch.nn.Module"
                )
            model(torch.zeros(2, *splits.input_shape))
    except ValueError:
        raise
    except (RuntimeError, TypeError) as error:
        raise ValueError(
            f"model {spec.model.name!r} cannot run on inputs of shape "
            f"{tuple(splits.input_shape)}: {error}"
        ) from error


def delete_study(name: str, storage: str | None = None) -> None:
    """Delete a study, its trials and their stored weights.

    Raises LookupError when no study has that name. For a study that the
    HTTP service runs, use its DELETE endpoint, which also removes the
    study from the service's registry.
    """
    storage_url = storage or DEFAULT_STORAGE
    optuna_storage = open_optuna_storage(storage_url)
    try:
        optuna.delete_study(study_name=name, storage=optuna_storage)
    except KeyError:
        raise LookupError(f"study {name!r} not found in {storage_url}") from None
    delete_study_weights(storage_url, name)
    logger.info("deleted study %s from %s", name, storage_url)


def record_data(study: optuna.Study, splits: DatasetSplits) -> None:
    """Store the dataset's shapes and sizes with the study, for export and display."""
    data = {
        "input_shape": list(splits.input_shape),
        "num_classes": splits.num_classes,
        "n_train": len(splits.x_train),
        "n_val": len(splits.x_val),
        "n_test": len(splits.x_test) if splits.x_test is not None else 0,
    }
    if study.user_attrs.get(DATA_ATTR) != data:
        study.set_user_attr(DATA_ATTR, data)


def ensure_baseline(
    study: optuna.Study,
    spec: StudySpec,
    splits: DatasetSplits,
    model_factory: ModelFactory,
    interrupt: threading.Event | None = None,
) -> dict[str, Any]:
    """Train the float baseline once per study and store it with the study.

    An interrupt during its training raises KeyboardInterrupt and stores nothing.
    """
    baseline = study.user_attrs.get(BASELINE_ATTR)
    if baseline is not None:
        return baseline

    logger.info("training the float baseline of study %s", spec.name)
    torch.manual_seed(spec.seed)
    model = model_factory(splits.input_shape, splits.num_classes, None)
    started = time.perf_counter()
    try:
        history = train(
            model,
            splits.x_train,
            splits.y_train,
            splits.x_val,
            splits.y_val,
            training_config(spec, {}),
            seed=spec.seed,
            interrupt=interrupt,
        )
    except TrainingInterrupted as error:
        raise KeyboardInterrupt from error
    except NonFiniteError as error:
        # The trials may still train: quantization bounds every activation.
        logger.warning("float baseline of study %s failed: %s", spec.name, error)
        failed = {"error": str(error)}
        study.set_user_attr(BASELINE_ATTR, failed)
        return failed
    baseline = {
        "val_accuracy": history[-1].val_accuracy,
        "curve": [epoch.val_accuracy for epoch in history],
        "train_seconds": time.perf_counter() - started,
        **cost_metrics(model, splits.input_shape),
    }
    if splits.x_test is not None and splits.y_test is not None:
        baseline["test_accuracy"] = evaluate(model, splits.x_test, splits.y_test)
    study.set_user_attr(BASELINE_ATTR, baseline)
    logger.info(
        "float baseline of study %s: validation accuracy %.4f", spec.name, baseline["val_accuracy"]
    )
    return baseline


def _grid_exhausted(study: optuna.Study) -> bool:
    sampler = study.sampler
    return isinstance(sampler, optuna.samplers.GridSampler) and sampler.is_exhausted(study)


def run_study(
    spec_or_path: StudySpec | Mapping[str, Any] | str | os.PathLike,
    storage: str | None = None,
    *,
    n_trials: int | None = None,
    model_factory: ModelFactory | None = None,
    dataset: Any = None,
    data_root: str | os.PathLike | None = None,
    progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    interrupt: threading.Event | None = None,
) -> StudyResult:
    """Run a study to its budget and return its trials, Pareto front and best trial.

    `storage` is a SQLAlchemy URL (default: the SQLite file qsearch.db in
    the working directory). Trials already in the storage count against
    the budget, so running the same spec again resumes. `n_trials`
    overrides the spec's budget. `model_factory(input_shape, num_classes,
    qconfig)` and `dataset` (a DatasetSplits, a mapping of tensors, or
    torch Datasets) replace the built-in model and dataset. Setting
    `interrupt` stops the running trial within one batch, records it as
    failed with the reason "interrupted" and raises KeyboardInterrupt.
    """
    spec = load_spec(spec_or_path)
    storage_url = storage or DEFAULT_STORAGE
    budget = n_trials if n_trials is not None else spec.n_trials
    if budget is not None and budget < 1:
        raise ValueError(f"n_trials must be at least 1, but got {budget}.")

    splits = as_splits(dataset) if dataset is not None else load_splits(spec, data_root)
    factory = model_factory or builtin_model_factory(spec)
    check_model(factory, splits, spec)
    study = open_study(spec, storage_url)
    record_data(study, splits)
    baseline = ensure_baseline(study, spec, splits, factory, interrupt)
    objective = Objective(
        spec,
        splits,
        factory,
        storage_url,
        baseline_accuracy=baseline.get("val_accuracy"),
        should_stop=should_stop,
        interrupt=interrupt,
    )

    deadline = time.monotonic() + spec.timeout if spec.timeout else None
    done = counted_trials(study)
    if progress is not None:
        progress(done, budget, study)
    with frozen_heap():
        while True:
            if budget is not None and done >= budget:
                break
            if deadline is not None and time.monotonic() >= deadline:
                logger.info("study %s reached its timeout of %s s", spec.name, spec.timeout)
                break
            if _grid_exhausted(study) or (should_stop is not None and should_stop()):
                break
            study.optimize(objective, n_trials=1, catch=(Exception,))
            if interrupt is not None and interrupt.is_set():
                raise KeyboardInterrupt
            # Counted again, not incremented: other processes may add trials.
            done = counted_trials(study)
            if progress is not None:
                progress(done, budget, study)
    return study_result(study)
