"""Symmetric fixed-point and power-of-2 quantizers, against hand-computed values."""

import math
import re

import numpy as np
import pytest
import torch

from qsearch.quant import PowerOf2Quantization, SymmetricQuantization


def quantize(quantizer: torch.nn.Module, values: list[float]) -> list[float]:
    return quantizer(torch.tensor(values)).tolist()


def gradient(quantizer: torch.nn.Module, values: list[float]) -> list[float]:
    x = torch.tensor(values, requires_grad=True)
    quantizer(x).sum().backward()
    return x.grad.tolist()


# Symmetric fixed-point quantization.


def test_symmetric_example_8_bits():
    assert quantize(SymmetricQuantization(8), [0.3]) == [0.296875]


def test_symmetric_example_clamps_8_bits():
    out = quantize(SymmetricQuantization(8), [1.0, -1.0, 2.5, -2.5])
    assert out == [0.9921875, -1.0, 0.9921875, -1.0]


@pytest.mark.parametrize(
    ("bits", "value", "expected"),
    [
        (4, 0.0625, 0.0),  # code 0.5 -> 0
        (4, 0.1875, 0.25),  # code 1.5 -> 2
        (4, 0.3125, 0.25),  # code 2.5 -> 2
        (4, 0.4375, 0.5),  # code 3.5 -> 4
        (4, -0.0625, 0.0),
        (4, -0.1875, -0.25),
        (4, -0.3125, -0.25),
        (4, -0.4375, -0.5),
        (8, 2**-8, 0.0),  # code 0.5 -> 0
        (8, 3 * 2**-8, 2**-6),  # code 1.5 -> 2
        (8, -3 * 2**-8, -(2**-6)),
        (2, 0.25, 0.0),  # code 0.5 -> 0
        (2, -0.25, 0.0),
    ],
)
def test_symmetric_ties_round_to_even(bits, value, expected):
    assert quantize(SymmetricQuantization(bits), [value]) == [expected]


@pytest.mark.parametrize(
    ("bits", "largest"),
    [(2, 0.5), (3, 0.75), (4, 0.875), (8, 0.9921875), (16, 0.999969482421875)],
)
def test_symmetric_clamps_both_ends(bits, largest):
    out = quantize(SymmetricQuantization(bits), [1e6, 1.0, largest, -1.0, -1.0 - 2**-20, -1e6])
    assert out == [largest, largest, largest, -1.0, -1.0, -1.0]


def test_symmetric_2_bits_grid():
    # The codes are -2..1 with scale 0.5. 0.75 is the tie 1.5 -> 2, clamped to 1.
    out = quantize(SymmetricQuantization(2), [-1.0, -0.75, -0.6, -0.2, 0.2, 0.6, 0.75, 0.9])
    assert out == [-1.0, -1.0, -0.5, 0.0, 0.0, 0.5, 0.5, 0.5]


def test_symmetric_16_bits():
    # float32(0.3) * 2**15 = 9830.4004 -> 9830.
    assert quantize(SymmetricQuantization(16), [0.3, -0.3]) == [
        0.29998779296875,
        -0.29998779296875,
    ]


def test_symmetric_leaves_input_unchanged():
    x = torch.tensor([0.3, -2.5, 0.1875])
    SymmetricQuantization(4)(x)
    assert x.tolist() == torch.tensor([0.3, -2.5, 0.1875]).tolist()


def test_symmetric_quantize_matches_forward():
    quantizer = SymmetricQuantization(5)
    x = torch.linspace(-1.5, 1.5, 101)
    assert torch.equal(quantizer.quantize(x), quantizer(x))


@pytest.mark.parametrize(
    ("bits", "quant_min", "quant_max", "scale"),
    [
        (2, -2, 1, 0.5),
        (3, -4, 3, 0.25),
        (16, -32768, 32767, 2**-15),
        (32, -(2**31), 2**31 - 1, 2**-31),
    ],
)
def test_symmetric_accepts_bits(bits, quant_min, quant_max, scale):
    quantizer = SymmetricQuantization(bits)
    assert quantizer.bits == bits
    assert quantizer.quant_min == quant_min
    assert quantizer.quant_max == quant_max
    assert quantizer.scale == scale


