"""FakeQuantize: Quant-Noise masks in training, full quantization in eval, the pow2 weight scale."""

import math
import re

import pytest
import torch
from torch import nn

from qsearch.quant import FakeQuantize, PowerOf2Quantization, SymmetricQuantization
from qsearch.quant.ste import draw_keep_mask


def make_fake_quant(
    bits: int = 8, noise_prob: float = 1.0, training: bool = True, **kwargs
) -> FakeQuantize:
    fake_quant = FakeQuantize(SymmetricQuantization(bits), noise_prob, **kwargs)
    return fake_quant.train(training)


def test_fake_quantize_noise_0_passes_input():
    x = torch.tensor([0.3, -0.7, 1.5, -2.0])
    assert torch.equal(make_fake_quant(noise_prob=0.0)(x), x)


def test_fake_quantize_noise_0_gradient_ones():
    x = torch.tensor([0.3, -0.7, 1.5, -2.0], requires_grad=True)
    make_fake_quant(noise_prob=0.0)(x).sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0, 1.0]


def test_fake_quantize_noise_1_quantizes_all():
    x = torch.linspace(-1.5, 1.5, 1001)
    expected = SymmetricQuantization(4)(x)
    assert torch.equal(make_fake_quant(4, noise_prob=1.0)(x), expected)


def test_fake_quantize_noise_1_literal():
    out = make_fake_quant(8, noise_prob=1.0)(torch.tensor([0.3, 1.0, -2.5]))
    assert out.tolist() == [0.296875, 0.9921875, -1.0]


def test_fake_quantize_noise_fraction():
    # 0.3 is never on the 8-bit grid, so an element changed exactly when it
    # was quantized. The binomial standard deviation is 0.0013.
    torch.manual_seed(0)
    x = torch.full((100_000,), 0.3)
    out = make_fake_quant(8, noise_prob=0.8)(x)
    quantized = out != x
    fraction = quantized.float().mean().item()
    assert abs(fraction - 0.8) < 0.01
    assert torch.equal(out[quantized], torch.full_like(out[quantized], 0.296875))


def test_fake_quantize_fresh_mask_per_call():
    torch.manual_seed(0)
    fake_quant = make_fake_quant(8, noise_prob=0.5)
    x = torch.full((1000,), 0.3)
    first = fake_quant(x) != x
    second = fake_quant(x) != x
    assert not torch.equal(first, second)


@pytest.mark.parametrize("noise_prob", [0.0, 0.3, 0.8, 1.0])
def test_fake_quantize_eval_quantizes_all(noise_prob):
    x = torch.linspace(-1.5, 1.5, 1001)
    fake_quant = make_fake_quant(4, noise_prob=noise_prob, training=False)
    assert torch.equal(fake_quant(x), SymmetricQuantization(4)(x))


@pytest.mark.parametrize("noise_prob", [0.0, 0.5, 0.8])
def test_fake_quantize_eval_deterministic(noise_prob):
    fake_quant = make_fake_quant(4, noise_prob=noise_prob, training=False)
    x = torch.linspace(-1.5, 1.5, 1001)
    torch.manual_seed(0)
    first = fake_quant(x)
    torch.manual_seed(1)
    second = fake_quant(x)
    assert torch.equal(first, second)


def test_fake_quantize_noise_gradient_outside_range():
    # 1.5 quantizes to 0.9921875 and lies outside the STE gate |v| <= 1:
    # quantized elements get gradient 0, the others pass through with 1.
    torch.manual_seed(0)
    x = torch.full((1000,), 1.5, requires_grad=True)
    out = make_fake_quant(8, noise_prob=0.5)(x)
    out.sum().backward()
    quantized = (out != 1.5).detach()
    assert 0 < quantized.sum().item() < 1000
    assert torch.equal(x.grad, (~quantized).float())


def test_fake_quantize_noise_gradient_inside_range():
    torch.manual_seed(0)
    x = torch.full((1000,), 0.3, requires_grad=True)
    make_fake_quant(8, noise_prob=0.5)(x).sum().backward()
    assert torch.equal(x.grad, torch.ones(1000))


