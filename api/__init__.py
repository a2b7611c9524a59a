"""The qsearch HTTP API: a FastAPI app over the study registry and Optuna's storage."""

from api.config import Settings
from api.main import create_app

__all__ = ["Settings", "create_app"]
