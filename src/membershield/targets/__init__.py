"""Models we can query (Targets) and how to train more like them (Recipes)."""

from membershield.targets.base import Recipe, Target
from membershield.targets.loading import LoadedModel, load_model

__all__ = ["LoadedModel", "Recipe", "Target", "load_model"]
