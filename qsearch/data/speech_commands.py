"""Google Speech Commands keyword spotting data as 40 x 101 MFCC features.

The dataset folder has one subfolder per word with 16 kHz mono WAV clips of up to one second,
plus validation_list.txt and testing_list.txt with lines such as ``yes/0a7c2a8d_nohash_0.wav``.
Clips named in neither list belong to the train split. Folders whose names start with ``_``
(such as ``_background_noise_``) or ``.`` are not classes.
"""

from __future__ import annotations

import functools
import logging
import pathlib
import time
from collections.abc import Sequence

import librosa
import numpy as np
import soundfile

from qsearch.data.splits import DatasetSplits, features_to_tensor, labels_to_tensor

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
CLIP_SAMPLES = 16_000  # Clips are zero-padded at the end or cut to exactly one second.
N_MFCC = 40
N_MELS = 40
WIN_LENGTH = 480  # 30 ms window
HOP_LENGTH = 160  # 10 ms hop
N_FFT = 512  # the window length rounded up to a power of two
FMIN = 20.0
FMAX = 4_000.0  # Hz. Most of the energy of speech lies below 4 kHz.
TOP_DB = 80.0  # log-mel values are clipped at this many dB below the clip's peak
# With centered frames librosa pads n_fft // 2 samples on both sides, which gives
# 1 + 16000 // 160 = 101 frames.
NUM_FRAMES = 1 + CLIP_SAMPLES // HOP_LENGTH
FEATURE_SHAPE = (N_MFCC, NUM_FRAMES)

VALIDATION_LIST = "validation_list.txt"
TESTING_LIST = "testing_list.txt"
# Clips per feature batch: large enough to vectorize the STFT, small enough to keep the
# waveforms of one batch at about 16 MB.
_BATCH_SIZE = 256
# Floor for the standard deviation in the normalization, so a constant coefficient does not
# cause a division by zero.
_MIN_STD = 1e-6
_CACHE_SIZE = 2


def load_speech_commands(
    folder: pathlib.Path, *, words: Sequence[str] | None = None
) -> DatasetSplits:
    """Load the MFCC features and labels of the Speech Commands dataset in `folder`.

    `words` selects the classes and their order, so class i is ``words[i]``. The default is
    every word folder in sorted order. Inputs have the shape (N, 40, 101): 40 MFCCs over 101
    frames of 30 ms with a 10 ms hop. Each MFCC is normalized with the mean and standard
    deviation of that coefficient over all frames of the train split, and the same values
    are applied to the validation and test splits. Samples are ordered by class, then by
    file name. The split comes from the list files, so it does not depend on a seed.

    Results are cached in memory for the last two (folder, words) combinations, and the
    cached tensors are shared between calls, so callers must not modify them in place. The
    cache does not notice changes on disk, so call `clear_feature_cache` after editing files.

    Raises:
        FileNotFoundError: `folder` or one of its list files does not exist.
        ValueError: an unknown word is requested, a clip is not 16 kHz mono WAV, or the
            train or validation split is empty.
    """
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Speech Commands folder '{folder}' not found; give the folder that contains the "
            "word folders and validation_list.txt, relative to the data root"
        )
    available = list_word_folders(folder)
    selected = _check_words(folder, words, available)
    return _load_cached(folder, selected)


def clear_feature_cache() -> None:
    """Drop the Speech Commands features cached in memory."""
    _load_cached.cache_clear()


def list_word_folders(folder: pathlib.Path) -> tuple[str, ...]:
    """Return the sorted names of the word folders in `folder`, skipping ``_*`` and ``.*``."""
    return tuple(
        sorted(
            entry.name
            for entry in folder.iterdir()
            if entry.is_dir() and not entry.name.startswith(("_", "."))
        )
    )


def read_clip(path: pathlib.Path) -> np.ndarray:
    """Read a 16 kHz mono WAV file and return exactly CLIP_SAMPLES float32 samples.

    Shorter clips are zero-padded at the end and longer clips are cut after one second.
    """
    try:
        samples, sample_rate = soundfile.read(path, dtype="float32", always_2d=True)
    except soundfile.LibsndfileError as error:
        raise ValueError(
            f"audio file '{path}' cannot be read ({error}); replace it with a 16 kHz mono WAV file"
        ) from error
    if sample_rate != SAMPLE_RATE:
        raise ValueError(
            f"audio file '{path}' has a sample rate of {sample_rate} Hz, expected "
            f"{SAMPLE_RATE} Hz; resample it to 16 kHz"
        )
    if samples.shape[1] != 1:
        raise ValueError(
            f"audio file '{path}' has {samples.shape[1]} channels, expected 1; convert it to mono"
        )

    clip = np.zeros(CLIP_SAMPLES, dtype=np.float32)
    length = min(samples.shape[0], CLIP_SAMPLES)
    clip[:length] = samples[:length, 0]
    return clip


