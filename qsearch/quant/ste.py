"""The clipped straight-through estimator shared by every quantizer."""

from __future__ import annotations

from collections.abc import Callable

import torch

# Half-precision inputs are quantized in float32, because float16 cannot
# hold a 16-bit fixed-point grid and bfloat16 not even an 8-bit one.
_UPCAST_DTYPES = (torch.float16, torch.bfloat16)


class _FakeQuantizeSTE(torch.autograd.Function):
    """Quantize in forward; pass the gradient where |v| <= 1 in backward.

    With a mask, only the elements where the mask is true are quantized;
    the others pass through unchanged and get gradient 1.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        x: torch.Tensor,
        quantize: Callable[[torch.Tensor], torch.Tensor],
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        x_compute = x.float() if x.dtype in _UPCAST_DTYPES else x
        out = quantize(x_compute)
        gate = x_compute.abs() <= 1.0
        if mask is not None:
            out = torch.where(mask, out, x_compute)
            gate = gate.logical_or_(mask.logical_not())
        ctx.save_for_backward(gate)
        return out.to(x.dtype)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad_output: torch.Tensor
    ) -> tuple[torch.Tensor, None, None]:
        (gate,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return grad_output * gate, None, None


def fake_quantize_ste(
    x: torch.Tensor,
    quantize: Callable[[torch.Tensor], torch.Tensor],
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Apply `quantize` to `x` (where `mask` is true) with the clipped STE gradient."""
    if not x.requires_grad:
        # No graph to build: skip the gate tensor the backward pass would need.
        with torch.no_grad():
            x_compute = x.float() if x.dtype in _UPCAST_DTYPES else x
            out = quantize(x_compute)
            if mask is not None:
                out = torch.where(mask, out, x_compute)
            return out.to(x.dtype)
    return _FakeQuantizeSTE.apply(x, quantize, mask)
