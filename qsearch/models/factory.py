"""The model factory: every built-in model, by name, in float or QAT form."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from qsearch.models.blocks import LayerBuilder
from qsearch.models.digits_cnn import DigitsCNN
from qsearch.models.mlp import MLP
from qsearch.models.tc_resnet import TCResNet8

ModelClass = Callable[..., nn.Module]

MODELS: dict[str, ModelClass] = {
    "digits_cnn": DigitsCNN,
    "mlp": MLP,
    "tc_res8": TCResNet8,
}


def build_model(
    name: str,
    *,
    input_shape: Sequence[int],
    num_classes: int,
    qconfig: Any | None = None,
    params: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Build the model `name`; with a qconfig every conv and linear layer is a QAT layer.

    `params` are the model's keyword arguments (for example
    `{"channels": [8, 16]}` for digits_cnn). Without a qconfig the model
    is the float network with the same architecture.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}.")
    try:
        return MODELS[name](
            LayerBuilder(qconfig), tuple(input_shape), num_classes, **dict(params or {})
        )
    except TypeError as error:
        raise ValueError(
            f"invalid parameters {dict(params or {})} for model {name!r}: {error}"
        ) from error