def compute_mfcc(waveforms: np.ndarray) -> np.ndarray:
    """Compute MFCCs of shape (N, 40, 101) from waveforms of shape (N, 16000) at 16 kHz.

    The mel power spectrogram is computed for the whole batch. The conversion to dB runs
    per clip, because librosa.power_to_db clips at `top_db` below the maximum of its whole
    input, and a batch-wide maximum would make one clip's features depend on the others.
    """
    if waveforms.ndim != 2 or waveforms.shape[1] != CLIP_SAMPLES:
        raise ValueError(
            f"waveforms have shape {waveforms.shape}, expected (N, {CLIP_SAMPLES}); "
            "pad or cut every clip to one second with read_clip"
        )
    mel_power = librosa.feature.melspectrogram(
        y=waveforms,
        sr=SAMPLE_RATE,
        n_fft=N_FFT,
        win_length=WIN_LENGTH,
        hop_length=HOP_LENGTH,
        center=True,
        n_mels=N_MELS,
        fmin=FMIN,
        fmax=FMAX,
    )
    log_mel = np.stack(
        [librosa.power_to_db(clip_power, ref=1.0, top_db=TOP_DB) for clip_power in mel_power]
    )
    mfcc = librosa.feature.mfcc(S=log_mel, n_mfcc=N_MFCC)
    return mfcc.astype(np.float32, copy=False)


def _check_words(
    folder: pathlib.Path, words: Sequence[str] | None, available: tuple[str, ...]
) -> tuple[str, ...]:
    if words is None:
        if not available:
            raise ValueError(
                f"Speech Commands folder '{folder}' contains no word folders; give the folder "
                "that contains one subfolder of WAV files per word"
            )
        return available
    if isinstance(words, str) or not isinstance(words, Sequence):
        raise ValueError(
            f"words={words!r} is not a list of words; pass a list such as ['yes', 'no']"
        )
    if not words:
        raise ValueError("words is empty; pass at least one word, or omit words to use all")
    for word in words:
        if not isinstance(word, str):
            raise ValueError(f"words contains {word!r}, which is not a string; pass word names")
        if word not in available:
            raise ValueError(
                f"word '{word}' has no folder in '{folder}'; choose from: {', '.join(available)}"
            )
    duplicates = sorted({word for word in words if words.count(word) > 1})
    if duplicates:
        raise ValueError(f"words lists {', '.join(duplicates)} more than once; list each word once")
    return tuple(words)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _load_cached(folder: pathlib.Path, words: tuple[str, ...]) -> DatasetSplits:
    validation_files = _read_list(folder / VALIDATION_LIST)
    testing_files = _read_list(folder / TESTING_LIST)
    overlap = sorted(validation_files & testing_files)
    if overlap:
        raise ValueError(
            f"'{overlap[0]}' and {len(overlap) - 1} other clips are in both {VALIDATION_LIST} "
            f"and {TESTING_LIST} in '{folder}'; list each clip in at most one of them"
        )

    members, found = _assign_splits(folder, words, validation_files, testing_files)
    _warn_missing_listed(folder, words, (validation_files | testing_files) - found)
    _warn_empty_words(folder, words, found)
    word_list = ", ".join(words)
    if not members["train"]:
        raise ValueError(
            f"the train split of '{folder}' is empty for the words {word_list}: no WAV file of "
            f"these words is outside {VALIDATION_LIST} and {TESTING_LIST}; add training clips "
            "or choose other words"
        )
    if not members["val"]:
        raise ValueError(
            f"the validation split of '{folder}' is empty for the words {word_list}: "
            f"{VALIDATION_LIST} lists none of their WAV files; list some clips there or choose "
            "other words"
        )

    features = _extract_features(folder, members)
    mean, std = _train_statistics(features["train"])
    for values in features.values():
        # In place, because the 105,829 clips of Speech Commands v0.02 take about 1.7 GB.
        values -= mean
        values /= std
    labels = {
        split: np.array([label for _, label in members[split]], dtype=np.int64) for split in members
    }

    has_test = bool(members["test"])
    if not has_test:
        logger.info("Speech Commands '%s': no test clips for these words, x_test is None", folder)
    return DatasetSplits(
        x_train=features_to_tensor(features["train"]),
        y_train=labels_to_tensor(labels["train"]),
        x_val=features_to_tensor(features["val"]),
        y_val=labels_to_tensor(labels["val"]),
        x_test=features_to_tensor(features["test"]) if has_test else None,
        y_test=labels_to_tensor(labels["test"]) if has_test else None,
        num_classes=len(words),
        input_shape=FEATURE_SHAPE,
        class_names=words,
    )


