"""Confinement of user-given dataset paths to a data root folder."""

from __future__ import annotations

import os
import pathlib


def resolve_data_path(
    path: str | os.PathLike[str], data_root: str | os.PathLike[str]
) -> pathlib.Path:
    """Resolve `path` relative to `data_root` and return the absolute, symlink-free path.

    An absolute `path` is accepted only if it lies inside the data root. Symlinks in both
    arguments are resolved before the check, so a link that points outside the root is
    rejected too. The result need not exist yet.

    Raises:
        FileNotFoundError: `data_root` is not an existing directory.
        ValueError: `path` is empty, cannot be resolved, or resolves outside the data root.
    """
    root = _resolve_data_root(data_root)

    raw = os.fspath(path)
    if not raw:
        raise ValueError("dataset path is empty; give a file or folder path inside the data root")

    candidate = pathlib.Path(raw)
    if not candidate.is_absolute():
        candidate = root / candidate
    try:
        resolved = candidate.resolve()
    except (OSError, RuntimeError) as error:
        # Python 3.11 raises RuntimeError for a symlink loop, later versions raise OSError.
        raise ValueError(
            f"dataset path '{raw}' cannot be resolved ({error}); fix the path or the symlinks in it"
        ) from error

    if not resolved.is_relative_to(root):
        raise ValueError(
            f"dataset path '{raw}' escapes the data root '{root}' (it resolves to '{resolved}'); "
            "give a path inside the data root"
        )
    return resolved


def _resolve_data_root(data_root: str | os.PathLike[str]) -> pathlib.Path:
    raw = os.fspath(data_root)
    if not raw:
        raise ValueError("data root is empty; give the folder that contains the datasets")
    root = pathlib.Path(raw).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(
            f"data root '{raw}' is not an existing directory; create it or give another data root"
        )
    return root
