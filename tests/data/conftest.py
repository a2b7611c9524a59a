"""Fixtures for the dataset tests: a tiny Speech Commands folder written at test time."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest
from audio_fixture import (  # noqa: F401
    CLIP_LENGTHS,
    SAMPLE_RATE,
    WORD_TONES_HZ,
    make_tone,
    write_speech_commands,
)

from qsearch.data import speech_commands


@pytest.fixture
def speech_folder(tmp_path: pathlib.Path) -> pathlib.Path:
    return write_speech_commands(tmp_path)


@pytest.fixture(autouse=True)
def empty_feature_cache() -> Iterator[None]:
    speech_commands.clear_feature_cache()
    yield
    speech_commands.clear_feature_cache()