def _assign_splits(
    folder: pathlib.Path,
    words: tuple[str, ...],
    validation_files: set[str],
    testing_files: set[str],
) -> tuple[dict[str, list[tuple[pathlib.Path, int]]], set[str]]:
    """Return the (clip path, label) pairs of each split and the set of clips found.

    Clips are named relative to `folder`, e.g. ``yes/0a7c2a8d_nohash_0.wav``.
    """
    members: dict[str, list[tuple[pathlib.Path, int]]] = {"train": [], "val": [], "test": []}
    found: set[str] = set()
    for label, word in enumerate(words):
        for clip_path in sorted((folder / word).iterdir()):
            if not clip_path.is_file() or clip_path.suffix.lower() != ".wav":
                continue
            relative = f"{word}/{clip_path.name}"
            found.add(relative)
            if relative in validation_files:
                members["val"].append((clip_path, label))
            elif relative in testing_files:
                members["test"].append((clip_path, label))
            else:
                members["train"].append((clip_path, label))
    return members, found


def _read_list(path: pathlib.Path) -> set[str]:
    if not path.is_file():
        raise FileNotFoundError(
            f"split list '{path}' not found; the Speech Commands folder needs "
            f"{VALIDATION_LIST} and {TESTING_LIST} (an empty file means no clips in that split)"
        )
    entries = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = line.strip().replace("\\", "/")
        if entry:
            entries.add(entry)
    return entries


def _warn_missing_listed(folder: pathlib.Path, words: tuple[str, ...], missing: set[str]) -> None:
    # Entries of words that were not selected are expected to be missing from `found`.
    relevant = sorted(entry for entry in missing if entry.split("/", 1)[0] in words)
    if relevant:
        logger.warning(
            "Speech Commands '%s': %d listed clips do not exist, e.g. '%s'",
            folder,
            len(relevant),
            relevant[0],
        )


def _warn_empty_words(folder: pathlib.Path, words: tuple[str, ...], found: set[str]) -> None:
    words_with_clips = {entry.split("/", 1)[0] for entry in found}
    for word in words:
        if word not in words_with_clips:
            logger.warning(
                "Speech Commands '%s': word folder '%s' contains no WAV files", folder, word
            )


def _extract_features(
    folder: pathlib.Path, members: dict[str, list[tuple[pathlib.Path, int]]]
) -> dict[str, np.ndarray]:
    total = sum(len(split_members) for split_members in members.values())
    logger.info("Speech Commands '%s': computing MFCCs of %d clips", folder, total)
    started = time.perf_counter()

    features: dict[str, np.ndarray] = {}
    for split, split_members in members.items():
        values = np.empty((len(split_members), *FEATURE_SHAPE), dtype=np.float32)
        for start in range(0, len(split_members), _BATCH_SIZE):
            batch = split_members[start : start + _BATCH_SIZE]
            waveforms = np.stack([read_clip(clip_path) for clip_path, _ in batch])
            values[start : start + len(batch)] = compute_mfcc(waveforms)
        features[split] = values

    logger.info(
        "Speech Commands '%s': computed MFCCs of %d clips in %.1f s",
        folder,
        total,
        time.perf_counter() - started,
    )
    return features


def _train_statistics(train_features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Statistics per coefficient over all clips and frames, shaped (40, 1) to broadcast.
    mean = train_features.mean(axis=(0, 2), dtype=np.float64)[:, np.newaxis]
    std = train_features.std(axis=(0, 2), dtype=np.float64)[:, np.newaxis]
    return mean.astype(np.float32), np.maximum(std, _MIN_STD).astype(np.float32)
