"""DP-SGD (Abadi et al., "Deep Learning with Differential Privacy", CCS 2016) through Opacus.

The spec's model and optimiser are handed to Opacus's ``PrivacyEngine``: every step clips each record's
gradient to norm ``max_grad_norm``, adds Gaussian noise of standard deviation
``noise_multiplier · max_grad_norm`` to their sum, and then takes the spec's optimiser step (DP-Adam when
the spec says Adam). Minibatches are drawn by Poisson sampling, each record independently with
probability ``sample_rate = 1 / ceil(n / batch_size)``, which is what the accountant assumes.

Each record's gradient norm comes from Opacus's ghost clipping (Goodfellow 2015; Li et al., ICLR 2022):
for a linear layer the norm follows from the layer's input and output gradient alone, so the clipped sum
costs a second backward pass instead of a materialised gradient per record. The clipping and the noise,
and so the guarantee, are those of DP-SGD; on the example MLP the training costs about a third of what
per-record gradients cost (``bench/defenses.py``). A model that uses a layer twice in one forward pass
(tied weights), which ghost clipping refuses, trains with per-record gradients; the report's
``clipping`` says which ran.

Two ways to set the noise:

* ``dp:epsilon=E`` (with ``delta``, default 1e-5): Opacus's ``make_private_with_epsilon`` calibrates the
  noise so that the accountant reaches at most ε after the spec's epochs;
* ``dp:noise=σ``: a fixed noise multiplier; the ε spent is reported. With ``epsilon`` given as well, it
  is a budget.

Either way, training stops before the step that would take the accountant above a given ε. The
accountant is PRV (Gopi et al., NeurIPS 2021) by default, or RDP (Mironov 2017) with ``accountant=rdp``.
The report carries ε spent, δ, the noise multiplier, the sample rate, the number of steps and the
accountant: everything needed to recompute ε with ``opacus.accountants``.
"""

from __future__ import annotations

import time
import warnings
from importlib import metadata
from typing import Any

import numpy as np
import torch
from torch import nn

from membershield.defenses.training import Trained, TrainingDefense, build_model, make_optimiser
from membershield.errors import ConfigError
from membershield.training.vectorised import VectorisedSpec

ACCOUNTANTS = ("prv", "rdp")
DEFAULT_DELTA = 1e-5


