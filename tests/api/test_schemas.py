"""The API's literal types stay in step with the registry statuses and the trial metrics."""

from __future__ import annotations

import typing

from api.schemas import StudyStatus, TrialSortKey
from qsearch.search.results import METRIC_ATTRS
from qsearch.service.registry import STATUSES


def test_study_status_matches_registry() -> None:
    assert typing.get_args(StudyStatus) == STATUSES


def test_trial_sort_keys_match_metrics() -> None:
    assert typing.get_args(TrialSortKey) == ("number", *METRIC_ATTRS)
