from __future__ import annotations

import pathlib

import pytest

from qsearch.data import resolve_data_path


@pytest.fixture
def data_root(tmp_path: pathlib.Path) -> pathlib.Path:
    root = tmp_path / "root"
    (root / "sets").mkdir(parents=True)
    (root / "sets" / "a.npz").write_bytes(b"")
    return root


def test_resolve_data_path_relative_inside(data_root: pathlib.Path) -> None:
    resolved = resolve_data_path("sets/a.npz", data_root)

    assert resolved == data_root / "sets" / "a.npz"


def test_resolve_data_path_accepts_missing_file(data_root: pathlib.Path) -> None:
    resolved = resolve_data_path("sets/new.npz", data_root)

    assert resolved == data_root / "sets" / "new.npz"


def test_resolve_data_path_dotdot_staying_inside(data_root: pathlib.Path) -> None:
    resolved = resolve_data_path("sets/../sets/a.npz", str(data_root))

    assert resolved == data_root / "sets" / "a.npz"


def test_resolve_data_path_absolute_inside(data_root: pathlib.Path) -> None:
    resolved = resolve_data_path(data_root / "sets" / "a.npz", data_root)

    assert resolved == data_root / "sets" / "a.npz"


def test_resolve_data_path_dotdot_escape(data_root: pathlib.Path) -> None:
    outside = data_root.parent / "x"

    with pytest.raises(ValueError) as error:
        resolve_data_path("../x", data_root)

    assert str(error.value) == (
        f"dataset path '../x' escapes the data root '{data_root}' (it resolves to "
        f"'{outside}'); give a path inside the data root"
    )


def test_resolve_data_path_absolute_outside(data_root: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="escapes the data root") as error:
        resolve_data_path("/etc/passwd", data_root)

    assert "dataset path '/etc/passwd'" in str(error.value)


def test_resolve_data_path_sibling_prefix_outside(data_root: pathlib.Path) -> None:
    # "/tmp/.../root2" starts with the string "/tmp/.../root" but is not inside it.
    sibling = data_root.parent / "root2"
    sibling.mkdir()

    with pytest.raises(ValueError, match="escapes the data root"):
        resolve_data_path(sibling, data_root)


def test_resolve_data_path_symlink_outside(data_root: pathlib.Path) -> None:
    outside = data_root.parent / "outside"
    outside.mkdir()
    (outside / "secret.npz").write_bytes(b"")
    (data_root / "link").symlink_to(outside, target_is_directory=True)

    with pytest.raises(ValueError) as error:
        resolve_data_path("link/secret.npz", data_root)

    assert str(error.value) == (
        f"dataset path 'link/secret.npz' escapes the data root '{data_root}' (it resolves to "
        f"'{outside / 'secret.npz'}'); give a path inside the data root"
    )


def test_resolve_data_path_symlink_inside(data_root: pathlib.Path) -> None:
    (data_root / "alias.npz").symlink_to(data_root / "sets" / "a.npz")

    resolved = resolve_data_path("alias.npz", data_root)

    assert resolved == data_root / "sets" / "a.npz"


def test_resolve_data_path_symlinked_root(data_root: pathlib.Path) -> None:
    root_link = data_root.parent / "root_link"
    root_link.symlink_to(data_root, target_is_directory=True)

    resolved = resolve_data_path("sets/a.npz", root_link)

    assert resolved == data_root / "sets" / "a.npz"


def test_resolve_data_path_empty_path(data_root: pathlib.Path) -> None:
    with pytest.raises(ValueError) as error:
        resolve_data_path("", data_root)

    assert str(error.value) == (
        "dataset path is empty; give a file or folder path inside the data root"
    )


def test_resolve_data_path_missing_root(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "missing"

    with pytest.raises(FileNotFoundError) as error:
        resolve_data_path("a.npz", missing)

    assert str(error.value) == (
        f"data root '{missing}' is not an existing directory; create it or give another data root"
    )
