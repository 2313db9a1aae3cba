"""Consecutive linear layers (and their ReLUs) of K models as one autograd node, on a fast product kernel."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

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
