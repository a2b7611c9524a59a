"""FakeQuantize: a quantizer with Quant-Noise training and an optional weight scale."""

from __future__ import annotations

import math

import torch
from torch import nn

from qsearch.quant import fused
from qsearch.quant.quantizers import PowerOf2Quantization, SymmetricQuantization
from qsearch.quant.ste import quantize_straight_through

WEIGHT_SCALE_MODES = ("fixed", "pow2")


def check_noise_prob(noise_prob: object, name: str = "noise_prob") -> float:
    """Return `noise_prob` as a float, or raise ValueError unless it is a number in [0, 1]."""
    if isinstance(noise_prob, bool) or not isinstance(noise_prob, int | float):
        raise ValueError(
            f"{name} must be a number in [0, 1], but got {noise_prob!r} "
            f"of type {type(noise_prob).__name__}."
        )
    if not math.isfinite(noise_prob) or not 0.0 <= noise_prob <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], but got {noise_prob}.")
    return float(noise_prob)


class FakeQuantize(nn.Module):
    """Fake quantization with Quant-Noise (Fan et al., ICLR 2021) in training.

    In training mode each element is quantized with probability
    `noise_prob`, from a fresh Bernoulli mask on every call; the elements
    left out pass through unchanged with gradient 1. `noise_prob=1.0` is
    plain quantization-aware training and `0.0` quantizes nothing in
    training. In eval mode every element is quantized and the output is
    deterministic, whatever `noise_prob` is.

    With `weight_scale="pow2"` the tensor is divided by a power-of-two
    scale before quantization and multiplied back after. The scale is
    recomputed on every call from the tensor's maximum magnitude, as the
    smallest power of two above it, so the quantizer's whole grid is used
    and hardware needs only a shift. The last scale is kept in the `scale`
    buffer, so it is saved with the model's `state_dict`.

    Float32 tensors on the CPU go through the fused kernels of
    `qsearch.quant.fused` where they could be built; everything else
    through PyTorch operators, with the same quantized values.
    """

    scale: torch.Tensor

    def __init__(
        self,
        quantization: SymmetricQuantization | PowerOf2Quantization,
        noise_prob: float = 1.0,
        weight_scale: str = "fixed",
    ) -> None:
        super().__init__()
        if not isinstance(quantization, SymmetricQuantization | PowerOf2Quantization):
            raise ValueError(
                "quantization must be a SymmetricQuantization or PowerOf2Quantization, "
                f"but got {type(quantization).__name__}."
            )
        if weight_scale not in WEIGHT_SCALE_MODES:
            raise ValueError(
                f"weight_scale must be one of {WEIGHT_SCALE_MODES}, but got {weight_scale!r}."
            )
        self.quantization = quantization
        self.noise_prob = check_noise_prob(noise_prob)
        self.weight_scale = weight_scale
        if weight_scale == "pow2":
            self.register_buffer("scale", torch.tensor(1.0))

    @property
    def bits(self) -> int:
        return self.quantization.bits

    @property
    def active_noise_prob(self) -> float:
        """Return the share of elements quantized now: `noise_prob` in training, else 1."""
        return self.noise_prob if self.training else 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise_prob = self.active_noise_prob
        if noise_prob == 0.0:
            return x
        if self.weight_scale == "fixed":
            return quantize_straight_through(x, self.quantization, noise_prob)
        scale = self._update_scale(x)
        return quantize_straight_through(x / scale, self.quantization, noise_prob) * scale

    def quantize_folded(
        self,
        weight: torch.Tensor,
        gamma: torch.Tensor,
        running_var: torch.Tensor | None,
        eps: float,
    ) -> torch.Tensor | None:
        """Return `self(W * f) / f` with f = gamma / sqrt(running_var + eps), or None.

        This is the training weight of a conv-BN layer, computed by one fused
        kernel. None means the kernel does not apply (not float32 on the
        CPU, kernels unavailable, no running variance, or nothing to
        quantize) and the caller computes it with PyTorch operators.
        """
        noise_prob = self.active_noise_prob
        if running_var is None or noise_prob == 0.0:
            return None
        if not fused.applies_to(weight):
            return None
        folded, scale = fused.fold_weight(
            weight,
            gamma,
            running_var,
            eps,
            self.quantization,
            noise_prob,
            pow2_scale=self.weight_scale == "pow2",
        )
        if self.weight_scale == "pow2":
            self.scale.copy_(scale)
        return folded

    @torch.no_grad()
    def _update_scale(self, x: torch.Tensor) -> torch.Tensor:
        # max|x| = mantissa * 2**exponent with mantissa in [0.5, 1), so
        # 2**exponent is the smallest power of two above max|x|. An all-zero
        # tensor gives exponent 0 and scale 1.
        max_abs = x.detach().abs().amax().float()
        _, exponent = torch.frexp(max_abs)
        scale = torch.ldexp(torch.ones_like(max_abs), exponent)
        self.scale.copy_(scale)
        return scale.to(x.dtype)

    def extra_repr(self) -> str:
        text = f"noise_prob={self.noise_prob}"
        if self.weight_scale != "fixed":
            text += f", weight_scale={self.weight_scale!r}"
        return text
