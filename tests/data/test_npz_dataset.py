from __future__ import annotations

import logging
import pathlib
import pickle
from typing import Any

import numpy as np
import pytest
import torch

from qsearch.data.npz import load_npz


def valid_arrays() -> dict[str, Any]:
    return {
        "x_train": np.arange(24, dtype=np.float64).reshape(4, 2, 3),
        "y_train": np.array([0, 1, 2, 1]),
        "x_val": np.ones((2, 2, 3), dtype=np.float32),
        "y_val": np.array([2, 0], dtype=np.uint8),
        "x_test": np.zeros((3, 2, 3), dtype=np.int16),
        "y_test": np.array([1.0, 0.0, 2.0]),
    }


def save(tmp_path: pathlib.Path, **arrays: Any) -> pathlib.Path:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return path


def load_error(path: pathlib.Path) -> str:
    with pytest.raises(ValueError) as error:
        load_npz(path)
    return str(error.value)


def test_npz_valid_with_test(tmp_path: pathlib.Path) -> None:
    splits = load_npz(save(tmp_path, **valid_arrays()))

    assert splits.x_train.dtype == torch.float32
    assert splits.y_train.dtype == torch.int64
    assert splits.x_train.shape == (4, 2, 3)
    assert splits.x_train[1, 0].tolist() == [6.0, 7.0, 8.0]
    assert splits.y_train.tolist() == [0, 1, 2, 1]
    assert splits.y_val.tolist() == [2, 0]
    assert splits.y_test is not None
    assert splits.y_test.tolist() == [1, 0, 2]
    assert splits.x_test is not None
    assert splits.x_test.dtype == torch.float32
    assert splits.num_classes == 3
    assert splits.input_shape == (2, 3)
    assert splits.class_names is None


def test_npz_without_test(tmp_path: pathlib.Path) -> None:
    arrays = valid_arrays()
    del arrays["x_test"], arrays["y_test"]

    splits = load_npz(save(tmp_path, **arrays))

    assert splits.x_test is None
    assert splits.y_test is None


