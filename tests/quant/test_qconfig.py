"""The qconfig mapping: validation, defaults and the four fake-quantizer factories."""

import math
import re

import pytest

from qsearch.quant import (
    FakeQuantize,
    PowerOf2Quantization,
    QConfig,
    SymmetricQuantization,
    get_qat_qconfig,
    validate_qconfig,
)

BASE = {"bw_w": 4, "bw_f": 8}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"bw_w": 1, "bw_f": 8}, "qconfig key 'bw_w' must be in 2..16, but got 1."),
        ({"bw_w": 17, "bw_f": 8}, "qconfig key 'bw_w' must be in 2..16, but got 17."),
        ({"bw_w": 4, "bw_f": 1}, "qconfig key 'bw_f' must be in 2..16, but got 1."),
        ({"bw_w": 4, "bw_f": 17}, "qconfig key 'bw_f' must be in 2..16, but got 17."),
        (
            {**BASE, "bw_b": 1},
            "qconfig key 'bw_b' must be in 2..16 (0 or less means bw_f), but got 1.",
        ),
        (
            {**BASE, "bw_b": 17},
            "qconfig key 'bw_b' must be in 2..16 (0 or less means bw_f), but got 17.",
        ),
        (
            {"bw_w": 9, "bw_f": 8, "power_of_2": True},
            "qconfig key 'bw_w' must be in 2..8 for power-of-2 weights, but got 9.",
        ),
        (
            {"bw_w": 1, "bw_f": 8, "power_of_2": True},
            "qconfig key 'bw_w' must be in 2..8 for power-of-2 weights, but got 1.",
        ),
        ({**BASE, "bw_acc": 1}, "qconfig key 'bw_acc' must be in 2..32, but got 1."),
        ({**BASE, "bw_acc": 33}, "qconfig key 'bw_acc' must be in 2..32, but got 33."),
    ],
)
def test_qconfig_rejects_bits_out_of_range(config, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        get_qat_qconfig(config)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"bw_w": 4.5, "bw_f": 8}, "qconfig key 'bw_w' must be an integer in 2..16, but got 4.5."),
        ({"bw_w": 4, "bw_f": "8"}, "qconfig key 'bw_f' must be an integer in 2..16, but got '8'."),
        (
            {"bw_w": True, "bw_f": 8},
            "qconfig key 'bw_w' must be an integer in 2..16, but got True.",
        ),
        ({"bw_w": 4, "bw_f": 8.0}, "qconfig key 'bw_f' must be an integer in 2..16, but got 8.0."),
        (
            {**BASE, "bw_b": True},
            "qconfig key 'bw_b' must be an integer in 2..16 (0 or less means bw_f), but got True.",
        ),
        (
            {**BASE, "bw_b": 4.5},
            "qconfig key 'bw_b' must be an integer in 2..16 (0 or less means bw_f), but got 4.5.",
        ),
        (
            {**BASE, "bw_acc": 20.0},
            "qconfig key 'bw_acc' must be an integer in 2..32, but got 20.0.",
        ),
        (
            {"bw_w": "4", "bw_f": 8, "power_of_2": True},
            "qconfig key 'bw_w' must be an integer in 2..8 for power-of-2 weights, but got '4'.",
        ),
    ],
)
def test_qconfig_rejects_non_integer_bits(config, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        get_qat_qconfig(config)


@pytest.mark.parametrize(
    ("noise_prob", "message"),
    [
        (1.5, "qconfig key 'noise_prob' must be in [0, 1], but got 1.5."),
        (-0.1, "qconfig key 'noise_prob' must be in [0, 1], but got -0.1."),
        (math.nan, "qconfig key 'noise_prob' must be in [0, 1], but got nan."),
        (math.inf, "qconfig key 'noise_prob' must be in [0, 1], but got inf."),
        ("0.8", "qconfig key 'noise_prob' must be a number in [0, 1], but got '0.8' of type str."),
        (True, "qconfig key 'noise_prob' must be a number in [0, 1], but got True of type bool."),
        (
            None,
            "qconfig key 'noise_prob' must be a number in [0, 1], but got None of type NoneType.",
        ),
    ],
)
def test_qconfig_rejects_noise_prob(noise_prob, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        get_qat_qconfig({**BASE, "noise_prob": noise_prob})


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {**BASE, "power_of_2": "yes"},
            "qconfig key 'power_of_2' must be true or false, but got 'yes'.",
        ),
        (
            {**BASE, "power_of_2": 1},
            "qconfig key 'power_of_2' must be true or false, but got 1.",
        ),
        (
            {**BASE, "weight_scale": "max"},
            "qconfig key 'weight_scale' must be one of fixed, pow2, but got 'max'.",
        ),
        (
            {**BASE, "power_of_2_rounding": "floor"},
            "qconfig key 'power_of_2_rounding' must be one of ceil, round, but got 'floor'.",
        ),
    ],
)
def test_qconfig_rejects_options(config, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        get_qat_qconfig(config)


def test_qconfig_rejects_unknown_key():
    with pytest.raises(ValueError, match=re.escape("unknown qconfig key 'bw_x'; allowed keys")):
        get_qat_qconfig({**BASE, "bw_x": 4})


@pytest.mark.parametrize(
    ("config", "key"),
    [({"bw_f": 8}, "bw_w"), ({"bw_w": 4}, "bw_f"), ({}, "bw_w")],
)
def test_qconfig_rejects_missing_key(config, key):
    message = f"qconfig key '{key}' is missing; give an integer in 2..16."
    with pytest.raises(ValueError, match=re.escape(message)):
        get_qat_qconfig(config)


def test_qconfig_rejects_non_mapping():
    with pytest.raises(ValueError, match=re.escape("qconfig must be a mapping")):
        get_qat_qconfig([("bw_w", 4), ("bw_f", 8)])


@pytest.mark.parametrize(
    "config",
    [
        {"bw_w": 2, "bw_f": 2, "bw_b": 2, "bw_acc": 2},
        {"bw_w": 16, "bw_f": 16, "bw_b": 16, "bw_acc": 32},
        {"bw_w": 2, "bw_f": 8, "power_of_2": True},
        {"bw_w": 8, "bw_f": 8, "power_of_2": True},
        {**BASE, "noise_prob": 0},
        {**BASE, "noise_prob": 1},
    ],
)
def test_qconfig_accepts_limits(config):
    assert isinstance(get_qat_qconfig(config), QConfig)


def test_qconfig_defaults():
    assert validate_qconfig(BASE) == {
        "bw_w": 4,
        "bw_f": 8,
        "bw_b": 8,
        "bw_acc": 20,
        "power_of_2": False,
        "noise_prob": 1.0,
        "weight_scale": "fixed",
        "power_of_2_rounding": "ceil",
    }


@pytest.mark.parametrize("bw_b", [0, -1, None])
def test_qconfig_bias_bits_default_to_bw_f(bw_b):
    qconfig = get_qat_qconfig({"bw_w": 4, "bw_f": 6, "bw_b": bw_b})
    assert qconfig.bias().bits == 6


def test_qconfig_bias_bits_absent():
    assert get_qat_qconfig({"bw_w": 4, "bw_f": 6}).bias().bits == 6


def test_qconfig_fields():
    assert QConfig._fields == ("activation", "weight", "bias", "accumulator")


def test_qconfig_bits_per_field():
    qconfig = get_qat_qconfig({"bw_w": 3, "bw_f": 7, "bw_b": 5, "bw_acc": 24})
    assert qconfig.weight().bits == 3
    assert qconfig.activation().bits == 7
    assert qconfig.bias().bits == 5
    assert qconfig.accumulator().bits == 24


def test_qconfig_accumulator_default_bits():
    assert get_qat_qconfig(BASE).accumulator().bits == 20


def test_qconfig_power_of_2_on_weight_only():
    qconfig = get_qat_qconfig({"bw_w": 4, "bw_f": 8, "power_of_2": True})
    assert isinstance(qconfig.weight().quantization, PowerOf2Quantization)
    assert isinstance(qconfig.activation().quantization, SymmetricQuantization)
    assert isinstance(qconfig.bias().quantization, SymmetricQuantization)
    assert isinstance(qconfig.accumulator().quantization, SymmetricQuantization)


def test_qconfig_power_of_2_rounding():
    qconfig = get_qat_qconfig({**BASE, "power_of_2": True, "power_of_2_rounding": "round"})
    assert qconfig.weight().quantization.rounding == "round"


def test_qconfig_weight_scale_on_weight_only():
    qconfig = get_qat_qconfig({**BASE, "weight_scale": "pow2"})
    assert qconfig.weight().weight_scale == "pow2"
    assert qconfig.activation().weight_scale == "fixed"
    assert qconfig.bias().weight_scale == "fixed"
    assert qconfig.accumulator().weight_scale == "fixed"


@pytest.mark.parametrize("field", ["activation", "weight", "bias", "accumulator"])
def test_qconfig_noise_prob_on_every_field(field):
    qconfig = get_qat_qconfig({**BASE, "noise_prob": 0.8})
    assert getattr(qconfig, field)().noise_prob == 0.8


@pytest.mark.parametrize("field", ["activation", "weight", "bias", "accumulator"])
def test_qconfig_factory_returns_fresh_module(field):
    factory = getattr(get_qat_qconfig({**BASE, "weight_scale": "pow2"}), field)
    first = factory()
    second = factory()
    assert isinstance(first, FakeQuantize)
    assert first is not second
    assert first.quantization is not second.quantization


def test_qconfig_fresh_scale_buffers():
    factory = get_qat_qconfig({**BASE, "weight_scale": "pow2"}).weight
    assert factory().scale is not factory().scale
