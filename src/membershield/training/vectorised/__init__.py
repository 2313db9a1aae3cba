"""Train many models of one architecture at once, each on its own rows, as if each were trained alone.

A recipe is arbitrary Python, so membershield cannot batch it on its own. A recipe file opts in by also
defining ``vectorised_spec()``, which returns a :class:`VectorisedSpec`: a ``build`` function that makes
the *untrained* model for one training set (including anything fitted on that set, such as a
standardisation layer's mean and standard deviation), plus the settings of the training loop. membershield
then runs that loop, minibatch Adam on cross-entropy, for K models in lockstep:

* Activations are stacked along a new leading dimension, ``(K, rows, features)``. An ``nn.Sequential``
  whose only layers with parameters are ``nn.Linear`` (an MLP, with any parameter-free layers such as
  ReLU, dropout or a fitted standardisation) runs layer by layer: each run of consecutive linear layers
  is one autograd node doing model k's products on the models' own parameters, by oneDNN's float32
  kernel where PyTorch has it, with a ReLU that follows a linear layer applied by the product as it
  writes its output (the activations inside such a run are one tensor per model, not stacked). Any
  other module runs as a whole: the K models' parameters and buffers are stacked
  (``torch.func.stack_module_state``) and the forward pass is ``torch.vmap`` over
  ``torch.func.functional_call``. Both are plain autograd; the first avoids ``vmap``'s per-operation
  dispatch, which costs milliseconds in a step of a few models' small products.
* Where the network has nothing but linear layers and ReLUs (no randomness, no buffers) and PyTorch has
  T > 1 intra-op threads, the K models are split into up to T groups of at least ``MODELS_PER_THREAD``,
  each trained as above by a thread of its own with one intra-op thread: small products split over
  several threads spend much of their time waiting on each other. Models never mix in a step (each has
  its own rows, products, loss terms and optimiser state), so a model is the same whichever group it
  is in. The thread count is restored afterwards, and a failure or Ctrl-C in one group stops the others
  at their next step.
* Each model keeps its own minibatch schedule. Every epoch, model k shuffles its own ``n_k`` training
  rows with ``torch.randperm(n_k, generator=torch.Generator().manual_seed(seed_k))`` (one generator per
  model, drawn from once per epoch) and takes consecutive slices of ``batch_size`` rows, the last one
  possibly smaller: ``ceil(n_k / batch_size)`` steps per epoch, exactly what a plain PyTorch loop does.
  At step s the trainer gathers every model's s-th slice into one ``(K, batch_size, d)`` tensor.
* Models whose training sets differ in size differ in steps per epoch. A model with fewer steps is
  *skipped* in the remaining steps of the epoch: the rows fed for it are padding with loss weight zero
  and, because a zero gradient would still move an Adam-trained model (its moment estimates decay and
  its step counter advances), the optimiser leaves its parameters, moments and step count untouched.
  Likewise, in a short last slice the padding rows get weight zero and the real rows weight
  ``1 / rows``, so each model's loss is the mean over its own real rows.
* The optimiser is PyTorch's Adam (or AdamW) with a state and a step counter per model and tensor, run as
  one update over every model's tensors (its own, or its slices of the stacked ones) by the kernel of
  ``torch.optim.Adam(fused=True)``. Adam is elementwise, so this is the same arithmetic as K separate
  optimisers.

Model k is built under ``torch.manual_seed(seed_k)`` (as membershield runs a recipe), so its initial
weights are those its recipe would start from, and its batches are those of the loop above. A recipe
that trains exactly so (``examples/torch_mlp.py``) therefore gives the same models up to floating-point
rounding (another product kernel sums in another order); other recipes get models trained the same way in
distribution. Random layers (dropout) draw from one generator seeded from all K seeds, so with dropout
a model's weights depend on the whole group, not only on its own seed (still reproducible).

Buffers are stacked per model like parameters, and a layer that updates its buffers in place
(batch normalisation's running statistics) updates each model's own; a skipped model's buffers are
restored after the step. Limit: padding rows go through the network with the real ones, so a layer that
mixes the rows of a batch (batch normalisation in training mode) sees them in a short last slice, which
then differs slightly from the sequential loop's smaller batch.

One module per part: :mod:`.spec` (what a recipe file declares), :mod:`.checks` (the inputs and the built
models), :mod:`.schedule` (each model's minibatches of an epoch), :mod:`.lockstep` (the training loop of one
group of models), :mod:`.linear_chain` (a run of linear layers as one autograd node), :mod:`.layerwise` and
:mod:`.vmapped` (the two ways of running K models forward) and :mod:`.adam` (the optimiser). This module
builds the models and shares them out among threads; every name other code imports from
``membershield.training.vectorised`` is importable from here.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import nn

from membershield.training.vectorised.checks import _check_inputs, _check_same_structure
from membershield.training.vectorised.layerwise import _LayerwiseEnsemble
from membershield.training.vectorised.linear_chain import LinearFunction
from membershield.training.vectorised.linear_chain import _linear_for as _linear_for  # re-export for the benchmark
from membershield.training.vectorised.lockstep import _train_group
from membershield.training.vectorised.spec import OPTIMIZERS, BuildFunction, VectorisedSpec, vectorised_spec_of

__all__ = [
    "MODELS_PER_THREAD",
    "OPTIMIZERS",
    "BuildFunction",
    "LinearFunction",
    "VectorisedSpec",
    "thread_groups",
    "train_vectorised",
    "vectorised_spec_of",
]


def train_vectorised(
    spec: VectorisedSpec,
    X: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    masks: np.ndarray,
    seeds: list[int],
) -> list[nn.Module]:
    """Train ``len(seeds)`` models at once; model k on the rows ``masks[k]`` of ``X, y`` with ``seeds[k]``.

    Returns ordinary, independent modules in eval mode, in the order of ``seeds``.
    """
    X, y, masks = _check_inputs(X, y, n_classes, masks, seeds)
    subsets = [np.flatnonzero(row) for row in masks]
    models = []
    for rows, seed in zip(subsets, seeds, strict=True):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            module = spec.build(X[rows], y[rows], n_classes, seed)
        if not isinstance(module, nn.Module):
            raise TypeError(f"build returned {type(module).__name__}; it must return an nn.Module")
        models.append(module)
    _check_same_structure(models)
    if spec.epochs > 0:
        with torch.random.fork_rng():
            # Only random layers (dropout) draw from here; a seed of all models keeps runs reproducible.
            torch.manual_seed(int(np.random.SeedSequence([int(s) for s in seeds]).generate_state(1)[0]))
            _train(spec, models, X, y, subsets, seeds)
    return [model.eval() for model in models]


# Below this many models a thread's share of a step is too small to pay for its Python overhead.
MODELS_PER_THREAD = 4


def thread_groups(n_models: int, threads: int) -> np.ndarray:
    """Bounds of the groups of models the threaded path trains, one group per thread: ``bounds[g]:bounds[g + 1]``."""
    groups = max(1, min(threads, n_models // MODELS_PER_THREAD))
    return np.linspace(0, n_models, groups + 1).round().astype(int)


def _train(
    spec: VectorisedSpec,
    models: list[nn.Module],
    X: np.ndarray,
    y: np.ndarray,
    subsets: list[np.ndarray],
    seeds: list[int],
) -> None:
    threads = torch.get_num_threads()
    bounds = thread_groups(len(models), threads)
    groups = len(bounds) - 1
    if groups < 2 or not _LayerwiseEnsemble.deterministic(models):
        _train_group(spec, models, X, y, subsets, seeds)
        return
    # Independent groups of models, each trained by one thread with one intra-op thread: the models'
    # products are small, and two threads sharing each of them spend much of it waiting on each other.
    # Every model's arithmetic is its own, so a model is the same whichever group it is in.

    stop = threading.Event()

    def run(group: int) -> None:
        torch.set_num_threads(1)
        part = slice(bounds[group], bounds[group + 1])
        _train_group(spec, models[part], X, y, subsets[part], seeds[part], stop)

    try:
        with ThreadPoolExecutor(groups - 1) as pool:
            others = [pool.submit(run, group) for group in range(1, groups)]
            try:
                run(0)
                for other in others:
                    other.result()
            except BaseException:
                # Ctrl-C reaches only this thread: the other groups stop at their next step rather than
                # train on while the pool waits for them.
                stop.set()
                raise
    finally:
        torch.set_num_threads(threads)
