"""TC-ResNet8 for keyword spotting (Choi et al., "Temporal Convolution for
Real-time Keyword Spotting on Mobile Devices", Interspeech 2019).

The MFCC coefficients are the channels of a 1-D convolution over time: an
input of shape (40, 101) is 40 channels by 101 frames.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

from qsearch.models.blocks import LayerBuilder


class ResidualBlock(nn.Module):
    """Two kernel-9 convolutions, the first with stride 2, and a 1x1 shortcut.

    The sum passes through ReLU and then the activation quantizer, so the
    block output is on the same grid as every other activation.
    """

    def __init__(
        self,
        builder: LayerBuilder,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 9,
        stride: int = 2,
    ) -> None:
        super().__init__()
        padding = kernel_size // 2
        self.body = nn.Sequential(
            builder.conv(1, in_channels, out_channels, kernel_size, stride=stride, padding=padding),
            builder.conv(1, out_channels, out_channels, kernel_size, padding=padding, relu=False),
        )
        self.shortcut = builder.conv(1, in_channels, out_channels, 1, stride=stride)
        self.relu = nn.ReLU()
        self.quant_sum = builder.quantize()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant_sum(self.relu(self.body(x) + self.shortcut(x)))


class TCResNet8(nn.Module):
    """A kernel-3 stem, three residual blocks, average pooling and a linear classifier."""

    def __init__(
        self,
        builder: LayerBuilder,
        input_shape: Sequence[int],
        num_classes: int,
        stem_channels: int = 16,
        channels: Sequence[int] = (24, 32, 48),
        kernel_size: int = 9,
        width_multiplier: float = 1.0,
    ) -> None:
        super().__init__()
        if len(input_shape) != 2:
            raise ValueError(
                f"tc_res8 needs inputs of shape (features, frames), such as (40, 101), but the "
                f"dataset gives {tuple(input_shape)}."
            )
        if width_multiplier <= 0:
            raise ValueError(
                f"tc_res8 parameter 'width_multiplier' must be positive, but got "
                f"{width_multiplier}."
            )
        widths = [max(1, round(c * width_multiplier)) for c in (stem_channels, *channels)]
        self.quant_input = builder.quantize()
        self.stem = builder.conv(1, input_shape[0], widths[0], 3, padding=1, bn=False, relu=False)
        self.blocks = nn.Sequential(
            *(ResidualBlock(builder, a, b, kernel_size) for a, b in itertools.pairwise(widths))
        )
        self.pool = nn.AdaptiveAvgPool1d(1)
        # The mean of quantized values is off the grid: quantize it again
        # so the classifier reads integers.
        self.quant_pool = builder.quantize()
        self.classifier = builder.linear(widths[-1], num_classes, quantize_output=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(self.quant_input(x)))  # (N, C, T / 8)
        x = self.quant_pool(self.pool(x).flatten(1))  # (N, C)
        return self.classifier(x)
