"""Server settings: the storage, the API token, the data root and the caps on submitted studies.

Every setting has a `QSEARCH_*` environment variable; `qsearch serve`
overrides the storage and the data root from its command line.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from qsearch.storage import DEFAULT_STORAGE

logger = logging.getLogger(__name__)

# A study spec is a few kilobytes; the same limit applies to the spec parser.
MAX_BODY_BYTES = 1 << 20

_ENV_NAMES = {
    "storage_url": "QSEARCH_STORAGE",
    "api_token": "QSEARCH_API_TOKEN",
    "data_root": "QSEARCH_DATA_ROOT",
    "max_n_trials": "QSEARCH_MAX_N_TRIALS",
    "max_epochs": "QSEARCH_MAX_EPOCHS",
    "max_model_parameters": "QSEARCH_MAX_MODEL_PARAMETERS",
    "max_active_studies": "QSEARCH_MAX_ACTIVE_STUDIES",
    "retry_after_s": "QSEARCH_RETRY_AFTER_S",
}


class Settings(BaseModel):
    """Configuration of one API process."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    storage_url: str = DEFAULT_STORAGE
    # None disables authentication; `qsearch serve` then binds loopback only.
    api_token: SecretStr | None = None
    data_root: Path = Field(default_factory=Path.cwd)
    max_n_trials: int = Field(default=1000, ge=1)
    # Epochs of one trial, whether fixed in training.epochs or searched.
    max_epochs: int = Field(default=200, ge=1)
    # Parameters of the float model, counted without allocating weights.
    max_model_parameters: int = Field(default=5_000_000, ge=1)
    # Queued plus running studies; a POST beyond it gets 422.
    max_active_studies: int = Field(default=10, ge=1)
    # Seconds in the Retry-After header of a 503 response.
    retry_after_s: int = Field(default=5, ge=1)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Read settings from `QSEARCH_*` variables; `overrides` that are not None win.

        Raises pydantic.ValidationError naming the variable's field when a value is invalid.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field, variable in _ENV_NAMES.items():
            # An empty variable counts as unset, so `QSEARCH_API_TOKEN=` does not
            # enable a token that every client would match with an empty header.
            if environ.get(variable):
                values[field] = environ[variable]
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls.model_validate(values)

    def token_bytes(self) -> bytes | None:
        """Return the API token as bytes for a constant-time comparison, or None."""
        if self.api_token is None:
            return None
        return self.api_token.get_secret_value().encode()
