"""K models of any architecture, stacked and run forward by ``vmap`` over ``functional_call``."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, stack_module_state


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
