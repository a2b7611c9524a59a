"""qsearch: search over quantization settings for small neural networks.

`qsearch.quant` depends on torch only; importing it must not pull in
Optuna, so the search API below is loaded on first use.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["StudyResult", "run_study"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from qsearch import search

        return getattr(search, name)
    raise AttributeError(f"module 'qsearch' has no attribute {name!r}")
