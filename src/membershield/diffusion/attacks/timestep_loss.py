"""Loss at chosen timesteps: members are denoised better than images the model never saw.

Matsumoto, Miura and Yanai 2023 ("Membership Inference Attacks against Diffusion Models", IEEE S&P
Workshops): the training objective ‖ε − ε_θ(√ᾱ_t·x0 + √(1−ᾱ_t)·ε, t)‖² of each image at a fixed
timestep; small t (a few hundred of 1,000) separates members best, while near t = T every image is
noise and nothing separates. The score averages the loss over the chosen timesteps and over ``draws``
noise draws, the same draws for every image.
"""

from __future__ import annotations

import numpy as np

from membershield.diffusion.attacks.base import DiffusionAttack, DiffusionAttackInputs
from membershield.diffusion.steps import scaled_timestep
from membershield.errors import ConfigError


def resolve_timesteps(timesteps: tuple[int, ...], num_train_timesteps: int) -> tuple[int, ...]:
    """Timesteps given on a 1,000-step schedule at the same points of the model's schedule, de-duplicated.

    >>> resolve_timesteps((50, 100, 200), 1000), resolve_timesteps((50, 100, 200), 100)
    ((50, 100, 200), (5, 10, 20))
    """
    return tuple(dict.fromkeys(scaled_timestep(t, num_train_timesteps) for t in timesteps))


class TimestepLossAttack(DiffusionAttack):
    name = "timestep-loss"
    title = "Loss at chosen timesteps"
    citation = "Matsumoto et al. Membership Inference Attacks against Diffusion Models. IEEE SPW 2023."

    def __init__(self, *, timesteps: tuple[int, ...] = (50, 100, 200), draws: int = 4) -> None:
        if not timesteps or any(not 0 <= int(t) < 1000 for t in timesteps):
            raise ConfigError(f"timestep-loss timesteps must be in 0..999 (of 1,000 steps), got {list(timesteps)}")
        if draws < 1:
            raise ConfigError(f"--noise-draws must be 1 or more, got {draws}")
        self.timesteps = tuple(int(t) for t in timesteps)
        self.draws = int(draws)
        self.model_timesteps: tuple[int, ...] | None = None

    def resolved(self, num_train_timesteps: int) -> tuple[int, ...]:
        self.model_timesteps = resolve_timesteps(self.timesteps, num_train_timesteps)
        return self.model_timesteps

    def score(self, inputs: DiffusionAttackInputs) -> np.ndarray:
        steps = self.resolved(inputs.model.num_train_timesteps)
        losses = inputs.denoising_loss(steps, self.draws, f"{self.name}: images")
        return -losses.mean(axis=1)
