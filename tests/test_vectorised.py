"""Training K models at once gives the models K separate trainings would give."""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import make_classification
from torch import nn

from membershield.targets.torch import TorchTarget, load_recipe
from membershield.training import vectorised
from membershield.training.vectorised import (
    VectorisedSpec,
    _LayerwiseEnsemble,
    train_vectorised,
    vectorised_spec_of,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "torch_mlp.py"


@pytest.fixture(autouse=True)
def one_thread():
    # Small models: threads buy nothing here and slow every step down when the cores are shared.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch):
    """A private copy of the example recipe module with a narrower network; tests change its settings."""
    loader = importlib.util.spec_from_file_location("vectorised_test_torch_mlp", EXAMPLE)
    module = importlib.util.module_from_spec(loader)
    monkeypatch.setitem(sys.modules, loader.name, module)
    loader.loader.exec_module(module)
    module.HIDDEN = 64
    return module


@pytest.fixture(scope="module")
def task() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    X, y = make_classification(
        n_samples=900, n_features=20, n_informative=10, n_classes=4, class_sep=1.5, random_state=0
    )
    X = X.astype(np.float32)
    return X[:600], y[:600], X[600:], y[600:]


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def _max_difference(a: nn.Module, b: nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max(float((sa[k].float() - sb[k].float()).abs().max()) for k in sa)


def _predict(model: nn.Module, X: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(torch.from_numpy(X))


class _Wrapped(nn.Module):
    """A network inside a container of another type than ``nn.Sequential``."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


@pytest.mark.parametrize("layerwise", [True, False], ids=["layerwise", "vmap"])
def test_matches_the_recipe_model_for_model_with_unequal_training_sets(example, task, layerwise: bool) -> None:
    # The recipe's loop and the vectorised one take the same batches from the same initial weights, so
    # the models agree up to rounding. The sets differ in size (one smaller than a batch, none a multiple
    # of it): models with fewer steps per epoch must be skipped, not stepped with a zero gradient. Both
    # ways of running the ensemble are checked: layer by layer (the recipe's Sequential of linear layers)
    # and the general vmap (the same network wrapped in another container type).
    example.EPOCHS = 3
    X, y, _, _ = task
    rng = np.random.default_rng(0)
    sizes = [40, 150, 301, 450]
    masks = np.zeros((len(sizes), len(y)), dtype=bool)
    for k, size in enumerate(sizes):
        masks[k, rng.choice(len(y), size, replace=False)] = True
    seeds = [11, 12, 13, 14]
    spec = vectorised_spec_of(example.recipe)
    assert spec is not None and spec.epochs == 3 and spec.build is example.build
    if not layerwise:
        spec = replace(spec, build=lambda X, y, n_classes, seed: _Wrapped(example.build(X, y, n_classes, seed)))
    probe = spec.build(X, y, 4, 0)
    assert (_LayerwiseEnsemble.of([probe]) is not None) == layerwise
    together = train_vectorised(spec, X, y, 4, masks, seeds)
    for model, mask, seed in zip(together, masks, seeds, strict=True):
        torch.manual_seed(seed)
        alone = example.recipe(X[mask], y[mask], n_classes=4, seed=seed)
        model = model if layerwise else model.inner
        assert _max_difference(model, alone) < 1e-4
        np.testing.assert_allclose(_predict(model, X), _predict(alone, X), atol=1e-3)


def test_accuracy_and_loss_match_separate_training_in_distribution(example, task) -> None:
    # Same masks; the sequential arm uses fresh seeds (with the same seeds the two arms coincide to
    # rounding, tested above), so this compares against independent training.
    example.EPOCHS = 10
    X, y, X_test, y_test = task
    K = 6
    masks = np.random.default_rng(1).random((K, len(y))) < 0.5
    together = train_vectorised(vectorised_spec_of(example.recipe), X, y, 4, masks, list(range(K)))
    alone = [example.recipe(X[m], y[m], n_classes=4, seed=100 + k) for k, m in enumerate(masks)]

    def summary(models: list[nn.Module]) -> tuple[np.ndarray, np.ndarray]:
        accuracy, loss = [], []
        for model, mask in zip(models, masks, strict=True):
            accuracy.append(float((_predict(model, X_test).argmax(1).numpy() == y_test).mean()))
            logits = _predict(model, X[mask])
            loss.append(float(nn.functional.cross_entropy(logits, torch.from_numpy(y[mask]))))
        return np.array(accuracy), np.array(loss)

    for a, b, floor in zip(summary(together), summary(alone), (0.02, 0.02), strict=True):
        # Models differ by their subsets and seeds, so their mean differs between two groups of K by
        # chance: allow 3 standard errors of the difference (from the spread across models) plus a small
        # floor, since with K = 6 the spread itself is estimated roughly and may come out near zero.
        allowed = 3 * np.sqrt(a.var(ddof=1) / K + b.var(ddof=1) / K) + floor
        assert abs(a.mean() - b.mean()) <= allowed, (a, b)
    assert summary(together)[0].mean() > 0.5  # and they learned the task (chance: 0.25)


def _memorising_spec(epochs: int = 40) -> VectorisedSpec:
    def build(X: np.ndarray, y: np.ndarray, n_classes: int, seed: int) -> nn.Module:
        return nn.Sequential(nn.Linear(X.shape[1], 128), nn.ReLU(), nn.Linear(128, n_classes))

    return VectorisedSpec(build=build, epochs=epochs, batch_size=32, lr=3e-3)


def test_each_model_learns_its_own_rows_only() -> None:
    # Labels are noise, so a model can only get a row right by having trained on it: near-perfect on its
    # own rows, chance (1/4) on the others. A model that saw other models' rows would fit those too.
    rng = np.random.default_rng(2)
    X = rng.normal(size=(240, 20)).astype(np.float32)
    y = rng.integers(0, 4, size=240)
    masks = np.stack([rng.random(240) < 0.5 for _ in range(5)])
    models = train_vectorised(_memorising_spec(), X, y, 4, masks, [0, 1, 2, 3, 4])
    for model, mask in zip(models, masks, strict=True):
        hits = _predict(model, X).argmax(1).numpy() == y
        assert hits[mask].mean() > 0.95
        assert hits[~mask].mean() < 0.45
    # Independent modules: different weights, no shared storage, usable as targets.
    first = models[0][0].weight
    assert all(not torch.equal(first, m[0].weight) for m in models[1:])
    with torch.no_grad():
        first.zero_()
    assert all(m[0].weight.abs().sum() > 0 for m in models[1:])
    target = TorchTarget(models[1], classes=np.arange(4))
    assert target.logits(pd.DataFrame(X)).shape == (240, 4)


def test_same_seeds_give_identical_weights_and_a_model_does_not_depend_on_its_group() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 10)).astype(np.float32)
    y = rng.integers(0, 3, size=200)
    masks = rng.random((3, 200)) < 0.5
    spec = _memorising_spec(epochs=3)
    first = [_state(m) for m in train_vectorised(spec, X, y, 3, masks, [5, 6, 7])]
    second = [_state(m) for m in train_vectorised(spec, X, y, 3, masks, [5, 6, 7])]
    for a, b in zip(first, second, strict=True):
        assert all(torch.equal(a[name], b[name]) for name in a)
    other_seed = _state(train_vectorised(spec, X, y, 3, masks[:1], [8])[0])
    assert not torch.equal(other_seed["0.weight"], first[0]["0.weight"])
    # Model 1 trained alone: the same model as inside the group, up to rounding.
    alone = _state(train_vectorised(spec, X, y, 3, masks[1:2], [6])[0])
    for name in alone:
        torch.testing.assert_close(alone[name], first[1][name], rtol=1e-4, atol=1e-5)


def test_groups_on_threads_give_the_models_of_separate_training(monkeypatch: pytest.MonkeyPatch) -> None:
    # With two intra-op threads, eight models of a plain MLP train as two groups, one thread each; every
    # model must come out as if trained alone, and the thread setting must be left as it was.
    rng = np.random.default_rng(6)
    X = rng.normal(size=(200, 10)).astype(np.float32)
    y = rng.integers(0, 3, size=200)
    masks = rng.random((8, 200)) < 0.5
    spec = _memorising_spec(epochs=2)
    groups = []
    train_group = vectorised._train_group

    def counted(spec: VectorisedSpec, models: list[nn.Module], *rest) -> None:
        groups.append(len(models))
        train_group(spec, models, *rest)

    monkeypatch.setattr(vectorised, "_train_group", counted)
    torch.set_num_threads(2)
    together = [_state(m) for m in train_vectorised(spec, X, y, 3, masks, list(range(8)))]
    assert torch.get_num_threads() == 2
    assert sorted(groups) == [4, 4]
    torch.set_num_threads(1)
    for k in (0, 5, 7):
        alone = _state(train_vectorised(spec, X, y, 3, masks[k : k + 1], [k])[0])
        for name in alone:
            torch.testing.assert_close(together[k][name], alone[name], rtol=1e-4, atol=1e-5)


def test_an_interrupted_group_stops_the_other_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    # Ctrl-C reaches only the calling thread's group; the other group must stop too, not train on for the
    # whole run while the caller waits for it.
    rng = np.random.default_rng(7)
    X = rng.normal(size=(200, 10)).astype(np.float32)
    y = rng.integers(0, 3, size=200)
    masks = rng.random((8, 200)) < 0.5
    caller = threading.get_ident()
    forwards = {"caller": 0, "other": 0}
    real_forward = _LayerwiseEnsemble.forward

    def counted(self: _LayerwiseEnsemble, inputs: torch.Tensor) -> torch.Tensor:
        mine = threading.get_ident() == caller
        forwards["caller" if mine else "other"] += 1
        if mine and forwards["caller"] == 5:
            raise KeyboardInterrupt
        if not mine:
            time.sleep(0.001)  # the other group would otherwise finish while the caller is still starting
        return real_forward(self, inputs)

    monkeypatch.setattr(_LayerwiseEnsemble, "forward", counted)
    spec = _memorising_spec(epochs=200)  # 200 epochs x 4 steps
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(KeyboardInterrupt):
            train_vectorised(spec, X, y, 3, masks, list(range(8)))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert forwards["other"] < 200


@pytest.mark.parametrize(("optimizer", "torch_optimizer"), [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_optimiser_follows_torch_with_weight_decay(optimizer: str, torch_optimizer: type) -> None:
    rng = np.random.default_rng(4)
    X = rng.normal(size=(90, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=90)
    masks = np.stack([np.arange(90) < 90, np.arange(90) < 50])

    def build(X: np.ndarray, y: np.ndarray, n_classes: int, seed: int) -> nn.Module:
        return nn.Sequential(nn.Linear(X.shape[1], 8), nn.Tanh(), nn.Linear(8, n_classes))

    spec = VectorisedSpec(build, epochs=4, batch_size=16, lr=1e-2, weight_decay=0.1, optimizer=optimizer)
    models = train_vectorised(spec, X, y, 3, masks, [0, 1])
    for model, mask, seed in zip(models, masks, [0, 1], strict=True):
        torch.manual_seed(seed)
        reference = build(X[mask], y[mask], 3, seed)
        optimiser = torch_optimizer(reference.parameters(), lr=1e-2, weight_decay=0.1)
        generator = torch.Generator().manual_seed(seed)
        features, labels = torch.from_numpy(X[mask]), torch.from_numpy(y[mask])
        for _ in range(4):
            order = torch.randperm(len(labels), generator=generator)
            for start in range(0, len(labels), 16):
                batch = order[start : start + 16]
                optimiser.zero_grad()
                nn.functional.cross_entropy(reference(features[batch]), labels[batch]).backward()
                optimiser.step()
        assert _max_difference(model, reference) < 1e-5


@pytest.mark.parametrize("affine", [True, False], ids=["vmap", "layerwise"])
def test_buffers_are_per_model(affine: bool) -> None:
    # A standardisation fitted in build, and batch-norm running statistics updated during training (a
    # batch norm without parameters keeps the Sequential on the layer-by-layer path).
    class Standardise(nn.Module):
        def __init__(self, X: np.ndarray) -> None:
            super().__init__()
            self.register_buffer("mean", torch.from_numpy(X.mean(axis=0)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x - self.mean

    def build(X: np.ndarray, y: np.ndarray, n_classes: int, seed: int) -> nn.Module:
        return nn.Sequential(
            Standardise(X), nn.Linear(X.shape[1], 8), nn.BatchNorm1d(8, affine=affine), nn.Linear(8, n_classes)
        )

    rng = np.random.default_rng(5)
    X = rng.normal(size=(120, 4)).astype(np.float32)
    X[:60] += 5.0
    y = rng.integers(0, 2, size=120)
    masks = np.stack([np.arange(120) < 60, np.arange(120) >= 60])
    assert (_LayerwiseEnsemble.of([build(X, y, 2, 0)]) is None) == affine
    models = train_vectorised(VectorisedSpec(build, 2, 32, 1e-2), X, y, 2, masks, [0, 0])
    for model, mask in zip(models, masks, strict=True):
        np.testing.assert_allclose(model[0].mean.numpy(), X[mask].mean(axis=0), rtol=1e-5)
        assert int(model[2].num_batches_tracked) == 2 * 2  # two epochs of ceil(60 / 32) steps, no extra
    assert not torch.equal(models[0][2].running_mean, models[1][2].running_mean)


def test_spec_discovery_and_bad_input(task) -> None:
    recipe = load_recipe(f"{EXAMPLE}:recipe")
    spec = vectorised_spec_of(recipe.function)
    assert isinstance(spec, VectorisedSpec) and spec.optimizer == "adam"
    assert vectorised_spec_of(len) is None
    X, y, _, _ = task
    masks = np.ones((2, len(y)), dtype=bool)
    with pytest.raises(ValueError, match="optimizer"):
        VectorisedSpec(spec.build, 1, 32, 1e-3, optimizer="sgd")
    with pytest.raises(ValueError, match="one seed per mask"):
        train_vectorised(spec, X, y, 4, masks, [0])
    masks[1] = False
    with pytest.raises(ValueError, match="model 1 has no training rows"):
        train_vectorised(spec, X, y, 4, masks, [0, 1])

    def varying(X: np.ndarray, y: np.ndarray, n_classes: int, seed: int) -> nn.Module:
        return nn.Linear(X.shape[1], n_classes + seed)

    with pytest.raises(ValueError, match="different structure"):
        train_vectorised(VectorisedSpec(varying, 1, 32, 1e-3), X, y, 4, np.ones((2, len(y)), bool), [0, 1])
