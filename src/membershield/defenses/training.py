"""Training-time defenses: a recipe that trains the declared model with a defense's change to the loop.

A PyTorch recipe file that declares its training (``vectorised_spec()``, see
``membershield.training.vectorised``) tells membershield everything needed to train the same model
itself: the untrained module from ``build``, then Adam (or AdamW) on shuffled minibatches for ``epochs``
epochs. :func:`train_plain` is that loop, run sequentially; with the defense ``none`` it gives the
recipe's own model (same initial weights, same batches, same updates). A :class:`TrainingDefense`
changes one part of it (the loss, the optimiser, the model, the data each phase sees, or, for DP-SGD, the
whole step), and :class:`DefendedRecipe` wraps the result as an ordinary :class:`Recipe`. The audit
trains the target *and every reference model* from it, so the attacker knows the defense and adapts
to it, which is how a defense must be evaluated.

Every defense reports what it did (``defense_report``): its parameters, plus the privacy accounting for
DP-SGD, so an audit of a defended model carries its theoretical guarantee next to the measured leakage.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from membershield.defenses.memguard import CITATION as MEMGUARD_CITATION
from membershield.defenses.memguard import MemGuardSettings, memguard_from_recipe
from membershield.defenses.output import HardenedTarget, OutputPolicy
from membershield.errors import ModelLoadError
from membershield.targets.base import Recipe
from membershield.targets.torch import TorchTarget, features_as_float32
from membershield.training.vectorised import VectorisedSpec

LOOP_VERSION = "plain-loop-v1"  # part of every defended recipe's identity: a change here invalidates caches

Objective = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
"""``objective(logits, labels, epoch)``: the scalar loss of one minibatch."""
Augment = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""``augment(inputs, labels) -> (inputs, targets)``: one minibatch as the model sees it; targets may be class
indices or class probabilities, which cross-entropy takes alike."""


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, epoch: int) -> torch.Tensor:
    return nn.functional.cross_entropy(logits, labels)


def make_optimiser(spec: VectorisedSpec, parameters: Any, weight_decay: float | None = None) -> torch.optim.Optimizer:
    """The spec's optimiser (Adam or AdamW with its settings); ``weight_decay`` overrides the spec's."""
    cls = torch.optim.AdamW if spec.optimizer == "adamw" else torch.optim.Adam
    decay = spec.weight_decay if weight_decay is None else weight_decay
    return cls(parameters, lr=spec.lr, betas=spec.betas, eps=spec.eps, weight_decay=decay)


def minibatches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """One epoch: a fresh permutation of ``range(n)`` cut into consecutive slices of ``batch_size``."""
    order = torch.randperm(n, generator=generator)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def build_model(spec: VectorisedSpec, X: np.ndarray, y: np.ndarray, n_classes: int, seed: int) -> nn.Module:
    """The spec's untrained model for rows ``X``, initialised from ``seed`` as membershield runs a recipe."""
    torch.manual_seed(seed)
    module = spec.build(X, y, n_classes, seed)
    if not isinstance(module, nn.Module):
        raise TypeError(f"build returned {type(module).__name__}; it must return an nn.Module")
    return module


def train_plain(
    spec: VectorisedSpec,
    model: nn.Module,
    X: np.ndarray,
    y: np.ndarray,
    seed: int,
    objective: Objective = cross_entropy,
    *,
    weight_decay: float | None = None,
    after_epoch: Callable[[int, nn.Module], bool] | None = None,
    augment: Augment | None = None,
) -> nn.Module:
    """Train ``model`` in place as the spec declares, minimising ``objective``; return it in eval mode.

    Each epoch shuffles the rows with a generator seeded by ``seed`` and steps once per slice of
    ``spec.batch_size`` rows (the last one possibly smaller). ``after_epoch(epoch, model)`` returning
    True stops training early.
    """
    features = torch.tensor(np.asarray(X), dtype=torch.float32)
    labels = torch.tensor(np.asarray(y), dtype=torch.int64)
    generator = torch.Generator().manual_seed(seed)
    optimiser = make_optimiser(spec, model.parameters(), weight_decay)
    model.train()
    for epoch in range(spec.epochs):
        for batch in minibatches(len(labels), spec.batch_size, generator):
            inputs, targets = features[batch], labels[batch]
            if augment is not None:
                inputs, targets = augment(inputs, targets)
            optimiser.zero_grad()
            objective(model(inputs), targets, epoch).backward()
            optimiser.step()
        if after_epoch is not None:
            stop = after_epoch(epoch, model)
            model.train()  # the callback may have switched to eval mode to validate
            if stop:
                break
    return model.eval()


