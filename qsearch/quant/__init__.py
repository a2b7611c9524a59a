"""Fake quantization for quantization-aware training (QAT).

Fixed-point symmetric and power-of-2 quantizers, Quant-Noise training,
QAT conv and linear layers with batch-norm folding, the qconfig that
builds them, and cost metrics. Depends on torch only.
"""

from qsearch.quant.conv_bn import ConvBn1d, ConvBn2d, ConvBnReLU1d, ConvBnReLU2d
from qsearch.quant.convert import convert_to_qat
from qsearch.quant.cost import LayerCost, ModelCost, model_cost, quantizer_bits
from qsearch.quant.fake_quantize import FakeQuantize
from qsearch.quant.layers import (
    Conv1d,
    Conv2d,
    ConvReLU1d,
    ConvReLU2d,
    Linear,
    LinearReLU,
    QuantIdentity,
)
from qsearch.quant.qconfig import FakeQuantizeFactory, QConfig, get_qat_qconfig, validate_qconfig
from qsearch.quant.qconfig_target import ALLOWED_TARGETS, qconfig_from_target
from qsearch.quant.quantizers import PowerOf2Quantization, SymmetricQuantization

__all__ = [
    "ALLOWED_TARGETS",
    "Conv1d",
    "Conv2d",
    "ConvBn1d",
    "ConvBn2d",
    "ConvBnReLU1d",
    "ConvBnReLU2d",
    "ConvReLU1d",
    "ConvReLU2d",
    "FakeQuantize",
    "FakeQuantizeFactory",
    "LayerCost",
    "Linear",
    "LinearReLU",
    "ModelCost",
    "PowerOf2Quantization",
    "QConfig",
    "QuantIdentity",
    "SymmetricQuantization",
    "convert_to_qat",
    "get_qat_qconfig",
    "model_cost",
    "qconfig_from_target",
    "quantizer_bits",
    "validate_qconfig",
]
