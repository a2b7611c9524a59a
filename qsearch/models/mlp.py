"""A multilayer perceptron over flattened inputs."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

from qsearch.models.blocks import LayerBuilder


class MLP(nn.Module):
    """Linear-ReLU layers of the given widths, then a linear classifier."""

    def __init__(
        self,
        builder: LayerBuilder,
        input_shape: Sequence[int],
        num_classes: int,
        hidden: Sequence[int] = (64, 32),
    ) -> None:
        super().__init__()
        if any(width < 1 for width in hidden):
            raise ValueError(
                f"mlp parameter 'hidden' must hold positive integers, but got {list(hidden)}."
            )
        self.quant_input = builder.quantize()
        widths = [math.prod(input_shape), *hidden]
        self.hidden = nn.Sequential(
            *(builder.linear(a, b, relu=True) for a, b in itertools.pairwise(widths))
        )
        self.classifier = builder.linear(widths[-1], num_classes, quantize_output=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.quant_input(torch.flatten(x, 1))
        return self.classifier(self.hidden(x))
