"""Copies, pickles, half-precision inputs and CUDA: the quantizers behave the same everywhere."""

import copy
import pickle

import pytest
import torch
from torch import nn

from qsearch import quant
from qsearch.models import build_model
from qsearch.quant import (
    FakeQuantize,
    PowerOf2Quantization,
    SymmetricQuantization,
    get_qat_qconfig,
)

QCONFIG = get_qat_qconfig({"bw_w": 4, "bw_f": 8, "bw_b": 6, "noise_prob": 0.8})
POW2_QCONFIG = get_qat_qconfig(
    {"bw_w": 3, "bw_f": 8, "power_of_2": True, "weight_scale": "pow2", "noise_prob": 0.8}
)


def pickle_copy(obj):
    return pickle.loads(pickle.dumps(obj))


COPIES = [copy.deepcopy, pickle_copy]
COPY_IDS = ["deepcopy", "pickle"]

QUANTIZERS = [
    SymmetricQuantization(2),
    SymmetricQuantization(8),
    SymmetricQuantization(16),
    PowerOf2Quantization(4),
    PowerOf2Quantization(8, rounding="round"),
]
QUANTIZER_IDS = ["sym2", "sym8", "sym16", "pow2_4", "pow2_8_round"]


@pytest.mark.parametrize("copy_fn", COPIES, ids=COPY_IDS)
@pytest.mark.parametrize("quantizer", QUANTIZERS, ids=QUANTIZER_IDS)
def test_quantizer_copy(copy_fn, quantizer):
    x = torch.linspace(-1.5, 1.5, 301)
    copied = copy_fn(quantizer)
    assert copied.bits == quantizer.bits
    assert torch.equal(copied(x), quantizer(x))


FAKE_QUANTS = [
    lambda: FakeQuantize(SymmetricQuantization(8), noise_prob=0.8),
    lambda: FakeQuantize(PowerOf2Quantization(4), noise_prob=0.5),
    lambda: FakeQuantize(SymmetricQuantization(3), weight_scale="pow2"),
]
FAKE_QUANT_IDS = ["symmetric", "power_of_2", "pow2_scale"]


@pytest.mark.parametrize("copy_fn", COPIES, ids=COPY_IDS)
@pytest.mark.parametrize("make", FAKE_QUANTS, ids=FAKE_QUANT_IDS)
def test_fake_quantize_copy(copy_fn, make):
    x = torch.linspace(-3.0, 3.0, 301)
    fake_quant = make().eval()
    copied = copy_fn(fake_quant)
    assert copied.noise_prob == fake_quant.noise_prob
    assert torch.equal(copied(x), fake_quant(x))


@pytest.mark.parametrize("copy_fn", COPIES, ids=COPY_IDS)
def test_fake_quantize_copy_keeps_scale(copy_fn):
    fake_quant = FakeQuantize(SymmetricQuantization(3), weight_scale="pow2").eval()
    fake_quant(torch.tensor([3.0]))
    assert copy_fn(fake_quant).scale.item() == 4.0


@pytest.mark.parametrize("copy_fn", COPIES, ids=COPY_IDS)
@pytest.mark.parametrize("qconfig", [QCONFIG, POW2_QCONFIG], ids=["symmetric", "power_of_2"])
def test_qconfig_copy(copy_fn, qconfig):
    copied = copy_fn(qconfig)
    assert copied == qconfig
    assert copied.weight().bits == qconfig.weight().bits


LAYERS = [
    (lambda q: quant.Conv1d(3, 4, 3, qconfig=q), (2, 3, 7)),
    (lambda q: quant.ConvReLU1d(3, 4, 3, qconfig=q), (2, 3, 7)),
    (lambda q: quant.Conv2d(3, 4, 3, qconfig=q), (2, 3, 5, 5)),
    (lambda q: quant.ConvReLU2d(3, 4, 3, qconfig=q), (2, 3, 5, 5)),
    (lambda q: quant.Linear(3, 4, qconfig=q), (2, 3)),
    (lambda q: quant.LinearReLU(3, 4, qconfig=q, quantize_output=False), (2, 3)),
    (lambda q: quant.ConvBn1d(3, 4, 3, qconfig=q), (2, 3, 7)),
    (lambda q: quant.ConvBnReLU1d(3, 4, 3, qconfig=q), (2, 3, 7)),
    (lambda q: quant.ConvBn2d(3, 4, 3, qconfig=q), (2, 3, 5, 5)),
    (lambda q: quant.ConvBnReLU2d(3, 4, 3, bias=True, qconfig=q), (2, 3, 5, 5)),
    (lambda q: quant.QuantIdentity(q), (2, 3)),
]
LAYER_IDS = [
    "Conv1d",
    "ConvReLU1d",
    "Conv2d",
    "ConvReLU2d",
    "Linear",
    "LinearReLU",
    "ConvBn1d",
    "ConvBnReLU1d",
    "ConvBn2d",
    "ConvBnReLU2d",
    "QuantIdentity",
]


@pytest.mark.parametrize("copy_fn", COPIES, ids=COPY_IDS)
@pytest.mark.parametrize("qconfig", [QCONFIG, POW2_QCONFIG], ids=["symmetric", "power_of_2"])
@pytest.mark.parametrize(("make", "shape"), LAYERS, ids=LAYER_IDS)
def test_layer_copy(copy_fn, qconfig, make, shape):
    torch.manual_seed(0)
    layer = make(qconfig)
    x = torch.randn(shape)
    layer.train()
    layer(x)  # moves batch-norm statistics off their defaults
    layer.eval()
    copied = copy_fn(layer)
    assert torch.equal(copied(x), layer(x))


