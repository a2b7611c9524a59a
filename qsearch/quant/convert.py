"""Turn a float model built from standard torch layers into its QAT version."""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from torch import nn

from qsearch.quant.conv_bn import ConvBn1d, ConvBn2d, ConvBnReLU1d, ConvBnReLU2d
from qsearch.quant.layers import (
    Conv1d,
    Conv2d,
    ConvReLU1d,
    ConvReLU2d,
    Linear,
    LinearReLU,
    QuantIdentity,
)

logger = logging.getLogger(__name__)

# (float layer, followed by batch norm, followed by ReLU) -> QAT class.
_QAT_CLASSES: dict[tuple[type[nn.Module], bool, bool], type[nn.Module]] = {
    (nn.Conv1d, False, False): Conv1d,
    (nn.Conv1d, False, True): ConvReLU1d,
    (nn.Conv1d, True, False): ConvBn1d,
    (nn.Conv1d, True, True): ConvBnReLU1d,
    (nn.Conv2d, False, False): Conv2d,
    (nn.Conv2d, False, True): ConvReLU2d,
    (nn.Conv2d, True, False): ConvBn2d,
    (nn.Conv2d, True, True): ConvBnReLU2d,
    (nn.Linear, False, False): Linear,
    (nn.Linear, False, True): LinearReLU,
}
_BN_FOR = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d}


def _float_type(module: nn.Module) -> type[nn.Module] | None:
    # Exact types: a subclass (or an already converted QAT layer) may
    # compute something else, so it is left alone.
    for float_type in (nn.Conv1d, nn.Conv2d, nn.Linear):
        if type(module) is float_type:
            return float_type
    return None


def _build_qat(
    float_layer: nn.Module, bn: nn.Module | None, relu: bool, qconfig: Any, quantize_output: bool
) -> nn.Module:
    float_type = _float_type(float_layer)
    if float_type is None:
        raise TypeError(f"cannot convert {type(float_layer).__name__} to a QAT layer")
    qat_class = _QAT_CLASSES[(float_type, bn is not None, relu)]

    if float_type is nn.Linear:
        qat = qat_class(
            float_layer.in_features,
            float_layer.out_features,
            bias=float_layer.bias is not None,
            qconfig=qconfig,
            quantize_output=quantize_output,
        )
    else:
        kwargs: dict[str, Any] = {
            "stride": float_layer.stride,
            "padding": float_layer.padding,
            "dilation": float_layer.dilation,
            "groups": float_layer.groups,
            "bias": float_layer.bias is not None,
            "padding_mode": float_layer.padding_mode,
        }
        if bn is not None:
            if not bn.track_running_stats:
                raise ValueError(
                    f"cannot fold {type(bn).__name__} with track_running_stats=False into "
                    "its convolution: folding needs the running variance; keep the "
                    "running statistics or leave this batch norm out of the model"
                )
            kwargs["eps"] = bn.eps
            kwargs["momentum"] = bn.momentum
            kwargs["affine"] = bn.affine
        qat = qat_class(
            float_layer.in_channels,
            float_layer.out_channels,
            float_layer.kernel_size,
            qconfig=qconfig,
            quantize_output=quantize_output,
            **kwargs,
        )

    with torch.no_grad():
        qat.weight.copy_(float_layer.weight)
        if float_layer.bias is not None:
            qat.bias.copy_(float_layer.bias)
    if bn is not None:
        qat.bn.load_state_dict(bn.state_dict())
    qat.train(float_layer.training)
    return qat.to(float_layer.weight.device)


def _last_layer_name(model: nn.Module) -> str | None:
    names = [name for name, module in model.named_modules() if _float_type(module) is not None]
    return names[-1] if names else None


def _convert_children(module: nn.Module, prefix: str, qconfig: Any, last: str | None) -> None:
    children = list(module.named_children())
    is_sequence = isinstance(module, nn.Sequential)
    index = 0
    while index < len(children):
        name, child = children[index]
        full_name = f"{prefix}{name}"
        float_type = _float_type(child)
        if float_type is None:
            _convert_children(child, f"{full_name}.", qconfig, last)
            index += 1
            continue

        # Inside an nn.Sequential, fuse a following batch norm and ReLU;
        # the fused modules become nn.Identity so indices stay valid.
        bn = None
        relu = False
        consumed: list[str] = []
        if is_sequence:
            look = index + 1
            bn_type = _BN_FOR.get(float_type)
            if bn_type and look < len(children) and type(children[look][1]) is bn_type:
                bn = children[look][1]
                consumed.append(children[look][0])
                look += 1
            if look < len(children) and type(children[look][1]) is nn.ReLU:
                relu = True
                consumed.append(children[look][0])

        quantize_output = full_name != last
        qat = _build_qat(child, bn, relu, qconfig, quantize_output)
        setattr(module, name, qat)
        for consumed_name in consumed:
            setattr(module, consumed_name, nn.Identity())
        logger.debug("converted %s to %s", full_name, type(qat).__name__)
        index += 1 + len(consumed)


def convert_to_qat(
    model: nn.Module, qconfig: Any, *, quantize_input: bool = True, inplace: bool = False
) -> nn.Module:
    """Replace conv, linear, batch-norm and ReLU layers of a float model by QAT layers.

    Inside `nn.Sequential` containers, a conv followed by its batch norm
    and/or ReLU is fused into one QAT layer (`ConvBnReLU1d` and so on); the
    fused batch norm and ReLU become `nn.Identity`. Other conv and linear
    layers are replaced one by one. Weights and batch-norm state are
    copied. The last conv or linear layer in module order keeps its output
    unquantized, because it produces the logits. With `quantize_input`,
    the model's input passes through the activation quantizer first.
    """
    if not inplace:
        model = copy.deepcopy(model)
    last = _last_layer_name(model)
    if last is None:
        raise ValueError(
            f"model {type(model).__name__} has no nn.Conv1d, nn.Conv2d or nn.Linear layer to "
            "convert."
        )
    _convert_children(model, "", qconfig, last)
    if quantize_input:
        model = nn.Sequential(QuantIdentity(qconfig), model)
    return model
