from __future__ import annotations

import copy
from typing import Any

import pytest

BASE_SPEC: dict[str, Any] = {
    "name": "tiny",
    "seed": 0,
    "dataset": {"name": "digits"},
    "model": {"name": "digits_cnn", "params": {"channels": [4, 8]}},
    "search_space": {"bw_b": 8, "noise_prob": 1.0},
    "objectives": ["accuracy", "weight_memory"],
    "sampler": {"name": "random"},
    "training": {"epochs": 2, "batch_size": 128, "lr": 0.01},
    "n_trials": 4,
}


@pytest.fixture
def spec() -> dict[str, Any]:
    """A small digits study: 4 random trials of 2 epochs on a narrow CNN."""
    return copy.deepcopy(BASE_SPEC)


@pytest.fixture
def storage(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'study.db'}"
