"""Datasets that the user saved as a NumPy .npz archive with fixed splits."""

from __future__ import annotations

import logging
import pathlib
import zipfile

import numpy as np

from qsearch.data.splits import DatasetSplits, features_to_tensor, labels_to_tensor

logger = logging.getLogger(__name__)

REQUIRED_KEYS = ("x_train", "y_train", "x_val", "y_val")
TEST_KEYS = ("x_test", "y_test")
CLASS_NAMES_KEY = "class_names"
SAVE_HINT = "save it with np.savez(path, x_train=..., y_train=..., x_val=..., y_val=...)"


def load_npz(path: pathlib.Path) -> DatasetSplits:
    """Load and validate the splits stored in the .npz archive at `path`.

    The archive must contain x_train, y_train, x_val and y_val, and may contain x_test with
    y_test and a 1-D string array class_names. Other keys are ignored with a warning. Inputs
    are converted to float32 and labels to int64, and num_classes is the maximum label over
    all splits plus one. The archive is read with allow_pickle=False, so object arrays are
    rejected and no pickled code runs.

    Raises:
        FileNotFoundError: `path` is not an existing file.
        ValueError: the archive cannot be read, or a key is missing or contains invalid data.
    """
    if not path.is_file():
        raise FileNotFoundError(
            f"npz file '{path}' not found; give the path of an existing .npz file "
            "inside the data root"
        )
    arrays = _read_archive(path)

    missing = [key for key in REQUIRED_KEYS if key not in arrays]
    if missing:
        names = ", ".join(f"'{key}'" for key in missing)
        raise ValueError(f"npz file '{path}' is missing the key(s) {names}; {SAVE_HINT}")
    has_test = _check_test_keys(path, arrays)
    ignored = sorted(set(arrays) - set(REQUIRED_KEYS) - set(TEST_KEYS) - {CLASS_NAMES_KEY})
    if ignored:
        logger.warning("npz file '%s': ignoring unknown keys %s", path, ", ".join(ignored))

    split_names = ["train", "val", "test"] if has_test else ["train", "val"]
    features = {split: _check_features(path, split, arrays[f"x_{split}"]) for split in split_names}
    labels = {split: _check_labels(path, split, arrays[f"y_{split}"]) for split in split_names}

    input_shape = tuple(int(size) for size in features["train"].shape[1:])
    for split in split_names:
        _check_lengths(path, split, features[split], labels[split])
        sample_shape = tuple(features[split].shape[1:])
        if sample_shape != input_shape:
            raise ValueError(
                f"npz file '{path}': x_{split} has sample shape {sample_shape} but x_train has "
                f"{input_shape}; every split must use the same sample shape"
            )

    num_classes = max(int(split_labels.max()) for split_labels in labels.values()) + 1
    class_names = _read_class_names(path, arrays, num_classes)
    _warn_missing_train_classes(path, labels["train"], num_classes)

    return DatasetSplits(
        x_train=features_to_tensor(features["train"]),
        y_train=labels_to_tensor(labels["train"]),
        x_val=features_to_tensor(features["val"]),
        y_val=labels_to_tensor(labels["val"]),
        x_test=features_to_tensor(features["test"]) if has_test else None,
        y_test=labels_to_tensor(labels["test"]) if has_test else None,
        num_classes=num_classes,
        input_shape=input_shape,
        class_names=class_names,
    )


def _read_archive(path: pathlib.Path) -> dict[str, np.ndarray]:
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as error:
        # np.load falls back to pickle for files that are neither .npz nor .npy.
        raise ValueError(
            f"file '{path}' is not an .npz archive and would need pickle to load; {SAVE_HINT}"
        ) from error
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise ValueError(
            f"npz file '{path}' cannot be read as an .npz archive ({error}); {SAVE_HINT}"
        ) from error

    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError(f"file '{path}' is a single .npy array, not an .npz archive; {SAVE_HINT}")

    with loaded:
        arrays: dict[str, np.ndarray] = {}
        for key in loaded.files:
            try:
                arrays[key] = loaded[key]
            except ValueError as error:
                raise ValueError(
                    f"npz array '{key}' in '{path}' is an object array, which would need pickle "
                    "to load; store numeric arrays, and strings only for class_names"
                ) from error
            except (OSError, zipfile.BadZipFile, EOFError) as error:
                raise ValueError(
                    f"npz array '{key}' in '{path}' cannot be read ({error}); save the file again"
                ) from error
    return arrays


