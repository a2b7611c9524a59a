"""The quantization search: study spec, Optuna objective, study runner and results."""

from qsearch.search.results import StudyResult, TrialRecord
from qsearch.search.study import StudyConflictError, open_study, run_study

__all__ = ["StudyConflictError", "StudyResult", "TrialRecord", "open_study", "run_study"]
