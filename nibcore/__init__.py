"""nibcore — Narrowing Information Bottleneck attribution for open_clip CLIP models."""

from . import hf, methods  # noqa: F401  (registers the Hugging Face loader and the methods)
from .attribution import Attribution, explain
from .base import METHODS
from .evaluation import evaluate, summarise
from .models import ClipModel, build_clip, load_model
from .schedules import SCHEDULES

__all__ = ["METHODS", "SCHEDULES", "Attribution", "ClipModel", "build_clip", "evaluate", "explain",
           "load_model", "summarise"]
__version__ = "0.1.0"
