from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.tiny_spec import tiny_spec

BASE_SPEC = tiny_spec(
    search_space={"bw_b": 8, "noise_prob": 1.0}, objectives=["accuracy", "weight_memory"]
)


@pytest.fixture
def spec() -> dict[str, Any]:
    """A small digits study: 4 random trials of 2 epochs on a narrow CNN."""
    return copy.deepcopy(BASE_SPEC)


@pytest.fixture
def storage(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'study.db'}"
