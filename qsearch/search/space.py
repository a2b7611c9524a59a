"""Search-space dimensions of a study spec and the rules that tie them to the qconfig.

A dimension is a fixed value or a range that Optuna samples per trial. The
qconfig keys (bit widths, power-of-2 weights, quantization noise) and some
training settings can be searched. Every value a dimension can take is
checked against the qconfig limits before a study starts.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from qsearch.quant.fake_quantize import WEIGHT_SCALE_MODES
from qsearch.quant.qconfig import (
    ACCUMULATOR_MAX_BITS,
    ACCUMULATOR_MIN_BITS,
    QCONFIG_DEFAULTS,
    TENSOR_MAX_BITS,
    TENSOR_MIN_BITS,
    validate_qconfig,
)
from qsearch.quant.quantizers import POWER_OF_2_MAX_BITS

if TYPE_CHECKING:
    import optuna

Scalar = bool | int | float | str

OPTIMIZERS = ("adam", "sgd")
MAX_EPOCHS = 1000
MAX_BATCH_SIZE = 65536


def is_scalar(value: Any) -> bool:
    """True for a bool, an int, a finite float or a string."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, bool | int | str)


def _check_scalar(value: Any) -> Any:
    if not is_scalar(value):
        raise ValueError(f"a value must be a number, a string or true/false, but got {value!r}")
    return value


class _DimensionModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    @property
    def is_fixed(self) -> bool:
        """True if the value is set without asking the sampler."""
        return False

    @property
    def is_discrete(self) -> bool:
        """True if the dimension has a finite list of values, as the grid sampler needs."""
        return True


