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
"""

from __future__ import annotations

import copy
import math
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state

BuildFunction = Callable[[np.ndarray, np.ndarray, int, int], nn.Module]
OPTIMIZERS = ("adam", "adamw")


@dataclass(frozen=True)
class VectorisedSpec:
    """How to train one model, declared so that many can be trained at once.

    ``build(X, y, n_classes, seed)`` returns the untrained module for training rows ``X`` (float32
    ``(n, d)``) and labels ``y`` (int64 ``(n,)``); it may fit preprocessing on them, but must not train.
    The module maps a float32 batch to logits ``(batch, n_classes)``. Training minimises the mean
    cross-entropy over minibatches of ``batch_size`` rows for ``epochs`` epochs with ``optimizer``:
    ``"adam"`` (``torch.optim.Adam``: weight decay added to the gradient) or ``"adamw"``
    (``torch.optim.AdamW``: decoupled weight decay), both with ``betas`` and ``eps``.
    """

    build: BuildFunction
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 0.0
    optimizer: str = "adam"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def __post_init__(self) -> None:
        if not callable(self.build):
            raise ValueError("VectorisedSpec.build must be callable: build(X, y, n_classes, seed) -> nn.Module")
        if self.epochs < 0 or self.batch_size < 1:
            raise ValueError(f"need epochs >= 0 and batch_size >= 1, got {self.epochs} and {self.batch_size}")
        if not self.lr > 0 or self.weight_decay < 0 or not self.eps > 0:
            raise ValueError("need lr > 0, weight_decay >= 0 and eps > 0")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must lie in [0, 1), got {self.betas}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")


def vectorised_spec_of(recipe_function: Callable[..., object]) -> VectorisedSpec | None:
    """The spec declared by the file that defines ``recipe_function``, or None if it declares none."""
    module = sys.modules.get(getattr(recipe_function, "__module__", None) or "")
    declare = getattr(module, "vectorised_spec", None)
    if not callable(declare):
        return None
    spec = declare()
    if not isinstance(spec, VectorisedSpec):
        raise TypeError(f"vectorised_spec() returned {type(spec).__name__}; it must return a VectorisedSpec")
    return spec


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


def _check_inputs(
    X: np.ndarray, y: np.ndarray, n_classes: int, masks: np.ndarray, seeds: list[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = np.ascontiguousarray(X, dtype=np.float32)
    y = np.ascontiguousarray(y, dtype=np.int64)
    masks = np.asarray(masks)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise ValueError(f"X must be (n, d) and y (n,); got {X.shape} and {y.shape}")
    if masks.dtype != np.bool_ or masks.ndim != 2 or masks.shape[1] != X.shape[0]:
        raise ValueError(f"masks must be a boolean (K, {X.shape[0]}) array; got {masks.dtype} {masks.shape}")
    if len(seeds) != masks.shape[0] or len(seeds) == 0:
        raise ValueError(f"need one seed per mask row and at least one model; got {len(seeds)} seeds")
    if not masks.any(axis=1).all():
        raise ValueError(f"model {int(np.flatnonzero(~masks.any(axis=1))[0])} has no training rows")
    if len(y) and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"labels must be class indices in [0, {n_classes})")
    return X, y, masks


def _check_same_structure(models: list[nn.Module]) -> None:
    def layout(model: nn.Module) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
        tensors = [*model.named_parameters(), *model.named_buffers()]
        return [(name, tuple(t.shape), t.dtype) for name, t in tensors]

    first = layout(models[0])
    for k, model in enumerate(models[1:], start=1):
        if type(model) is not type(models[0]) or layout(model) != first:
            raise ValueError(
                f"build returned models of different structure (model 0 and model {k}); vectorised training"
                " needs the same parameter and buffer names, shapes and dtypes for every training set"
            )


def _epoch_schedule(
    subsets: list[np.ndarray], generators: list[torch.Generator], batch_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows ``(steps, K, B)``, loss weights ``(steps, K, B)`` and active models ``(steps, K)`` of one epoch."""
    K = len(subsets)
    steps = max(math.ceil(len(rows) / batch_size) for rows in subsets)
    rows_out = torch.empty((K, steps * batch_size), dtype=torch.int64)
    weights = torch.zeros((K, steps * batch_size), dtype=torch.float32)
    active = torch.zeros((K, steps), dtype=torch.bool)
    for k, (rows, generator) in enumerate(zip(subsets, generators, strict=True)):
        n = len(rows)
        order = torch.from_numpy(rows)[torch.randperm(n, generator=generator)]
        rows_out[k, :n] = order
        rows_out[k, n:] = order[0]  # padding: any real row, with weight zero
        full, last = divmod(n, batch_size)
        weights[k, : full * batch_size] = 1.0 / batch_size
        if last:
            weights[k, full * batch_size : n] = 1.0 / last
        active[k, : math.ceil(n / batch_size)] = True
    shape = (K, steps, batch_size)
    return (
        rows_out.view(shape).transpose(0, 1).contiguous(),
        weights.view(shape).transpose(0, 1).contiguous(),
        active.T.contiguous(),
    )


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


