"""nibcore — Narrowing Information Bottleneck attribution for open_clip CLIP models."""

from . import methods  # noqa: F401  (registers the methods)
from .attribution import METHODS, Attribution, explain
from .evaluation import evaluate, summarise
from .models import ClipModel, build_clip, load_model
from .schedules import SCHEDULES

__all__ = ["METHODS", "SCHEDULES", "Attribution", "ClipModel", "build_clip", "evaluate", "explain",
           "load_model", "summarise"]
__version__ = "0.1.0"
