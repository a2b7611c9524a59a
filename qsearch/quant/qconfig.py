"""The qconfig: bit widths and noise settings, turned into fake-quantizer factories."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from qsearch.quant.fake_quantize import WEIGHT_SCALE_MODES, FakeQuantize, check_noise_prob
from qsearch.quant.quantizers import (
    POWER_OF_2_MAX_BITS,
    POWER_OF_2_MIN_BITS,
    POWER_OF_2_ROUNDING_MODES,
    PowerOf2Quantization,
    SymmetricQuantization,
)

# Bit-width limits of the qconfig keys. The quantizer classes accept wider
# ranges; these are the settings the QAT layers are meant for.
TENSOR_MIN_BITS = 2
TENSOR_MAX_BITS = 16
ACCUMULATOR_MIN_BITS = 2
ACCUMULATOR_MAX_BITS = 32

QCONFIG_DEFAULTS: dict[str, Any] = {
    "bw_b": None,  # None, 0 or less: use bw_f
    "bw_acc": 20,
    "power_of_2": False,
    "noise_prob": 1.0,
    "weight_scale": "fixed",
    "power_of_2_rounding": "ceil",
}
REQUIRED_KEYS = ("bw_w", "bw_f")
QCONFIG_KEYS = (*REQUIRED_KEYS, *QCONFIG_DEFAULTS)


@dataclass(frozen=True)
class FakeQuantizeFactory:
    """A picklable factory that returns a fresh FakeQuantize on each call."""

    bits: int
    noise_prob: float = 1.0
    power_of_2: bool = False
    weight_scale: str = "fixed"
    power_of_2_rounding: str = "ceil"

    def __call__(self) -> FakeQuantize:
        if self.power_of_2:
            quantization: SymmetricQuantization | PowerOf2Quantization = PowerOf2Quantization(
                self.bits, rounding=self.power_of_2_rounding
            )
        else:
            quantization = SymmetricQuantization(self.bits)
        return FakeQuantize(quantization, self.noise_prob, weight_scale=self.weight_scale)


class QConfig(NamedTuple):
    """Fake-quantizer factories for one network, as `get_qat_qconfig` builds them.

    The QAT layers use `weight`, `bias` and `activation`. `accumulator`
    carries the accumulator bit width for export and for hardware targets;
    the layers compute their sums in float, so they never call it.
    """

    activation: FakeQuantizeFactory
    weight: FakeQuantizeFactory
    bias: FakeQuantizeFactory
    accumulator: FakeQuantizeFactory


def _check_int(config: Mapping[str, Any], key: str, low: int, high: int, note: str = "") -> int:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(
            f"qconfig key '{key}' must be an integer in {low}..{high}{note}, but got {value!r}."
        )
    if not low <= value <= high:
        raise ValueError(f"qconfig key '{key}' must be in {low}..{high}{note}, but got {value}.")
    return value


def validate_qconfig(config: Mapping[str, Any]) -> dict[str, Any]:
    """Check a qconfig mapping and return it with defaults filled in.

    Raises ValueError naming the key, the rule and the value received.
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"qconfig must be a mapping of keys to values, but got {config!r}.")
    unknown = sorted(set(config) - set(QCONFIG_KEYS))
    if unknown:
        raise ValueError(
            f"unknown qconfig key '{unknown[0]}'; allowed keys are {', '.join(QCONFIG_KEYS)}."
        )
    for key in REQUIRED_KEYS:
        if key not in config:
            raise ValueError(f"qconfig key '{key}' is missing; give an integer in 2..16.")
    resolved = {**QCONFIG_DEFAULTS, **config}

    power_of_2 = resolved["power_of_2"]
    if not isinstance(power_of_2, bool):
        raise ValueError(f"qconfig key 'power_of_2' must be true or false, but got {power_of_2!r}.")
    if power_of_2:
        _check_int(
            resolved, "bw_w", POWER_OF_2_MIN_BITS, POWER_OF_2_MAX_BITS, " for power-of-2 weights"
        )
    else:
        _check_int(resolved, "bw_w", TENSOR_MIN_BITS, TENSOR_MAX_BITS)
    _check_int(resolved, "bw_f", TENSOR_MIN_BITS, TENSOR_MAX_BITS)

    bias_bits = resolved["bw_b"]
    if bias_bits is None or (
        isinstance(bias_bits, int) and not isinstance(bias_bits, bool) and bias_bits <= 0
    ):
        resolved["bw_b"] = resolved["bw_f"]
    else:
        _check_int(resolved, "bw_b", TENSOR_MIN_BITS, TENSOR_MAX_BITS, " (0 or less means bw_f)")
    _check_int(resolved, "bw_acc", ACCUMULATOR_MIN_BITS, ACCUMULATOR_MAX_BITS)

    noise_prob = resolved["noise_prob"]
    if isinstance(noise_prob, float) and math.isnan(noise_prob):
        raise ValueError("qconfig key 'noise_prob' must be in [0, 1], but got nan.")
    resolved["noise_prob"] = check_noise_prob(noise_prob, name="qconfig key 'noise_prob'")

    if resolved["weight_scale"] not in WEIGHT_SCALE_MODES:
        raise ValueError(
            f"qconfig key 'weight_scale' must be one of {', '.join(WEIGHT_SCALE_MODES)}, "
            f"but got {resolved['weight_scale']!r}."
        )
    if resolved["power_of_2_rounding"] not in POWER_OF_2_ROUNDING_MODES:
        raise ValueError(
            "qconfig key 'power_of_2_rounding' must be one of "
            f"{', '.join(POWER_OF_2_ROUNDING_MODES)}, but got {resolved['power_of_2_rounding']!r}."
        )
    return resolved


def get_qat_qconfig(config: Mapping[str, Any]) -> QConfig:
    """Build the QConfig for a mapping with the keys bw_w, bw_f, bw_b, bw_acc,
    power_of_2, noise_prob, weight_scale and power_of_2_rounding.

    Power-of-2 and the weight scale apply to weights only; biases,
    activations and the accumulator use symmetric fixed-point quantization.
    """
    resolved = validate_qconfig(config)
    noise_prob = resolved["noise_prob"]
    return QConfig(
        activation=FakeQuantizeFactory(resolved["bw_f"], noise_prob),
        weight=FakeQuantizeFactory(
            resolved["bw_w"],
            noise_prob,
            power_of_2=resolved["power_of_2"],
            weight_scale=resolved["weight_scale"],
            power_of_2_rounding=resolved["power_of_2_rounding"],
        ),
        bias=FakeQuantizeFactory(resolved["bw_b"], noise_prob),
        accumulator=FakeQuantizeFactory(resolved["bw_acc"], noise_prob),
    )
