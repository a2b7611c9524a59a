"""Conv-BN folding: the exact formulas with low bits, float agreement at 16 bits."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qsearch import quant
from qsearch.quant import ConvBnReLU1d, SymmetricQuantization, convert_to_qat, get_qat_qconfig

# (QAT class, float conv, float batch norm, conv function, input shape, ReLU)
CASES = [
    (quant.ConvBn1d, nn.Conv1d, nn.BatchNorm1d, F.conv1d, (8, 3, 9), False),
    (quant.ConvBnReLU1d, nn.Conv1d, nn.BatchNorm1d, F.conv1d, (8, 3, 9), True),
    (quant.ConvBn2d, nn.Conv2d, nn.BatchNorm2d, F.conv2d, (8, 3, 6, 6), False),
    (quant.ConvBnReLU2d, nn.Conv2d, nn.BatchNorm2d, F.conv2d, (8, 3, 6, 6), True),
]
CASE_IDS = [case[0].__name__ for case in CASES]

GAMMA = [0.5, 1.0, 1.5, -0.8]
BETA = [0.1, -0.2, 0.0, 0.05]
RUNNING_MEAN = [0.05, -0.1, 0.2, 0.0]
RUNNING_VAR = [0.5, 1.0, 2.0, 0.8]


def build_pair(qat_class, conv_class, bn_class, bits, bias=True, quantize_output=False):
    """Return a float conv + batch norm and the QAT layer with the same state."""
    torch.manual_seed(0)
    conv = conv_class(3, 4, 3, padding=1, bias=bias)
    bn = bn_class(4)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(GAMMA))
        bn.bias.copy_(torch.tensor(BETA))
        bn.running_mean.copy_(torch.tensor(RUNNING_MEAN))
        bn.running_var.copy_(torch.tensor(RUNNING_VAR))
    qconfig = get_qat_qconfig({"bw_w": bits, "bw_f": bits, "bw_b": bits})
    qat = qat_class(3, 4, 3, padding=1, bias=bias, qconfig=qconfig, quantize_output=quantize_output)
    with torch.no_grad():
        qat.weight.copy_(conv.weight)
        if bias:
            qat.bias.copy_(conv.bias)
    qat.bn.load_state_dict(bn.state_dict())
    return conv, bn, qat


def make_input(shape) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(1)) * 0.5


def channel_shape(x: torch.Tensor) -> list[int]:
    return [1, -1] + [1] * (x.dim() - 2)


def fold(conv, bn) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return the fold factor, the folded weight and the folded bias, written out by hand."""
    factor = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    weight = conv.weight * factor.reshape([-1] + [1] * (conv.weight.dim() - 1))
    bias = conv.bias if conv.bias is not None else torch.zeros(4)
    return factor, weight, (bias - bn.running_mean) * factor + bn.bias


@pytest.mark.parametrize(
    ("qat_class", "conv_class", "bn_class", "conv_fn", "shape", "relu"), CASES, ids=CASE_IDS
)
@pytest.mark.parametrize("bias", [True, False])
def test_conv_bn_eval_formula(qat_class, conv_class, bn_class, conv_fn, shape, relu, bias):
    conv, bn, qat = build_pair(qat_class, conv_class, bn_class, 6, bias, quantize_output=True)
    qat.eval()
    x = make_input(shape)
    quantize = SymmetricQuantization(6)

    _, weight, folded_bias = fold(conv, bn)
    expected = conv_fn(x, quantize(weight), quantize(folded_bias), padding=1)
    if relu:
        expected = F.relu(expected)
    with torch.no_grad():
        assert torch.equal(qat(x), quantize(expected))


@pytest.mark.parametrize(
    ("qat_class", "conv_class", "bn_class", "conv_fn", "shape", "relu"), CASES, ids=CASE_IDS
)
@pytest.mark.parametrize("bias", [True, False])
def test_conv_bn_train_formula(qat_class, conv_class, bn_class, conv_fn, shape, relu, bias):
    conv, bn, qat = build_pair(qat_class, conv_class, bn_class, 6, bias, quantize_output=True)
    qat.train()
    bn.train()
    x = make_input(shape)
    quantize = SymmetricQuantization(6)

    # The factor comes from the running variance before this batch updates it.
    factor, weight, _ = fold(conv, bn)
    expected = conv_fn(x, quantize(weight), None, padding=1) / factor.reshape(channel_shape(x))
    if bias:
        expected = expected + conv.bias.reshape(channel_shape(x))
    expected = bn(expected)
    if relu:
        expected = F.relu(expected)
    assert torch.equal(qat(x), quantize(expected))


@pytest.mark.parametrize(
    ("qat_class", "conv_class", "bn_class", "conv_fn", "shape", "relu"), CASES, ids=CASE_IDS
)
def test_conv_bn_eval_close_to_float(qat_class, conv_class, bn_class, conv_fn, shape, relu):
    conv, bn, qat = build_pair(qat_class, conv_class, bn_class, 16)
    float_model = nn.Sequential(conv, bn, *([nn.ReLU()] if relu else [])).eval()
    qat.eval()
    x = make_input(shape)
    with torch.no_grad():
        torch.testing.assert_close(qat(x), float_model(x), atol=2e-4, rtol=0)


@pytest.mark.parametrize(
    ("qat_class", "conv_class", "bn_class", "conv_fn", "shape", "relu"), CASES, ids=CASE_IDS
)
def test_conv_bn_train_close_to_float(qat_class, conv_class, bn_class, conv_fn, shape, relu):
    conv, bn, qat = build_pair(qat_class, conv_class, bn_class, 16)
    float_model = nn.Sequential(conv, bn, *([nn.ReLU()] if relu else [])).train()
    qat.train()
    x = make_input(shape)
    torch.testing.assert_close(qat(x), float_model(x), atol=2e-3, rtol=0)