@dataclass
class Trained:
    """A trained module and what the defense reports about its training (JSON-serialisable)."""

    module: nn.Module
    report: dict[str, Any] = field(default_factory=dict)


class TrainingDefense:
    """A change to the declared training loop. Subclasses set ``name`` and ``citation`` and override
    :meth:`objective` (a different loss), or :meth:`train` (anything else)."""

    name: ClassVar[str]
    citation: ClassVar[str] = ""
    # A defense whose released model also rewrites its answers (HAMP) hides the confidences a label-only
    # attacker does without, so compare attacks it with label-only attacks too.
    modifies_outputs: ClassVar[bool] = False

    def params(self) -> dict[str, Any]:
        return {}

    def label(self) -> str:
        """The canonical spec string, defaults included: ``dp:epsilon=1,delta=1e-05,...``."""
        values = self.params()
        if not values:
            return self.name
        return self.name + ":" + ",".join(f"{k}={format_value(v)}" for k, v in values.items())

    def identity(self) -> str:
        return json.dumps({"defense": self.name, **self.params()}, sort_keys=True)

    def check(self, spec: VectorisedSpec) -> None:
        """Raise ConfigError when the declared training cannot take this defense."""

    def objective(self, n_classes: int) -> Objective:
        return cross_entropy

    def train(self, spec: VectorisedSpec, X: np.ndarray, y: np.ndarray, n_classes: int, seed: int) -> Trained:
        model = build_model(spec, X, y, n_classes, seed)
        return Trained(train_plain(spec, model, X, y, seed, self.objective(n_classes)))

    def report(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params(), "citation": self.citation}


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class NoDefense(TrainingDefense):
    """The declared training, unchanged: the baseline every defense is compared with."""

    name = "none"


