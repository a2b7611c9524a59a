"""QAT conv and linear layers: `out = Q_f(op(x, Q_w(W), Q_b(b)))`.

Each layer takes the arguments of its `torch.nn` counterpart plus
`qconfig=`, either a `QConfig` from `get_qat_qconfig` or PyTorch's
`torch.ao.quantization.get_default_qat_qconfig(...)`. A qconfig without a
`bias` field quantizes biases with its activation quantizer.
`quantize_output=False` leaves the output unquantized, for the final
logits of a network.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def make_bias_fake_quant(qconfig: Any) -> nn.Module:
    """Return a fresh bias quantizer: the qconfig's `bias`, else its `activation`."""
    factory = getattr(qconfig, "bias", None) or qconfig.activation
    return factory()


def check_qconfig(qconfig: Any, layer: str) -> None:
    if qconfig is None or not hasattr(qconfig, "weight") or not hasattr(qconfig, "activation"):
        raise ValueError(
            f"{layer} needs a qconfig with 'weight' and 'activation' factories, but got "
            f"{qconfig!r}; build one with qsearch.quant.get_qat_qconfig(...)."
        )


class _QATMixin:
    """Quantizer set-up and bookkeeping shared by every QAT layer."""

    bias: torch.Tensor | None
    _relu = False

    def _init_quantizers(self, qconfig: Any, quantize_output: bool, has_bias: bool) -> None:
        check_qconfig(qconfig, type(self).__name__)
        self.qconfig = qconfig
        self.quantize_output = quantize_output
        self.weight_fake_quant = qconfig.weight()
        self.bias_fake_quant = make_bias_fake_quant(qconfig) if has_bias else None
        self.activation_post_process = qconfig.activation() if quantize_output else nn.Identity()

    def _finish(self, out: torch.Tensor) -> torch.Tensor:
        if self._relu:
            out = F.relu(out)
        return self.activation_post_process(out)

    def _quantized_bias(self) -> torch.Tensor | None:
        if self.bias is None:
            return None
        return self.bias_fake_quant(self.bias)


class _QATConvNd(_QATMixin):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight_fake_quant(self.weight)
        out = self._conv_forward(x, weight, self._quantized_bias())
        return self._finish(out)


class Conv1d(_QATConvNd, nn.Conv1d):
    """QAT `nn.Conv1d`."""

    def __init__(
        self, *args: Any, qconfig: Any = None, quantize_output: bool = True, **kwargs: Any
    ) -> None:
        nn.Conv1d.__init__(self, *args, **kwargs)
        self._init_quantizers(qconfig, quantize_output, self.bias is not None)


class Conv2d(_QATConvNd, nn.Conv2d):
    """QAT `nn.Conv2d`."""

    def __init__(
        self, *args: Any, qconfig: Any = None, quantize_output: bool = True, **kwargs: Any
    ) -> None:
        nn.Conv2d.__init__(self, *args, **kwargs)
        self._init_quantizers(qconfig, quantize_output, self.bias is not None)


class ConvReLU1d(Conv1d):
    """QAT `nn.Conv1d` followed by ReLU, then the activation quantizer."""

    _relu = True


class ConvReLU2d(Conv2d):
    """QAT `nn.Conv2d` followed by ReLU, then the activation quantizer."""

    _relu = True


class Linear(_QATMixin, nn.Linear):
    """QAT `nn.Linear`."""

    def __init__(
        self, *args: Any, qconfig: Any = None, quantize_output: bool = True, **kwargs: Any
    ) -> None:
        nn.Linear.__init__(self, *args, **kwargs)
        self._init_quantizers(qconfig, quantize_output, self.bias is not None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight_fake_quant(self.weight)
        return self._finish(F.linear(x, weight, self._quantized_bias()))


class LinearReLU(Linear):
    """QAT `nn.Linear` followed by ReLU, then the activation quantizer."""

    _relu = True


class QuantIdentity(nn.Module):
    """The activation quantizer alone: for a network's input and for residual sums."""

    def __init__(self, qconfig: Any) -> None:
        super().__init__()
        check_qconfig(qconfig, "QuantIdentity")
        self.qconfig = qconfig
        self.activation_post_process = qconfig.activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation_post_process(x)
