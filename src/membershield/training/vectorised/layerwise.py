"""K models of linear layers and parameter-free layers, run forward layer by layer without ``vmap``."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call

from membershield.training.vectorised.linear_chain import _ChainLayer, _linear_for, _LinearChain


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
