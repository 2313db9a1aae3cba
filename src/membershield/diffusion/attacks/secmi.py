"""SecMI: the posterior estimation error of a deterministic step back and forth at timestep t.

Duan et al., ICML 2023 ("Are Diffusion Models Vulnerable to Membership Inference Attacks?"). Each image
is carried deterministically to timestep t by DDIM inversion steps of size k (x̃_t); one deterministic
reverse step to t − k and one forward step back to t should land on x̃_t again, and do so more closely
for training images, whose posterior the model has fitted. The t-error ‖ψ_θ(φ_θ(x̃_t, t), t) − x̃_t‖²
(SecMI_stat) is the signal: a lower error means a member. The paper's setting for DDPM is t = 100, k = 10
of 1,000 steps. No noise is drawn: every step is deterministic.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from membershield.diffusion.attacks.base import DiffusionAttack, DiffusionAttackInputs
from membershield.diffusion.steps import ddim_step, per_image_mse, scaled_timestep
from membershield.errors import ConfigError


def inversion_path(timestep: int, interval: int) -> list[int]:
    """The timesteps the deterministic forward pass visits: 0, k, 2k, ... up to t (t itself last).

    >>> inversion_path(100, 30)
    [0, 30, 60, 90, 100]
    """
    path = list(range(0, timestep, interval))
    return [*path, timestep] if path[-1] != timestep else path


class SecMIAttack(DiffusionAttack):
    name = "secmi"
    title = "SecMI (posterior estimation error)"
    citation = "Duan et al. Are Diffusion Models Vulnerable to Membership Inference Attacks? ICML 2023."

    def __init__(self, *, timestep: int = 100, interval: int = 10) -> None:
        if not 0 < interval <= timestep < 1000:
            raise ConfigError(
                f"secmi needs 0 < interval <= timestep < 1000, got timestep {timestep}, interval {interval}"
            )
        self.timestep = int(timestep)
        self.interval = int(interval)
        self.model_timestep: int | None = None
        self.model_interval: int | None = None

    def score(self, inputs: DiffusionAttackInputs) -> np.ndarray:
        import torch

        model = inputs.model
        t = scaled_timestep(self.timestep, model.num_train_timesteps)
        k = max(1, min(scaled_timestep(self.interval, model.num_train_timesteps), t))
        self.model_timestep, self.model_interval = t, k
        path, back = inversion_path(t, k), t - k
        errors = []
        with torch.inference_mode():
            for x in inputs.batches(f"{self.name}: images"):
                for a, b in pairwise(path):
                    x = ddim_step(x, model.epsilon(x, a), model.alpha_bar(a), model.alpha_bar(b))
                reverse = ddim_step(x, model.epsilon(x, t), model.alpha_bar(t), model.alpha_bar(back))
                forward = ddim_step(reverse, model.epsilon(reverse, back), model.alpha_bar(back), model.alpha_bar(t))
                errors.append(per_image_mse(forward, x).double().cpu().numpy())
        return -np.concatenate(errors)
