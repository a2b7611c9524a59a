from __future__ import annotations

import logging
import pathlib

import numpy as np
import pytest
import soundfile
import torch

from qsearch.data import speech_commands
from qsearch.data.speech_commands import (
    clear_feature_cache,
    compute_mfcc,
    list_word_folders,
    load_speech_commands,
    read_clip,
)


def test_speech_commands_frame_count() -> None:
    assert speech_commands.NUM_FRAMES == 101
    assert speech_commands.FEATURE_SHAPE == (40, 101)


def test_speech_commands_list_word_folders(speech_folder: pathlib.Path) -> None:
    assert list_word_folders(speech_folder) == ("no", "up", "yes")


def test_speech_commands_default_words(speech_folder: pathlib.Path) -> None:
    splits = load_speech_commands(speech_folder)

    assert splits.class_names == ("no", "up", "yes")
    assert splits.num_classes == 3
    assert splits.input_shape == (40, 101)
    assert splits.x_train.shape == (6, 40, 101)
    assert splits.x_val.shape == (3, 40, 101)
    assert splits.x_test is not None
    assert splits.x_test.shape == (3, 40, 101)
    assert splits.x_train.dtype == torch.float32
    assert splits.y_train.dtype == torch.int64


def test_speech_commands_split_labels(speech_folder: pathlib.Path) -> None:
    splits = load_speech_commands(speech_folder)

    # Samples are ordered by class (no, up, yes) and then by file name.
    assert splits.y_train.tolist() == [0, 0, 1, 1, 2, 2]
    assert splits.y_val.tolist() == [0, 1, 2]
    assert splits.y_test is not None
    assert splits.y_test.tolist() == [0, 1, 2]


def test_speech_commands_split_membership(speech_folder: pathlib.Path) -> None:
    splits = load_speech_commands(speech_folder)

    def raw_features(clip_name: str) -> np.ndarray:
        paths = [speech_folder / word / clip_name for word in ("no", "up", "yes")]
        return compute_mfcc(np.stack([read_clip(path) for path in paths]))

    train_names = ("clip0_nohash_0.wav", "clip3_nohash_0.wav")
    train_paths = [
        speech_folder / word / name for word in ("no", "up", "yes") for name in train_names
    ]
    train_raw = compute_mfcc(np.stack([read_clip(path) for path in train_paths]))
    mean = train_raw.mean(axis=(0, 2), keepdims=True)[0]
    std = train_raw.std(axis=(0, 2), keepdims=True)[0]

    expected_val = (raw_features("clip1_nohash_0.wav") - mean) / std
    expected_test = (raw_features("clip2_nohash_0.wav") - mean) / std

    assert splits.x_test is not None
    assert np.allclose(splits.x_val.numpy(), expected_val, atol=1e-4)
    assert np.allclose(splits.x_test.numpy(), expected_test, atol=1e-4)
    assert np.allclose(splits.x_train.numpy(), (train_raw - mean) / std, atol=1e-4)


def test_speech_commands_train_normalized(speech_folder: pathlib.Path) -> None:
    splits = load_speech_commands(speech_folder)

    coefficient_mean = splits.x_train.mean(dim=(0, 2))
    coefficient_std = splits.x_train.std(dim=(0, 2), unbiased=False)

    assert coefficient_mean.abs().max().item() < 1e-4
    assert (coefficient_std - 1.0).abs().max().item() < 1e-3


def test_speech_commands_selected_words(speech_folder: pathlib.Path) -> None:
    splits = load_speech_commands(speech_folder, words=["yes", "no"])

    assert splits.class_names == ("yes", "no")
    assert splits.num_classes == 2
    assert splits.x_train.shape == (4, 40, 101)
    assert splits.y_train.tolist() == [0, 0, 1, 1]
    assert splits.y_val.tolist() == [0, 1]


def test_speech_commands_empty_testing_list(speech_folder: pathlib.Path) -> None:
    (speech_folder / "testing_list.txt").write_text("", encoding="utf-8")

    splits = load_speech_commands(speech_folder)

    assert splits.x_test is None
    assert splits.y_test is None
    assert splits.x_train.shape == (9, 40, 101)


