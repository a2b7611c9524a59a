"""Shared test set-up: one torch thread per test process, and service checks."""

from __future__ import annotations

import os

import pytest
import torch

# Two cores: one thread keeps timings steady when pytest runs beside a server.
torch.set_num_threads(int(os.environ.get("QSEARCH_TEST_THREADS", "2")))


def require_service(available: bool, reason: str) -> None:
    """Skip a test whose service is missing, or fail it where CI demands every test.

    .ci/run sets QSEARCH_REQUIRE_ALL_TESTS=1, so a missing PostgreSQL or
    Chromium fails there instead of passing silently.
    """
    if available:
        return
    if os.environ.get("QSEARCH_REQUIRE_ALL_TESTS") == "1":
        pytest.fail(f"{reason} (required because QSEARCH_REQUIRE_ALL_TESTS=1)")
    pytest.skip(reason)
