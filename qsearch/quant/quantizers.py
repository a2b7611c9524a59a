"""Fixed-point symmetric and power-of-2 fake quantization.

Both quantizers are stateless modules: `forward` returns the fake-quantized
tensor (float values on the integer grid, in real units) with the clipped
straight-through gradient, and `quantize` returns the same values without
autograd for callers that build their own backward pass.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from qsearch.quant.ste import quantize_straight_through

SYMMETRIC_MIN_BITS = 2
SYMMETRIC_MAX_BITS = 32
POWER_OF_2_MIN_BITS = 2
POWER_OF_2_MAX_BITS = 8
POWER_OF_2_ROUNDING_MODES = ("ceil", "round")


def _check_bits(name: str, bits: object, low: int, high: int) -> int:
    # bool is an int subclass, but True bits is always a mistake.
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise ValueError(
            f"{name} bits must be an integer in {low}..{high}, but got {bits!r} "
            f"of type {type(bits).__name__}."
        )
    if not low <= bits <= high:
        raise ValueError(f"{name} bits must be in {low}..{high}, but got {bits}.")
    return bits


class SymmetricQuantization(nn.Module):
    """Symmetric fixed-point quantization onto [-1, 1) with `bits - 1` fractional bits.

    There is no observer and no learned scale::

        scale = 2 ** -(bits - 1)
        code  = clamp(round_half_to_even(v / scale), -2**(bits-1), 2**(bits-1) - 1)
        out   = code * scale

    -1.0 is representable and +1.0 is not: the largest output is
    `1 - scale`. Ties round to even, as `torch.round` does.

    >>> SymmetricQuantization(8)(torch.tensor([0.3, 1.0, -2.5]))
    tensor([ 0.2969,  0.9922, -1.0000])
    >>> SymmetricQuantization(4)(torch.tensor([0.0625, 0.1875]))
    tensor([0.0000, 0.2500])

    NOTE: above 24 bits the grid is finer than float32 resolves near 1.0,
    so float32 results there are the nearest float32 values.
    """

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = _check_bits(
            "symmetric quantization", bits, SYMMETRIC_MIN_BITS, SYMMETRIC_MAX_BITS
        )
        # Powers of two, so the multiplications below are exact.
        self.scale = 2.0 ** -(self.bits - 1)
        self.quant_min = -(2 ** (self.bits - 1))
        self.quant_max = 2 ** (self.bits - 1) - 1

    @property
    def kernel_grid(self) -> tuple[int, bool, bool]:
        """Return (bits, power_of_2, round_exponent): the quantizer as the fused kernels take it."""
        return self.bits, False, False

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        code = torch.round(x * (1.0 / self.scale)).clamp_(self.quant_min, self.quant_max)
        return code.mul_(self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return quantize_straight_through(x, self)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class PowerOf2Quantization(nn.Module):
    """Power-of-2 quantization with zero, for weights.

    One code is zero and the others are a sign and an exponent::

        threshold = 2 ** -(2**bits - 1)
        e   = ceil(log2(|v|)), clamped to [-(2**(bits-1)) + 1, -1]
        out = sign(v) * 2**e   if |v| >= threshold, else 0

    The largest magnitude is 0.5. Magnitudes between the threshold and the
    smallest power are pushed up to that power, and smaller ones become 0.
    `rounding="round"` rounds the exponent to nearest instead of up, as the
    published formula reads; `"ceil"` is the reference behaviour.

    The exponent comes from `torch.frexp`, which is exact, so values just
    above a power of two never round down as `log2` in float32 can, and a
    zero never reaches a logarithm.

    >>> PowerOf2Quantization(2)(torch.tensor([0.1, 0.125, 0.3, -0.7, 0.0]))
    tensor([ 0.0000,  0.5000,  0.5000, -0.5000,  0.0000])
    """

    def __init__(self, bits: int, rounding: str = "ceil") -> None:
        super().__init__()
        self.bits = _check_bits(
            "power-of-2 quantization", bits, POWER_OF_2_MIN_BITS, POWER_OF_2_MAX_BITS
        )
        if rounding not in POWER_OF_2_ROUNDING_MODES:
            raise ValueError(
                f"power-of-2 rounding must be one of {POWER_OF_2_ROUNDING_MODES}, "
                f"but got {rounding!r}."
            )
        self.rounding = rounding
        # At 8 bits the threshold (2**-255) is 0 in float32, which is still
        # right: every nonzero float32 magnitude lies above 2**-255.
        self.threshold = 2.0 ** -(2**self.bits - 1)
        self.min_exponent = -(2 ** (self.bits - 1)) + 1
        self.max_exponent = -1

    @property
    def kernel_grid(self) -> tuple[int, bool, bool]:
        """Return (bits, power_of_2, round_exponent): the quantizer as the fused kernels take it."""
        return self.bits, True, self.rounding == "round"

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        magnitude = x.abs()
        # magnitude = mantissa * 2**exponent with mantissa in [0.5, 1).
        mantissa, exponent = torch.frexp(magnitude)
        if self.rounding == "ceil":
            # log2 is an integer exactly when the mantissa is 0.5.
            exponent = exponent - (mantissa == 0.5).to(exponent.dtype)
        else:
            # Compare in float64: the float32 nearest to sqrt(0.5) lies below it,
            # so a float32 comparison would round that one mantissa up.
            below_midpoint = mantissa.double() < math.sqrt(0.5)
            exponent = exponent - below_midpoint.to(exponent.dtype)
        exponent = exponent.clamp_(self.min_exponent, self.max_exponent)

        out = torch.ldexp(torch.sign(x), exponent)
        return out.masked_fill_(magnitude < self.threshold, 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return quantize_straight_through(x, self)

    def extra_repr(self) -> str:
        suffix = "" if self.rounding == "ceil" else f", rounding={self.rounding!r}"
        return f"bits={self.bits}{suffix}"
