"""The scikit-learn digits dataset: 1,797 grayscale 8x8 images of the digits 0 to 9.

The images ship inside scikit-learn, so nothing is downloaded.
"""

from __future__ import annotations

import math

import numpy as np
import sklearn.datasets
from sklearn.model_selection import train_test_split

from qsearch.data.splits import DatasetSplits, features_to_tensor, labels_to_tensor

DEFAULT_VAL_FRACTION = 0.15
DEFAULT_TEST_FRACTION = 0.15

# Pixel values in load_digits() are integers from 0 to 16.
PIXEL_MAX = 16
# Largest value of a signed 8-bit fixed-point number with 7 fraction bits (Q0.7).
INPUT_MAX = 1.0 - 2.0**-7
INPUT_SHAPE = (1, 8, 8)
CLASS_NAMES = tuple(str(digit) for digit in range(10))


def scale_pixels(pixels: np.ndarray) -> np.ndarray:
    """Map pixel values 0..16 to float32 values in [-1, 1).

    The map is x / 16 * 2 - 1, and the result for 16 is clipped from 1.0 to 1 - 2**-7 =
    0.9921875. The values 0..15 become multiples of 1/8 in [-1, 0.875], so every output is
    exactly representable as a signed 8-bit fixed-point number with 7 fraction bits.
    """
    scaled = pixels.astype(np.float32) / PIXEL_MAX * 2.0 - 1.0
    return np.minimum(scaled, np.float32(INPUT_MAX))


def load_digits_splits(
    *,
    seed: int,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> DatasetSplits:
    """Load the digits images and split them into stratified train, validation and test sets.

    The validation and test sets get round(fraction * 1797) images each, and the train set
    gets the rest. The same seed always gives the same split. Inputs have the shape
    (N, 1, 8, 8) and the values described in `scale_pixels`.
    """
    val_fraction = _check_fraction("val_fraction", val_fraction)
    test_fraction = _check_fraction("test_fraction", test_fraction)

    pixels, labels = sklearn.datasets.load_digits(return_X_y=True)
    num_samples = len(labels)
    num_classes = len(CLASS_NAMES)
    num_test = round(test_fraction * num_samples)
    num_val = round(val_fraction * num_samples)
    num_train = num_samples - num_test - num_val
    _check_split_sizes(
        num_samples=num_samples,
        num_classes=num_classes,
        sizes={"test_fraction": num_test, "val_fraction": num_val},
        num_train=num_train,
    )

    # Integer sizes make train_test_split produce exactly the counts computed above.
    indices = np.arange(num_samples)
    rest_indices, test_indices = train_test_split(
        indices, test_size=num_test, stratify=labels, random_state=seed
    )
    train_indices, val_indices = train_test_split(
        rest_indices, test_size=num_val, stratify=labels[rest_indices], random_state=seed
    )

    images = scale_pixels(pixels).reshape(-1, *INPUT_SHAPE)
    return DatasetSplits(
        x_train=features_to_tensor(images[train_indices]),
        y_train=labels_to_tensor(labels[train_indices]),
        x_val=features_to_tensor(images[val_indices]),
        y_val=labels_to_tensor(labels[val_indices]),
        x_test=features_to_tensor(images[test_indices]),
        y_test=labels_to_tensor(labels[test_indices]),
        num_classes=num_classes,
        input_shape=INPUT_SHAPE,
        class_names=CLASS_NAMES,
    )


def _check_fraction(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(
            f"{name}={value!r} is not a number; give a fraction between 0 and 0.5, e.g. 0.15"
        )
    fraction = float(value)
    if not math.isfinite(fraction) or not 0.0 < fraction < 0.5:
        raise ValueError(
            f"{name}={value!r} is out of range; give a fraction between 0 and 0.5 "
            "(both excluded), e.g. 0.15"
        )
    return fraction


def _check_split_sizes(
    *, num_samples: int, num_classes: int, sizes: dict[str, int], num_train: int
) -> None:
    # A stratified split needs at least one sample of every class in each part. Because each
    # fraction is below 0.5, their sum is below 1, but the train set can still end up too small.
    for option, size in sizes.items():
        if size < num_classes:
            # Smallest fraction, rounded up to 4 decimals, for which round() gives num_classes.
            minimum = math.ceil((num_classes - 0.5) / num_samples * 10_000) / 10_000
            raise ValueError(
                f"{option} gives {size} of {num_samples} samples, fewer than the {num_classes} "
                f"classes that a stratified split needs; set {option} to at least {minimum:.4f}"
            )
    if num_train < num_classes:
        raise ValueError(
            f"val_fraction and test_fraction leave {num_train} of {num_samples} samples for "
            f"training, fewer than the {num_classes} classes; lower one or both fractions"
        )
