from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch

from qsearch.data import DATASET_NAMES, load_dataset


@pytest.fixture
def npz_root(tmp_path: pathlib.Path) -> pathlib.Path:
    root = tmp_path / "root"
    root.mkdir()
    np.savez(
        root / "small.npz",
        x_train=np.zeros((3, 4)),
        y_train=np.array([0, 1, 1]),
        x_val=np.ones((2, 4)),
        y_val=np.array([1, 0]),
    )
    return root


def test_load_dataset_names() -> None:
    assert DATASET_NAMES == ("digits", "npz", "speech_commands")


def test_load_dataset_digits() -> None:
    splits = load_dataset("digits", seed=0, val_fraction=0.1)

    assert splits.x_train.shape == (1347, 1, 8, 8)
    assert splits.x_val.shape == (180, 1, 8, 8)
    assert splits.x_test is not None
    assert splits.x_test.shape == (270, 1, 8, 8)


def test_load_dataset_digits_ignores_data_root(tmp_path: pathlib.Path) -> None:
    splits = load_dataset("digits", seed=0, data_root=tmp_path)

    assert splits.num_classes == 10


def test_load_dataset_npz(npz_root: pathlib.Path) -> None:
    splits = load_dataset("npz", seed=0, data_root=str(npz_root), path="small.npz")

    assert splits.input_shape == (4,)
    assert splits.num_classes == 2
    assert splits.y_val.tolist() == [1, 0]


def test_load_dataset_speech_commands(speech_folder: pathlib.Path) -> None:
    splits = load_dataset(
        "speech_commands",
        seed=0,
        data_root=speech_folder.parent,
        path="speech_commands",
        words=["up", "yes"],
    )

    assert splits.class_names == ("up", "yes")
    assert splits.x_train.shape == (4, 40, 101)
    assert splits.y_train.dtype == torch.int64


def test_load_dataset_unknown_name() -> None:
    with pytest.raises(ValueError) as error:
        load_dataset("mnist", seed=0)

    assert str(error.value) == (
        "unknown dataset name 'mnist'; allowed names: digits, npz, speech_commands"
    )


def test_load_dataset_unknown_option() -> None:
    with pytest.raises(ValueError) as error:
        load_dataset("digits", seed=0, val_frac=0.2)

    assert str(error.value) == (
        "unknown option 'val_frac' for dataset 'digits'; "
        "allowed options: val_fraction, test_fraction"
    )


def test_load_dataset_npz_takes_no_options(npz_root: pathlib.Path) -> None:
    with pytest.raises(ValueError) as error:
        load_dataset("npz", seed=0, data_root=npz_root, path="small.npz", words=["yes"])

    assert str(error.value) == ("unknown option 'words' for dataset 'npz'; allowed options: none")


def test_load_dataset_digits_with_path() -> None:
    with pytest.raises(ValueError) as error:
        load_dataset("digits", seed=0, path="digits.npz")

    assert str(error.value) == (
        "dataset 'digits' is built in and takes no path, got path='digits.npz'; remove the path"
    )


def test_load_dataset_npz_without_path(npz_root: pathlib.Path) -> None:
    with pytest.raises(ValueError) as error:
        load_dataset("npz", seed=0, data_root=npz_root)

    assert str(error.value) == (
        "dataset 'npz' needs a path, got none; pass path='my_data.npz' relative to the data root"
    )


def test_load_dataset_npz_without_data_root() -> None:
    with pytest.raises(ValueError) as error:
        load_dataset("npz", seed=0, path="small.npz")

    assert str(error.value) == (
        "dataset 'npz' needs a data root to resolve path 'small.npz', got none; "
        "pass data_root, the folder that contains the datasets"
    )


def test_load_dataset_npz_path_escapes_root(npz_root: pathlib.Path) -> None:
    with pytest.raises(ValueError) as error:
        load_dataset("npz", seed=0, data_root=npz_root, path="../small.npz")

    assert str(error.value) == (
        f"dataset path '../small.npz' escapes the data root '{npz_root}' (it resolves to "
        f"'{npz_root.parent / 'small.npz'}'); give a path inside the data root"
    )


def test_load_dataset_npz_missing_file(npz_root: pathlib.Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_dataset("npz", seed=0, data_root=npz_root, path="other.npz")


@pytest.mark.parametrize("seed", [True, 1.5, "0"])
def test_load_dataset_seed_not_int(seed: object) -> None:
    with pytest.raises(ValueError) as error:
        load_dataset("digits", seed=seed)  # type: ignore[arg-type]

    assert str(error.value) == (f"seed={seed!r} is not an int; pass an integer seed, e.g. seed=0")


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_load_dataset_seed_out_of_range(seed: int) -> None:
    with pytest.raises(ValueError) as error:
        load_dataset("digits", seed=seed)

    assert str(error.value) == (f"seed={seed} is out of range; pass an integer in [0, 4294967295]")
