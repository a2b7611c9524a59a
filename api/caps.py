"""Server-side checks of a valid study spec: budget, epochs, model size and dataset path.

`load_spec` accepts any spec that a local `qsearch run` can run. A shared
server also bounds what one request may cost, and resolves dataset paths
under its own data root. The model is built on PyTorch's meta device, so
counting its parameters allocates no weights and runs no layer.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np
import torch

from api.config import Settings
from qsearch.data.digits import CLASS_NAMES as DIGITS_CLASS_NAMES
from qsearch.data.digits import INPUT_SHAPE as DIGITS_INPUT_SHAPE
from qsearch.data.paths import resolve_data_path
from qsearch.data.speech_commands import FEATURE_SHAPE, list_word_folders
from qsearch.models import build_model
from qsearch.search.spec import StudySpec

logger = logging.getLogger(__name__)

# (dotted path in the spec, message), as in SpecError.errors.
SpecProblem = tuple[str, str]


def check_caps(spec: StudySpec, settings: Settings) -> list[SpecProblem]:
    """Return every way in which `spec` breaks the server's caps; empty if it fits."""
    problems = _check_budget(spec, settings)
    problems.extend(_check_epochs(spec, settings))

    dataset_problems, model_input = _check_dataset(spec, settings.data_root)
    problems.extend(dataset_problems)
    if model_input is not None:
        problems.extend(_check_model_size(spec, settings, *model_input))
    return problems


def _check_budget(spec: StudySpec, settings: Settings) -> list[SpecProblem]:
    # Workers finish a study once n_trials trials count and ignore timeout, so a
    # timeout-only study would never finish and a timeout would be silently dropped.
    if spec.n_trials is None:
        message = "n_trials is missing; the server runs a study until n_trials trials count"
        return [("n_trials", message)]
    problems = []
    if spec.timeout is not None:
        message = f"timeout is not supported by the server, but got {spec.timeout}; remove it"
        problems.append(("timeout", message))
    if spec.n_trials > settings.max_n_trials:
        problems.append(
            (
                "n_trials",
                f"n_trials must be at most {settings.max_n_trials} on this server, "
                f"but got {spec.n_trials}",
            )
        )
    return problems


def max_epochs_of(spec: StudySpec) -> int:
    """Return the largest number of epochs that a trial of `spec` can train."""
    dimension = spec.resolved_search_space().get("epochs")
    if dimension is None:
        return spec.training.epochs
    return max(int(value) for value in dimension.boundary_values())


def _check_epochs(spec: StudySpec, settings: Settings) -> list[SpecProblem]:
    epochs = max_epochs_of(spec)
    if epochs <= settings.max_epochs:
        return []
    path = "search_space.epochs" if "epochs" in spec.resolved_search_space() else "training.epochs"
    return [
        (path, f"epochs must be at most {settings.max_epochs} on this server, but got {epochs}")
    ]


def _check_dataset(
    spec: StudySpec, data_root: Path
) -> tuple[list[SpecProblem], tuple[tuple[int, ...], int] | None]:
    """Check the dataset path; return problems and the (input shape, classes) if known."""
    dataset = spec.dataset
    if dataset.name == "digits":
        return [], (DIGITS_INPUT_SHAPE, len(DIGITS_CLASS_NAMES))
    if dataset.path is None:  # load_spec already requires a path for these datasets
        return [], None

    try:
        path = resolve_data_path(dataset.path, data_root)
    except FileNotFoundError:
        logger.warning("the data root %s does not exist", data_root)
        return [("dataset.path", "the server has no data root folder; ask its operator")], None
    except ValueError:
        return [
            (
                "dataset.path",
                f"dataset path {dataset.path!r} resolves outside the server's data root; "
                "give a path inside it",
            )
        ], None

    exists = path.is_file() if dataset.name == "npz" else path.is_dir()
    if not exists:
        kind = "file" if dataset.name == "npz" else "folder"
        message = f"dataset {kind} {dataset.path!r} not found in the server's data root"
        return [("dataset.path", message)], None

    try:
        if dataset.name == "npz":
            return [], _npz_input(path)
        words = dataset.options.get("words")
        num_classes = len(words) if isinstance(words, list) else len(list_word_folders(path))
        return [], (FEATURE_SHAPE, max(1, num_classes))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        message = f"dataset {dataset.path!r} cannot be read: {error}"
        return [("dataset.path", message)], None


def _npz_input(path: Path) -> tuple[tuple[int, ...], int]:
    """Return the sample shape of x_train and the class count from the labels of an .npz file."""
    with zipfile.ZipFile(path) as archive, archive.open("x_train.npy") as file:
        # Only the header is read, so a large feature array costs nothing here.
        version = np.lib.format.read_magic(file)
        if version == (1, 0):
            shape, _, _ = np.lib.format.read_array_header_1_0(file)
        else:
            shape, _, _ = np.lib.format.read_array_header_2_0(file)
    with np.load(path, allow_pickle=False) as arrays:
        labels = [arrays[key] for key in ("y_train", "y_val", "y_test") if key in arrays.files]
    num_classes = max(int(array.max()) for array in labels if array.size) + 1
    return tuple(int(size) for size in shape[1:]), num_classes


def _check_model_size(
    spec: StudySpec, settings: Settings, input_shape: tuple[int, ...], num_classes: int
) -> list[SpecProblem]:
    try:
        # On the meta device tensors have shapes but no storage.
        with torch.device("meta"):
            model = build_model(
                spec.model.name,
                input_shape=input_shape,
                num_classes=num_classes,
                params=spec.model.params,
            )
    except (ValueError, TypeError, RuntimeError, OverflowError) as error:
        return [("model.params", f"model {spec.model.name!r} cannot be built: {error}")]

    parameters = sum(parameter.numel() for parameter in model.parameters())
    if parameters <= settings.max_model_parameters:
        return []
    return [
        (
            "model.params",
            f"the model must have at most {settings.max_model_parameters} parameters on this "
            f"server, but these params give {parameters}",
        )
    ]
