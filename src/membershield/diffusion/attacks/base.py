"""What every diffusion attack reads, and the batched passes through the model they share.

An attack asks the model for noise estimates ε_θ(x_t, t) of the audit's images, a batch at a time
(``--batch-size`` images on the device at once, so memory does not grow with the number of images).
Random noise is drawn from the audit's seed and the timestep only, and the same draws are added to every
image, member or not: no image's score depends on luckier noise. Scores are oriented once, here:
**higher = more likely a member**, for every attack.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from membershield.attacks.base import keyword_settings
from membershield.diffusion.model import DiffusionModel
from membershield.diffusion.steps import noised, per_image_mse

ProgressCallback = Callable[[str, int, int], None]


def noise_seed(seed: int, timestep: int) -> int:
    """The seed of the noise drawn at ``timestep``: one stream per (audit seed, timestep).

    >>> noise_seed(0, 100) == noise_seed(0, 100), noise_seed(0, 100) == noise_seed(0, 200)
    (True, False)
    """
    return int(np.random.SeedSequence([seed, timestep]).generate_state(1)[0])


@dataclass
class DiffusionAttackInputs:
    """The audit's images in the model's range (N×C×H×W float32, members first) and the model."""

    model: DiffusionModel
    images: np.ndarray
    batch_size: int = 64
    seed: int = 0
    progress: ProgressCallback | None = None
    _losses: dict[tuple[tuple[int, ...], int], np.ndarray] = field(default_factory=dict, repr=False)

    def batches(self, label: str) -> Iterator[Any]:
        """The images as device tensors, ``batch_size`` at a time, reporting ``label`` progress."""
        import torch

        n = self.images.shape[0]
        report = self.progress or (lambda stage, done, total: None)
        report(label, 0, n)
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            yield torch.from_numpy(self.images[start:stop]).to(self.model.device)
            report(label, stop, n)

    def shared_noise(self, timestep: int, draws: int) -> Any:
        """``draws`` noise images for ``timestep`` (draws×C×H×W), the same for every audit image."""
        import torch

        generator = torch.Generator().manual_seed(noise_seed(self.seed, timestep))
        return torch.randn((draws, *self.images.shape[1:]), generator=generator).to(self.model.device)

    def denoising_loss(self, timesteps: tuple[int, ...], draws: int, label: str) -> np.ndarray:
        """Each image's training loss ‖ε − ε_θ(x_t, t)‖² (mean over pixels and the shared draws), N × timesteps.

        Computed once per (timesteps, draws): the loss attack and the audit's utility figures share it.
        """
        import torch

        key = (tuple(timesteps), int(draws))
        if key not in self._losses:
            noise = {t: self.shared_noise(t, draws) for t in timesteps}
            parts = []
            with torch.inference_mode():
                for x0 in self.batches(label):
                    columns = []
                    for t in timesteps:
                        total = torch.zeros(x0.shape[0], dtype=torch.float64, device=x0.device)
                        for eps in noise[t]:
                            eps = eps.expand_as(x0)
                            x_t = noised(x0, eps, self.model.alpha_bar(t))
                            total += per_image_mse(self.model.epsilon(x_t, t), eps).double()
                        columns.append(total / draws)
                    parts.append(torch.stack(columns, dim=1).cpu().numpy())
            self._losses[key] = np.concatenate(parts)
        return self._losses[key]


class DiffusionAttack(ABC):
    """A membership inference attack on a diffusion model: one score per image, higher = member."""

    name: ClassVar[str]
    title: ClassVar[str]
    citation: ClassVar[str]
    access: ClassVar[str] = "white-box (noise predictions)"

    @abstractmethod
    def score(self, inputs: DiffusionAttackInputs) -> np.ndarray:
        """Return float64 ``(n,)`` scores, one per image."""

    def params(self) -> dict[str, object]:
        """Settings that shaped the scores (with timesteps on the model's own schedule), for audit.json."""
        return dict(vars(self))

    @classmethod
    def settings(cls) -> dict[str, Any]:
        """The attack's settings (its keyword-only constructor parameters) and their defaults."""
        return keyword_settings(cls)
