"""A small 2-D CNN for 8 x 8 images such as scikit-learn's digits."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from qsearch.models.blocks import LayerBuilder


class DigitsCNN(nn.Module):
    """Two conv-BN-ReLU layers, max pooling, one more conv, then a linear classifier."""

    def __init__(
        self,
        builder: LayerBuilder,
        input_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (16, 32),
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(
                f"digits_cnn needs inputs of shape (channels, height, width), but the dataset "
                f"gives {tuple(input_shape)}; use the mlp model for flat inputs."
            )
        if len(channels) != 2 or any(c < 1 for c in channels):
            raise ValueError(
                f"digits_cnn parameter 'channels' must be two positive integers, but got "
                f"{list(channels)}."
            )
        in_channels, height, width = input_shape
        first, second = channels
        self.quant_input = builder.quantize()
        self.features = nn.Sequential(
            builder.conv(2, in_channels, first, 3, padding=1),
            builder.conv(2, first, second, 3, padding=1),
            nn.MaxPool2d(2),
        )
        flat = second * (height // 2) * (width // 2)
        self.classifier = builder.linear(flat, num_classes, quantize_output=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.quant_input(x))  # (N, C, H/2, W/2)
        return self.classifier(torch.flatten(x, 1))