def epsilon_spent(accountant: str, noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """ε after ``steps`` Poisson-sampled Gaussian steps, computed by Opacus's accountant of that name."""
    from opacus.accountants import create_accountant

    if steps == 0:
        return 0.0
    ledger = create_accountant(mechanism=accountant)
    ledger.history = [(noise_multiplier, sample_rate, steps)]
    return float(ledger.get_epsilon(delta=delta))


def steps_within_budget(
    accountant: str, noise_multiplier: float, sample_rate: float, planned: int, epsilon: float, delta: float
) -> int:
    """The most steps, up to ``planned``, after which the accountant's ε is still at most ``epsilon``.

    ε grows with the number of identical steps, so a binary search over the count finds it.
    """
    if epsilon_spent(accountant, noise_multiplier, sample_rate, planned, delta) <= epsilon:
        return planned
    low, high = 0, planned  # epsilon(low) <= budget < epsilon(high)
    while high - low > 1:
        middle = (low + high) // 2
        if epsilon_spent(accountant, noise_multiplier, sample_rate, middle, delta) <= epsilon:
            low = middle
        else:
            high = middle
    return low


class DPSGD(TrainingDefense):
    name = "dp"
    citation = "Abadi et al., CCS 2016; Opacus"

    def __init__(
        self,
        epsilon: float | None = None,
        noise: float | None = None,
        delta: float = DEFAULT_DELTA,
        max_grad_norm: float = 1.0,
        accountant: str = "prv",
    ) -> None:
        if epsilon is None and noise is None:
            raise ConfigError("defense 'dp' needs epsilon=E (a privacy budget) or noise=σ (a noise multiplier)")
        if epsilon is not None and not epsilon > 0:
            raise ConfigError(f"defense 'dp': epsilon must be greater than 0, got {epsilon:g}")
        if noise is not None and not noise > 0:
            raise ConfigError(f"defense 'dp': noise must be greater than 0, got {noise:g}")
        if not 0 < delta < 1:
            raise ConfigError(f"defense 'dp': delta must be strictly between 0 and 1, got {delta:g}")
        if not max_grad_norm > 0:
            raise ConfigError(f"defense 'dp': max_grad_norm must be greater than 0, got {max_grad_norm:g}")
        if accountant not in ACCOUNTANTS:
            raise ConfigError(f"defense 'dp': accountant must be one of {', '.join(ACCOUNTANTS)}, got '{accountant}'")
        self.epsilon = epsilon
        self.noise = noise
        self.delta = delta
        self.max_grad_norm = max_grad_norm
        self.accountant = accountant

    def params(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if self.epsilon is not None:
            values["epsilon"] = self.epsilon
        if self.noise is not None:
            values["noise"] = self.noise
        values.update(delta=self.delta, max_grad_norm=self.max_grad_norm, accountant=self.accountant)
        return values

    def check(self, spec: VectorisedSpec) -> None:
        if spec.epochs < 1:
            raise ConfigError("defense 'dp': the recipe trains for 0 epochs; there is nothing to make private")

    def train(self, spec: VectorisedSpec, X: np.ndarray, y: np.ndarray, n_classes: int, seed: int) -> Trained:
        from opacus.validators import ModuleValidator

        model = build_model(spec, X, y, n_classes, seed)
        problems = ModuleValidator.validate(model, strict=False)
        if problems:
            shown = "; ".join(str(p).splitlines()[0] for p in problems[:3])
            raise ConfigError(
                f"defense 'dp': Opacus cannot train this model with per-record gradients: {shown}"
                " (replace those layers in build(), e.g. BatchNorm with GroupNorm)"
            )
        try:
            return self._train(spec, model, X, y, "ghost")
        except NotImplementedError:
            # Ghost clipping refuses a layer used twice in one forward pass (tied weights); per-record
            # gradients handle it. The same seed rebuilds the same initial model.
            return self._train(spec, build_model(spec, X, y, n_classes, seed), X, y, "hooks")

    def _train(self, spec: VectorisedSpec, model: nn.Module, X: np.ndarray, y: np.ndarray, clipping: str) -> Trained:
        from opacus import PrivacyEngine

        dataset = torch.utils.data.TensorDataset(
            torch.tensor(np.asarray(X), dtype=torch.float32),
            torch.tensor(np.asarray(y), dtype=torch.int64),
        )
        loader = torch.utils.data.DataLoader(dataset, batch_size=spec.batch_size)
        optimiser = make_optimiser(spec, model.parameters())
        with warnings.catch_warnings():
            # Opacus warns that its RNG is not cryptographically secure (secure_mode=False: fine for an
            # audit, which needs reproducible models) and about hooks; the report says what was done.
            warnings.filterwarnings("ignore", category=UserWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            engine = PrivacyEngine(accountant=self.accountant)
            clock = time.perf_counter()  # accounting time: calibrating σ (for a target ε), budget, ε spent
            common = dict(
                module=model,
                optimizer=optimiser,
                data_loader=loader,
                max_grad_norm=self.max_grad_norm,
                poisson_sampling=True,
                criterion=nn.CrossEntropyLoss(),
                grad_sample_mode=clipping,
            )
            private = self.make_private(engine, spec.epochs, **common)
            # Ghost clipping hands back a criterion that runs the two backward passes it needs.
            module, optimiser, criterion, loader = private if clipping == "ghost" else (*private[:2], None, private[2])
            noise_multiplier = float(optimiser.noise_multiplier)
            sample_rate = float(loader.sample_rate)
            planned = spec.epochs * len(loader)
            budget = planned
            if self.epsilon is not None:
                budget = steps_within_budget(
                    self.accountant, noise_multiplier, sample_rate, planned, self.epsilon, self.delta
                )
            accounting = time.perf_counter() - clock
            steps = self._run(module, optimiser, criterion or nn.CrossEntropyLoss(), loader, budget)
            clock = time.perf_counter()
            spent = float(engine.get_epsilon(self.delta)) if steps else 0.0
            accounting += time.perf_counter() - clock
            trained = module.to_standard_module()
        return Trained(
            trained.eval(),
            {
                "epsilon": spent,
                "delta": self.delta,
                "target_epsilon": self.epsilon,
                "noise_multiplier": noise_multiplier,
                "max_grad_norm": self.max_grad_norm,
                "sample_rate": sample_rate,
                "expected_batch_size": sample_rate * len(y),
                "steps": steps,
                "planned_steps": planned,
                "stopped_for_budget": steps < planned,
                "epochs": spec.epochs,
                "accountant": self.accountant,
                "poisson_sampling": True,
                "clipping": clipping,
                "opacus": metadata.version("opacus"),
                "accounting_seconds": accounting,
            },
        )

    def make_private(self, engine: Any, epochs: int, **common: Any) -> Any:
        """Opacus's private module, optimiser and loader: noise calibrated to ε over ``epochs`` when a target
        ε alone is given, else the fixed noise multiplier."""
        try:
            if self.epsilon is not None and self.noise is None:
                return engine.make_private_with_epsilon(
                    target_epsilon=self.epsilon, target_delta=self.delta, epochs=epochs, **common
                )
            return engine.make_private(noise_multiplier=self.noise, **common)
        except ValueError as exc:  # "The privacy budget is too low." and similar
            raise ConfigError(f"defense 'dp': {exc}".splitlines()[0]) from exc

    @staticmethod
    def _run(module: nn.Module, optimiser: Any, criterion: Any, loader: Any, budget: int) -> int:
        module.train()
        steps = 0
        while steps < budget:
            for features, labels in loader:
                if steps >= budget:
                    break
                optimiser.zero_grad()
                criterion(module(features), labels).backward()
                optimiser.step()
                steps += 1
        return steps