@pytest.mark.parametrize(
    ("bits", "message"),
    [
        (1, "symmetric quantization bits must be in 2..32, but got 1."),
        (0, "symmetric quantization bits must be in 2..32, but got 0."),
        (33, "symmetric quantization bits must be in 2..32, but got 33."),
        (
            4.0,
            "symmetric quantization bits must be an integer in 2..32, but got 4.0 of type float.",
        ),
        (
            True,
            "symmetric quantization bits must be an integer in 2..32, but got True of type bool.",
        ),
        ("8", "symmetric quantization bits must be an integer in 2..32, but got '8' of type str."),
    ],
)
def test_symmetric_rejects_bits(bits, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        SymmetricQuantization(bits)


def test_symmetric_gradient_example():
    assert gradient(SymmetricQuantization(8), [0.5, 1.0, 1.5, -1.0, -1.2]) == [1, 1, 0, 1, 0]


# Power-of-2 quantization.


def test_power_of_2_example_2_bits():
    out = quantize(PowerOf2Quantization(2), [0.1, 0.125, 0.3, -0.7, 0.0])
    assert out == [0.0, 0.5, 0.5, -0.5, 0.0]


def test_power_of_2_example_ceil_4_bits():
    assert quantize(PowerOf2Quantization(4), [0.3]) == [0.5]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.25, 0.25),  # a power of two stays
        (0.2, 0.25),
        (0.125, 0.125),
        (0.13, 0.25),
        (-0.3, -0.5),
        (-0.2, -0.25),
        (0.001, 2**-7),  # above the threshold: pushed up to the smallest power
        (-0.001, -(2**-7)),
        (2**-7, 2**-7),
    ],
)
def test_power_of_2_rounds_exponent_up(value, expected):
    assert quantize(PowerOf2Quantization(4), [value]) == [expected]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.25 * (1 + 2**-23), 0.5),  # the next float32 above 0.25
        (0.125 * (1 + 2**-23), 0.25),
        (-0.25 * (1 + 2**-23), -0.5),
        (0.25 * (1 - 2**-24), 0.25),  # the next float32 below 0.25
    ],
)
def test_power_of_2_just_above_power(value, expected):
    # float32 log2 rounds 0.25 * (1 + 2**-23) to exactly -2.
    assert quantize(PowerOf2Quantization(4), [value]) == [expected]


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
def test_power_of_2_large_values_clamp(bits):
    out = quantize(PowerOf2Quantization(bits), [0.5, 0.75, 1.0, 3e38, -0.5, -1.0, -3e38])
    assert out == [0.5, 0.5, 0.5, 0.5, -0.5, -0.5, -0.5]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (2**-15, 2**-7),  # exactly the threshold 2**-(2**4 - 1)
        (-(2**-15), -(2**-7)),
        (2**-15 * (1 - 2**-24), 0.0),  # the next float32 below the threshold
        (2**-16, 0.0),
        (-(2**-16), 0.0),
    ],
)
def test_power_of_2_threshold_4_bits(value, expected):
    assert quantize(PowerOf2Quantization(4), [value]) == [expected]


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.125, 0.5), (0.125 * (1 - 2**-24), 0.0), (0.124, 0.0)],
)
def test_power_of_2_threshold_2_bits(value, expected):
    assert quantize(PowerOf2Quantization(2), [value]) == [expected]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1e-30, 2**-99),  # ceil(log2(1e-30)) = ceil(-99.66)
        (2**-126, 2**-126),  # the smallest normal float32
        (2**-127, 2**-127),  # the smallest power of 2 at 8 bits, a subnormal
        (1e-40, 2**-127),  # subnormal, pushed up to the smallest power
        (1e-45, 2**-127),  # the smallest subnormal float32
        (-1e-45, -(2**-127)),
    ],
)
def test_power_of_2_tiny_values_8_bits(value, expected):
    assert quantize(PowerOf2Quantization(8), [value]) == [expected]


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_power_of_2_zeros_stay_zero(bits):
    assert quantize(PowerOf2Quantization(bits), [0.0, -0.0, 0.0]) == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize(
    "values",
    [[0.0, 0.0, 0.0], [0.0, -0.0, 1e-45, -1e-45, 1e-30, 2**-127, 1e-40]],
    ids=["all_zero", "tiny"],
)
def test_power_of_2_finite_output_and_gradient(bits, values):
    x = torch.tensor(values, requires_grad=True)
    out = PowerOf2Quantization(bits)(x)
    out.sum().backward()
    assert torch.isfinite(out).all()
    assert x.grad.tolist() == [1.0] * len(values)


def test_power_of_2_gradient_example():
    assert gradient(PowerOf2Quantization(4), [0.5, 1.0, 1.5, -1.0, -1.2]) == [1, 1, 0, 1, 0]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.3, 0.25),  # log2 = -1.74 -> -2
        (0.36, 0.5),  # log2 = -1.47 -> -1
        (0.18, 0.25),  # log2 = -2.47 -> -2
        (0.17, 0.125),  # log2 = -2.56 -> -3
        (0.7, 0.5),
        (-0.3, -0.25),
        (0.001, 2**-7),
        (2**-16, 0.0),
    ],
)
def test_power_of_2_round_option(value, expected):
    assert quantize(PowerOf2Quantization(4, rounding="round"), [value]) == [expected]


def test_power_of_2_round_option_near_midpoint():
    # The float32 nearest to sqrt(0.5) / 2 lies below it: log2 = -1.50000002 -> -2.
    below = float(np.float32(math.sqrt(0.5)) / 2)
    above = float(np.nextafter(np.float32(below), np.float32(1.0)))
    out = quantize(PowerOf2Quantization(4, rounding="round"), [below, above])
    assert out == [0.25, 0.5]


def test_power_of_2_rejects_rounding():
    message = "power-of-2 rounding must be one of ('ceil', 'round'), but got 'floor'."
    with pytest.raises(ValueError, match=re.escape(message)):
        PowerOf2Quantization(4, rounding="floor")


@pytest.mark.parametrize("bits", [2, 3, 8])
def test_power_of_2_accepts_bits(bits):
    assert PowerOf2Quantization(bits).bits == bits


@pytest.mark.parametrize(
    ("bits", "message"),
    [
        (1, "power-of-2 quantization bits must be in 2..8, but got 1."),
        (9, "power-of-2 quantization bits must be in 2..8, but got 9."),
        (16, "power-of-2 quantization bits must be in 2..8, but got 16."),
        (
            4.0,
            "power-of-2 quantization bits must be an integer in 2..8, but got 4.0 of type float.",
        ),
        (
            True,
            "power-of-2 quantization bits must be an integer in 2..8, but got True of type bool.",
        ),
    ],
)
def test_power_of_2_rejects_bits(bits, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        PowerOf2Quantization(bits)


def test_power_of_2_leaves_input_unchanged():
    x = torch.tensor([0.3, -0.7, 0.0])
    PowerOf2Quantization(2)(x)
    assert x.tolist() == torch.tensor([0.3, -0.7, 0.0]).tolist()


def test_power_of_2_quantize_matches_forward():
    quantizer = PowerOf2Quantization(5)
    x = torch.linspace(-1.5, 1.5, 101)
    assert torch.equal(quantizer.quantize(x), quantizer(x))
