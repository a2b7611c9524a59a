"""The small digits study that tests in several packages run: 2-epoch trials of a narrow CNN."""

from __future__ import annotations

import copy
from typing import Any

TINY_SPEC: dict[str, Any] = {
    "name": "tiny",
    "seed": 0,
    "dataset": {"name": "digits"},
    "model": {"name": "digits_cnn", "params": {"channels": [4, 8]}},
    "search_space": {"bw_b": 8},
    "sampler": {"name": "random"},
    "training": {"epochs": 2, "batch_size": 128, "lr": 0.01},
    "n_trials": 4,
}


def tiny_spec(name: str = "tiny", **changes: Any) -> dict[str, Any]:
    """Return a copy of the tiny spec under `name`, with top-level keys replaced by `changes`."""
    spec = copy.deepcopy(TINY_SPEC)
    spec["name"] = name
    spec.update(changes)
    return spec
