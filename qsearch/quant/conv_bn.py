"""QAT convolution with batch norm folded into the quantized weight.

The convolution always runs on the quantized folded weight
`Q_w(W * gamma / sqrt(running_var + eps))`. In training its result is
divided back by that per-channel factor and the real batch norm runs on
batch statistics, so the statistics stay those of the float network. In
eval the folded bias `Q_b((b - running_mean) * gamma / sqrt(running_var + eps) + beta)`
is added instead, which is exactly what integer hardware computes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from qsearch.quant.fake_quantize import FakeQuantize
from qsearch.quant.layers import _QATMixin


class _ConvBnNd(_QATMixin):
    bn: nn.modules.batchnorm._BatchNorm
    weight: nn.Parameter

    def _init_bn(
        self,
        bn_class: type[nn.modules.batchnorm._BatchNorm],
        eps: float,
        momentum: float | None,
        qconfig: Any,
        quantize_output: bool,
        affine: bool = True,
    ) -> None:
        self.bn = bn_class(self.out_channels, eps=eps, momentum=momentum, affine=affine)
        # The folded bias always exists, even when the convolution has none.
        self._init_quantizers(qconfig, quantize_output, has_bias=True)

    def _gamma(self) -> torch.Tensor:
        # A batch norm without affine parameters scales by 1.
        if self.bn.weight is None:
            return torch.ones_like(self.bn.running_var)
        return self.bn.weight

    def _fold_factor(self) -> torch.Tensor:
        # gamma / sqrt(running_var + eps), one value per output channel.
        if self.bn.running_var is None:
            raise ValueError(
                f"{type(self).__name__} folds its batch norm with the running variance, "
                "but the batch norm has track_running_stats=False; keep running statistics"
            )
        return self._gamma() / torch.sqrt(self.bn.running_var + self.bn.eps)

    def folded_weight(self, factor: torch.Tensor | None = None) -> torch.Tensor:
        """Return W * gamma / sqrt(running_var + eps); `factor` reuses one already computed."""
        if factor is None:
            factor = self._fold_factor()
        return self.weight * factor.reshape([-1] + [1] * (self.weight.dim() - 1))

    def folded_bias(self, factor: torch.Tensor | None = None) -> torch.Tensor:
        """Return (b - running_mean) * gamma / sqrt(running_var + eps) + beta."""
        if factor is None:
            factor = self._fold_factor()
        bias = self.bias if self.bias is not None else torch.zeros_like(self.bn.running_mean)
        folded = (bias - self.bn.running_mean) * factor
        return folded if self.bn.bias is None else folded + self.bn.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            out = self._conv_forward(x, self._training_weight(), self.bias)
            out = self.bn(out)
        else:
            factor = self._fold_factor()
            weight = self.weight_fake_quant(self.folded_weight(factor))
            bias = self.bias_fake_quant(self.folded_bias(factor))
            out = self._conv_forward(x, weight, bias)
        return self._finish(out)

    def _training_weight(self) -> torch.Tensor:
        # Q_w(W * f) / f: each output channel is linear in its own weights,
        # so the convolution on it equals the convolution on Q_w(W * f)
        # divided by f, on a tensor hundreds of times smaller than the output.
        if isinstance(self.weight_fake_quant, FakeQuantize):
            weight = self.weight_fake_quant.quantize_folded(
                self.weight, self._gamma(), self.bn.running_var, self.bn.eps
            )
            if weight is not None:
                return weight
        factor = self._fold_factor()
        weight = self.weight_fake_quant(self.folded_weight(factor))
        return weight / factor.reshape([-1] + [1] * (weight.dim() - 1))


class ConvBn1d(_ConvBnNd, nn.Conv1d):
    """QAT `nn.Conv1d` followed by `nn.BatchNorm1d`, folded; the batch norm is `.bn`."""

    def __init__(
        self,
        *args: Any,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        qconfig: Any = None,
        quantize_output: bool = True,
        **kwargs: Any,
    ) -> None:
        nn.Conv1d.__init__(self, *args, **kwargs)
        self._init_bn(nn.BatchNorm1d, eps, momentum, qconfig, quantize_output, affine)


class ConvBn2d(_ConvBnNd, nn.Conv2d):
    """QAT `nn.Conv2d` followed by `nn.BatchNorm2d`, folded; the batch norm is `.bn`."""

    def __init__(
        self,
        *args: Any,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        qconfig: Any = None,
        quantize_output: bool = True,
        **kwargs: Any,
    ) -> None:
        nn.Conv2d.__init__(self, *args, **kwargs)
        self._init_bn(nn.BatchNorm2d, eps, momentum, qconfig, quantize_output, affine)


class ConvBnReLU1d(ConvBn1d):
    """`ConvBn1d` followed by ReLU, then the activation quantizer."""

    _relu = True


class ConvBnReLU2d(ConvBn2d):
    """`ConvBn2d` followed by ReLU, then the activation quantizer."""

    _relu = True
