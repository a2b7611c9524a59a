"""Run every quantizer test on both paths: the fused kernels and PyTorch operators.

A module that sets `EXPLICIT_PATHS = True` picks its paths itself and runs once.
"""

from __future__ import annotations

import pytest

from qsearch.quant import fused
from tests.conftest import require_service

PATHS = ("fused", "torch")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "quantizer_path" in metafunc.fixturenames and not getattr(
        metafunc.module, "EXPLICIT_PATHS", False
    ):
        metafunc.parametrize("quantizer_path", PATHS, indirect=True)


@pytest.fixture(autouse=True)
def quantizer_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """Select the quantizer path of one test; None leaves the default (fused where built)."""
    path = getattr(request, "param", None)
    if path == "fused":
        require_fused_kernels()
    elif path == "torch":
        monkeypatch.setitem(fused._state, "loaded", False)
    return path


def require_fused_kernels() -> None:
    """Skip the test where the fused kernels cannot be built; fail instead in CI."""
    require_service(
        fused.available(),
        f"the fused quantizer kernels are unavailable: {fused.unavailable_reason()}",
    )
