"""qconfig blocks named by `_target_`, as upstream configurations write them."""

import re
import sys

import pytest
import torch
from torch.ao.quantization.fake_quantize import FusedMovingAvgObsFakeQuantize

from qsearch.quant import QConfig, qconfig_from_target
from qsearch.quant.qconfig_target import check_qconfig_block

QSEARCH_TARGETS = [
    "qsearch.quant.get_qat_qconfig",
    "speech_recognition.models.factory.qconfig.get_trax_qat_qconfig",
    "hannah.models.factory.qconfig.get_trax_qat_qconfig",
]
TORCH_TARGETS = [
    "torch.quantization.get_default_qat_qconfig",
    "torch.ao.quantization.get_default_qat_qconfig",
]
# fbgemm activations use reduce_range, which PyTorch 2.x deprecates with a warning.
pytestmark = pytest.mark.filterwarnings("ignore:Please use quant_min and quant_max")

CONFIG = {"bw_w": 6, "bw_f": 8, "bw_b": 7, "power_of_2": False, "noise_prob": 0.7}


@pytest.mark.parametrize("target", QSEARCH_TARGETS)
def test_target_qsearch_builds_qconfig(target):
    qconfig = qconfig_from_target({"_target_": target, "config": CONFIG})
    assert isinstance(qconfig, QConfig)
    assert qconfig.weight().bits == 6
    assert qconfig.activation().bits == 8
    assert qconfig.bias().bits == 7
    assert qconfig.weight().noise_prob == 0.7


@pytest.mark.parametrize("target", TORCH_TARGETS)
def test_target_torch_builds_fbgemm_qconfig(target):
    qconfig = qconfig_from_target({"_target_": target, "backend": "fbgemm"})
    assert isinstance(qconfig, torch.ao.quantization.QConfig)
    assert isinstance(qconfig.weight(), FusedMovingAvgObsFakeQuantize)
    assert qconfig.weight().dtype == torch.qint8
    assert qconfig.activation().dtype == torch.quint8


@pytest.mark.parametrize("target", TORCH_TARGETS)
def test_target_torch_default_backend(target):
    qconfig = qconfig_from_target({"_target_": target})
    expected = torch.ao.quantization.get_default_qat_qconfig("fbgemm")
    assert repr(qconfig) == repr(expected)


def test_target_torch_accepts_noise_prob_1():
    block = {"_target_": TORCH_TARGETS[1], "config": {"noise_prob": 1.0, "power_of_2": False}}
    assert isinstance(qconfig_from_target(block), torch.ao.quantization.QConfig)


def test_target_torch_rejects_backend():
    message = "qconfig 'backend' must be one of fbgemm, x86, qnnpack, onednn, but got 'tpu'."
    with pytest.raises(ValueError, match=re.escape(message)):
        qconfig_from_target({"_target_": TORCH_TARGETS[1], "backend": "tpu"})


@pytest.mark.parametrize("target", ["os.system", "builtins.eval", "evil_module_xyz.get"])
def test_target_rejects_unlisted(target):
    message = f"qconfig '_target_' {target!r} is not allowed; use one of:"
    with pytest.raises(ValueError, match=re.escape(message)):
        qconfig_from_target({"_target_": target, "config": CONFIG})


def test_target_rejected_is_not_imported(tmp_path, monkeypatch):
    # The module exists on sys.path, so any import attempt would load it.
    (tmp_path / "evil_module_xyz.py").write_text(
        "import pathlib\n"
        f"pathlib.Path({str(tmp_path / 'imported')!r}).touch()\n"
        "def get(**kwargs):\n"
        "    return None\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "evil_module_xyz" not in sys.modules

    with pytest.raises(ValueError, match="is not allowed"):
        qconfig_from_target({"_target_": "evil_module_xyz.get", "config": CONFIG})
    assert "evil_module_xyz" not in sys.modules
    assert not (tmp_path / "imported").exists()


@pytest.mark.parametrize("target", TORCH_TARGETS)
@pytest.mark.parametrize("noise_prob", [0.8, 0.0])
def test_target_torch_rejects_noise(target, noise_prob):
    message = (
        f"qconfig 'noise_prob' {noise_prob!r} is not supported with {target}: PyTorch's QAT "
        "qconfig has no quantization noise. Use _target_ qsearch.quant.get_qat_qconfig for noise."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        qconfig_from_target({"_target_": target, "config": {"noise_prob": noise_prob}})


@pytest.mark.parametrize("target", TORCH_TARGETS)
def test_target_torch_rejects_power_of_2(target):
    message = (
        f"qconfig 'power_of_2' is not supported with {target}: PyTorch's QAT qconfig has no "
        "power-of-2 weights. Use _target_ qsearch.quant.get_qat_qconfig for power-of-2."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        qconfig_from_target({"_target_": target, "config": {"power_of_2": True}})


def test_target_torch_rejects_bit_widths():
    message = "qconfig 'config' is not supported with torch.ao.quantization.get_default_qat_qconfig"
    with pytest.raises(ValueError, match=re.escape(message)):
        qconfig_from_target({"_target_": TORCH_TARGETS[1], "config": {"bw_w": 4}})


def test_target_torch_rejects_unknown_key():
    message = "unknown qconfig key 'bw_w' for torch.ao.quantization.get_default_qat_qconfig"
    with pytest.raises(ValueError, match=re.escape(message)):
        qconfig_from_target({"_target_": TORCH_TARGETS[1], "bw_w": 4})


def test_target_missing():
    message = "qconfig '_target_' is missing; use one of: qsearch.quant.get_qat_qconfig"
    with pytest.raises(ValueError, match=re.escape(message)):
        qconfig_from_target({"config": CONFIG})


@pytest.mark.parametrize("target", QSEARCH_TARGETS)
def test_target_qsearch_missing_config(target):
    message = "qconfig 'config' is missing; give at least bw_w and bw_f."
    with pytest.raises(ValueError, match=re.escape(message)):
        qconfig_from_target({"_target_": target})


def test_target_qsearch_rejects_unknown_key():
    message = "unknown qconfig key 'bw_w' for qsearch.quant.get_qat_qconfig"
    with pytest.raises(ValueError, match=re.escape(message)):
        qconfig_from_target({"_target_": QSEARCH_TARGETS[0], "config": CONFIG, "bw_w": 4})


def test_target_qsearch_rejects_invalid_config():
    message = "qconfig key 'bw_w' must be in 2..16, but got 1."
    with pytest.raises(ValueError, match=re.escape(message)):
        qconfig_from_target({"_target_": QSEARCH_TARGETS[0], "config": {"bw_w": 1, "bw_f": 8}})


def test_target_rejects_non_mapping():
    with pytest.raises(ValueError, match=re.escape("qconfig must be a mapping with a '_target_'")):
        qconfig_from_target("qsearch.quant.get_qat_qconfig")


def test_check_qconfig_block_valid():
    assert check_qconfig_block({"_target_": QSEARCH_TARGETS[0], "config": CONFIG}) is None


def test_check_qconfig_block_invalid():
    with pytest.raises(ValueError, match="is not allowed"):
        check_qconfig_block({"_target_": "os.system", "config": CONFIG})
