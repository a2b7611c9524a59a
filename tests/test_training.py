"""The training and evaluation loops."""

from __future__ import annotations

import copy

import torch

from qsearch.models import build_model
from qsearch.training import TrainingConfig, evaluate, train


def _data(n: int = 64):
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 8, 8, generator=generator) * 2 - 1
    y = torch.randint(0, 10, (n,), generator=generator)
    return x, y


def test_evaluate_fbgemm_model_deterministic():
    torch.manual_seed(0)
    qconfig = torch.ao.quantization.get_default_qat_qconfig("fbgemm")
    model = build_model("digits_cnn", input_shape=(1, 8, 8), num_classes=10, qconfig=qconfig)
    x, y = _data()
    train(model, x, y, x, y, TrainingConfig(epochs=1, batch_size=16))
    state = copy.deepcopy(model.state_dict())

    first = evaluate(model, x * 3, y)
    second = evaluate(model, x * 3, y)

    assert first == second
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_evaluate_restores_training_mode():
    model = build_model("mlp", input_shape=(1, 8, 8), num_classes=10)
    x, y = _data()
    model.train()
    evaluate(model, x, y)
    assert model.training