def test_fake_quantize_noise_with_power_of_2():
    torch.manual_seed(0)
    fake_quant = FakeQuantize(PowerOf2Quantization(4), noise_prob=0.5).train()
    x = torch.full((1000,), 0.3)
    out = fake_quant(x)
    quantized = out != x
    assert 0 < quantized.sum().item() < 1000
    assert torch.equal(out[quantized], torch.full_like(out[quantized], 0.5))


def test_fake_quantize_noise_keeps_extreme_values_exact():
    # Each element is either passed through or quantized, bit for bit.
    torch.manual_seed(0)
    values = [3e38, -3e38, 1e-45, -1e-45, 0.3, -0.7, 1.0, -1.0, 2.5, 1e-30]
    x = torch.tensor(values * 100)
    out = make_fake_quant(8, noise_prob=0.5)(x)
    quantized = SymmetricQuantization(8)(x)
    assert torch.equal((out == x) | (out == quantized), torch.ones(1000, dtype=torch.bool))
    assert 0 < (out != x).sum().item() < 1000


def test_fake_quantize_noise_float64():
    torch.manual_seed(0)
    x = torch.full((1000,), 0.3, dtype=torch.float64, requires_grad=True)
    out = make_fake_quant(8, noise_prob=0.5)(x)
    out.sum().backward()
    quantized = (out != 0.3).detach()
    assert out.dtype == torch.float64
    assert torch.equal(out[quantized], torch.full_like(out[quantized], 0.296875))
    assert x.grad.dtype == torch.float64
    assert 0 < quantized.sum().item() < 1000


