from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

from qsearch.data import DatasetSplits


def make_splits(**overrides: Any) -> DatasetSplits:
    fields: dict[str, Any] = {
        "x_train": torch.zeros(4, 2, 3),
        "y_train": torch.tensor([0, 1, 2, 1]),
        "x_val": torch.zeros(2, 2, 3),
        "y_val": torch.tensor([2, 0]),
        "x_test": torch.zeros(1, 2, 3),
        "y_test": torch.tensor([1]),
        "num_classes": 3,
        "input_shape": (2, 3),
        "class_names": ("a", "b", "c"),
    }
    fields.update(overrides)
    return DatasetSplits(**fields)


def test_dataset_splits_valid() -> None:
    splits = make_splits()

    assert splits.num_classes == 3
    assert splits.input_shape == (2, 3)
    assert splits.class_names == ("a", "b", "c")


def test_dataset_splits_without_test() -> None:
    splits = make_splits(x_test=None, y_test=None)

    assert splits.x_test is None
    assert splits.y_test is None


def test_dataset_splits_is_frozen() -> None:
    splits = make_splits()

    with pytest.raises(dataclasses.FrozenInstanceError):
        splits.num_classes = 4  # type: ignore[misc]


def test_dataset_splits_compares_by_identity() -> None:
    splits = make_splits()

    assert splits == splits
    assert splits != make_splits()


def test_dataset_splits_float64_inputs() -> None:
    with pytest.raises(ValueError) as error:
        make_splits(x_train=torch.zeros(4, 2, 3, dtype=torch.float64))

    assert str(error.value) == "x_train must be a float32 tensor, got a torch.float64 tensor"


def test_dataset_splits_int32_labels() -> None:
    with pytest.raises(ValueError) as error:
        make_splits(y_val=torch.tensor([2, 0], dtype=torch.int32))

    assert str(error.value) == (
        "y_val must be an int64 tensor of class indices, got a torch.int32 tensor"
    )


def test_dataset_splits_length_mismatch() -> None:
    with pytest.raises(ValueError) as error:
        make_splits(y_train=torch.tensor([0, 1, 2]))

    assert str(error.value) == (
        "x_train has 4 samples but y_train has 3; give one label per sample"
    )


def test_dataset_splits_shape_mismatch() -> None:
    with pytest.raises(ValueError) as error:
        make_splits(x_val=torch.zeros(2, 3, 2))

    assert str(error.value) == (
        "x_val has sample shape (3, 2) but input_shape is (2, 3); "
        "every split must use the same sample shape"
    )


def test_dataset_splits_label_out_of_range() -> None:
    with pytest.raises(ValueError) as error:
        make_splits(y_test=torch.tensor([3]))

    assert str(error.value) == (
        "y_test contains labels in [3, 3] but num_classes is 3; labels must lie in [0, 2]"
    )


def test_dataset_splits_empty_split() -> None:
    with pytest.raises(ValueError) as error:
        make_splits(x_val=torch.zeros(0, 2, 3), y_val=torch.zeros(0, dtype=torch.int64))

    assert str(error.value) == "the val split is empty; every split needs at least one sample"


def test_dataset_splits_half_test_split() -> None:
    with pytest.raises(ValueError) as error:
        make_splits(y_test=None)

    assert str(error.value) == (
        "x_test and y_test must both be tensors or both be None, "
        "got x_test=tensor of shape (1, 2, 3) and y_test=None"
    )


def test_dataset_splits_class_names_length() -> None:
    with pytest.raises(ValueError) as error:
        make_splits(class_names=("a", "b"))

    assert str(error.value) == (
        "class_names has 2 entries but num_classes is 3; give one name per class or None"
    )


def test_dataset_splits_zero_classes() -> None:
    with pytest.raises(ValueError) as error:
        make_splits(num_classes=0, class_names=None)

    assert str(error.value) == "num_classes=0 is invalid; it must be at least 1"