def test_speech_commands_cache_shared(speech_folder: pathlib.Path) -> None:
    first = load_speech_commands(speech_folder)
    second = load_speech_commands(speech_folder)
    clear_feature_cache()
    third = load_speech_commands(speech_folder)

    assert second is first
    assert third is not first
    assert torch.equal(third.x_train, first.x_train)


def test_speech_commands_unknown_word(speech_folder: pathlib.Path) -> None:
    with pytest.raises(ValueError) as error:
        load_speech_commands(speech_folder, words=["yes", "left"])

    assert str(error.value) == (
        f"word 'left' has no folder in '{speech_folder}'; choose from: no, up, yes"
    )


def test_speech_commands_background_noise_not_a_word(speech_folder: pathlib.Path) -> None:
    with pytest.raises(ValueError) as error:
        load_speech_commands(speech_folder, words=["_background_noise_"])

    assert str(error.value) == (
        f"word '_background_noise_' has no folder in '{speech_folder}'; choose from: no, up, yes"
    )


def test_speech_commands_words_as_string(speech_folder: pathlib.Path) -> None:
    with pytest.raises(ValueError) as error:
        load_speech_commands(speech_folder, words="yes")

    assert str(error.value) == (
        "words='yes' is not a list of words; pass a list such as ['yes', 'no']"
    )


def test_speech_commands_duplicate_words(speech_folder: pathlib.Path) -> None:
    with pytest.raises(ValueError) as error:
        load_speech_commands(speech_folder, words=["yes", "no", "yes"])

    assert str(error.value) == "words lists yes more than once; list each word once"


def test_speech_commands_empty_words(speech_folder: pathlib.Path) -> None:
    with pytest.raises(ValueError) as error:
        load_speech_commands(speech_folder, words=[])

    assert str(error.value) == "words is empty; pass at least one word, or omit words to use all"


def test_speech_commands_wrong_sample_rate(speech_folder: pathlib.Path) -> None:
    clip_path = speech_folder / "up" / "clip9_nohash_0.wav"
    soundfile.write(clip_path, np.zeros(8_000, dtype=np.float32), 8_000)

    with pytest.raises(ValueError) as error:
        load_speech_commands(speech_folder)

    assert str(error.value) == (
        f"audio file '{clip_path}' has a sample rate of 8000 Hz, expected 16000 Hz; "
        "resample it to 16 kHz"
    )


def test_speech_commands_stereo_clip(speech_folder: pathlib.Path) -> None:
    clip_path = speech_folder / "no" / "clip9_nohash_0.wav"
    soundfile.write(clip_path, np.zeros((16_000, 2), dtype=np.float32), 16_000)

    with pytest.raises(ValueError) as error:
        load_speech_commands(speech_folder)

    assert str(error.value) == (
        f"audio file '{clip_path}' has 2 channels, expected 1; convert it to mono"
    )


def test_speech_commands_unreadable_clip(speech_folder: pathlib.Path) -> None:
    clip_path = speech_folder / "no" / "clip9_nohash_0.wav"
    clip_path.write_bytes(b"not a wav file")

    with pytest.raises(ValueError) as error:
        load_speech_commands(speech_folder)

    assert str(error.value).startswith(f"audio file '{clip_path}' cannot be read (")
    assert str(error.value).endswith("; replace it with a 16 kHz mono WAV file")


def test_speech_commands_missing_validation_list(speech_folder: pathlib.Path) -> None:
    (speech_folder / "validation_list.txt").unlink()

    with pytest.raises(FileNotFoundError) as error:
        load_speech_commands(speech_folder)

    assert str(error.value) == (
        f"split list '{speech_folder / 'validation_list.txt'}' not found; the Speech Commands "
        "folder needs validation_list.txt and testing_list.txt (an empty file means no clips "
        "in that split)"
    )


def test_speech_commands_missing_folder(tmp_path: pathlib.Path) -> None:
    folder = tmp_path / "missing"

    with pytest.raises(FileNotFoundError) as error:
        load_speech_commands(folder)

    assert str(error.value) == (
        f"Speech Commands folder '{folder}' not found; give the folder that contains the "
        "word folders and validation_list.txt, relative to the data root"
    )


