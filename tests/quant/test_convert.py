"""convert_to_qat: float torch models become QAT models with fused conv-BN-ReLU layers."""

import re

import pytest
import torch
from torch import nn

from qsearch import quant
from qsearch.quant import convert_to_qat, get_qat_qconfig

QCONFIG_16 = get_qat_qconfig({"bw_w": 16, "bw_f": 16, "bw_b": 16})


def float_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 3),
    )


def make_input() -> torch.Tensor:
    return torch.randn(5, 1, 6, 6, generator=torch.Generator().manual_seed(1)) * 0.25


def test_convert_layer_types():
    qat = convert_to_qat(float_model(), QCONFIG_16)
    assert [type(module) for module in qat] == [quant.QuantIdentity, nn.Sequential]
    assert [type(module) for module in qat[1]] == [
        quant.ConvBnReLU2d,
        nn.Identity,
        nn.Identity,
        quant.ConvReLU2d,
        nn.Identity,
        nn.Flatten,
        quant.Linear,
    ]


def test_convert_quantizes_all_but_last_output():
    body = convert_to_qat(float_model(), QCONFIG_16)[1]
    assert body[0].quantize_output is True
    assert body[3].quantize_output is True
    assert body[6].quantize_output is False
    assert isinstance(body[6].activation_post_process, nn.Identity)


def test_convert_copies_weights():
    model = float_model()
    body = convert_to_qat(model, QCONFIG_16)[1]
    for float_index, qat_index in [(0, 0), (3, 3), (6, 6)]:
        assert torch.equal(body[qat_index].weight, model[float_index].weight)
        assert torch.equal(body[qat_index].bias, model[float_index].bias)


def test_convert_copies_batch_norm_state():
    model = float_model()
    with torch.no_grad():
        model[1].running_mean.fill_(0.125)
        model[1].running_var.fill_(2.0)
        model[1].weight.fill_(0.5)
    bn = convert_to_qat(model, QCONFIG_16)[1][0].bn
    assert bn.running_mean.tolist() == [0.125] * 4
    assert bn.running_var.tolist() == [2.0] * 4
    assert bn.weight.tolist() == [0.5] * 4


def test_convert_weights_are_not_shared():
    model = float_model()
    body = convert_to_qat(model, QCONFIG_16)[1]
    assert body[0].weight.data_ptr() != model[0].weight.data_ptr()


def test_convert_leaves_original_unchanged():
    model = float_model()
    convert_to_qat(model, QCONFIG_16)
    assert type(model[0]) is nn.Conv2d
    assert type(model[1]) is nn.BatchNorm2d


def test_convert_inplace():
    model = float_model()
    converted = convert_to_qat(model, QCONFIG_16, inplace=True, quantize_input=False)
    assert converted is model
    assert type(model[0]) is quant.ConvBnReLU2d


def test_convert_without_input_quantizer():
    qat = convert_to_qat(float_model(), QCONFIG_16, quantize_input=False)
    assert type(qat[0]) is quant.ConvBnReLU2d


def test_convert_output_close_to_float_at_16_bits():
    model = float_model().eval()
    qat = convert_to_qat(model, QCONFIG_16).eval()
    x = make_input()
    with torch.no_grad():
        torch.testing.assert_close(qat(x), model(x), atol=5e-4, rtol=0)


def test_convert_keeps_training_mode():
    model = float_model().eval()
    qat = convert_to_qat(model, QCONFIG_16)
    assert not qat[1][0].training
    assert not qat[1][0].bn.training


def test_convert_conv1d_batch_norm():
    model = nn.Sequential(nn.Conv1d(2, 3, 3, stride=2, bias=False), nn.BatchNorm1d(3, eps=1e-3))
    qat = convert_to_qat(model, QCONFIG_16, quantize_input=False)
    assert type(qat[0]) is quant.ConvBn1d
    assert qat[0].stride == (2,)
    assert qat[0].bias is None
    assert qat[0].bn.eps == 1e-3
    assert qat[0].quantize_output is False


def test_convert_linear_relu():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    qat = convert_to_qat(model, QCONFIG_16, quantize_input=False)
    assert [type(module) for module in qat] == [quant.LinearReLU, nn.Identity, quant.Linear]


def test_convert_keeps_conv_arguments():
    model = nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1, dilation=1, groups=2))
    conv = convert_to_qat(model, QCONFIG_16, quantize_input=False)[0]
    assert (conv.stride, conv.padding, conv.groups) == ((2, 2), (1, 1), 2)


class TwoLayers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 3, 3)
        self.bn = nn.BatchNorm1d(3)
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(self.conv(x)).mean(dim=2))


def test_convert_outside_sequential_does_not_fuse():
    qat = convert_to_qat(TwoLayers(), QCONFIG_16, quantize_input=False)
    assert type(qat.conv) is quant.Conv1d
    assert type(qat.bn) is nn.BatchNorm1d
    assert type(qat.fc) is quant.Linear
    assert qat.conv.quantize_output is True
    assert qat.fc.quantize_output is False


def test_convert_rejects_model_without_layers():
    message = "model Sequential has no nn.Conv1d, nn.Conv2d or nn.Linear layer to convert."
    with pytest.raises(ValueError, match=re.escape(message)):
        convert_to_qat(nn.Sequential(nn.ReLU()), QCONFIG_16)


def test_convert_accepts_torch_qconfig():
    qconfig = torch.ao.quantization.get_default_qat_qconfig("fbgemm")
    with pytest.warns(UserWarning, match="reduce_range will be deprecated"):
        qat = convert_to_qat(float_model(), qconfig)
    assert type(qat[1][0]) is quant.ConvBnReLU2d
    assert qat(make_input()).shape == (5, 3)
