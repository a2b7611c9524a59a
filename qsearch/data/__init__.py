"""Datasets for the quantization search, loaded as train, validation and test tensors.

Nothing is downloaded: ``digits`` ships with scikit-learn, and ``npz`` and
``speech_commands`` read files below a data root folder.
"""

from qsearch.data.paths import resolve_data_path
from qsearch.data.registry import DATASET_NAMES, load_dataset
from qsearch.data.splits import DatasetSplits

__all__ = ["DATASET_NAMES", "DatasetSplits", "load_dataset", "resolve_data_path"]