@pytest.mark.parametrize("shape", [(1000,), (7, 11, 13), (3,), ()])
def test_keep_mask_shape_and_values(shape):
    keep = draw_keep_mask(torch.empty(shape), 0.5)
    assert keep.shape == shape
    assert keep.dtype == torch.float32
    assert set(keep.flatten().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("noise_prob", [0.1, 0.5, 0.8, 0.95])
def test_keep_mask_fraction(noise_prob):
    # A fraction 1 - noise_prob of the elements stays unquantized. The
    # tolerance 0.01 is over 7 binomial standard deviations.
    torch.manual_seed(0)
    keep = draw_keep_mask(torch.empty(100_001), noise_prob)
    assert abs(keep.mean().item() - (1 - noise_prob)) < 0.01


def test_keep_mask_reproducible_with_seed():
    torch.manual_seed(3)
    first = draw_keep_mask(torch.empty(1000), 0.8)
    torch.manual_seed(3)
    second = draw_keep_mask(torch.empty(1000), 0.8)
    assert torch.equal(first, second)


def test_keep_mask_empty():
    assert draw_keep_mask(torch.empty(0, 4), 0.8).shape == (0, 4)


@pytest.mark.parametrize(
    ("noise_prob", "message"),
    [
        (1.5, "noise_prob must be in [0, 1], but got 1.5."),
        (-0.1, "noise_prob must be in [0, 1], but got -0.1."),
        (math.nan, "noise_prob must be in [0, 1], but got nan."),
        (math.inf, "noise_prob must be in [0, 1], but got inf."),
        (True, "noise_prob must be a number in [0, 1], but got True of type bool."),
        ("0.8", "noise_prob must be a number in [0, 1], but got '0.8' of type str."),
    ],
)
def test_fake_quantize_rejects_noise_prob(noise_prob, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        FakeQuantize(SymmetricQuantization(8), noise_prob)


def test_fake_quantize_rejects_quantization():
    message = (
        "quantization must be a SymmetricQuantization or PowerOf2Quantization, but got Identity."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        FakeQuantize(nn.Identity())


def test_fake_quantize_rejects_weight_scale():
    message = "weight_scale must be one of ('fixed', 'pow2'), but got 'max'."
    with pytest.raises(ValueError, match=re.escape(message)):
        FakeQuantize(SymmetricQuantization(8), weight_scale="max")


@pytest.mark.parametrize(
    ("quantization", "bits"),
    [(SymmetricQuantization(6), 6), (PowerOf2Quantization(3), 3)],
)
def test_fake_quantize_bits(quantization, bits):
    assert FakeQuantize(quantization).bits == bits


# The power-of-two weight scale.


@pytest.mark.parametrize(
    ("values", "scale"),
    [
        ([0.3, -0.1], 0.5),
        ([0.5], 1.0),  # the scale lies strictly above max |w|
        ([-3.0, 1.0], 4.0),
        ([0.2, 0.05], 0.25),
        ([0.25 * (1 + 2**-23)], 0.5),
        ([1e-3], 2**-9),
        ([0.0, 0.0], 1.0),  # all zero
    ],
)
def test_weight_scale_pow2_value(values, scale):
    fake_quant = make_fake_quant(3, weight_scale="pow2", training=False)
    fake_quant(torch.tensor(values))
    assert fake_quant.scale.item() == scale


def test_weight_scale_pow2_output():
    # scale 0.5: [0.6, -0.2, 0.1] on the 3-bit grid is [0.5, -0.25, 0.0].
    fake_quant = make_fake_quant(3, weight_scale="pow2", training=False)
    out = fake_quant(torch.tensor([0.3, -0.1, 0.05]))
    assert out.tolist() == [0.25, -0.125, 0.0]


def test_weight_scale_pow2_training_output():
    fake_quant = make_fake_quant(3, weight_scale="pow2", training=True)
    out = fake_quant(torch.tensor([0.3, -0.1, 0.05]))
    assert out.tolist() == [0.25, -0.125, 0.0]


def test_weight_scale_pow2_large_values():
    # scale 4.0: [0.75, -0.25] on the 3-bit grid, times 4.
    fake_quant = make_fake_quant(3, weight_scale="pow2", training=False)
    out = fake_quant(torch.tensor([3.0, -1.0]))
    assert out.tolist() == [3.0, -1.0]


def test_weight_scale_pow2_all_zero_output():
    x = torch.zeros(4, requires_grad=True)
    out = make_fake_quant(3, weight_scale="pow2")(x)
    out.sum().backward()
    assert out.tolist() == [0.0, 0.0, 0.0, 0.0]
    assert x.grad.tolist() == [1.0, 1.0, 1.0, 1.0]


def test_weight_scale_pow2_gradient():
    x = torch.tensor([0.3, -0.1, 0.05, 3.0], requires_grad=True)
    make_fake_quant(3, weight_scale="pow2")(x).sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0, 1.0]


def test_weight_scale_pow2_with_power_of_2():
    # scale 0.5: [0.6, -0.2, 0.02, 0.002] -> [0.5, -0.25, 2**-5, 2**-7] at
    # 4 bits, times 0.5. 0.002 lies below the smallest power 2**-7.
    fake_quant = FakeQuantize(PowerOf2Quantization(4), weight_scale="pow2").eval()
    out = fake_quant(torch.tensor([0.3, -0.1, 0.01, 0.001]))
    assert out.tolist() == [0.25, -0.125, 2**-6, 2**-8]


def test_weight_scale_pow2_in_state_dict():
    fake_quant = make_fake_quant(3, weight_scale="pow2", training=False)
    fake_quant(torch.tensor([0.3, -0.1]))
    assert fake_quant.state_dict()["scale"].item() == 0.5


def test_weight_scale_pow2_load_state_dict():
    source = make_fake_quant(3, weight_scale="pow2", training=False)
    source(torch.tensor([3.0]))
    target = make_fake_quant(3, weight_scale="pow2", training=False)
    target.load_state_dict(source.state_dict())
    assert target.scale.item() == 4.0


def test_weight_scale_fixed_has_no_buffer():
    assert "scale" not in make_fake_quant(3).state_dict()
