"""The clipped straight-through estimator shared by every quantizer, and Quant-Noise masks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from qsearch.quant import fused

# Half-precision inputs are quantized in float32, because float16 (11
# significant bits) cannot hold a 16-bit fixed-point grid and bfloat16 (8 bits)
# not even a 10-bit one.
_UPCAST_DTYPES = (torch.float16, torch.bfloat16)


class _FakeQuantizeSTE(torch.autograd.Function):
    """Quantize in forward, and pass the gradient where |v| <= 1 in backward.

    With `keep`, a tensor of 0.0 and 1.0 shaped like x, the elements where
    keep is 1.0 pass through unchanged and get gradient 1. The others are
    quantized.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        x: torch.Tensor,
        quantize: Callable[[torch.Tensor], torch.Tensor],
        keep: torch.Tensor | None,
    ) -> torch.Tensor:
        x_compute = x.float() if x.dtype in _UPCAST_DTYPES else x
        out = quantize(x_compute)
        # The gate and the mask hold 0.0 and 1.0 rather than bools. Measured
        # with PyTorch 2.13 on a 2-core x86 (AVX-512) machine, comparisons
        # into bool tensors, products with them and torch.where take three
        # to four times as long as the same steps on float tensors.
        gate = x_compute.abs().le_(1.0)
        if keep is not None:
            keep = keep.to(x_compute.dtype)
            out = _mix(out, x_compute, keep)
            gate = torch.maximum(gate, keep, out=gate)
        ctx.save_for_backward(gate)
        return out.to(x.dtype)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad_output: torch.Tensor
    ) -> tuple[torch.Tensor, None, None]:
        (gate,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return (grad_output * gate).to(grad_output.dtype), None, None


def _mix(quantized: torch.Tensor, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    # With a weight of exactly 0.0 or 1.0, lerp returns `quantized` or `x`
    # by value (a zero may change sign) as long as x is finite.
    # NOTE: an infinite x gives NaN here, where torch.where would give x or
    # its quantized value. Training has diverged by then either way.
    return torch.lerp(quantized, x, keep)


def fake_quantize_ste(
    x: torch.Tensor,
    quantize: Callable[[torch.Tensor], torch.Tensor],
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """Apply `quantize` to `x`, except where `keep` is 1.0, with the clipped STE gradient."""
    if not x.requires_grad:
        # No graph to build: skip the gate tensor the backward pass would need.
        with torch.no_grad():
            x_compute = x.float() if x.dtype in _UPCAST_DTYPES else x
            out = quantize(x_compute)
            if keep is not None:
                out = _mix(out, x_compute, keep.to(x_compute.dtype))
            return out.to(x.dtype)
    return _FakeQuantizeSTE.apply(x, quantize, keep)


def draw_keep_mask(like: torch.Tensor, noise_prob: float) -> torch.Tensor:
    """Draw the Quant-Noise mask for `like`: float32 1.0 with probability 1 - noise_prob, else 0.0.

    An element where the mask is 1.0 stays unquantized. On the CPU, one
    int64 from `random_` over the full range costs about as much as one
    `rand_like` float (3.3 ns against 2.8 ns, PyTorch 2.13 on 2-core x86), so
    each int64 gives two int32 draws. A draw is quantized when it lies
    below the threshold, with probability round(noise_prob * 2**32) / 2**32,
    a finer grid than the 2**-24 steps of `rand_like`. Both use the default
    generator, so `torch.manual_seed` makes the masks reproducible.
    """
    if like.device.type != "cpu":
        return torch.rand_like(like, dtype=torch.float32).ge_(noise_prob)

    count = like.numel()
    bits = torch.empty((count + 1) // 2, dtype=torch.int64).random_(-(2**63), None)
    threshold = min(round(noise_prob * 2**32), 2**32 - 1) - 2**31
    keep = bits.view(torch.int32)[:count].ge_(threshold)  # int32 0 or 1
    return keep.to(torch.float32).view(like.shape)


def quantize_straight_through(
    x: torch.Tensor, quantization: Any, noise_prob: float = 1.0
) -> torch.Tensor:
    """Fake-quantize each element of `x` with probability `noise_prob`, with the clipped STE.

    `quantization` is a SymmetricQuantization or PowerOf2Quantization. The
    fused kernels do the work where they apply, PyTorch operators elsewhere.
    """
    if fused.applies_to(x):
        return fused.fake_quantize(x, quantization, noise_prob)
    keep = draw_keep_mask(x, noise_prob) if noise_prob < 1.0 else None
    return fake_quantize_ste(x, quantization.quantize, keep)
