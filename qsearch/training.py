"""Training and evaluation loops for one model on in-memory tensors."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)


class NonFiniteError(RuntimeError):
    """Raised when the training loss or an accuracy becomes NaN or infinite."""


class TrainingInterrupted(RuntimeError):
    """Raised between two batches once the interrupt event is set."""


@dataclass(frozen=True)
class TrainingConfig:
    """Optimizer and schedule of one training run."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.005
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    device: str = "cpu"


@dataclass(frozen=True)
class EpochResult:
    """Result of one epoch: its mean training loss and the validation accuracy."""

    epoch: int
    train_loss: float
    val_accuracy: float
    seconds: float


def resolve_device(name: str) -> torch.device:
    """Map "cpu", "cuda" or "auto" to a torch device; "cuda" without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("training device 'cuda' is not available here; use 'cpu' or 'auto'.")
    return torch.device(name)


def make_optimizer(model: nn.Module, config: TrainingConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
    raise ValueError(f"training optimizer must be 'adam' or 'sgd', but got {config.optimizer!r}.")


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1024
) -> float:
    """Return the accuracy of `model` in eval mode (fully quantized for QAT models)."""
    was_training = model.training
    model.eval()
    # PyTorch's QAT fake quantizers keep updating their observers in eval
    # mode; freeze them so evaluation neither changes the model nor varies.
    model.apply(torch.ao.quantization.disable_observer)
    device = next(model.parameters()).device
    correct = 0
    try:
        for start in range(0, len(x), batch_size):
            logits = model(x[start : start + batch_size].to(device))
            if not torch.isfinite(logits).all():
                raise NonFiniteError("the model produced NaN or infinite logits in evaluation")
            correct += int((logits.argmax(1).cpu() == y[start : start + batch_size]).sum())
    finally:
        model.apply(torch.ao.quantization.enable_observer)
        model.train(was_training)
    return correct / len(x)


def train(
    model: nn.Module,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    config: TrainingConfig,
    *,
    seed: int = 0,
    on_epoch: Callable[[EpochResult], None] | None = None,
    interrupt: threading.Event | None = None,
) -> list[EpochResult]:
    """Train `model` and evaluate it on the validation split after every epoch.

    Shuffling uses its own generator seeded with `seed`, so a run is
    reproducible on the CPU once the caller has seeded torch for the model
    weights and the quantization-noise masks. `on_epoch` is called after
    each epoch and may raise to stop training (pruning, cancellation).
    `interrupt` is checked before every batch, so Ctrl-C or a worker
    shutdown stops within one batch; TrainingInterrupted is raised then.
    Raises NonFiniteError when the loss or the accuracy stops being finite.
    """
    device = resolve_device(config.device)
    model.to(device)
    optimizer = make_optimizer(model, config)
    generator = torch.Generator().manual_seed(seed)
    history: list[EpochResult] = []

    for epoch in range(config.epochs):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        loss_sum = 0.0
        for start in range(0, len(order), config.batch_size):
            if interrupt is not None and interrupt.is_set():
                raise TrainingInterrupted(f"training interrupted in epoch {epoch + 1}")
            index = order[start : start + config.batch_size]
            if len(index) < 2 and len(order) > 1:
                continue  # batch norm cannot train on a single sample
            x = x_train[index].to(device)
            y = y_train[index].to(device)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(index)

        train_loss = loss_sum / len(order)
        if not math.isfinite(train_loss):
            raise NonFiniteError(f"training loss became {train_loss} in epoch {epoch + 1}")
        val_accuracy = evaluate(model, x_val, y_val)
        result = EpochResult(epoch + 1, train_loss, val_accuracy, time.perf_counter() - started)
        history.append(result)
        logger.debug(
            "epoch %d: loss %.4f, val accuracy %.4f", result.epoch, train_loss, val_accuracy
        )
        if on_epoch is not None:
            on_epoch(result)
    return history
