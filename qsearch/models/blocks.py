"""Layer builders that give the same architecture in float or in QAT form.

A model asks a `LayerBuilder` for "conv, batch norm, ReLU" and gets either
the fused QAT layer (with a qconfig) or the float `nn.Sequential` (without
one), so the float baseline of a study and its QAT trials share one
definition.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from qsearch import quant

_CONV_QAT = {
    # (dims, batch norm, ReLU) -> QAT class
    (1, False, False): quant.Conv1d,
    (1, False, True): quant.ConvReLU1d,
    (1, True, False): quant.ConvBn1d,
    (1, True, True): quant.ConvBnReLU1d,
    (2, False, False): quant.Conv2d,
    (2, False, True): quant.ConvReLU2d,
    (2, True, False): quant.ConvBn2d,
    (2, True, True): quant.ConvBnReLU2d,
}
_CONV_FLOAT = {1: (nn.Conv1d, nn.BatchNorm1d), 2: (nn.Conv2d, nn.BatchNorm2d)}


class LayerBuilder:
    """Build conv, linear and activation-quantizer layers for one qconfig.

    `qconfig=None` builds float layers and identities in place of the
    activation quantizers.
    """

    def __init__(self, qconfig: Any | None) -> None:
        self.qconfig = qconfig

    @property
    def quantized(self) -> bool:
        return self.qconfig is not None

    def conv(
        self,
        dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        padding: int | str = 0,
        bn: bool = True,
        relu: bool = True,
        quantize_output: bool = True,
    ) -> nn.Module:
        # A convolution followed by batch norm needs no bias of its own.
        bias = not bn
        if self.quantized:
            qat_class = _CONV_QAT[(dims, bn, relu)]
            return qat_class(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=padding,
                bias=bias,
                qconfig=self.qconfig,
                quantize_output=quantize_output,
            )
        conv_class, bn_class = _CONV_FLOAT[dims]
        layers: list[nn.Module] = [
            conv_class(
                in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias
            )
        ]
        if bn:
            layers.append(bn_class(out_channels))
        if relu:
            layers.append(nn.ReLU())
        return nn.Sequential(*layers)

    def linear(
        self,
        in_features: int,
        out_features: int,
        *,
        relu: bool = False,
        quantize_output: bool = True,
    ) -> nn.Module:
        if self.quantized:
            qat_class = quant.LinearReLU if relu else quant.Linear
            return qat_class(
                in_features, out_features, qconfig=self.qconfig, quantize_output=quantize_output
            )
        layer = nn.Linear(in_features, out_features)
        return nn.Sequential(layer, nn.ReLU()) if relu else layer

    def quantize(self) -> nn.Module:
        """Return the activation quantizer, for a network input or a residual sum."""
        return quant.QuantIdentity(self.qconfig) if self.quantized else nn.Identity()