@pytest.mark.parametrize(
    ("qat_class", "conv_class", "bn_class", "conv_fn", "shape", "relu"), CASES, ids=CASE_IDS
)
def test_conv_bn_running_stats_as_float(qat_class, conv_class, bn_class, conv_fn, shape, relu):
    conv, bn, qat = build_pair(qat_class, conv_class, bn_class, 16)
    bn.train()
    qat.train()
    for seed in range(3):
        x = torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 0.5
        bn(conv(x))
        qat(x)
    torch.testing.assert_close(qat.bn.running_mean, bn.running_mean, atol=1e-4, rtol=0)
    torch.testing.assert_close(qat.bn.running_var, bn.running_var, atol=1e-4, rtol=0)
    assert qat.bn.num_batches_tracked.item() == 3


def test_conv_bn_running_stats_change():
    _, _, qat = build_pair(quant.ConvBn2d, nn.Conv2d, nn.BatchNorm2d, 8)
    qat.train()
    qat(make_input((8, 3, 6, 6)))
    assert qat.bn.running_mean.tolist() != RUNNING_MEAN


def test_conv_bn_eval_keeps_running_stats():
    _, _, qat = build_pair(quant.ConvBn2d, nn.Conv2d, nn.BatchNorm2d, 8)
    state = copy.deepcopy(qat.bn.state_dict())
    qat.eval()
    qat(make_input((8, 3, 6, 6)))
    assert torch.equal(qat.bn.running_mean, state["running_mean"])
    assert torch.equal(qat.bn.running_var, state["running_var"])


def test_conv_bn_folded_bias_literal():
    # (b - mean) * gamma / sqrt(var + eps) + beta with var + eps = 4.
    qconfig = get_qat_qconfig({"bw_w": 8, "bw_f": 8})
    qat = quant.ConvBn1d(1, 1, 1, bias=True, eps=0.0, qconfig=qconfig)
    with torch.no_grad():
        qat.bias.fill_(0.5)
        qat.weight.fill_(0.25)
        qat.bn.running_mean.fill_(0.1)
        qat.bn.running_var.fill_(4.0)
        qat.bn.weight.fill_(0.5)
        qat.bn.bias.fill_(-0.3)
    assert qat.folded_bias().tolist() == pytest.approx([-0.2])
    assert qat.folded_weight().flatten().tolist() == [0.0625]


def test_conv_bn_without_bias_folds_zero():
    qconfig = get_qat_qconfig({"bw_w": 8, "bw_f": 8})
    qat = quant.ConvBn1d(1, 1, 1, bias=False, eps=0.0, qconfig=qconfig)
    with torch.no_grad():
        qat.bn.running_mean.fill_(0.5)
        qat.bn.running_var.fill_(4.0)
        qat.bn.weight.fill_(0.5)
        qat.bn.bias.fill_(0.25)
    assert qat.folded_bias().tolist() == [0.125]
    assert qat.bias_fake_quant is not None


def test_conv_bn_gradients():
    _, _, qat = build_pair(quant.ConvBnReLU2d, nn.Conv2d, nn.BatchNorm2d, 8)
    qat.train()
    qat(make_input((8, 3, 6, 6))).sum().backward()
    assert qat.weight.grad.abs().sum().item() > 0
    assert qat.bn.weight.grad.abs().sum().item() > 0
    assert qat.bn.bias.grad.abs().sum().item() > 0


def test_conv_bn_keeps_eps_and_momentum():
    qconfig = get_qat_qconfig({"bw_w": 8, "bw_f": 8})
    qat = quant.ConvBn2d(3, 4, 3, eps=1e-3, momentum=0.05, qconfig=qconfig)
    assert qat.bn.eps == 1e-3
    assert qat.bn.momentum == 0.05


def test_affine_free_batch_norm_folds():
    qconfig = get_qat_qconfig({"bw_w": 6, "bw_f": 8})
    torch.manual_seed(0)
    layer = ConvBnReLU1d(4, 8, 3, affine=False, qconfig=qconfig)
    x = torch.rand(5, 4, 12)

    layer(x).sum().backward()
    layer.eval()
    out = layer(x)

    assert layer.bn.weight is None
    assert layer.weight.grad is not None
    assert out.shape == (5, 8, 10)
    assert torch.isfinite(out).all()


def test_convert_keeps_batch_norm_affine_setting():
    model = nn.Sequential(nn.Conv1d(4, 8, 3), nn.BatchNorm1d(8, affine=False), nn.ReLU())
    qconfig = get_qat_qconfig({"bw_w": 6, "bw_f": 8})

    qat = convert_to_qat(model, qconfig)

    layer = next(m for m in qat.modules() if isinstance(m, ConvBnReLU1d))
    assert not layer.bn.affine


def test_convert_rejects_untracked_batch_norm():
    model = nn.Sequential(nn.Conv1d(4, 8, 3), nn.BatchNorm1d(8, track_running_stats=False))
    qconfig = get_qat_qconfig({"bw_w": 6, "bw_f": 8})

    with pytest.raises(ValueError, match="track_running_stats=False"):
        convert_to_qat(model, qconfig)


@pytest.mark.parametrize("training", [True, False])
def test_untracked_batch_norm_error(training):
    layer = ConvBnReLU1d(4, 8, 3, qconfig=get_qat_qconfig({"bw_w": 6, "bw_f": 8}))
    layer.bn = nn.BatchNorm1d(8, track_running_stats=False)
    layer.train(training)

    with pytest.raises(ValueError, match="track_running_stats=False; keep running statistics"):
        layer(torch.rand(2, 4, 10))