def _train_group(
    spec: VectorisedSpec,
    models: list[nn.Module],
    X: np.ndarray,
    y: np.ndarray,
    subsets: list[np.ndarray],
    seeds: list[int],
    stop: threading.Event | None = None,
) -> None:
    K = len(models)
    features = torch.from_numpy(X)
    labels = torch.from_numpy(y)
    ensemble = _LayerwiseEnsemble.of(models)
    if ensemble is None:
        ensemble = _VmapEnsemble(models, features[: spec.batch_size].expand(K, -1, -1))
    buffers = ensemble.buffers
    optimiser = _EnsembleAdam(ensemble.parameters(), spec)
    generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
    # Reused every step: no multi-megabyte allocation a step (glibc recycles them here, other allocators may not).
    inputs = torch.empty((K * spec.batch_size, features.shape[1]), dtype=features.dtype)
    targets = torch.empty(K * spec.batch_size, dtype=labels.dtype)
    for _ in range(spec.epochs):
        rows, weights, active = _epoch_schedule(subsets, generators, spec.batch_size)
        everyone = active.all(1).tolist()
        for step in range(rows.shape[0]):
            if stop is not None and stop.is_set():
                return  # another group failed or was interrupted: these models will not be used
            batch = rows[step].view(-1)
            idle = None if everyone[step] else torch.nonzero(~active[step]).flatten()
            # A skipped model's buffers (running statistics) must not see its padding rows either.
            kept = {name: b.index_select(0, idle) for name, b in buffers.items()} if idle is not None else {}
            torch.index_select(features, 0, batch, out=inputs)
            torch.index_select(labels, 0, batch, out=targets)
            logits = ensemble.forward(inputs.view(K, -1, features.shape[1]))
            losses = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets, reduction="none")
            ensemble.zero_grad()
            torch.dot(losses, weights[step].view(-1)).backward()
            optimiser.step(
                ensemble.gradients(), None if everyone[step] else torch.nonzero(active[step]).flatten().tolist()
            )
            with torch.no_grad():
                for name, saved in kept.items():
                    buffers[name].index_copy_(0, idle, saved)
    ensemble.write_back(models)


LinearFunction = Callable[..., torch.Tensor]


def _linear_for(weight: torch.Tensor) -> LinearFunction:
    """``f(a, w, b=None, relu=False) = a @ w.T + b`` (then ReLU) for 2-d operands like ``weight``.

    On CPUs where MKL takes its AVX2 path (AMD), oneDNN's float32 product runs about twice as fast on
    these shapes as the MKL one behind ``torch.mm`` and ``F.linear``; both compute in float32. oneDNN
    applies the ReLU to the product's output as it writes it, sparing a pass over the activations.
    """
    usable = torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
    if usable and weight.dtype == torch.float32 and weight.device.type == "cpu":
        try:
            onednn = torch.ops.mkldnn._linear_pointwise
        except (AttributeError, RuntimeError):
            onednn = None
        if onednn is not None:
            return lambda a, w, b=None, relu=False: onednn(a, w, b, "relu" if relu else "none", [], "")

    def plain(a: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, relu: bool = False) -> torch.Tensor:
        out = nn.functional.linear(a, w, b)
        return torch.relu_(out) if relu else out

    return plain


@dataclass(frozen=True)
class _ChainLayer:
    """One ``nn.Linear`` of a :class:`_LinearChain`, for every model, and whether a ReLU follows it."""

    linear: LinearFunction
    relu: bool
    with_bias: bool


