"""PIA: proximal initialisation, the model's own noise estimate at t = 0 as the noise of x_t.

Kong et al., ICLR 2024 ("An Efficient Membership Inference Attack for the Diffusion Model by Proximal
Initialization"). ε_0 = ε_θ(x0, 0) is taken as the initial noise, x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε_0, and the
model's estimate at t is compared with it: ‖ε_θ(x_t, t) − ε_0‖_p is small for training images, whose
trajectory the model has fitted. Two queries per image and no random draw. This is PIA, with the raw
ε_0 (not PIAN, which rescales it to look Gaussian). Defaults: t = 200 of 1,000 and the ℓ4 norm, both
settings (``--pia-timestep``, ``p``).
"""

from __future__ import annotations

import numpy as np

from membershield.diffusion.attacks.base import DiffusionAttack, DiffusionAttackInputs
from membershield.diffusion.steps import noised, per_image_lp, scaled_timestep
from membershield.errors import ConfigError


class PIAAttack(DiffusionAttack):
    name = "pia"
    title = "PIA (proximal initialisation)"
    citation = (
        "Kong et al. An Efficient Membership Inference Attack for the Diffusion Model by Proximal Initialization."
        " ICLR 2024."
    )

    def __init__(self, *, timestep: int = 200, p: float = 4.0) -> None:
        if not 0 < timestep < 1000:
            raise ConfigError(f"pia timestep must be in 1..999 (of 1,000 steps), got {timestep}")
        if not p > 0:
            raise ConfigError(f"pia norm p must be positive, got {p}")
        self.timestep = int(timestep)
        self.p = float(p)
        self.model_timestep: int | None = None

    def score(self, inputs: DiffusionAttackInputs) -> np.ndarray:
        import torch

        model = inputs.model
        t = max(1, scaled_timestep(self.timestep, model.num_train_timesteps))
        self.model_timestep = t
        distances = []
        with torch.inference_mode():
            for x0 in inputs.batches(f"{self.name}: images"):
                eps0 = model.epsilon(x0, 0)
                x_t = noised(x0, eps0, model.alpha_bar(t))
                distances.append(per_image_lp(model.epsilon(x_t, t), eps0, self.p).double().cpu().numpy())
        return -np.concatenate(distances)
