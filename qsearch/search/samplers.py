"""Optuna samplers, pruners and the constraints function for a study spec."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import optuna

if TYPE_CHECKING:
    from qsearch.search.spec import StudySpec

logger = logging.getLogger(__name__)

# User attribute with a trial's constraint values. A value above 0 is a violation.
CONSTRAINTS_ATTR = "constraints"


def constraints_func(trial: optuna.trial.FrozenTrial) -> Sequence[float]:
    """Read the constraint values that the objective stored before training."""
    values = trial.user_attrs.get(CONSTRAINTS_ATTR)
    if values is None:
        # The trial failed before its cost was known: count it as infeasible.
        return [1.0]
    return values


def make_sampler(spec: StudySpec, seed: int | None = None) -> optuna.samplers.BaseSampler:
    """Build the sampler the spec names, seeded with `seed` (default: the spec's seed)."""
    sampler = spec.sampler
    seed = spec.seed if seed is None else seed
    has_constraints = bool(constraint_limits(spec))
    constraints = {"constraints_func": constraints_func} if has_constraints else {}

    if sampler.name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, **sampler.options(), **constraints)
    if sampler.name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, **sampler.options(), **constraints)
    if sampler.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if sampler.name == "grid":
        return optuna.samplers.GridSampler(spec.grid_search_space(), seed=seed)
    raise ValueError(f"unknown sampler {sampler.name!r}")


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """Build the pruner the spec names; pruning reads per-epoch validation accuracy."""
    pruner = spec.pruner
    if pruner.name == "median":
        return optuna.pruners.MedianPruner(**pruner.options())
    if pruner.name == "hyperband":
        return optuna.pruners.HyperbandPruner(max_resource=spec.training.epochs, **pruner.options())
    return optuna.pruners.NopPruner()


def constraint_limits(spec: StudySpec) -> dict[str, float]:
    """Return the constraints that the spec sets, keyed by metric name."""
    limits = {}
    if spec.constraints.max_weight_memory_bytes is not None:
        limits["weight_memory_bytes"] = float(spec.constraints.max_weight_memory_bytes)
    if spec.constraints.max_bitops is not None:
        limits["bitops"] = float(spec.constraints.max_bitops)
    return limits