def _check_test_keys(path: pathlib.Path, arrays: dict[str, np.ndarray]) -> bool:
    present = [key for key in TEST_KEYS if key in arrays]
    if len(present) == 1:
        absent = next(key for key in TEST_KEYS if key not in arrays)
        raise ValueError(
            f"npz file '{path}' contains '{present[0]}' but not '{absent}'; "
            "store both test arrays or neither"
        )
    return len(present) == len(TEST_KEYS)


def _check_features(path: pathlib.Path, split: str, array: np.ndarray) -> np.ndarray:
    key = f"x_{split}"
    if array.dtype.kind not in "biuf":
        raise ValueError(
            f"npz array '{key}' in '{path}' has dtype {array.dtype}; store real numbers"
        )
    if array.ndim < 2:
        raise ValueError(
            f"npz array '{key}' in '{path}' has shape {array.shape}; it needs a sample axis and "
            "at least one feature axis, e.g. reshape it to (N, 1)"
        )
    if array.shape[0] == 0 or array.size == 0:
        raise ValueError(
            f"npz array '{key}' in '{path}' is empty (shape {array.shape}); "
            "every split needs at least one sample with at least one feature"
        )
    # Checked after the cast because float64 values beyond the float32 range become inf.
    # The overflow warning is silenced because the error below reports those values.
    with np.errstate(over="ignore"):
        features = array.astype(np.float32)
    num_bad = int(np.count_nonzero(~np.isfinite(features)))
    if num_bad:
        raise ValueError(
            f"npz array '{key}' in '{path}' contains {num_bad} non-finite values "
            "(NaN or infinite as float32); replace them or drop those samples"
        )
    return features


def _check_labels(path: pathlib.Path, split: str, array: np.ndarray) -> np.ndarray:
    key = f"y_{split}"
    if array.ndim != 1:
        raise ValueError(
            f"npz array '{key}' in '{path}' has shape {array.shape}; labels must be 1-D with "
            "shape (N,), e.g. flatten them"
        )
    if array.shape[0] == 0:
        raise ValueError(
            f"npz array '{key}' in '{path}' is empty; every split needs at least one sample"
        )
    if array.dtype.kind == "f":
        integral = np.isfinite(array) & (array == np.round(array))
        if not bool(np.all(integral)):
            examples = array[~integral][:3].tolist()
            raise ValueError(
                f"npz array '{key}' in '{path}' is not integer-valued (e.g. {examples}); "
                "labels must be class indices 0, 1, 2, ..."
            )
    elif array.dtype.kind not in "iu":
        raise ValueError(
            f"npz array '{key}' in '{path}' has dtype {array.dtype}; labels must be integer "
            "class indices 0, 1, 2, ..."
        )
    if array.min() < 0:
        raise ValueError(
            f"npz array '{key}' in '{path}' contains the negative label {array.min()}; "
            "labels must be class indices 0, 1, 2, ..."
        )
    if array.max() > np.iinfo(np.int32).max:
        raise ValueError(
            f"npz array '{key}' in '{path}' contains the label {array.max()}, which is too large "
            "for a class index; number the classes 0, 1, 2, ..."
        )
    return array.astype(np.int64)


def _check_lengths(
    path: pathlib.Path, split: str, features: np.ndarray, labels: np.ndarray
) -> None:
    if features.shape[0] != labels.shape[0]:
        raise ValueError(
            f"npz file '{path}': x_{split} has {features.shape[0]} samples but y_{split} has "
            f"{labels.shape[0]} labels; give one label per sample"
        )


def _read_class_names(
    path: pathlib.Path, arrays: dict[str, np.ndarray], num_classes: int
) -> tuple[str, ...] | None:
    if CLASS_NAMES_KEY not in arrays:
        return None
    names = arrays[CLASS_NAMES_KEY]
    if names.dtype.kind != "U" or names.ndim != 1:
        raise ValueError(
            f"npz array '{CLASS_NAMES_KEY}' in '{path}' has dtype {names.dtype} and shape "
            f"{names.shape}; store a 1-D string array, e.g. np.array(['cat', 'dog'])"
        )
    if len(names) != num_classes:
        raise ValueError(
            f"npz array '{CLASS_NAMES_KEY}' in '{path}' has {len(names)} names but the labels "
            f"give {num_classes} classes (maximum label + 1); give one name per class"
        )
    return tuple(str(name) for name in names)


def _warn_missing_train_classes(path: pathlib.Path, labels: np.ndarray, num_classes: int) -> None:
    counts = np.bincount(labels, minlength=num_classes)
    absent = np.flatnonzero(counts == 0).tolist()
    if absent:
        logger.warning("npz file '%s': classes %s have no training samples", path, absent)
