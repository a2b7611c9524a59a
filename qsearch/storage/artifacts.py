"""Trained model weights, kept in a qsearch table beside Optuna's tables.

They live in the database rather than on a file system, so workers on
other machines need nothing but the database URL.
"""

from __future__ import annotations

import io
import logging

import sqlalchemy as sa
import torch

from qsearch.storage.engine import get_engine
from qsearch.storage.locks import create_schema

logger = logging.getLogger(__name__)

_metadata = sa.MetaData()
trial_weights = sa.Table(
    "qsearch_trial_weights",
    _metadata,
    sa.Column("study_name", sa.String(512), primary_key=True),
    sa.Column("trial_number", sa.Integer, primary_key=True),
    sa.Column("state_dict", sa.LargeBinary, nullable=False),
)


# URLs whose weights table this process has created or found.
_tables_ready: set[str] = set()


def _ensure_table(url: str) -> sa.Engine:
    engine = get_engine(url)
    if url not in _tables_ready:
        create_schema(url, lambda: _metadata.create_all(engine, checkfirst=True))
        _tables_ready.add(url)
    return engine


def save_state_dict(
    url: str, study_name: str, trial_number: int, state_dict: dict[str, torch.Tensor]
) -> None:
    """Store a trial's state_dict, replacing any earlier one for that trial."""
    buffer = io.BytesIO()
    torch.save({key: value.detach().cpu() for key, value in state_dict.items()}, buffer)
    engine = _ensure_table(url)
    key = (trial_weights.c.study_name == study_name) & (
        trial_weights.c.trial_number == trial_number
    )
    with engine.begin() as connection:
        connection.execute(sa.delete(trial_weights).where(key))
        connection.execute(
            sa.insert(trial_weights).values(
                study_name=study_name, trial_number=trial_number, state_dict=buffer.getvalue()
            )
        )
    logger.debug("stored weights of trial %d of study %s", trial_number, study_name)


def load_state_dict(url: str, study_name: str, trial_number: int) -> dict[str, torch.Tensor]:
    """Load a trial's state_dict; raise LookupError when none was stored."""
    engine = _ensure_table(url)
    key = (trial_weights.c.study_name == study_name) & (
        trial_weights.c.trial_number == trial_number
    )
    with engine.connect() as connection:
        row = connection.execute(sa.select(trial_weights.c.state_dict).where(key)).first()
    if row is None:
        raise LookupError(
            f"no trained weights stored for trial {trial_number} of study {study_name!r}; "
            "only completed trials that were trained have weights."
        )
    # weights_only: never unpickle arbitrary objects from the database.
    return torch.load(io.BytesIO(row[0]), weights_only=True)


def delete_study_weights(url: str, study_name: str) -> None:
    """Remove every stored state_dict of a study."""
    engine = _ensure_table(url)
    with engine.begin() as connection:
        connection.execute(sa.delete(trial_weights).where(trial_weights.c.study_name == study_name))
