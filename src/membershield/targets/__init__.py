"""Models we can query (Targets), how to train more like them (Recipes), and the kinds ``--model`` names."""

from membershield.targets.base import Recipe, Target
from membershield.targets.kind import LoadedModel, TargetKind
from membershield.targets.registry import KINDS, load_model, resolve

__all__ = ["KINDS", "LoadedModel", "Recipe", "Target", "TargetKind", "load_model", "resolve"]