def class_indices(labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    index = {c: i for i, c in enumerate(np.asarray(classes).tolist())}
    return np.array([index[v] for v in np.asarray(labels).tolist()], dtype=np.int64)


class DefendedRecipe:
    """A recipe that trains ``base_spec``'s model with ``defense``.

    ``source`` names where the spec came from (a recipe's identity) so that the identity, and with it
    the reference-model cache key, changes when the recipe file does. ``recipe_file`` (``path.py:function``)
    is the file that declared the spec, when it came from one: a worker process or Ray task re-imports the
    spec's ``build`` from it (see ``__reduce_ex__``). ``defense_report`` is the report of the model
    trained with seed ``report_seed`` (the audit's target; default: the first model trained), with the
    median wall-clock seconds of the trainings in this process (``training_fits`` of them: the target
    and, on the local backend, the reference models).
    """

    def __init__(
        self,
        base_spec: VectorisedSpec,
        defense: TrainingDefense,
        *,
        source: str | None = None,
        report_seed: int | None = None,
        recipe_file: str | None = None,
    ) -> None:
        defense.check(base_spec)
        self.spec = base_spec
        self.defense = defense
        self.source = source
        self.report_seed = report_seed
        self.recipe_file = recipe_file
        self.kind = "torch" if defense.name == "none" else f"torch+{defense.name}"
        self.reports: dict[int, dict[str, Any]] = {}

    def fit(self, features: pd.DataFrame, labels: np.ndarray, classes: np.ndarray, seed: int) -> TorchTarget:
        y = class_indices(labels, classes)
        X = features_as_float32(features)
        start = time.perf_counter()
        with torch.random.fork_rng():
            trained = self.defense.train(self.spec, X, y, len(classes), seed)
        report = {**self.defense.report(), **trained.report, "training_seconds": time.perf_counter() - start}
        self.reports.setdefault(seed, report)
        return TorchTarget(trained.module.eval(), np.asarray(classes))

    @property
    def defense_report(self) -> dict[str, Any] | None:
        if self.report_seed is not None:
            report = self.reports.get(self.report_seed)
        else:
            report = next(iter(self.reports.values()), None)
        if report is None:
            return None
        # One fit's time on a shared machine swings several-fold (the first also pays one-off set-up), so
        # the time reported is the median over every model this process trained with the recipe.
        seconds = [r["training_seconds"] for r in self.reports.values()]
        return {**report, "training_seconds": float(np.median(seconds)), "training_fits": len(seconds)}

    def __reduce_ex__(self, protocol: Any) -> Any:
        if self.recipe_file is None:
            return super().__reduce_ex__(protocol)
        # A recipe file is imported under a private module name that other processes do not have, so its
        # build function cannot be pickled by reference; the file is imported again there instead, and
        # the training settings travel as values (they may differ from what the file declares).
        settings = {f.name: getattr(self.spec, f.name) for f in fields(self.spec) if f.name != "build"}
        return _rebuild_defended, (self.recipe_file, settings, self.defense, self.source, self.report_seed)

    def identity(self) -> str:
        s = self.spec
        base = self.source or f"spec:{getattr(s.build, '__module__', '?')}.{getattr(s.build, '__qualname__', '?')}"
        training = f"{s.epochs}:{s.batch_size}:{s.lr!r}:{s.weight_decay!r}:{s.optimizer}:{s.betas!r}:{s.eps!r}"
        return f"defended:{LOOP_VERSION}:{base}:{training}:{self.defense.identity()}"


def _rebuild_defended(
    recipe_file: str, settings: dict[str, Any], defense: TrainingDefense, source: str | None, report_seed: int | None
) -> DefendedRecipe:
    from membershield.targets.torch import load_recipe
    from membershield.training.vectorised import vectorised_spec_of

    spec = vectorised_spec_of(load_recipe(recipe_file).function)
    if spec is None:
        raise ModelLoadError(f"recipe {recipe_file} no longer declares vectorised_spec()")
    return DefendedRecipe(
        replace(spec, **settings), defense, source=source, report_seed=report_seed, recipe_file=recipe_file
    )


class HardenedRecipe:
    """A recipe whose models answer through output hardening (``defenses.output``) and, with ``memguard``
    settings, MemGuard's perturbation (``defenses.memguard``).

    The references are hardened too: an attacker calibrating on reference models sees the same kind of
    outputs as the target gives, and with MemGuard each reference trains its own defense classifier on
    its own rows. The predicted label never changes, so label-only attacks see exactly what they would
    see without the hardening. ``defense_report`` is that of the model trained with seed ``report_seed``
    (default: the first one trained).
    """

    def __init__(
        self,
        inner: Recipe,
        policy: OutputPolicy,
        *,
        memguard: MemGuardSettings | None = None,
        report_seed: int | None = None,
    ) -> None:
        self.inner = inner
        self.policy = policy
        self.memguard = memguard
        self.report_seed = report_seed
        self.kind = f"{inner.kind}+hardened"
        # What an auditor may query: the hardened answers only, never the weights behind them.
        self.target_access = "label-only" if policy.label_only else "black-box"
        self.reports: dict[int, dict[str, Any]] = {}

    def fit(self, features: pd.DataFrame, labels: np.ndarray, classes: np.ndarray, seed: int) -> HardenedTarget:
        start = time.perf_counter()
        guard, report = None, {}
        if self.memguard is not None:
            guard, report = memguard_from_recipe(self.inner, features, labels, classes, seed, self.memguard)
        target = HardenedTarget(self.inner.fit(features, labels, classes, seed), self.policy, seed=seed, memguard=guard)
        self.reports.setdefault(seed, {**report, "seconds": time.perf_counter() - start})
        return target

    @property
    def defense_report(self) -> dict[str, Any]:
        inner = getattr(self.inner, "defense_report", None)
        if self.report_seed is not None:
            mine = self.reports.get(self.report_seed, {})
        else:
            mine = next(iter(self.reports.values()), {})
        report: dict[str, Any] = {
            "name": "output",
            "params": {k: v for k, v in self.policy.to_dict().items() if v not in (None, False)},
            "changes_labels": False,
            "note": "hides or coarsens confidences only; the predicted label is unchanged",
        }
        if inner:
            report["training_seconds"] = inner.get("training_seconds")
            report["training_fits"] = inner.get("training_fits")
            if inner.get("name") != "none":
                report["training"] = inner
        if self.memguard is not None:
            report.update(name="memguard", citation=MEMGUARD_CITATION)
            report["params"] = {**report["params"], **self.memguard.to_dict()}
            report["memguard"] = {k: v for k, v in mine.items() if k != "seconds"}
            # The deployed cost includes the shadow model and the defense classifier.
            if "seconds" in mine:
                report["training_seconds"] = mine["seconds"]
                report["training_fits"] = 1
        return report

    def identity(self) -> str:
        memguard = f":memguard:{json.dumps(self.memguard.to_dict(), sort_keys=True)}" if self.memguard else ""
        return f"hardened:{self.inner.identity()}:{json.dumps(self.policy.to_dict(), sort_keys=True)}{memguard}"
