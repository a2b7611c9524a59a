from __future__ import annotations

import numpy as np
import pytest
import torch

from qsearch.data import DatasetSplits
from qsearch.data.digits import load_digits_splits, scale_pixels

# Samples per class in scikit-learn's load_digits(), digits 0 to 9.
DIGITS_CLASS_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


@pytest.fixture(scope="module")
def digits_seed0() -> DatasetSplits:
    return load_digits_splits(seed=0)


def test_digits_default_split_sizes(digits_seed0: DatasetSplits) -> None:
    # 270 = round(0.15 * 1797) for validation and test, and the remaining 1257 for training.
    assert digits_seed0.x_train.shape == (1257, 1, 8, 8)
    assert digits_seed0.x_val.shape == (270, 1, 8, 8)
    assert digits_seed0.x_test.shape == (270, 1, 8, 8)
    assert digits_seed0.y_train.shape == (1257,)
    assert digits_seed0.y_val.shape == (270,)
    assert digits_seed0.y_test.shape == (270,)


def test_digits_metadata(digits_seed0: DatasetSplits) -> None:
    assert digits_seed0.num_classes == 10
    assert digits_seed0.input_shape == (1, 8, 8)
    assert digits_seed0.class_names == ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9")
    assert digits_seed0.x_train.dtype == torch.float32
    assert digits_seed0.y_train.dtype == torch.int64


def test_digits_input_range(digits_seed0: DatasetSplits) -> None:
    inputs = torch.cat([digits_seed0.x_train, digits_seed0.x_val, digits_seed0.x_test])

    assert inputs.min().item() >= -1.0
    assert inputs.max().item() < 1.0
    assert inputs.min().item() == -1.0
    assert inputs.max().item() == 0.9921875


def test_digits_splits_partition_dataset(digits_seed0: DatasetSplits) -> None:
    counts = (
        torch.bincount(digits_seed0.y_train, minlength=10)
        + torch.bincount(digits_seed0.y_val, minlength=10)
        + torch.bincount(digits_seed0.y_test, minlength=10)
    )

    assert counts.tolist() == DIGITS_CLASS_COUNTS


def test_digits_split_is_stratified(digits_seed0: DatasetSplits) -> None:
    assert set(digits_seed0.y_train.tolist()) == set(range(10))
    assert set(digits_seed0.y_val.tolist()) == set(range(10))
    assert set(digits_seed0.y_test.tolist()) == set(range(10))
    # 270 / 1797 of each class count is between 26.1 and 27.5 samples.
    assert torch.bincount(digits_seed0.y_test).min().item() >= 26
    assert torch.bincount(digits_seed0.y_test).max().item() <= 28


def test_digits_same_seed_same_split(digits_seed0: DatasetSplits) -> None:
    again = load_digits_splits(seed=0)

    assert torch.equal(again.x_train, digits_seed0.x_train)
    assert torch.equal(again.y_train, digits_seed0.y_train)
    assert torch.equal(again.x_val, digits_seed0.x_val)
    assert torch.equal(again.y_val, digits_seed0.y_val)
    assert torch.equal(again.x_test, digits_seed0.x_test)
    assert torch.equal(again.y_test, digits_seed0.y_test)


def test_digits_other_seed_other_split(digits_seed0: DatasetSplits) -> None:
    other = load_digits_splits(seed=1)

    assert not torch.equal(other.x_train, digits_seed0.x_train)
    assert not torch.equal(other.x_val, digits_seed0.x_val)
    assert not torch.equal(other.x_test, digits_seed0.x_test)


def test_digits_custom_fractions() -> None:
    splits = load_digits_splits(seed=3, val_fraction=0.1, test_fraction=0.2)

    # round(0.1 * 1797) = 180, round(0.2 * 1797) = 359, and 1797 - 180 - 359 = 1258.
    assert splits.x_train.shape[0] == 1258
    assert splits.x_val.shape[0] == 180
    assert splits.x_test.shape[0] == 359


def test_digits_scale_pixels() -> None:
    scaled = scale_pixels(np.array([0.0, 1.0, 8.0, 15.0, 16.0]))

    assert scaled.dtype == np.float32
    assert scaled.tolist() == [-1.0, -0.875, 0.0, 0.875, 0.9921875]


@pytest.mark.parametrize("value", [0.0, 0.5, -0.1, 0.75, float("nan"), float("inf")])
def test_digits_fraction_out_of_range(value: float) -> None:
    with pytest.raises(ValueError) as error:
        load_digits_splits(seed=0, val_fraction=value)

    assert str(error.value) == (
        f"val_fraction={value!r} is out of range; give a fraction between 0 and 0.5 "
        "(both excluded), e.g. 0.15"
    )


@pytest.mark.parametrize("value", ["0.1", True, None])
def test_digits_fraction_not_number(value: object) -> None:
    with pytest.raises(ValueError) as error:
        load_digits_splits(seed=0, test_fraction=value)  # type: ignore[arg-type]

    assert str(error.value) == (
        f"test_fraction={value!r} is not a number; give a fraction between 0 and 0.5, e.g. 0.15"
    )


def test_digits_fraction_too_small() -> None:
    with pytest.raises(ValueError) as error:
        load_digits_splits(seed=0, test_fraction=0.001)

    assert str(error.value) == (
        "test_fraction gives 2 of 1797 samples, fewer than the 10 classes that a stratified "
        "split needs; set test_fraction to at least 0.0053"
    )


def test_digits_fraction_minimum_is_enough() -> None:
    splits = load_digits_splits(seed=0, test_fraction=0.0053)

    assert splits.x_test.shape[0] == 10


def test_digits_fractions_leave_no_train() -> None:
    with pytest.raises(ValueError) as error:
        load_digits_splits(seed=0, val_fraction=0.4999, test_fraction=0.4999)

    assert str(error.value) == (
        "val_fraction and test_fraction leave 1 of 1797 samples for training, fewer than the "
        "10 classes; lower one or both fractions"
    )
