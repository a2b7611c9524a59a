"""Dispatch from a dataset name and its options to the matching loader."""

from __future__ import annotations

import logging
import os
import pathlib
from dataclasses import dataclass
from typing import Any

from qsearch.data.digits import load_digits_splits
from qsearch.data.npz import load_npz
from qsearch.data.paths import resolve_data_path
from qsearch.data.speech_commands import load_speech_commands
from qsearch.data.splits import DatasetSplits

logger = logging.getLogger(__name__)

# scikit-learn accepts integer seeds in [0, 2**32 - 1].
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class _DatasetSpec:
    option_names: tuple[str, ...]
    needs_path: bool
    path_example: str


_DATASETS: dict[str, _DatasetSpec] = {
    "digits": _DatasetSpec(
        option_names=("val_fraction", "test_fraction"), needs_path=False, path_example=""
    ),
    "npz": _DatasetSpec(option_names=(), needs_path=True, path_example="my_data.npz"),
    "speech_commands": _DatasetSpec(
        option_names=("words",), needs_path=True, path_example="speech_commands_v0.02"
    ),
}
DATASET_NAMES: tuple[str, ...] = tuple(_DATASETS)


def load_dataset(
    name: str,
    *,
    seed: int,
    data_root: str | os.PathLike[str] | None = None,
    path: str | os.PathLike[str] | None = None,
    **options: Any,
) -> DatasetSplits:
    """Load the dataset `name` and return its train, validation and optional test splits.

    Datasets and their options:

    - ``digits``: scikit-learn's built-in 8x8 digit images with a stratified split drawn
      with `seed`. Options ``val_fraction`` and ``test_fraction`` (default 0.15 each).
      Takes no path.
    - ``npz``: a .npz file at `path` with fixed splits. No options, and `seed` is unused.
    - ``speech_commands``: a Google Speech Commands folder at `path`, as MFCC features.
      Option ``words`` (default: all word folders). The list files fix the split, so `seed`
      is unused. The tensors are cached in memory and shared between calls, so they must
      not be modified in place.

    `path` is resolved inside `data_root` with `resolve_data_path`, so both are required
    for ``npz`` and ``speech_commands``.

    Raises:
        ValueError: the name, an option, the seed, or the path is invalid.
        FileNotFoundError: the data root or the dataset file or folder does not exist.
    """
    spec = _DATASETS.get(name)
    if spec is None:
        raise ValueError(
            f"unknown dataset name {name!r}; allowed names: {', '.join(DATASET_NAMES)}"
        )
    _check_seed(seed)
    for option in options:
        if option not in spec.option_names:
            allowed = ", ".join(spec.option_names) or "none"
            raise ValueError(
                f"unknown option {option!r} for dataset '{name}'; allowed options: {allowed}"
            )

    if not spec.needs_path:
        _reject_path(name, path)
        splits = load_digits_splits(seed=seed, **options)
    elif name == "npz":
        splits = load_npz(_resolve_dataset_path(name, spec, path, data_root))
    else:
        splits = load_speech_commands(_resolve_dataset_path(name, spec, path, data_root), **options)

    logger.info(
        "loaded dataset '%s': %d train, %d validation, %s test samples, %d classes, input shape %s",
        name,
        len(splits.y_train),
        len(splits.y_val),
        "no" if splits.y_test is None else len(splits.y_test),
        splits.num_classes,
        splits.input_shape,
    )
    return splits


def _reject_path(name: str, path: str | os.PathLike[str] | None) -> None:
    if path is not None:
        raise ValueError(
            f"dataset '{name}' is built in and takes no path, got path={os.fspath(path)!r}; "
            "remove the path"
        )


def _resolve_dataset_path(
    name: str,
    spec: _DatasetSpec,
    path: str | os.PathLike[str] | None,
    data_root: str | os.PathLike[str] | None,
) -> pathlib.Path:
    if path is None:
        raise ValueError(
            f"dataset '{name}' needs a path, got none; pass path='{spec.path_example}' "
            "relative to the data root"
        )
    if data_root is None:
        raise ValueError(
            f"dataset '{name}' needs a data root to resolve path {os.fspath(path)!r}, got "
            "none; pass data_root, the folder that contains the datasets"
        )
    return resolve_data_path(path, data_root)


def _check_seed(seed: object) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed={seed!r} is not an int; pass an integer seed, e.g. seed=0")
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed={seed} is out of range; pass an integer in [0, {MAX_SEED}]")