def test_speech_commands_empty_validation_split(speech_folder: pathlib.Path) -> None:
    (speech_folder / "validation_list.txt").write_text("", encoding="utf-8")

    with pytest.raises(ValueError) as error:
        load_speech_commands(speech_folder, words=["up"])

    assert str(error.value) == (
        f"the validation split of '{speech_folder}' is empty for the words up: "
        "validation_list.txt lists none of their WAV files; list some clips there or choose "
        "other words"
    )


def test_speech_commands_empty_train_split(speech_folder: pathlib.Path) -> None:
    testing = "up/clip0_nohash_0.wav\nup/clip2_nohash_0.wav\nup/clip3_nohash_0.wav\n"
    (speech_folder / "testing_list.txt").write_text(testing, encoding="utf-8")

    with pytest.raises(ValueError) as error:
        load_speech_commands(speech_folder, words=["up"])

    assert str(error.value) == (
        f"the train split of '{speech_folder}' is empty for the words up: no WAV file of "
        "these words is outside validation_list.txt and testing_list.txt; add training clips "
        "or choose other words"
    )


def test_speech_commands_overlapping_lists(speech_folder: pathlib.Path) -> None:
    (speech_folder / "testing_list.txt").write_text("yes/clip1_nohash_0.wav\n", encoding="utf-8")

    with pytest.raises(ValueError) as error:
        load_speech_commands(speech_folder)

    assert str(error.value) == (
        "'yes/clip1_nohash_0.wav' and 0 other clips are in both validation_list.txt and "
        f"testing_list.txt in '{speech_folder}'; list each clip in at most one of them"
    )


def test_speech_commands_missing_listed_clip_warns(
    speech_folder: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (speech_folder / "testing_list.txt").open("a", encoding="utf-8") as lines:
        lines.write("yes/gone_nohash_0.wav\nleft/other_nohash_0.wav\n")

    with caplog.at_level(logging.WARNING, logger="qsearch.data.speech_commands"):
        load_speech_commands(speech_folder)

    assert "1 listed clips do not exist, e.g. 'yes/gone_nohash_0.wav'" in caplog.text


def test_read_clip_pads_short_clip(speech_folder: pathlib.Path) -> None:
    clip_path = speech_folder / "yes" / "clip1_nohash_0.wav"
    original, _ = soundfile.read(clip_path, dtype="float32")

    clip = read_clip(clip_path)

    assert clip.shape == (16_000,)
    assert clip.dtype == np.float32
    assert np.array_equal(clip[:12_000], original)
    assert not clip[12_000:].any()


def test_read_clip_cuts_long_clip(speech_folder: pathlib.Path) -> None:
    clip_path = speech_folder / "yes" / "clip2_nohash_0.wav"
    original, _ = soundfile.read(clip_path, dtype="float32")

    clip = read_clip(clip_path)

    assert original.shape == (20_000,)
    assert clip.shape == (16_000,)
    assert np.array_equal(clip, original[:16_000])


def test_compute_mfcc_shape() -> None:
    waveforms = np.zeros((2, 16_000), dtype=np.float32)

    features = compute_mfcc(waveforms)

    assert features.shape == (2, 40, 101)
    assert features.dtype == np.float32
    assert np.isfinite(features).all()


def test_compute_mfcc_independent_of_batch() -> None:
    times = np.arange(16_000) / 16_000
    quiet = (0.001 * np.sin(2 * np.pi * 300 * times)).astype(np.float32)
    loud = (0.9 * np.sin(2 * np.pi * 3_000 * times)).astype(np.float32)

    alone = compute_mfcc(quiet[np.newaxis])
    batched = compute_mfcc(np.stack([loud, quiet]))

    assert np.allclose(batched[1], alone[0], atol=1e-3)


def test_compute_mfcc_wrong_length() -> None:
    with pytest.raises(ValueError) as error:
        compute_mfcc(np.zeros((2, 8_000), dtype=np.float32))

    assert str(error.value) == (
        "waveforms have shape (2, 8000), expected (N, 16000); "
        "pad or cut every clip to one second with read_clip"
    )
