"""Built-in models, each built through one factory in float or QAT form."""

from qsearch.models.blocks import LayerBuilder
from qsearch.models.factory import MODELS, build_model

__all__ = ["MODELS", "LayerBuilder", "build_model"]
