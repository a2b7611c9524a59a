"""Cost metrics: weights, biases, MACs, weight memory and BitOPs, computed by hand."""

import pytest
import torch
from torch import nn

from qsearch import quant
from qsearch.quant import get_qat_qconfig, model_cost, quantizer_bits

pytestmark = pytest.mark.filterwarnings("ignore:Please use quant_min and quant_max")

QCONFIG = get_qat_qconfig({"bw_w": 4, "bw_f": 8, "bw_b": 6})


class SmallModel(nn.Module):
    """A grouped conv, a conv folded with batch norm and a linear classifier."""

    def __init__(self, qconfig) -> None:
        super().__init__()
        self.grouped = quant.Conv2d(4, 8, 3, groups=2, qconfig=qconfig)  # (8, 4, 4)
        self.conv_bn = quant.ConvBnReLU2d(8, 8, 1, bias=False, qconfig=qconfig)  # (8, 4, 4)
        self.fc = quant.Linear(128, 10, qconfig=qconfig, quantize_output=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.conv_bn(self.grouped(x)), 1))


def small_model_cost():
    return model_cost(SmallModel(QCONFIG), torch.randn(1, 4, 6, 6))


def test_cost_example_conv1d():
    layer = quant.Conv1d(40, 16, 3, bias=False, qconfig=get_qat_qconfig({"bw_w": 6, "bw_f": 8}))
    cost = model_cost(layer, torch.randn(1, 40, 101))
    assert cost.weights == 1920
    assert cost.biases == 0
    assert cost.macs == 190080
    assert cost.weight_memory_bits == 11520


def test_cost_layer_names_and_kinds():
    layers = small_model_cost().layers
    assert [layer.name for layer in layers] == ["grouped", "conv_bn", "fc"]
    assert [layer.kind for layer in layers] == ["Conv2d", "ConvBnReLU2d", "Linear"]


def test_cost_grouped_conv():
    # 8 * 4 / 2 * 9 weights, and 8 * 16 outputs of 4 / 2 * 9 MACs each.
    layer = small_model_cost().layers[0]
    assert layer.weights == 144
    assert layer.biases == 8
    assert layer.macs == 2304
    assert (layer.bw_w, layer.bw_b, layer.bw_f) == (4, 6, 8)
    assert layer.weight_memory_bits == 144 * 4 + 8 * 6
    assert layer.bitops == 2304 * 4 * 8


def test_cost_conv_bn_counts_folded_bias():
    layer = small_model_cost().layers[1]
    assert layer.weights == 64
    assert layer.biases == 8
    assert layer.macs == 1024
    assert layer.weight_memory_bits == 304
    assert layer.bitops == 32768


def test_cost_linear():
    # The logits are unquantized, so bw_f is the qconfig's activation width.
    layer = small_model_cost().layers[2]
    assert layer.weights == 1280
    assert layer.biases == 10
    assert layer.macs == 1280
    assert (layer.bw_w, layer.bw_b, layer.bw_f) == (4, 6, 8)
    assert layer.weight_memory_bits == 5180
    assert layer.bitops == 40960


def test_cost_totals():
    assert small_model_cost().totals() == {
        "weights": 1488,
        "biases": 26,
        "parameters": 1514,
        "macs": 4608,
        "weight_memory_bits": 6108,
        "weight_memory_bytes": 763.5,
        "bitops": 147456,
    }


def test_cost_to_dict():
    data = small_model_cost().to_dict()
    assert data["total"]["macs"] == 4608
    assert data["layers"][0]["name"] == "grouped"
    assert data["layers"][0]["weights"] == 144


def test_cost_layer_without_bias_reports_bias_bits():
    layer = quant.Conv1d(2, 3, 1, bias=False, qconfig=QCONFIG)
    assert model_cost(layer, torch.randn(1, 2, 5)).layers[0].bw_b == 6


def test_cost_torch_qconfig_is_8_bits():
    qconfig = torch.ao.quantization.get_default_qat_qconfig("fbgemm")
    model = nn.Sequential(
        quant.ConvBnReLU1d(2, 4, 3, qconfig=qconfig),
        nn.Flatten(),
        quant.Linear(4, 3, qconfig=qconfig, quantize_output=False),
    )
    model.train()
    model(torch.randn(8, 2, 3))
    layers = model_cost(model, torch.randn(1, 2, 3)).layers
    assert [(layer.bw_w, layer.bw_b, layer.bw_f) for layer in layers] == [(8, 8, 8), (8, 8, 8)]
    assert layers[0].weight_memory_bits == 24 * 8 + 4 * 8


def test_quantizer_bits_torch_fake_quants():
    qconfig = torch.ao.quantization.get_default_qat_qconfig("fbgemm")
    assert quantizer_bits(qconfig.weight()) == 8
    assert quantizer_bits(qconfig.activation()) == 8  # quant_max 127 from reduce_range


def test_quantizer_bits_qnnpack():
    qconfig = torch.ao.quantization.get_default_qat_qconfig("qnnpack")
    assert quantizer_bits(qconfig.activation()) == 8


@pytest.mark.parametrize(
    ("module", "bits"),
    [
        (quant.FakeQuantize(quant.SymmetricQuantization(5)), 5),
        (quant.FakeQuantize(quant.PowerOf2Quantization(3)), 3),
        (nn.Identity(), None),
        (None, None),
    ],
)
def test_quantizer_bits(module, bits):
    assert quantizer_bits(module) == bits


def test_cost_float_layers():
    model = nn.Sequential(nn.Conv1d(2, 3, 3), nn.Flatten(), nn.Linear(9, 4))
    layers = model_cost(model, torch.randn(1, 2, 5)).layers
    assert [(layer.bw_w, layer.bw_b, layer.bw_f) for layer in layers] == [(32, 32, 32)] * 2
    assert layers[0].weight_memory_bits == (18 + 3) * 32
    assert layers[1].bitops == 36 * 32 * 32


def test_cost_float_bits_option():
    layer = nn.Linear(3, 2)
    cost = model_cost(layer, torch.randn(1, 3), float_bits=16)
    assert cost.weight_memory_bits == 8 * 16


def test_cost_uses_first_sample_only():
    cost = model_cost(SmallModel(QCONFIG), torch.randn(7, 4, 6, 6))
    assert cost.macs == 4608


def test_cost_restores_training_mode():
    model = SmallModel(QCONFIG).train()
    model_cost(model, torch.randn(1, 4, 6, 6))
    assert model.training
    assert model.conv_bn.bn.training


def test_cost_keeps_running_stats():
    model = SmallModel(QCONFIG)
    model_cost(model, torch.randn(1, 4, 6, 6))
    assert model.conv_bn.bn.num_batches_tracked.item() == 0


def test_cost_removes_hooks():
    model = SmallModel(QCONFIG)
    model_cost(model, torch.randn(1, 4, 6, 6))
    assert not model.grouped._forward_hooks
