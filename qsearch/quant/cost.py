"""Cost metrics of a QAT model: weights, biases, MACs, weight memory and BitOPs.

Per conv or linear layer, with batch size 1:

- weights = out_channels * in_channels / groups * prod(kernel)
- MACs = output volume * in_channels / groups * prod(kernel); a linear
  layer has in * out for both
- weight memory in bits = weights * bw_w + biases * bw_b
- BitOPs = MACs * bw_w * bw_f

Bit widths come from each layer's own quantizers. A float layer (no
quantizers) counts `float_bits` for each.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from qsearch.quant.conv_bn import _ConvBnNd
from qsearch.quant.fake_quantize import FakeQuantize
from qsearch.quant.layers import make_bias_fake_quant

FLOAT_BITS = 32


@dataclass(frozen=True)
class LayerCost:
    """Cost of one conv or linear layer."""

    name: str
    kind: str
    weights: int
    biases: int
    macs: int
    bw_w: int
    bw_b: int
    bw_f: int
    weight_memory_bits: int
    bitops: int


@dataclass(frozen=True)
class ModelCost:
    """Cost of a model: its layers and their totals."""

    layers: tuple[LayerCost, ...] = field(default_factory=tuple)

    @property
    def weights(self) -> int:
        return sum(layer.weights for layer in self.layers)

    @property
    def biases(self) -> int:
        return sum(layer.biases for layer in self.layers)

    @property
    def parameters(self) -> int:
        return self.weights + self.biases

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def weight_memory_bits(self) -> int:
        return sum(layer.weight_memory_bits for layer in self.layers)

    @property
    def weight_memory_bytes(self) -> float:
        return self.weight_memory_bits / 8

    @property
    def bitops(self) -> int:
        return sum(layer.bitops for layer in self.layers)

    def totals(self) -> dict[str, int | float]:
        return {
            "weights": self.weights,
            "biases": self.biases,
            "parameters": self.parameters,
            "macs": self.macs,
            "weight_memory_bits": self.weight_memory_bits,
            "weight_memory_bytes": self.weight_memory_bytes,
            "bitops": self.bitops,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"layers": [asdict(layer) for layer in self.layers], "total": self.totals()}


def quantizer_bits(fake_quant: nn.Module | None) -> int | None:
    """Bit width of a qsearch or PyTorch fake quantizer, or None for anything else."""
    if isinstance(fake_quant, FakeQuantize):
        return fake_quant.bits
    quant_min = getattr(fake_quant, "quant_min", None)
    quant_max = getattr(fake_quant, "quant_max", None)
    if isinstance(quant_min, int) and isinstance(quant_max, int):
        bits = math.ceil(math.log2(quant_max - quant_min + 1))
        # With reduce_range (PyTorch's fbgemm and x86 activations) the observer
        # uses one bit less than the 8-bit dtype that stores the tensor.
        observer = getattr(fake_quant, "activation_post_process", None)
        if getattr(observer, "reduce_range", False):
            bits += 1
        return bits
    return None


def _activation_bits(layer: nn.Module, float_bits: int) -> int:
    bits = quantizer_bits(getattr(layer, "activation_post_process", None))
    if bits is None and hasattr(layer, "qconfig"):
        # A layer with an unquantized output (the logits) still reads
        # activations quantized with the qconfig's activation quantizer.
        bits = quantizer_bits(layer.qconfig.activation())
    return bits if bits is not None else float_bits


def _layer_cost(name: str, layer: nn.Module, output: torch.Tensor, float_bits: int) -> LayerCost:
    weights = layer.weight.numel()
    if isinstance(layer, _ConvBnNd):
        biases = layer.out_channels  # the folded bias
    else:
        biases = layer.bias.numel() if layer.bias is not None else 0

    if isinstance(layer, nn.Linear):
        # Every output element takes in_features MACs; extra leading
        # dimensions (a sequence, say) repeat the layer.
        macs = output[0].numel() * layer.in_features
    else:
        fan_in = layer.in_channels // layer.groups * math.prod(layer.kernel_size)
        macs = output[0].numel() * fan_in

    bw_w = quantizer_bits(getattr(layer, "weight_fake_quant", None)) or float_bits
    bias_fake_quant = getattr(layer, "bias_fake_quant", None)
    if bias_fake_quant is None and hasattr(layer, "qconfig"):
        # No bias: report the width a bias would get, so tables stay uniform.
        bias_fake_quant = make_bias_fake_quant(layer.qconfig)
    bw_b = quantizer_bits(bias_fake_quant) or float_bits
    bw_f = _activation_bits(layer, float_bits)
    return LayerCost(
        name=name,
        kind=type(layer).__name__,
        weights=weights,
        biases=biases,
        macs=macs,
        bw_w=bw_w,
        bw_b=bw_b,
        bw_f=bw_f,
        weight_memory_bits=weights * bw_w + biases * bw_b,
        bitops=macs * bw_w * bw_f,
    )


def model_cost(
    model: nn.Module, example_input: torch.Tensor, *, float_bits: int = FLOAT_BITS
) -> ModelCost:
    """Measure the cost of every conv and linear layer in one forward pass.

    `example_input` is one sample with a batch dimension of 1 (a larger
    batch is cut to its first sample). The model runs in eval mode under
    `torch.no_grad()` and is put back into its previous mode afterwards.
    """
    costs: list[LayerCost] = []
    hooks = []

    def make_hook(name: str):
        def hook(layer: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            costs.append(_layer_cost(name, layer, output, float_bits))

        return hook

    for name, module in model.named_modules():
        if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Linear):
            hooks.append(module.register_forward_hook(make_hook(name)))

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_input[:1])
    finally:
        for handle in hooks:
            handle.remove()
        model.train(was_training)
    return ModelCost(layers=tuple(costs))
