"""QAT conv and linear layers: `Q_f(op(x, Q_w(W), Q_b(b)))`, against a hand-built reference."""

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qsearch import quant
from qsearch.quant import PowerOf2Quantization, SymmetricQuantization, get_qat_qconfig

pytestmark = pytest.mark.filterwarnings("ignore:Please use quant_min and quant_max")

QCONFIG = get_qat_qconfig({"bw_w": 4, "bw_f": 8, "bw_b": 6})
W4 = SymmetricQuantization(4)
F8 = SymmetricQuantization(8)
B6 = SymmetricQuantization(6)

# (QAT class, its input shape, its operation on (x, weight, bias), ReLU)
LAYERS = [
    (quant.Conv1d, (2, 3, 7), lambda x, w, b: F.conv1d(x, w, b, padding=1), False),
    (quant.ConvReLU1d, (2, 3, 7), lambda x, w, b: F.conv1d(x, w, b, padding=1), True),
    (quant.Conv2d, (2, 3, 5, 5), lambda x, w, b: F.conv2d(x, w, b, padding=1), False),
    (quant.ConvReLU2d, (2, 3, 5, 5), lambda x, w, b: F.conv2d(x, w, b, padding=1), True),
    (quant.Linear, (2, 3), F.linear, False),
    (quant.LinearReLU, (2, 3), F.linear, True),
]
LAYER_IDS = [layer[0].__name__ for layer in LAYERS]


def build(layer_class, qconfig=QCONFIG, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    if issubclass(layer_class, nn.Linear):
        return layer_class(3, 4, qconfig=qconfig, **kwargs)
    return layer_class(3, 4, 3, padding=1, qconfig=qconfig, **kwargs)


@pytest.mark.parametrize(("layer_class", "shape", "op", "relu"), LAYERS, ids=LAYER_IDS)
def test_layer_eval_matches_reference(layer_class, shape, op, relu):
    layer = build(layer_class).eval()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    out = op(x, W4(layer.weight), B6(layer.bias))
    if relu:
        out = F.relu(out)
    assert torch.equal(layer(x), F8(out))


@pytest.mark.parametrize(("layer_class", "shape", "op", "relu"), LAYERS, ids=LAYER_IDS)
def test_layer_train_matches_reference(layer_class, shape, op, relu):
    # noise_prob 1.0: training quantizes as eval does.
    layer = build(layer_class).train()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    out = op(x, W4(layer.weight), B6(layer.bias))
    if relu:
        out = F.relu(out)
    assert torch.equal(layer(x), F8(out))


@pytest.mark.parametrize(("layer_class", "shape", "op", "relu"), LAYERS, ids=LAYER_IDS)
def test_layer_unquantized_output(layer_class, shape, op, relu):
    layer = build(layer_class, quantize_output=False).eval()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    out = op(x, W4(layer.weight), B6(layer.bias))
    if relu:
        out = F.relu(out)
    assert isinstance(layer.activation_post_process, nn.Identity)
    assert torch.equal(layer(x), out)


@pytest.mark.parametrize(("layer_class", "shape", "op", "relu"), LAYERS, ids=LAYER_IDS)
def test_layer_without_bias(layer_class, shape, op, relu):
    layer = build(layer_class, bias=False).eval()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    out = op(x, W4(layer.weight), None)
    if relu:
        out = F.relu(out)
    assert layer.bias_fake_quant is None
    assert torch.equal(layer(x), F8(out))


def test_layer_power_of_2_weights():
    qconfig = get_qat_qconfig({"bw_w": 3, "bw_f": 8, "bw_b": 6, "power_of_2": True})
    layer = build(quant.Conv2d, qconfig).eval()
    x = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    out = F.conv2d(x, PowerOf2Quantization(3)(layer.weight), B6(layer.bias), padding=1)
    assert torch.equal(layer(x), F8(out))


def test_layer_weight_scale_pow2():
    qconfig = get_qat_qconfig({"bw_w": 3, "bw_f": 8, "bw_b": 6, "weight_scale": "pow2"})
    layer = build(quant.Linear, qconfig).eval()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.3, -0.1, 0.05]] * 4))
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(1))
    weight = torch.tensor([[0.25, -0.125, 0.0]] * 4)
    assert torch.equal(layer(x), F8(F.linear(x, weight, B6(layer.bias))))


def test_layer_relu_output_non_negative():
    layer = build(quant.ConvReLU2d).eval()
    out = layer(torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(1)))
    assert out.min().item() >= 0.0


def test_layer_gradients_reach_weight_and_bias():
    layer = build(quant.Conv2d).train()
    layer(torch.randn(2, 3, 5, 5)).sum().backward()
    assert layer.weight.grad.abs().sum().item() > 0
    assert layer.bias.grad.abs().sum().item() > 0


def test_quant_identity_matches_activation_quantizer():
    x = torch.linspace(-1.5, 1.5, 101)
    assert torch.equal(quant.QuantIdentity(QCONFIG)(x), F8(x))


def test_quant_identity_literal():
    out = quant.QuantIdentity(QCONFIG)(torch.tensor([0.3, 1.0, -2.5]))
    assert out.tolist() == [0.296875, 0.9921875, -1.0]


@pytest.mark.parametrize("layer_class", [layer[0] for layer in LAYERS], ids=LAYER_IDS)
def test_layer_rejects_missing_qconfig(layer_class):
    message = f"{layer_class.__name__} needs a qconfig with 'weight' and 'activation' factories"
    with pytest.raises(ValueError, match=re.escape(message)):
        build(layer_class, qconfig=None)


def test_quant_identity_rejects_missing_qconfig():
    message = "QuantIdentity needs a qconfig with 'weight' and 'activation' factories"
    with pytest.raises(ValueError, match=re.escape(message)):
        quant.QuantIdentity(None)


# PyTorch's own QAT qconfig.


@pytest.mark.parametrize(("layer_class", "shape", "op", "relu"), LAYERS, ids=LAYER_IDS)
def test_layer_accepts_torch_qconfig(layer_class, shape, op, relu):
    qconfig = torch.ao.quantization.get_default_qat_qconfig("fbgemm")
    layer = build(layer_class, qconfig).train()
    out = layer(torch.randn(shape))
    assert out.shape[:2] == (shape[0], 4)
    # Without a bias field, biases use the activation quantizer (quint8).
    assert layer.bias_fake_quant.dtype == torch.quint8
    assert layer.weight_fake_quant.dtype == torch.qint8


def tiny_problem() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(64, 2, 5, 5, generator=generator) * 2 - 1
    y = (x[:, 0].mean(dim=(1, 2)) > x[:, 1].mean(dim=(1, 2))).long()
    return x, y


@pytest.mark.parametrize(
    "qconfig",
    [
        torch.ao.quantization.get_default_qat_qconfig("fbgemm"),
        get_qat_qconfig({"bw_w": 8, "bw_f": 8}),
    ],
    ids=["torch_fbgemm", "qsearch"],
)
def test_layers_training_reduces_loss(qconfig):
    torch.manual_seed(0)
    model = nn.Sequential(
        quant.QuantIdentity(qconfig),
        quant.ConvReLU2d(2, 4, 3, qconfig=qconfig),
        nn.Flatten(),
        quant.Linear(4 * 3 * 3, 2, qconfig=qconfig, quantize_output=False),
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = tiny_problem()

    losses = []
    for _ in range(30):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