class _LinearChain(torch.autograd.Function):
    """Consecutive linear layers (each maybe followed by ReLU) of K models, model k's applied to ``x[k]``.

    One autograd node for the whole run of layers: one matrix product per model, layer and direction, on
    the models' own weights and biases, whose gradients therefore come out in their own layout. Only the
    chain's input and output are stacked ``(K, rows, features)``; the activations between its layers stay
    one tensor per model (the products write fresh tensors, and stacking them would copy every
    activation), and so do the gradients flowing between them. A ReLU is computed by the product before
    it, and its backward pass keeps the gradient where that output is positive, as ``torch.relu``'s does.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, layers: tuple[_ChainLayer, ...], *params: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        K = x.shape[0]
        activations = [list(x.unbind(0))]
        weights = []
        position = 0
        for layer in layers:
            w = params[position : position + K]
            position += K
            b = (None,) * K
            if layer.with_bias:
                b = params[position : position + K]
                position += K
            inputs = activations[-1]
            activations.append([layer.linear(inputs[k], w[k], b[k], layer.relu) for k in range(K)])
            weights.append(w)
        # The chain's own input is saved for the version check; the per-model activations are
        # intermediates, made here and seen nowhere else.
        ctx.save_for_backward(x, *params)
        ctx.layers, ctx.activations = layers, activations[1:]
        return torch.stack(activations[-1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, *params = ctx.saved_tensors
        layers, K, needs = ctx.layers, x.shape[0], ctx.needs_input_grad
        inputs_of = [list(x.unbind(0)), *ctx.activations[:-1]]
        grads: list[torch.Tensor | None] = [None] * len(params)
        starts = []
        position = 0
        for layer in layers:
            starts.append(position)
            position += 2 * K if layer.with_bias else K
        # The gradient at a layer's output: stacked (K, rows, features), or one tensor per model.
        upstream: torch.Tensor | list[torch.Tensor] = grad.contiguous()
        grad_x = None
        for i in reversed(range(len(layers))):
            layer, start = layers[i], starts[i]
            if layer.relu:
                output = ctx.activations[i]
                masked = torch.empty((K, *output[0].shape), dtype=output[0].dtype)
                for k in range(K):
                    torch.ops.aten.threshold_backward.grad_input(upstream[k], output[k], 0, grad_input=masked[k])
                upstream = masked
            elif not isinstance(upstream, torch.Tensor):
                upstream = torch.stack(upstream)
            # oneDNN multiplies a row-major left operand ~20% faster than a transposed view, more than the
            # copy costs.
            transposed = upstream.transpose(1, 2).contiguous()
            inputs = inputs_of[i]
            for k in range(K):
                if needs[2 + start + k]:
                    grads[start + k] = layer.linear(transposed[k], inputs[k].T)
            if layer.with_bias:
                sums = transposed.sum(2)
                for k in range(K):
                    if needs[2 + start + K + k]:
                        grads[start + K + k] = sums[k]
            if i > 0 or needs[0]:
                weights = params[start : start + K]
                upstream = [layer.linear(upstream[k], weights[k].T) for k in range(K)]
                if i == 0:
                    grad_x = torch.stack(upstream)
        ctx.activations = None
        return (grad_x, None, *grads)


class _LayerwiseEnsemble:
    """An ``nn.Sequential`` whose only parametrised layers are ``nn.Linear``, run layer by layer.

    Activations are stacked ``(K, rows, features)``. Consecutive linear layers, each with the ReLU that
    follows it if any, are one :class:`_LinearChain` on the models' own parameters (trained in place);
    other ReLUs and dropout apply to the stacked activations as they are; identities are dropped; any
    other (parameter-free) layer runs under ``vmap`` with its stacked buffers. This skips
    ``vmap``'s and ``functional_call``'s per-operation dispatch, which costs a few milliseconds a step, and
    uses the fastest float32 product kernel for each model's products.
    """

    def __init__(self, models: list[nn.Module]) -> None:
        self.K = len(models)
        self.trainable = [[p for p in model.parameters() if p.requires_grad] for model in models]
        names = [name for name, _ in models[0].named_buffers()]
        self.buffers = {name: torch.stack([dict(m.named_buffers())[name] for m in models]) for name in names}
        self.layers: list[Callable[[torch.Tensor], torch.Tensor]] = []
        entries = [
            (name, layer, [list(m._modules.values())[position] for m in models])
            for position, (name, layer) in enumerate(models[0]._modules.items())
            if type(layer) is not nn.Identity
        ]
        chain: list[_ChainLayer] = []
        chain_params: list[torch.Tensor] = []
        position = 0
        while position < len(entries):
            name, layer, per_model = entries[position]
            position += 1
            if type(layer) is not nn.Linear:
                if chain:
                    self.layers.append(self._chain(chain, chain_params))
                    chain, chain_params = [], []
                self.layers.append(self._layer(name, layer))
                continue
            relu = position < len(entries) and type(entries[position][1]) is nn.ReLU
            position += relu
            with_bias = layer.bias is not None
            chain.append(_ChainLayer(_linear_for(layer.weight), relu, with_bias))
            chain_params += [m.weight for m in per_model]
            if with_bias:
                chain_params += [m.bias for m in per_model]
        if chain:
            self.layers.append(self._chain(chain, chain_params))

    @staticmethod
    def deterministic(models: list[nn.Module]) -> bool:
        """Whether ``models`` are Sequentials of linear layers and ReLUs only: no randomness, no buffers."""
        if type(models[0]) is not nn.Sequential or models[0]._forward_hooks or models[0]._forward_pre_hooks:
            return False
        layers = list(models[0]._modules.values())
        return all(
            type(layer) in (nn.Linear, nn.ReLU, nn.Identity) and not (layer._forward_hooks or layer._forward_pre_hooks)
            for layer in layers
        )

    @classmethod
    def of(cls, models: list[nn.Module]) -> _LayerwiseEnsemble | None:
        """The ensemble for ``models``, or None where they are not such a ``Sequential``."""
        if type(models[0]) is not nn.Sequential:
            return None
        layers = list(models[0]._modules.values())
        if any(layer is None for layer in layers):
            return None
        for layer in layers:
            if type(layer) is not nn.Linear and next(layer.parameters(), None) is not None:
                return None
        # Hooks (old-style weight norm, for one) change what a module computes; vmap runs them, this does not.
        if any(module._forward_hooks or module._forward_pre_hooks for module in [models[0], *layers]):
            return None
        return cls(models)

    @staticmethod
    def _chain(layers: list[_ChainLayer], params: list[torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
        frozen = tuple(layers)
        return lambda x: _LinearChain.apply(x, frozen, *params)

    def _layer(self, name: str, layer: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        if type(layer) is nn.ReLU:
            return torch.relu
        if type(layer) is nn.Dropout:
            return lambda x: nn.functional.dropout(x, layer.p, training=True)
        base = copy.deepcopy(layer).to("meta")
        base.train()
        buffers = {local: self.buffers[f"{name}.{local}"] for local, _ in layer.named_buffers()}

        def forward(b: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            return functional_call(base, b, (x,))

        batched = torch.vmap(forward, in_dims=(0, 0), randomness="different")
        return lambda x: batched(buffers, x)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            inputs = layer(inputs)
        return inputs

    def parameters(self) -> list[list[torch.Tensor]]:
        return self.trainable

    def zero_grad(self) -> None:
        for model in self.trainable:
            for p in model:
                p.grad = None

    def gradients(self) -> list[list[torch.Tensor | None]]:
        return [[p.grad for p in model] for model in self.trainable]

    @torch.no_grad()
    def write_back(self, models: list[nn.Module]) -> None:
        for k, model in enumerate(models):
            for name, tensor in model.named_buffers():
                tensor.copy_(self.buffers[name][k])


class _VmapEnsemble:
    """Any module: parameters and buffers stacked, forward pass ``vmap`` over ``functional_call``."""

    def __init__(self, models: list[nn.Module], probe: torch.Tensor) -> None:
        params, self.buffers = stack_module_state(models)
        base = copy.deepcopy(models[0]).to("meta")
        base.train()

        def forward(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            return functional_call(base, (p, b), (x,))

        self.batched_forward = torch.vmap(forward, in_dims=(0, 0, 0), randomness="different")
        self.params = _in_gradient_layout(self.batched_forward, params, self.buffers, probe)
        self.trainable = [p for p in self.params.values() if p.requires_grad]
        self.K = len(models)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.batched_forward(self.params, self.buffers, inputs)

    def parameters(self) -> list[list[torch.Tensor]]:
        return _by_model([_per_model_rows(p.detach()).unbind(0) for p in self.trainable], self.K)

    def zero_grad(self) -> None:
        for p in self.trainable:
            p.grad = None

    def gradients(self) -> list[list[torch.Tensor | None]]:
        # Gradients share their parameter's layout (autograd's layout contract for dense parameters), so
        # their per-model rows are views too.
        rows = [[None] * self.K if p.grad is None else _per_model_rows(p.grad).unbind(0) for p in self.trainable]
        return _by_model(rows, self.K)

    @torch.no_grad()
    def write_back(self, models: list[nn.Module]) -> None:
        for k, model in enumerate(models):
            for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
                tensor.copy_((self.params if name in self.params else self.buffers)[name][k])


def _by_model(per_tensor: list, K: int) -> list[list]:
    """``[tensor][model]`` regrouped as ``[model][tensor]``."""
    return [[row[k] for row in per_tensor] for k in range(K)]


def _in_gradient_layout(
    batched_forward: Callable[..., torch.Tensor],
    params: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    probe: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """``params`` re-laid out in memory like the gradients that ``batched_forward`` produces for them.

    Under ``vmap`` a linear layer's weight gradient comes out as a batched matrix product in transposed
    layout; autograd would copy it into the parameter's layout at every step, a slow strided copy as
    large as the weights. Storing the parameter in the gradient's layout (same values) avoids it.
    """
    trainable = [name for name, p in params.items() if p.requires_grad]
    if not trainable:
        return params
    with torch.random.fork_rng():
        out = batched_forward(params, {name: b.clone() for name, b in buffers.items()}, probe)
        grads = torch.autograd.grad(out.sum(), [params[name] for name in trainable], allow_unused=True)
    layouts = dict(zip(trainable, grads, strict=True))
    relaid = {}
    for name, p in params.items():
        grad = layouts.get(name)
        if grad is not None and grad.stride() != p.stride():
            # preserve_format keeps the gradient's strides when it is dense, else gives a contiguous one.
            candidate = torch.empty_like(grad, memory_format=torch.preserve_format)
            if _is_model_major(candidate):
                p = candidate.copy_(p.detach()).requires_grad_()
        relaid[name] = p
    return relaid


def _per_model_rows(t: torch.Tensor) -> torch.Tensor:
    """A view of stacked ``t`` ``(K, ...)`` as ``(K, m)``: model k's values, in memory order, as row k.

    Needs every model's values in one dense block (true of stacked tensors in either layout); the view
    raises rather than copies otherwise.
    """
    inner = sorted(range(1, t.dim()), key=t.stride, reverse=True)
    return t.permute(0, *inner).view(t.shape[0], -1)


def _is_model_major(t: torch.Tensor) -> bool:
    try:
        _per_model_rows(t)
    except RuntimeError:
        return False
    return True


class _EnsembleAdam:
    """Adam / AdamW for K models: one optimiser state and step counter per model, one fused update.

    ``params[k]`` are model k's trainable tensors: its own parameters, or per-model views of stacked
    ones. The tensors of the models active in a step go to ``torch._fused_adam_`` (``_fused_adamw_``),
    the kernel that ``torch.optim.Adam(fused=True)`` runs: one pass over the memory for all models. Adam
    is elementwise, so this is the arithmetic of K separate optimisers; a model left out of a step keeps
    its parameters, moment estimates and step count.
    """

    def __init__(self, params: list[list[torch.Tensor]], spec: VectorisedSpec) -> None:
        self.spec = spec
        self.params = params
        self.exp_avgs = [[torch.zeros_like(p) for p in model] for model in params]
        self.exp_avg_sqs = [[torch.zeros_like(p) for p in model] for model in params]
        # A counter per model and tensor, as torch.optim.Adam keeps one per parameter. They are views of
        # one tensor, so that a step of every model and tensor counts with one addition.
        self.counts = torch.zeros((len(params), len(params[0]) if params else 0), dtype=torch.float32)
        self.steps = [[self.counts[k, i] for i in range(len(model))] for k, model in enumerate(params)]
        self.kernel = torch._fused_adamw_ if spec.optimizer == "adamw" else torch._fused_adam_
        self.whole = tuple(_flat(lst) for lst in (self.params, self.exp_avgs, self.exp_avg_sqs, self.steps))

    @torch.no_grad()
    def step(self, grads: list[list[torch.Tensor | None]], active: list[int] | None = None) -> None:
        """Step the models ``active`` (all where None) on their tensors that have a gradient."""
        flat_grads = _flat(grads)
        if active is None and all(g is not None for g in flat_grads):
            params, exp_avgs, exp_avg_sqs, steps = self.whole
            if not params:
                return
            self.counts.add_(1)
            used_grads = flat_grads
        else:
            params, used_grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
            for k in range(len(grads)) if active is None else active:
                for i, grad in enumerate(grads[k]):
                    if grad is None:
                        continue
                    params.append(self.params[k][i])
                    used_grads.append(grad)
                    exp_avgs.append(self.exp_avgs[k][i])
                    exp_avg_sqs.append(self.exp_avg_sqs[k][i])
                    steps.append(self.steps[k][i])
            if not params:
                return
            torch._foreach_add_(steps, 1)
        beta1, beta2 = self.spec.betas
        self.kernel(
            params,
            used_grads,
            exp_avgs,
            exp_avg_sqs,
            [],
            steps,
            amsgrad=False,
            lr=self.spec.lr,
            beta1=beta1,
            beta2=beta2,
            weight_decay=self.spec.weight_decay,
            eps=self.spec.eps,
            maximize=False,
            grad_scale=None,
            found_inf=None,
        )


def _flat(per_model: list[list]) -> list:
    return [t for model in per_model for t in model]
