"""Storage: the Optuna RDB storage and qsearch's own tables in the same database."""

from qsearch.storage.artifacts import load_state_dict, save_state_dict
from qsearch.storage.engine import DEFAULT_STORAGE, check_database_exists, open_optuna_storage

__all__ = [
    "DEFAULT_STORAGE",
    "check_database_exists",
    "load_state_dict",
    "open_optuna_storage",
    "save_state_dict",
]
