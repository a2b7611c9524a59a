"""The DatasetSplits container that every dataset loader returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


# eq=False because the generated __eq__ would compare tensors with `==`, which raises for
# tensors with more than one element. Instances compare and hash by identity instead.
@dataclass(frozen=True, eq=False)
class DatasetSplits:
    """Train, validation and optional test tensors of one classification dataset.

    Inputs are float32 with shape ``(N, *input_shape)``. Labels are int64 class indices in
    ``[0, num_classes)`` with shape ``(N,)``, and every split has N >= 1. ``x_test`` and
    ``y_test`` are both None when the dataset has no test split. The constructor raises
    ValueError when these rules are broken.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor | None
    y_test: torch.Tensor | None
    num_classes: int
    input_shape: tuple[int, ...]
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int):
            raise ValueError(
                f"num_classes={self.num_classes!r} is not an int; pass the number of classes"
            )
        if self.num_classes < 1:
            raise ValueError(f"num_classes={self.num_classes} is invalid; it must be at least 1")
        if (self.x_test is None) != (self.y_test is None):
            raise ValueError(
                "x_test and y_test must both be tensors or both be None, "
                f"got x_test={_describe(self.x_test)} and y_test={_describe(self.y_test)}"
            )
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(
                f"class_names has {len(self.class_names)} entries but num_classes is "
                f"{self.num_classes}; give one name per class or None"
            )

        _check_split("train", self.x_train, self.y_train, self.input_shape, self.num_classes)
        _check_split("val", self.x_val, self.y_val, self.input_shape, self.num_classes)
        if self.x_test is not None and self.y_test is not None:
            _check_split("test", self.x_test, self.y_test, self.input_shape, self.num_classes)


def features_to_tensor(array: np.ndarray) -> torch.Tensor:
    """Convert a feature array to a contiguous float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def labels_to_tensor(array: np.ndarray) -> torch.Tensor:
    """Convert an integer-valued label array to a contiguous int64 tensor."""
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64))


def _describe(tensor: torch.Tensor | None) -> str:
    if tensor is None:
        return "None"
    return f"tensor of shape {tuple(tensor.shape)}"


def _check_split(
    split: str,
    x: torch.Tensor,
    y: torch.Tensor,
    input_shape: tuple[int, ...],
    num_classes: int,
) -> None:
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float32:
        raise ValueError(f"x_{split} must be a float32 tensor, got {_type_name(x)}")
    if not isinstance(y, torch.Tensor) or y.dtype != torch.int64:
        raise ValueError(f"y_{split} must be an int64 tensor of class indices, got {_type_name(y)}")
    if y.dim() != 1:
        raise ValueError(f"y_{split} has shape {tuple(y.shape)}; it must be 1-D with shape (N,)")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x_{split} has {x.shape[0]} samples but y_{split} has {y.shape[0]}; "
            "give one label per sample"
        )
    if tuple(x.shape[1:]) != tuple(input_shape):
        raise ValueError(
            f"x_{split} has sample shape {tuple(x.shape[1:])} but input_shape is "
            f"{tuple(input_shape)}; every split must use the same sample shape"
        )
    if y.shape[0] == 0:
        raise ValueError(f"the {split} split is empty; every split needs at least one sample")
    low = int(y.min())
    high = int(y.max())
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"y_{split} contains labels in [{low}, {high}] but num_classes is {num_classes}; "
            f"labels must lie in [0, {num_classes - 1}]"
        )


def _type_name(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor"
    return type(value).__name__
