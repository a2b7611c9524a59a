"""The fused CPU kernels against the PyTorch operators they replace."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qsearch.quant import (
    ConvBnReLU1d,
    FakeQuantize,
    PowerOf2Quantization,
    SymmetricQuantization,
    fused,
    get_qat_qconfig,
)
from qsearch.quant.quantizers import POWER_OF_2_ROUNDING_MODES
from tests.quant.conftest import require_fused_kernels

# This module compares the two paths itself.
EXPLICIT_PATHS = True
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _kernels() -> None:
    require_fused_kernels()


@pytest.fixture
def torch_path(monkeypatch: pytest.MonkeyPatch):
    """Return a context manager under which the quantizers use PyTorch operators."""

    class _TorchPath:
        def __enter__(self) -> None:
            monkeypatch.setitem(fused._state, "loaded", False)

        def __exit__(self, *_exc: object) -> None:
            monkeypatch.setitem(fused._state, "loaded", True)

    return _TorchPath()


def _awkward_values() -> torch.Tensor:
    specials = [math.nan, math.inf, -math.inf, 0.0, -0.0, 1e30, -1e30, 1e-40, -1e-45]
    ties = [k / 16 + 1 / 32 for k in range(-18, 18)]  # ties at 4 and 5 bits
    ends = [1.0, -1.0, 0.9999999, -1.0000001, 0.5, -0.5, 2.5, -2.5]
    powers = torch.ldexp(torch.ones(80), torch.arange(-140, 20, 2))
    near_sqrt_half = torch.tensor([math.sqrt(0.5)]) * torch.ldexp(
        torch.ones(40), torch.arange(-40, 0)
    )
    generator = torch.Generator().manual_seed(3)
    noise = torch.randn(20_000, generator=generator) * 0.6
    return torch.cat(
        [
            torch.tensor(specials + ties + ends),
            powers,
            -powers,
            near_sqrt_half,
            torch.nextafter(powers, torch.zeros(())),
            torch.nextafter(powers, torch.full((), math.inf)),
            noise,
        ]
    )


QUANTIZERS = [SymmetricQuantization(bits) for bits in (2, 3, 4, 5, 8, 12, 16, 24, 32)] + [
    PowerOf2Quantization(bits, rounding)
    for bits in range(2, 9)
    for rounding in POWER_OF_2_ROUNDING_MODES
]


@pytest.mark.parametrize("quantization", QUANTIZERS, ids=repr)
def test_values_equal_torch_operators(quantization):
    x = _awkward_values()

    got = fused.fake_quantize(x, quantization)

    torch.testing.assert_close(
        got, quantization.quantize(x.clone()), rtol=0, atol=0, equal_nan=True
    )


def test_kernels_literal_examples():
    def run(quantization, values):
        return fused.fake_quantize(torch.tensor(values), quantization).tolist()

    assert run(SymmetricQuantization(8), [0.3]) == [0.296875]
    assert run(SymmetricQuantization(8), [1.0, -1.0, 2.5, -2.5]) == [
        0.9921875,
        -1.0,
        0.9921875,
        -1.0,
    ]
    assert run(SymmetricQuantization(4), [0.0625, 0.1875]) == [0.0, 0.25]
    assert run(PowerOf2Quantization(2), [0.1, 0.125, 0.3, -0.7, 0.0]) == [0.0, 0.5, 0.5, -0.5, 0.0]
    assert run(PowerOf2Quantization(4), [0.3]) == [0.5]


@pytest.mark.parametrize("quantization", [SymmetricQuantization(8), PowerOf2Quantization(4)])
def test_clipped_straight_through_gradient(quantization):
    x = torch.tensor([0.5, 1.0, 1.5, -1.0, -1.2, math.nan, math.inf], requires_grad=True)

    fused.fake_quantize(x, quantization).sum().backward()

    assert x.grad.tolist() == [1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0]


def test_noise_share_and_independence():
    torch.manual_seed(0)
    # Values off the 8-bit grid, so an element is unquantized exactly when it is unchanged.
    x = torch.full((1_000_000,), 0.3)

    quantized = (fused.fake_quantize(x, SymmetricQuantization(8), 0.8) != x).float()

    # Binomial standard deviation of the share: sqrt(0.16 / 1e6) = 0.0004.
    assert abs(quantized.mean().item() - 0.8) < 0.002
    neighbours = torch.corrcoef(torch.stack([quantized[:-1], quantized[1:]]))[0, 1]
    assert abs(neighbours.item()) < 0.005


def test_noise_masks_fresh_and_seeded():
    x = torch.full((10_000,), 0.3)
    quantization = SymmetricQuantization(8)

    torch.manual_seed(7)
    first = fused.fake_quantize(x, quantization, 0.5)
    second = fused.fake_quantize(x, quantization, 0.5)
    torch.manual_seed(7)
    again = fused.fake_quantize(x, quantization, 0.5)

    assert torch.equal(first, again)
    assert not torch.equal(first, second)


def test_noise_gradient_where_unquantized():
    torch.manual_seed(1)
    # Every value lies outside [-1, 1], so only unquantized elements pass a gradient.
    x = torch.linspace(1.5, 3.0, 50_000).requires_grad_()

    out = fused.fake_quantize(x, SymmetricQuantization(8), 0.7)
    out.backward(torch.full_like(out, 2.0))

    unquantized = out.detach() == x.detach()
    assert abs(unquantized.float().mean().item() - 0.3) < 0.01
    assert torch.equal(x.grad, torch.where(unquantized, 2.0, 0.0))


def test_threads_keep_values_and_masks():
    x = torch.rand(300_000) * 3 - 1.5
    quantization = SymmetricQuantization(5)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            torch.manual_seed(5)
            leaf = x.clone().requires_grad_()
            out = fused.fake_quantize(leaf, quantization, 0.6)
            out.backward(torch.ones_like(out))
            results.append((out.detach(), leaf.grad))
    finally:
        torch.set_num_threads(threads)

    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])


def test_full_quantization_prob_one_and_eval():
    quantize = FakeQuantize(SymmetricQuantization(8), noise_prob=0.8).eval()
    x = torch.full((10_000,), 0.3)

    assert torch.equal(quantize(x), torch.full_like(x, 0.296875))
    assert torch.equal(fused.fake_quantize(x, SymmetricQuantization(8), 1.0), quantize(x))


def _fold_inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(24, 16, 9, generator=generator) * 0.2
    gamma = torch.randn(24, generator=generator)  # some negative, as training can make them
    running_var = torch.rand(24, generator=generator) * 2 + 0.05
    return weight, gamma, running_var


def _torch_fold(quantizer, weight, gamma, running_var, eps):
    # conv_bn.py's PyTorch path: Q(W * f) / f.
    factor = gamma / torch.sqrt(running_var + eps)
    folded = quantizer(weight * factor.reshape(-1, 1, 1))
    return folded / factor.reshape(-1, 1, 1)


FOLD_QCONFIGS = [
    {"bw_w": 6, "bw_f": 8},
    {"bw_w": 3, "bw_f": 8, "weight_scale": "pow2"},
    {"bw_w": 4, "bw_f": 8, "power_of_2": True},
    {"bw_w": 4, "bw_f": 8, "power_of_2": True, "power_of_2_rounding": "round"},
    {"bw_w": 5, "bw_f": 8, "power_of_2": True, "weight_scale": "pow2"},
]


@pytest.mark.parametrize("config", FOLD_QCONFIGS, ids=str)
def test_fold_weight_equals_torch_operators(config, torch_path):
    weight, gamma, running_var = _fold_inputs(0)
    upstream = torch.randn(weight.shape, generator=torch.Generator().manual_seed(9))
    quantizer = get_qat_qconfig(config).weight()
    eps = 1e-5

    w_fused, g_fused = weight.clone().requires_grad_(), gamma.clone().requires_grad_()
    got = quantizer.quantize_folded(w_fused, g_fused, running_var, eps)
    got.backward(upstream)
    fused_scale = quantizer.scale.clone() if config.get("weight_scale") else None

    w_torch, g_torch = weight.clone().requires_grad_(), gamma.clone().requires_grad_()
    with torch_path:
        expected = _torch_fold(quantizer, w_torch, g_torch, running_var, eps)
    expected.backward(upstream)

    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    torch.testing.assert_close(w_fused.grad, w_torch.grad, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g_fused.grad, g_torch.grad, rtol=1e-4, atol=1e-5)
    if fused_scale is not None:
        assert torch.equal(fused_scale, quantizer.scale)


def test_fold_weight_noise_gradient():
    torch.manual_seed(2)
    weight, gamma, running_var = _fold_inputs(1)
    weight = (weight * 20).requires_grad_()  # most |W * f| above 1
    quantizer = FakeQuantize(SymmetricQuantization(6), noise_prob=0.75)

    folded = quantizer.quantize_folded(weight, gamma, running_var, 1e-5)
    folded.sum().backward()

    factor = (gamma / torch.sqrt(running_var + 1e-5)).reshape(-1, 1, 1)
    unquantized = (folded.detach() - weight.detach()).abs() <= 1e-5 * weight.detach().abs()
    inside = (weight.detach() * factor).abs() <= 1.0
    assert abs(unquantized.float().mean().item() - 0.25) < 0.03
    assert torch.equal(weight.grad, (unquantized | inside).float())


def test_conv_bn_step_matches_torch_path(torch_path):
    qconfig = get_qat_qconfig({"bw_w": 6, "bw_f": 8, "bw_b": 8})
    torch.manual_seed(4)
    fused_layer = ConvBnReLU1d(16, 24, 9, padding=4, qconfig=qconfig)
    torch_layer = ConvBnReLU1d(16, 24, 9, padding=4, qconfig=qconfig)
    torch_layer.load_state_dict(fused_layer.state_dict())
    x = torch.rand(8, 16, 50) * 0.9

    fused_out = fused_layer(x)
    fused_out.sum().backward()
    with torch_path:
        torch_out = torch_layer(x)
    torch_out.sum().backward()

    torch.testing.assert_close(fused_out, torch_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused_layer.bn.running_mean, torch_layer.bn.running_mean)
    torch.testing.assert_close(fused_layer.bn.running_var, torch_layer.bn.running_var)
    for name, parameter in fused_layer.named_parameters():
        other = dict(torch_layer.named_parameters())[name]
        torch.testing.assert_close(parameter.grad, other.grad, rtol=1e-4, atol=1e-4, msg=name)


def test_compile_traces_torch_operators():
    quantizer = FakeQuantize(SymmetricQuantization(5), noise_prob=1.0)
    x = torch.linspace(-1.5, 1.5, 101)

    compiled = torch.compile(quantizer, backend="eager", fullgraph=True)

    assert torch.equal(compiled(x), quantizer(x))


def test_channels_last_layout_kept():
    x = torch.rand(2, 3, 4, 5).to(memory_format=torch.channels_last).requires_grad_()

    out = fused.fake_quantize(x, SymmetricQuantization(4), 0.5)
    out.backward(torch.ones_like(out))

    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x.grad[out.detach() == x.detach()], torch.ones(int((out == x).sum())))


def test_fold_scale_nan_like_torch(torch_path):
    weight, gamma, running_var = _fold_inputs(2)
    weight[3, 2, 1] = math.nan
    fused_quantizer = get_qat_qconfig({"bw_w": 4, "bw_f": 8, "weight_scale": "pow2"}).weight()
    torch_quantizer = get_qat_qconfig({"bw_w": 4, "bw_f": 8, "weight_scale": "pow2"}).weight()

    fused_quantizer.quantize_folded(weight, gamma, running_var, 1e-5)
    with torch_path:
        _torch_fold(torch_quantizer, weight, gamma, running_var, 1e-5)

    assert fused_quantizer.scale.item() == torch_quantizer.scale.item() == 1.0


def test_kernels_reject_unsupported_input():
    with pytest.raises(RuntimeError, match="float32"):
        torch.ops.qsearch.fake_quantize(torch.zeros(3, dtype=torch.float64), 8, False, False, 0, 0)
    with pytest.raises(RuntimeError, match=r"power-of-2 bits must be in 2\.\.8, got 9"):
        torch.ops.qsearch.fake_quantize(torch.zeros(3), 9, True, False, 0, 0)
    assert not fused.applies_to(torch.zeros(3, dtype=torch.float16))


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=ROOT,
        timeout=300,
        check=False,
    )


FALLBACK_CHECK = """
import logging, torch
logging.basicConfig(level=logging.WARNING)
from qsearch.quant import SymmetricQuantization, fused
x = torch.tensor([0.3, 2.5], requires_grad=True)
out = SymmetricQuantization(8)(x)
out.sum().backward()
print(fused.available(), out.tolist(), x.grad.tolist())
print(fused.unavailable_reason())
"""


def test_missing_compiler_falls_back(tmp_path):
    result = _python(
        FALLBACK_CHECK, {"CXX": "no-such-compiler", fused.CACHE_ENV: str(tmp_path / "kernels")}
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "False [0.296875, 0.9921875] [1.0, 0.0]",
        "no C++ compiler: 'no-such-compiler' is not on PATH; install g++ or clang++, or set "
        "CXX to a C++17 compiler",
    ]
    assert "fused quantizer kernels unavailable, using the slower PyTorch operators" in (
        result.stderr
    )


@pytest.mark.parametrize("value", ["0", "off", "False"])
def test_kernels_switch_off(value):
    result = _python(FALLBACK_CHECK, {fused.DISABLE_ENV: value})

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "False [0.296875, 0.9921875] [1.0, 0.0]",
        f"{fused.DISABLE_ENV}={value}",
    ]
    assert result.stderr == ""


def test_library_digest_detects_damage(tmp_path):
    library = tmp_path / "fake_quantize-0123456789abcdef.so"
    library.write_bytes(b"\x7fELF and then nothing")
    library.with_suffix(".sha256").write_text(fused._digest(library))
    assert fused._intact(library)

    library.write_bytes(b"\x7fELF")  # truncated after its digest was written

    assert not fused._intact(library)
    assert not fused._intact(tmp_path / "missing.so")


def test_concurrent_builds_share_library(tmp_path):
    # Two processes compile into the same empty cache folder together: both
    # load the kernels and the folder ends with one library and no leftovers.
    env = {**os.environ, fused.CACHE_ENV: str(tmp_path)}
    code = "from qsearch.quant import fused; print(fused.available())"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT
        )
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=600)[0] for process in processes]

    assert outputs == ["True\n", "True\n"]
    assert sorted(path.suffix for path in tmp_path.iterdir()) == [".sha256", ".so"]
    (library,) = tmp_path.glob("*.so")
    assert fused._intact(library)