def test_npz_num_classes_over_all_splits(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    arrays = valid_arrays()
    arrays["y_val"] = np.array([4, 0])

    with caplog.at_level(logging.WARNING, logger="qsearch.data.npz"):
        splits = load_npz(save(tmp_path, **arrays))

    assert splits.num_classes == 5
    assert "classes [3, 4] have no training samples" in caplog.text


def test_npz_class_names(tmp_path: pathlib.Path) -> None:
    path = save(tmp_path, class_names=np.array(["cat", "dog", "owl"]), **valid_arrays())

    splits = load_npz(path)

    assert splits.class_names == ("cat", "dog", "owl")


def test_npz_class_names_wrong_length(tmp_path: pathlib.Path) -> None:
    path = save(tmp_path, class_names=np.array(["cat", "dog"]), **valid_arrays())

    assert load_error(path) == (
        f"npz array 'class_names' in '{path}' has 2 names but the labels give 3 classes "
        "(maximum label + 1); give one name per class"
    )


def test_npz_unknown_key_warns(tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    path = save(tmp_path, x_tst=np.zeros((1, 2, 3)), **valid_arrays())

    with caplog.at_level(logging.WARNING, logger="qsearch.data.npz"):
        load_npz(path)

    assert f"npz file '{path}': ignoring unknown keys x_tst" in caplog.text


def test_npz_missing_keys(tmp_path: pathlib.Path) -> None:
    arrays = valid_arrays()
    del arrays["x_val"], arrays["y_val"]
    path = save(tmp_path, **arrays)

    assert load_error(path) == (
        f"npz file '{path}' is missing the key(s) 'x_val', 'y_val'; save it with "
        "np.savez(path, x_train=..., y_train=..., x_val=..., y_val=...)"
    )


def test_npz_test_labels_without_inputs(tmp_path: pathlib.Path) -> None:
    arrays = valid_arrays()
    del arrays["x_test"]
    path = save(tmp_path, **arrays)

    assert load_error(path) == (
        f"npz file '{path}' contains 'y_test' but not 'x_test'; store both test arrays or neither"
    )


def test_npz_length_mismatch(tmp_path: pathlib.Path) -> None:
    arrays = valid_arrays()
    arrays["y_train"] = np.array([0, 1, 2])
    path = save(tmp_path, **arrays)

    assert load_error(path) == (
        f"npz file '{path}': x_train has 4 samples but y_train has 3 labels; "
        "give one label per sample"
    )


def test_npz_sample_shape_mismatch(tmp_path: pathlib.Path) -> None:
    arrays = valid_arrays()
    arrays["x_val"] = np.ones((2, 3, 2))
    path = save(tmp_path, **arrays)

    assert load_error(path) == (
        f"npz file '{path}': x_val has sample shape (3, 2) but x_train has (2, 3); "
        "every split must use the same sample shape"
    )


def test_npz_fractional_labels(tmp_path: pathlib.Path) -> None:
    arrays = valid_arrays()
    arrays["y_val"] = np.array([0.5, 1.0])
    path = save(tmp_path, **arrays)

    assert load_error(path) == (
        f"npz array 'y_val' in '{path}' is not integer-valued (e.g. [0.5]); "
        "labels must be class indices 0, 1, 2, ..."
    )


def test_npz_string_labels(tmp_path: pathlib.Path) -> None:
    arrays = valid_arrays()
    arrays["y_train"] = np.array(["a", "b", "c", "b"])
    path = save(tmp_path, **arrays)

    assert load_error(path) == (
        f"npz array 'y_train' in '{path}' has dtype <U1; labels must be integer "
        "class indices 0, 1, 2, ..."
    )


def test_npz_negative_labels(tmp_path: pathlib.Path) -> None:
    arrays = valid_arrays()
    arrays["y_train"] = np.array([0, -1, 2, 1])
    path = save(tmp_path, **arrays)

    assert load_error(path) == (
        f"npz array 'y_train' in '{path}' contains the negative label -1; "
        "labels must be class indices 0, 1, 2, ..."
    )


def test_npz_labels_not_1d(tmp_path: pathlib.Path) -> None:
    arrays = valid_arrays()
    arrays["y_train"] = np.array([[0], [1], [2], [1]])
    path = save(tmp_path, **arrays)

    assert load_error(path) == (
        f"npz array 'y_train' in '{path}' has shape (4, 1); labels must be 1-D with "
        "shape (N,), e.g. flatten them"
    )


def test_npz_non_finite_inputs(tmp_path: pathlib.Path) -> None:
    arrays = valid_arrays()
    arrays["x_val"] = np.array([[[np.nan, 0, 0], [0, 0, 0]], [[np.inf, 0, 0], [0, 0, 1e300]]])
    path = save(tmp_path, **arrays)

    assert load_error(path) == (
        f"npz array 'x_val' in '{path}' contains 3 non-finite values "
        "(NaN or infinite as float32); replace them or drop those samples"
    )


def test_npz_empty_inputs(tmp_path: pathlib.Path) -> None:
    arrays = valid_arrays()
    arrays["x_val"] = np.zeros((0, 2, 3))
    arrays["y_val"] = np.zeros(0, dtype=np.int64)
    path = save(tmp_path, **arrays)

    assert load_error(path) == (
        f"npz array 'x_val' in '{path}' is empty (shape (0, 2, 3)); "
        "every split needs at least one sample with at least one feature"
    )


def test_npz_empty_labels(tmp_path: pathlib.Path) -> None:
    arrays = valid_arrays()
    arrays["y_test"] = np.zeros(0, dtype=np.int64)
    path = save(tmp_path, **arrays)

    assert load_error(path) == (
        f"npz array 'y_test' in '{path}' is empty; every split needs at least one sample"
    )


def test_npz_inputs_without_feature_axis(tmp_path: pathlib.Path) -> None:
    arrays = valid_arrays()
    arrays["x_train"] = np.zeros(4)
    path = save(tmp_path, **arrays)

    assert load_error(path) == (
        f"npz array 'x_train' in '{path}' has shape (4,); it needs a sample axis and "
        "at least one feature axis, e.g. reshape it to (N, 1)"
    )


def test_npz_object_array_rejected(tmp_path: pathlib.Path) -> None:
    arrays = valid_arrays()
    arrays["x_train"] = np.array([{"a": 1}, None, 1, 2], dtype=object)
    path = save(tmp_path, **arrays)

    assert load_error(path) == (
        f"npz array 'x_train' in '{path}' is an object array, which would need pickle "
        "to load; store numeric arrays, and strings only for class_names"
    )


def test_npz_pickle_file_rejected(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "data.npz"
    path.write_bytes(pickle.dumps(valid_arrays()))

    assert load_error(path) == (
        f"file '{path}' is not an .npz archive and would need pickle to load; save it with "
        "np.savez(path, x_train=..., y_train=..., x_val=..., y_val=...)"
    )


def test_npz_npy_file_rejected(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "data.npz"
    with path.open("wb") as file:
        np.save(file, np.zeros(3))

    assert load_error(path) == (
        f"file '{path}' is a single .npy array, not an .npz archive; save it with "
        "np.savez(path, x_train=..., y_train=..., x_val=..., y_val=...)"
    )


def test_npz_corrupt_archive(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "data.npz"
    path.write_bytes(b"PK\x03\x04 truncated")

    message = load_error(path)

    assert message.startswith(f"npz file '{path}' cannot be read as an .npz archive (")


def test_npz_missing_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "missing.npz"

    with pytest.raises(FileNotFoundError) as error:
        load_npz(path)

    assert str(error.value) == (
        f"npz file '{path}' not found; give the path of an existing .npz file inside the data root"
    )
