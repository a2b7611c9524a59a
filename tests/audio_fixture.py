"""A tiny Speech Commands folder, written at test time from synthetic tones."""

from __future__ import annotations

import pathlib

import numpy as np
import soundfile

SAMPLE_RATE = 16_000
# One tone frequency per word, so the classes differ in their spectra.
WORD_TONES_HZ = {"yes": 440.0, "no": 880.0, "up": 1_760.0}
# Clip lengths in samples. Clip 1 is shorter than one second and gets padded, clip 2 is
# longer and gets cut.
CLIP_LENGTHS = (16_000, 12_000, 20_000, 8_000)


def make_tone(frequency_hz: float, num_samples: int, seed: int) -> np.ndarray:
    """Return a float32 sine tone of amplitude 0.5 with a little Gaussian noise."""
    times = np.arange(num_samples) / SAMPLE_RATE
    noise = np.random.default_rng(seed).normal(scale=0.01, size=num_samples)
    return (0.5 * np.sin(2 * np.pi * frequency_hz * times) + noise).astype(np.float32)


def write_speech_commands(root: pathlib.Path) -> pathlib.Path:
    """Write a Speech Commands folder with 3 words x 4 clips under `root` and return it.

    For every word, clip 1 is listed in validation_list.txt, clip 2 in testing_list.txt,
    and clips 0 and 3 are training clips. The folder also contains a _background_noise_
    folder, a hidden folder and a README file, none of which are classes.
    """
    folder = root / "speech_commands"
    for word_index, (word, frequency_hz) in enumerate(WORD_TONES_HZ.items()):
        (folder / word).mkdir(parents=True)
        for clip_index, length in enumerate(CLIP_LENGTHS):
            tone = make_tone(frequency_hz, length, seed=10 * word_index + clip_index)
            soundfile.write(folder / word / f"clip{clip_index}_nohash_0.wav", tone, SAMPLE_RATE)

    (folder / "_background_noise_").mkdir()
    soundfile.write(
        folder / "_background_noise_" / "white_noise.wav",
        make_tone(0.0, 32_000, seed=99),
        SAMPLE_RATE,
    )
    (folder / ".cache").mkdir()
    (folder / "README.md").write_text("Tiny Speech Commands fixture\n", encoding="utf-8")

    validation = [f"{word}/clip1_nohash_0.wav" for word in WORD_TONES_HZ]
    testing = [f"{word}/clip2_nohash_0.wav" for word in WORD_TONES_HZ]
    (folder / "validation_list.txt").write_text("\n".join(validation) + "\n", encoding="utf-8")
    (folder / "testing_list.txt").write_text("\n".join(testing) + "\n", encoding="utf-8")
    return folder
