"""Training reference models: who trains on what, and a content-addressed cache of their outputs."""

from membershield.training.cache import LogitCache
from membershield.training.plan import membership_plan
from membershield.training.references import ReferenceJob, train_or_load

__all__ = ["LogitCache", "ReferenceJob", "membership_plan", "train_or_load"]