@pytest.mark.parametrize("copy_fn", COPIES, ids=COPY_IDS)
@pytest.mark.parametrize("qconfig", [QCONFIG, POW2_QCONFIG], ids=["symmetric", "power_of_2"])
def test_model_copy(copy_fn, qconfig):
    torch.manual_seed(0)
    model = build_model("tc_res8", input_shape=(40, 101), num_classes=12, qconfig=qconfig)
    x = torch.randn(4, 40, 101) * 0.5
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    model(x).sum().backward()
    optimizer.step()
    model.eval()
    copied = copy_fn(model)
    assert torch.equal(copied(x), model(x))


@pytest.mark.parametrize("copy_fn", COPIES, ids=COPY_IDS)
def test_model_copy_keeps_training_noise(copy_fn):
    # A copy in training mode draws its own masks but keeps noise_prob.
    model = build_model("digits_cnn", input_shape=(1, 8, 8), num_classes=10, qconfig=QCONFIG)
    copied = copy_fn(model.train())
    assert copied.training
    assert copied.features[0].weight_fake_quant.noise_prob == 0.8


# Half-precision inputs are quantized in float32 and returned in their own dtype.

HALF_DTYPES = [torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=["float16", "bfloat16"])
@pytest.mark.parametrize("quantizer", QUANTIZERS, ids=QUANTIZER_IDS)
def test_quantizer_half_input(dtype, quantizer):
    x = torch.linspace(-1.5, 1.5, 301).to(dtype)
    out = quantizer(x)
    assert out.dtype == dtype
    assert torch.equal(out, quantizer(x.float()).to(dtype))


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=["float16", "bfloat16"])
@pytest.mark.parametrize("make", FAKE_QUANTS, ids=FAKE_QUANT_IDS)
def test_fake_quantize_half_input(dtype, make):
    fake_quant = make().eval()
    x = torch.linspace(-3.0, 3.0, 301).to(dtype)
    out = fake_quant(x)
    assert out.dtype == dtype
    assert torch.equal(out, fake_quant(x.float()).to(dtype))


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=["float16", "bfloat16"])
def test_quantizer_half_input_literal(dtype):
    # 0.30078125 = 77/256 is exact in both half formats and lies on the
    # 16-bit grid (code 9856).
    out = SymmetricQuantization(16)(torch.tensor([0.30078125], dtype=dtype))
    assert out.tolist() == [0.30078125]


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=["float16", "bfloat16"])
def test_quantizer_half_gradient(dtype):
    x = torch.tensor([0.5, 1.0, 1.5, -1.0, -1.2], dtype=dtype, requires_grad=True)
    SymmetricQuantization(8)(x).sum().backward()
    assert x.grad.dtype == dtype
    assert x.grad.tolist() == [1, 1, 0, 1, 0]


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=["float16", "bfloat16"])
def test_fake_quantize_half_noise(dtype):
    torch.manual_seed(0)
    fake_quant = FakeQuantize(SymmetricQuantization(8), noise_prob=0.5).train()
    x = torch.full((1000,), 0.3, dtype=dtype)
    out = fake_quant(x)
    quantized = out != x
    assert out.dtype == dtype
    assert 0 < quantized.sum().item() < 1000


# CUDA: the same values on the GPU as on the CPU.

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")


@cuda
@pytest.mark.parametrize("quantizer", QUANTIZERS, ids=QUANTIZER_IDS)
def test_quantizer_cuda_matches_cpu(quantizer):
    x = torch.linspace(-1.5, 1.5, 301)
    x = torch.cat([x, torch.tensor([0.0, 1e-45, 1e-30, 0.25 * (1 + 2**-23)])])
    out = quantizer(x.cuda())
    assert out.is_cuda
    assert torch.equal(out.cpu(), quantizer(x))


@cuda
def test_fake_quantize_cuda_noise():
    fake_quant = FakeQuantize(SymmetricQuantization(8), noise_prob=0.8).cuda().train()
    x = torch.full((100_000,), 0.3, device="cuda")
    fraction = (fake_quant(x) != x).float().mean().item()
    assert abs(fraction - 0.8) < 0.01


@cuda
def test_fake_quantize_cuda_scale_buffer():
    fake_quant = FakeQuantize(SymmetricQuantization(3), weight_scale="pow2").cuda().eval()
    out = fake_quant(torch.tensor([0.3, -0.1, 0.05], device="cuda"))
    assert fake_quant.scale.is_cuda
    assert out.tolist() == [0.25, -0.125, 0.0]


@cuda
def test_model_cuda_matches_cpu():
    torch.manual_seed(0)
    model = build_model("tc_res8", input_shape=(40, 101), num_classes=12, qconfig=QCONFIG).eval()
    x = torch.randn(4, 40, 101) * 0.5
    with torch.no_grad():
        expected = model(x)
        out = copy.deepcopy(model).cuda()(x.cuda()).cpu()
    # cuDNN sums in another order, so an activation may land on the
    # neighbouring grid point, but the logits stay close.
    torch.testing.assert_close(out, expected, atol=0.05, rtol=0)


@cuda
def test_layers_train_on_cuda():
    model = nn.Sequential(
        quant.ConvBnReLU2d(3, 4, 3, qconfig=POW2_QCONFIG),
        nn.Flatten(),
        quant.Linear(4 * 3 * 3, 2, qconfig=POW2_QCONFIG, quantize_output=False),
    ).cuda()
    model(torch.randn(8, 3, 5, 5, device="cuda")).sum().backward()
    assert model[0].weight.grad.is_cuda
    assert torch.isfinite(model[0].weight.grad).all()
