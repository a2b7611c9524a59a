"""Accept a user's own data in place of a built-in dataset."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.data import Dataset

from qsearch.data import DatasetSplits


def _tensors(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    samples = [dataset[index] for index in range(len(dataset))]  # type: ignore[arg-type]
    x = torch.stack([torch.as_tensor(sample[0], dtype=torch.float32) for sample in samples])
    y = torch.as_tensor([int(sample[1]) for sample in samples], dtype=torch.int64)
    return x, y


def as_splits(dataset: Any) -> DatasetSplits:
    """Turn a DatasetSplits, a mapping of tensors or of torch Datasets into DatasetSplits.

    A mapping needs `x_train`, `y_train`, `x_val`, `y_val` (tensors or
    arrays) and may have `x_test`, `y_test`; or `train`, `val` and
    optionally `test` as torch Datasets of (input, label) pairs.
    """
    if isinstance(dataset, DatasetSplits):
        return dataset
    if not isinstance(dataset, Mapping):
        raise ValueError(
            f"dataset must be a DatasetSplits or a mapping, but got {type(dataset).__name__}; "
            "pass {'train': Dataset, 'val': Dataset} or {'x_train': ..., 'y_train': ..., "
            "'x_val': ..., 'y_val': ...}."
        )
    arrays: dict[str, torch.Tensor | None] = {}
    if "train" in dataset:
        for split in ("train", "val", "test"):
            if split in dataset:
                arrays[f"x_{split}"], arrays[f"y_{split}"] = _tensors(dataset[split])
    else:
        for key, value in dataset.items():
            arrays[key] = torch.as_tensor(value)
    missing = [key for key in ("x_train", "y_train", "x_val", "y_val") if key not in arrays]
    if missing:
        raise ValueError(f"dataset is missing {missing[0]!r}; give train and validation data.")

    x_train = arrays["x_train"].float()
    y_train = arrays["y_train"].long()
    y_all = [arrays[k] for k in ("y_train", "y_val", "y_test") if arrays.get(k) is not None]
    x_test = arrays.get("x_test")
    y_test = arrays.get("y_test")
    return DatasetSplits(
        x_train=x_train,
        y_train=y_train,
        x_val=arrays["x_val"].float(),
        y_val=arrays["y_val"].long(),
        x_test=x_test.float() if x_test is not None else None,
        y_test=y_test.long() if y_test is not None else None,
        num_classes=int(max(int(y.max()) for y in y_all)) + 1,
        input_shape=tuple(x_train.shape[1:]),
    )
