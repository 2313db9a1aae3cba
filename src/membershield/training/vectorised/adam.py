"""Adam and AdamW for K models at once: a state per model, one fused update for all of them."""

from __future__ import annotations

import torch

from membershield.training.vectorised.spec import VectorisedSpec


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