class IntDimension(_DimensionModel):
    """An integer range from low to high inclusive, sampled with `trial.suggest_int`."""

    type: Literal["int"]
    low: int
    high: int
    step: int = Field(default=1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _check_range(self) -> IntDimension:
        if self.low > self.high:
            raise ValueError(f"low must be at most high, but got low={self.low}, high={self.high}")
        if self.log and self.low < 1:
            raise ValueError(f"a log range needs low > 0, but got low={self.low}")
        if self.log and self.step != 1:
            raise ValueError(f"a log range takes no step, but got step={self.step}; remove step")
        if (self.high - self.low) % self.step:
            last = self.low + (self.high - self.low) // self.step * self.step
            raise ValueError(
                f"high - low must be a multiple of step, but got low={self.low}, "
                f"high={self.high}, step={self.step}; set high to {last}"
            )
        return self

    def boundary_values(self) -> list[int]:
        """Return the smallest and the largest value."""
        return [self.low, self.high]

    def grid_values(self) -> list[int]:
        """Return every value from low to high in steps of `step`."""
        return list(range(self.low, self.high + 1, self.step))

    def suggest(self, trial: optuna.trial.BaseTrial, name: str) -> int:
        """Ask `trial` for a value of the parameter `name`."""
        return trial.suggest_int(name, self.low, self.high, step=self.step, log=self.log)


class FloatDimension(_DimensionModel):
    """A real range, sampled with `trial.suggest_float`. With `step` it is discrete."""

    type: Literal["float"]
    low: float
    high: float
    step: float | None = Field(default=None, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _check_range(self) -> FloatDimension:
        if self.low > self.high:
            raise ValueError(f"low must be at most high, but got low={self.low}, high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, but got low={self.low}")
        if self.log and self.step is not None:
            raise ValueError(f"a log range takes no step, but got step={self.step}; remove step")
        if self.step is not None:
            # Decimal of the shortest repr, so that 0.7..0.9 in steps of 0.1 counts as exact.
            width = Decimal(repr(self.high)) - Decimal(repr(self.low))
            if width % Decimal(repr(self.step)) != 0:
                raise ValueError(
                    f"high - low must be a multiple of step, but got low={self.low}, "
                    f"high={self.high}, step={self.step}"
                )
        return self

    @property
    def is_discrete(self) -> bool:
        return self.step is not None

    def boundary_values(self) -> list[float]:
        """Return the smallest and the largest value."""
        return [self.low, self.high]

    def grid_values(self) -> list[float]:
        """Return every value from low to high in steps of `step`, or raise ValueError if unset."""
        if self.step is None:
            raise ValueError("a float range without step has no grid values; give a step")
        low, step = Decimal(repr(self.low)), Decimal(repr(self.step))
        count = int((Decimal(repr(self.high)) - low) / step) + 1
        return [float(low + i * step) for i in range(count)]

    def suggest(self, trial: optuna.trial.BaseTrial, name: str) -> float:
        """Ask `trial` for a value of the parameter `name`."""
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)


class CategoricalDimension(_DimensionModel):
    """A list of values, sampled with `trial.suggest_categorical`."""

    type: Literal["categorical"]
    choices: list[Annotated[Scalar, BeforeValidator(_check_scalar)]] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_unique(self) -> CategoricalDimension:
        # Compare (type, value) because True == 1 and 1 == 1.0 in Python.
        seen: set[tuple[type, Scalar]] = set()
        for choice in self.choices:
            key = (type(choice), choice)
            if key in seen:
                raise ValueError(f"choices must be unique, but {choice!r} appears more than once")
            seen.add(key)
        return self

    def boundary_values(self) -> list[Scalar]:
        """Return every choice."""
        return list(self.choices)

    def grid_values(self) -> list[Scalar]:
        """Return every choice."""
        return list(self.choices)

    def suggest(self, trial: optuna.trial.BaseTrial, name: str) -> Scalar:
        """Ask `trial` for a value of the parameter `name`."""
        return trial.suggest_categorical(name, self.choices)


class FixedDimension(_DimensionModel):
    """One value for every trial. A bare value in a spec becomes a FixedDimension."""

    type: Literal["fixed"]
    value: Annotated[Scalar, BeforeValidator(_check_scalar)]

    @property
    def is_fixed(self) -> bool:
        return True

    def boundary_values(self) -> list[Scalar]:
        """Return the value."""
        return [self.value]

    def grid_values(self) -> list[Scalar]:
        """Return the value."""
        return [self.value]

    def suggest(self, trial: optuna.trial.BaseTrial, name: str) -> Scalar:
        """Return the value without asking `trial`, so the trial records no parameter `name`."""
        return self.value


AnyDimension = IntDimension | FloatDimension | CategoricalDimension | FixedDimension
# The type of a search_space entry: pydantic picks the model by its `type` key.
Dimension = Annotated[AnyDimension, Field(discriminator="type")]


def dimension_from_input(value: Any) -> Any:
    """Turn a bare value into a fixed-dimension mapping, and return anything else unchanged."""
    if value is None or isinstance(value, _DimensionModel):
        return value
    if is_scalar(value):
        return {"type": "fixed", "value": value}
    if isinstance(value, Mapping):
        if "type" not in value:
            raise ValueError(
                "a dimension mapping needs 'type' (int, float, categorical or fixed), but got "
                f"the keys {sorted(map(str, value))}"
            )
        return value
    raise ValueError(
        f"a dimension is a value or a mapping with 'type', but got {value!r}; write a list "
        "of options as {type: categorical, choices: [...]}"
    )


@dataclass(frozen=True)
class KeyRule:
    """The kind and the limits of the values one search-space key takes."""

    kind: Literal["int", "float", "bool", "choice"]
    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    choices: tuple[str, ...] = ()

    def describe(self) -> str:
        """Return the rule in words, such as "an integer in 2..16"."""
        if self.kind == "bool":
            return "true or false"
        if self.kind == "choice":
            return f"one of {', '.join(self.choices)}"
        if self.kind == "int":
            return f"an integer in {self.low:g}..{self.high:g}"
        if self.high is not None:
            return f"a number in [{self.low:g}, {self.high:g}]"
        return f"a number {'>=' if self.low_inclusive else '>'} {self.low:g}"

    def accepts(self, value: Any) -> bool:
        """True if `value` has the rule's type and lies within its limits."""
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "choice":
            return isinstance(value, str) and value in self.choices
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.kind == "int" and not isinstance(value, int):
            return False
        if self.low is not None and value < self.low:
            return False
        if self.low is not None and value == self.low and not self.low_inclusive:
            return False
        return self.high is None or value <= self.high


_BITS = KeyRule("int", TENSOR_MIN_BITS, TENSOR_MAX_BITS)
QCONFIG_RULES: dict[str, KeyRule] = {
    "bw_w": _BITS,
    "bw_f": _BITS,
    "bw_b": _BITS,
    "bw_acc": KeyRule("int", ACCUMULATOR_MIN_BITS, ACCUMULATOR_MAX_BITS),
    "power_of_2": KeyRule("bool"),
    "noise_prob": KeyRule("float", 0.0, 1.0),
    "weight_scale": KeyRule("choice", choices=WEIGHT_SCALE_MODES),
}
TRAINING_RULES: dict[str, KeyRule] = {
    "lr": KeyRule("float", 0.0, low_inclusive=False),
    "weight_decay": KeyRule("float", 0.0),
    "batch_size": KeyRule("int", 1, MAX_BATCH_SIZE),
    "momentum": KeyRule("float", 0.0, 1.0),
    "optimizer": KeyRule("choice", choices=OPTIMIZERS),
    "epochs": KeyRule("int", 1, MAX_EPOCHS),
}
SEARCH_RULES = {**QCONFIG_RULES, **TRAINING_RULES}

# The qsearch qconfig target searches these by default. PyTorch's QAT qconfig is
# fixed at 8 bits, so a torch target starts from an empty search space.
DEFAULT_SEARCH_SPACE: Mapping[str, AnyDimension] = {
    "bw_w": IntDimension(type="int", low=2, high=8),
    "bw_f": IntDimension(type="int", low=2, high=8),
    "bw_b": IntDimension(type="int", low=2, high=16),
    "power_of_2": CategoricalDimension(type="categorical", choices=[False, True]),
    "noise_prob": FloatDimension(type="float", low=0.7, high=0.9),
    "weight_scale": FixedDimension(type="fixed", value="fixed"),
}


def resolve_search_space(overrides: Mapping[str, Any], *, torch_qconfig: bool) -> dict[str, Any]:
    """Merge `overrides` over the default dimensions, where a None override removes the key."""
    resolved: dict[str, Any] = {} if torch_qconfig else dict(DEFAULT_SEARCH_SPACE)
    for key, dimension in overrides.items():
        if dimension is None:
            resolved.pop(key, None)
        else:
            resolved[key] = dimension
    return resolved


def normalize_dimension(key: str, dimension: Any) -> Any:
    """Return `dimension` with integer values of a float key turned into floats.

    Then `noise_prob: 1` and `noise_prob: 1.0` dump, and fingerprint, the same.
    """
    rule = SEARCH_RULES.get(key)
    if rule is None or rule.kind != "float":
        return dimension

    def as_float(value: Scalar) -> Scalar:
        is_int = isinstance(value, int) and not isinstance(value, bool)
        return float(value) if is_int else value

    if isinstance(dimension, FixedDimension):
        return dimension.model_copy(update={"value": as_float(dimension.value)})
    if isinstance(dimension, CategoricalDimension):
        return dimension.model_copy(update={"choices": [as_float(c) for c in dimension.choices]})
    return dimension


def check_search_space(
    overrides: Mapping[str, Any],
    *,
    base_qconfig: Mapping[str, Any] | None,
    target: str,
    sampler: str,
) -> list[tuple[str, str]]:
    """Check the search space against the qconfig and the sampler.

    `base_qconfig` is None for a torch target. Returns (path, message) pairs,
    with paths relative to the study spec; an empty list means valid.
    """
    errors: list[tuple[str, str]] = []
    for key, dimension in overrides.items():
        path = f"search_space.{key}"
        if key not in SEARCH_RULES:
            errors.append(
                (
                    path,
                    f"unknown search_space key '{key}'; allowed keys are: "
                    f"{', '.join(SEARCH_RULES)}",
                )
            )
        elif base_qconfig is None and key in QCONFIG_RULES:
            errors.append(
                (
                    path,
                    f"search_space key '{key}' needs the qsearch qconfig _target_ "
                    f"(such as qsearch.quant.get_qat_qconfig), but model.qconfig "
                    f"names {target}, whose PyTorch QAT qconfig is fixed at 8 bits",
                )
            )
        elif dimension is not None:
            message = _check_dimension(key, SEARCH_RULES[key], dimension)
            if message:
                errors.append((path, message))
    if errors:
        return errors

    resolved = resolve_search_space(overrides, torch_qconfig=base_qconfig is None)
    if base_qconfig is not None:
        errors.extend(_check_qconfig_combinations(resolved, base_qconfig))
    if sampler == "grid":
        for key, dimension in resolved.items():
            if not dimension.is_discrete:
                errors.append(
                    (
                        f"search_space.{key}",
                        (
                            f"sampler 'grid' needs discrete dimensions, but {key} is a float range "
                            f"{dimension.low:g}..{dimension.high:g} without step; give a step, "
                            "categorical choices or a fixed value"
                        ),
                    )
                )
    return errors


def _check_dimension(key: str, rule: KeyRule, dimension: Any) -> str | None:
    range_kind = {FloatDimension: "float", IntDimension: "int"}.get(type(dimension))
    if range_kind is not None and range_kind != rule.kind:
        fitting = rule.kind if rule.kind in ("int", "float") else "categorical"
        return (
            f"{key} takes {rule.describe()}, so a {range_kind} range does not fit; "
            f"use type {fitting}"
        )
    for value in dimension.boundary_values():
        if not rule.accepts(value):
            return f"{key} must be {rule.describe()}, but the dimension contains {value!r}"
    return None


def _possible_values(key: str, resolved: Mapping[str, Any], base: Mapping[str, Any]) -> list[Any]:
    if key in resolved:
        values = resolved[key].boundary_values()
    else:
        values = [base.get(key, QCONFIG_DEFAULTS.get(key))]
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(numbers) == len(values) and len(values) > 2:
        return [min(numbers), max(numbers)]
    return values


def _check_qconfig_combinations(
    resolved: Mapping[str, Any], base: Mapping[str, Any]
) -> list[tuple[str, str]]:
    power_of_2 = _possible_values("power_of_2", resolved, base)
    weight_bits = _possible_values("bw_w", resolved, base)
    if True in power_of_2 and max(weight_bits) > POWER_OF_2_MAX_BITS:
        path = "search_space.bw_w" if "bw_w" in resolved else "model.qconfig.config.bw_w"
        return [
            (
                path,
                (
                    f"power-of-2 weights take at most {POWER_OF_2_MAX_BITS} bits, but bw_w reaches "
                    f"{max(weight_bits)} while power_of_2 can be true; lower bw_w to at most "
                    f"{POWER_OF_2_MAX_BITS} or fix power_of_2 to false"
                ),
            )
        ]

    # The qconfig limits are intervals per key plus the power-of-2 rule, so the
    # smallest and largest value of each key cover every combination.
    keys = [key for key in QCONFIG_RULES if key in resolved]
    for values in itertools.product(*(_possible_values(key, resolved, base) for key in keys)):
        config = {**base, **dict(zip(keys, values, strict=True))}
        try:
            validate_qconfig(config)
        except ValueError as error:
            return [
                (
                    "search_space",
                    f"the search space can produce the invalid qconfig {config}: {error}",
                )
            ]
    return []
