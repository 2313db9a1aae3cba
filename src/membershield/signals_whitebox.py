"""Per-record signals that need a PyTorch model's weights: the norm of each record's loss gradient with
respect to the parameters, and each record's logits under the training checkpoints a recipe kept.

Records go through in batches, so memory is bounded by a batch, whatever the number of records.
A recipe keeps checkpoints by setting ``module.checkpoints`` to a list of state-dict copies, oldest
first (see :mod:`membershield.targets.torch`); :func:`kept_checkpoints` reads and checks them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.func import functional_call, grad, vmap

from membershield.errors import ConfigError
from membershield.signals import cross_entropy_loss
from membershield.targets.torch import features_as_float32

# Per-record gradient values held at once: a batch holds this many divided by the parameter count
# records (128 MiB of float64), so a large model gets small batches rather than too much memory.
GRADIENT_VALUES = 2**24
MAX_GRADIENT_BATCH = 1024
LOGIT_BATCH = 8192


def _as_dtype(tensors: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {name: t.to(dtype) if t.is_floating_point() else t for name, t in tensors.items()}


def per_record_gradient_norms(
    module: torch.nn.Module,
    features: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int | None = None,
    dtype: torch.dtype | None = torch.float64,
) -> np.ndarray:
    """For each row, the L2 norm over every trainable parameter of the gradient of the cross-entropy loss
    ``-log softmax(module(x))[y]`` of that row alone (Nasr et al., IEEE S&P 2019).

    Gradients are per record (``torch.func.vmap`` over ``torch.func.grad`` of a ``functional_call``), with
    the module in eval mode. ``dtype`` (float64 unless None, which keeps the module's own): a memorised
    record's gradient is below float32's resolution of ``1 - p``, and would tie at 0 with every other.
    ``batch_size`` defaults to what keeps ``GRADIENT_VALUES`` gradient values in memory at once.

    >>> _ = torch.manual_seed(0)
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> X, y = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32), np.array([0, 1, 1, 0, 1])
    >>> def one_at_a_time(i):
    ...     net.zero_grad()
    ...     loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(X[i : i + 1])), torch.tensor([y[i]]))
    ...     loss.backward()
    ...     return float(torch.cat([p.grad.flatten() for p in net.parameters()]).norm())
    >>> norms = per_record_gradient_norms(net, X, y, batch_size=2)
    >>> norms.shape, bool(np.allclose(norms, [one_at_a_time(i) for i in range(5)], rtol=1e-5))
    ((5,), True)
    """
    trainable = {name: p.detach() for name, p in module.named_parameters() if p.requires_grad}
    if not trainable:
        raise ConfigError("the model has no trainable parameters, so it has no gradients to read")
    fixed = {name: p.detach() for name, p in module.named_parameters() if name not in trainable}
    fixed |= {name: b.detach() for name, b in module.named_buffers()}
    first = next(iter(trainable.values()))
    work = dtype or first.dtype
    trainable, fixed = _as_dtype(trainable, work), _as_dtype(fixed, work)

    def record_loss(params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = functional_call(module, (params, fixed), (x.unsqueeze(0),))
        return torch.nn.functional.cross_entropy(logits, y.unsqueeze(0))

    per_record = vmap(grad(record_loss), in_dims=(None, 0, 0))
    n_values = sum(p.numel() for p in trainable.values())
    size = batch_size or max(1, min(MAX_GRADIENT_BATCH, GRADIENT_VALUES // n_values))
    # pandas may hand out a read-only view, which torch warns about
    X = torch.as_tensor(np.require(features, requirements="W"), dtype=work, device=first.device)
    Y = torch.as_tensor(np.asarray(labels), dtype=torch.int64, device=first.device)
    module.eval()  # dropout or batch statistics would make a record's gradient depend on its batch
    norms = []
    for start in range(0, len(Y), size):
        gradients = per_record(trainable, X[start : start + size], Y[start : start + size])
        squared = sum(g.flatten(1).pow(2).sum(dim=1) for g in gradients.values())
        norms.append(squared.sqrt().double().cpu())
    return torch.cat(norms).numpy() if norms else np.zeros(0)


def kept_checkpoints(module: torch.nn.Module) -> list[Mapping[str, torch.Tensor]]:
    """The state dicts a recipe kept on ``module.checkpoints`` (empty when it kept none), checked.

    Each must name every parameter of the module and hold copies: a ``state_dict()`` taken without
    ``clone()`` shares the live tensors, so every "checkpoint" would be the final model.

    >>> net = torch.nn.Linear(2, 2)
    >>> kept_checkpoints(net)
    []
    >>> net.checkpoints = [{k: v.detach().clone() for k, v in net.state_dict().items()}]
    >>> len(kept_checkpoints(net))
    1
    >>> net.checkpoints = [net.state_dict()]
    >>> kept_checkpoints(net)
    Traceback (most recent call last):
    ...
    membershield.errors.ConfigError: module.checkpoints[0] shares 'weight' with the trained model ...
    """
    checkpoints = getattr(module, "checkpoints", None)
    if checkpoints is None:
        return []
    if not isinstance(checkpoints, list | tuple) or not all(isinstance(c, Mapping) for c in checkpoints):
        raise ConfigError("module.checkpoints must be a list of state dicts (name -> tensor), oldest first")
    live = dict(module.named_parameters())
    for i, state in enumerate(checkpoints):
        missing = [name for name in live if name not in state]
        if missing:
            raise ConfigError(f"module.checkpoints[{i}] lacks parameter '{missing[0]}': keep whole state dicts")
        shared = [name for name, p in live.items() if torch.as_tensor(state[name]).data_ptr() == p.data_ptr()]
        if shared:
            raise ConfigError(
                f"module.checkpoints[{i}] shares '{shared[0]}' with the trained model (every checkpoint would be"
                " the final model): keep copies, {k: v.detach().clone() for k, v in model.state_dict().items()}"
            )
    return list(checkpoints)


def checkpoint_logits(
    module: torch.nn.Module,
    checkpoints: list[Mapping[str, torch.Tensor]],
    features: np.ndarray,
    *,
    batch_size: int = LOGIT_BATCH,
) -> np.ndarray:
    """Float32 logits ``(T, n, C)`` of every row under each of the ``T`` checkpoints, the module's
    architecture with the checkpoint's weights (``functional_call``; the module itself is unchanged).

    >>> net = torch.nn.Linear(2, 3)
    >>> zero = {k: torch.zeros_like(v) for k, v in net.state_dict().items()}
    >>> checkpoint_logits(net, [zero, dict(net.state_dict())], np.ones((4, 2), np.float32)).shape
    (2, 4, 3)
    """
    parameter = next(iter(module.parameters()), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    X = torch.as_tensor(np.require(features, dtype=np.float32, requirements="W"), device=device)
    module.eval()
    out = []
    with torch.no_grad():
        for state in checkpoints:
            weights = {name: torch.as_tensor(t).to(device) for name, t in state.items()}
            batches = [
                functional_call(module, weights, (X[start : start + batch_size],)).float().cpu()
                for start in range(0, X.shape[0], batch_size)
            ]
            out.append(torch.cat(batches).numpy() if batches else np.zeros((0, 0), np.float32))
    return np.stack(out) if out else np.zeros((0, X.shape[0], 0), np.float32)


def torch_module_of(target: Any) -> torch.nn.Module:
    """The ``nn.Module`` behind a target (a PyTorch recipe's :class:`~membershield.targets.torch.TorchTarget`)."""
    module = getattr(target, "module", None)
    if not isinstance(module, torch.nn.Module):
        raise ConfigError(
            "white-box signals need the model's weights, and this target has none to read: give a PyTorch"
            " recipe, --model file.py:function"
        )
    return module


def gradient_norms_of(target: Any, features: pd.DataFrame, labels: np.ndarray) -> np.ndarray:
    """:func:`per_record_gradient_norms` of a target's module on a table, in float64 where the module runs in it."""
    module, X = torch_module_of(target), features_as_float32(features)
    try:
        return per_record_gradient_norms(module, X, labels)
    except RuntimeError:  # a forward that builds float32 tensors of its own cannot run in float64
        return per_record_gradient_norms(module, X, labels, dtype=None)


def checkpoint_losses_of(target: Any, features: pd.DataFrame, labels: np.ndarray) -> np.ndarray:
    """Cross-entropy losses ``(T, n)`` of every row under each of the ``T`` checkpoints the target's recipe
    kept, oldest first; ``T`` is 0 where it kept none. Losses are taken in float64 from float32 logits, as
    the LOSS attack takes them from the target's."""
    module = torch_module_of(target)
    logits = checkpoint_logits(module, kept_checkpoints(module), features_as_float32(features))
    losses = [cross_entropy_loss(step, labels) for step in logits]
    return np.stack(losses) if losses else np.zeros((0, len(labels)))
