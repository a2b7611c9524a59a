"""Build a qconfig from a `_target_` block in the upstream configuration format.

Existing hannah configurations name their qconfig factory by import path::

    qconfig:
      _target_: speech_recognition.models.factory.qconfig.get_trax_qat_qconfig
      config: {bw_w: 6, bw_f: 8, bw_b: 8, power_of_2: false, noise_prob: 0.7}

Only the names in `QSEARCH_TARGETS` and `TORCH_TARGETS` are accepted, and
they map to functions here: nothing named in a configuration is imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from qsearch.quant.qconfig import QConfig, get_qat_qconfig

QSEARCH_TARGET = "qsearch.quant.get_qat_qconfig"
QSEARCH_TARGETS = (
    QSEARCH_TARGET,
    "speech_recognition.models.factory.qconfig.get_trax_qat_qconfig",
    "hannah.models.factory.qconfig.get_trax_qat_qconfig",
)
TORCH_TARGETS = (
    "torch.quantization.get_default_qat_qconfig",
    "torch.ao.quantization.get_default_qat_qconfig",
)
TORCH_BACKENDS = ("fbgemm", "x86", "qnnpack", "onednn")
ALLOWED_TARGETS = (*QSEARCH_TARGETS, *TORCH_TARGETS)

# Settings that PyTorch's observer-based 8-bit qconfig has no equivalent for.
_QSEARCH_ONLY_KEYS = ("noise_prob", "power_of_2", "weight_scale", "bw_w", "bw_f", "bw_b", "bw_acc")


def get_torch_qat_qconfig(backend: str = "fbgemm") -> torch.ao.quantization.QConfig:
    """Return PyTorch's default QAT qconfig for `backend`, after checking the name."""
    if backend not in TORCH_BACKENDS:
        raise ValueError(
            f"qconfig 'backend' must be one of {', '.join(TORCH_BACKENDS)}, but got {backend!r}."
        )
    return torch.ao.quantization.get_default_qat_qconfig(backend)


def check_qconfig_block(block: Mapping[str, Any]) -> None:
    """Validate a `_target_` block without building any module; raise ValueError if invalid."""
    qconfig_from_target(block)


def qconfig_from_target(block: Mapping[str, Any]) -> QConfig | torch.ao.quantization.QConfig:
    """Build the qconfig that a `{_target_, config | backend}` block describes."""
    if not isinstance(block, Mapping):
        raise ValueError(f"qconfig must be a mapping with a '_target_' key, but got {block!r}.")
    target = block.get("_target_")
    if target is None:
        raise ValueError(
            f"qconfig '_target_' is missing; use one of: {', '.join(ALLOWED_TARGETS)}."
        )
    if target not in ALLOWED_TARGETS:
        raise ValueError(
            f"qconfig '_target_' {target!r} is not allowed; use one of: "
            f"{', '.join(ALLOWED_TARGETS)}."
        )

    if target in QSEARCH_TARGETS:
        unknown = sorted(set(block) - {"_target_", "config"})
        if unknown:
            raise ValueError(
                f"unknown qconfig key '{unknown[0]}' for {target}; put the bit widths and "
                "noise settings under 'config'."
            )
        config = block.get("config")
        if config is None:
            raise ValueError("qconfig 'config' is missing; give at least bw_w and bw_f.")
        return get_qat_qconfig(config)

    unknown = sorted(set(block) - {"_target_", "backend", "config"})
    if unknown:
        raise ValueError(
            f"unknown qconfig key '{unknown[0]}' for {target}; it takes only 'backend'."
        )
    config = block.get("config") or {}
    for key in _QSEARCH_ONLY_KEYS:
        value = config.get(key) if isinstance(config, Mapping) else None
        if key == "noise_prob" and value is not None and value != 1.0:
            raise ValueError(
                f"qconfig 'noise_prob' {value!r} is not supported with {target}: PyTorch's "
                "QAT qconfig has no quantization noise. Use _target_ "
                f"{QSEARCH_TARGET} for noise."
            )
        if key == "power_of_2" and value:
            raise ValueError(
                f"qconfig 'power_of_2' is not supported with {target}: PyTorch's QAT qconfig "
                f"has no power-of-2 weights. Use _target_ {QSEARCH_TARGET} for power-of-2."
            )
    if not isinstance(config, Mapping) or set(config) - {"noise_prob", "power_of_2"}:
        raise ValueError(
            f"qconfig 'config' is not supported with {target}: PyTorch's QAT qconfig is "
            f"fixed at 8 bits and takes only 'backend'. Use _target_ {QSEARCH_TARGET} to "
            "set bit widths."
        )
    return get_torch_qat_qconfig(block.get("backend", "fbgemm"))
