"""LoRA fine-tuning of a causal LM on texts, plainly or with DP-SGD through Opacus on the LoRA parameters.

The base model's weights stay frozen; only the low-rank adapters (peft's LoRA on the attention, and MLP
where present, projections) train, with AdamW on shuffled minibatches. Each text's loss is the mean
next-token loss over its own tokens, and a batch's loss the mean over its texts, so that under DP-SGD
every text is one record whose gradient Opacus clips to ``max_grad_norm`` before the noise is added.
The DP run samples minibatches by Poisson sampling, as the accountant (PRV by default, RDP on request)
assumes, and stops before the step that would take ε past a target budget. The adapter is saved with
the base's directory in ``base_model_name_or_path``, so ``audit-text --model ADAPTER`` reads it back.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from membershield.defenses.dp import DPSGD, steps_within_budget
from membershield.errors import ConfigError

# Projection names of the common decoder families: Llama/Mistral/Qwen, GPT-2 (c_attn, c_proj), GPT-NeoX.
LORA_TARGETS = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
    "c_attn",
    "query_key_value",
)


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 8
    alpha: int = 16
    epochs: int = 3
    batch_size: int = 8
    learning_rate: float = 2e-3

    def check(self) -> None:
        problems = [
            f"{name} must be 1 or more, got {value}"
            for name, value in (("rank", self.rank), ("epochs", self.epochs), ("batch_size", self.batch_size))
            if value < 1
        ]
        if not self.learning_rate > 0:
            problems.append(f"learning_rate must be greater than 0, got {self.learning_rate:g}")
        if problems:
            raise ConfigError("fine-tuning settings: " + "; ".join(problems))


def padded_texts(ids: list[list[int]], pad: int) -> tuple[Any, Any]:
    """``(input_ids, attention_mask)`` of every text, right-padded to the longest."""
    import torch

    width = max(len(x) for x in ids)
    tokens = torch.full((len(ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, row in enumerate(ids):
        tokens[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return tokens, mask


def per_text_loss(model: Any, tokens: Any, mask: Any) -> Any:
    """Mean next-token loss of each text over its own tokens (padding excluded): one value per text."""
    import torch

    logits = model(input_ids=tokens, attention_mask=mask).logits[:, :-1]
    targets, kept = tokens[:, 1:], mask[:, 1:].to(logits.dtype)
    losses = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
    )
    return (losses.view(targets.shape) * kept).sum(dim=1) / kept.sum(dim=1).clamp_min(1.0)


def _lora_model(base: Any, settings: LoraSettings, seed: int) -> Any:
    import torch
    from peft import LoraConfig, get_peft_model

    names = {name.rsplit(".", 1)[-1] for name, _ in base.named_modules()}
    targets = [t for t in LORA_TARGETS if t in names]
    if not targets:
        raise ConfigError(f"no projection layer LoRA knows in this model (looked for {', '.join(LORA_TARGETS)})")
    torch.manual_seed(seed)
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=0.0, target_modules=targets)
    return get_peft_model(base, config)


def finetune_lora(
    base_dir: str | Path,
    ids: list[list[int]],
    pad: int,
    out: str | Path,
    *,
    settings: LoraSettings,
    dp: DPSGD | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Fine-tune the base in ``base_dir`` on the token ids ``ids``; save the adapter to ``out``; report."""
    import torch
    from transformers import AutoModelForCausalLM

    settings.check()
    base = AutoModelForCausalLM.from_pretrained(base_dir, local_files_only=True)
    model = _lora_model(base, settings, seed)
    tokens, mask = padded_texts(ids, pad)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(tokens, mask),
        batch_size=settings.batch_size,
        shuffle=dp is None,
        generator=torch.Generator().manual_seed(seed),
    )
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate)
    start = time.perf_counter()
    if dp is None:
        steps, report = _train(model, optimiser, loader, settings.epochs * len(loader)), {}
        trained = model
    else:
        trained, steps, report = _train_private(model, optimiser, loader, settings, dp)
    seconds = time.perf_counter() - start
    _save_adapter(trained, base_dir, out)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"steps": steps, "seconds": seconds, "trainable_parameters": trainable, **report}


def _train(model: Any, optimiser: Any, loader: Any, budget: int) -> int:
    model.train()
    steps = 0
    while steps < budget:
        for tokens, mask in loader:
            if steps >= budget:
                break
            if len(tokens):  # Poisson sampling can draw an empty batch; it still counts as a step
                per_text_loss(model, tokens, mask).mean().backward()
                optimiser.step()
                optimiser.zero_grad()
            steps += 1
    return steps


def _train_private(model: Any, optimiser: Any, loader: Any, settings: LoraSettings, dp: DPSGD):
    from importlib import metadata

    from opacus import PrivacyEngine

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)  # Opacus's RNG is not secure_mode: fine here
        warnings.filterwarnings("ignore", category=FutureWarning)
        engine = PrivacyEngine(accountant=dp.accountant)
        common = dict(
            module=model,
            optimizer=optimiser,
            data_loader=loader,
            max_grad_norm=dp.max_grad_norm,
            poisson_sampling=True,
            grad_sample_mode="hooks",
        )
        private = dp.make_private(engine, settings.epochs, **common)
        module, optimiser, loader = private
        noise, rate = float(optimiser.noise_multiplier), float(loader.sample_rate)
        planned = settings.epochs * len(loader)
        budget = planned
        if dp.epsilon is not None:
            budget = steps_within_budget(dp.accountant, noise, rate, planned, dp.epsilon, dp.delta)
        steps = _train(module, optimiser, loader, budget)
        spent = float(engine.get_epsilon(dp.delta)) if steps else 0.0
    report = {
        "epsilon": spent,
        "target_epsilon": dp.epsilon,
        "delta": dp.delta,
        "noise_multiplier": noise,
        "max_grad_norm": dp.max_grad_norm,
        "sample_rate": rate,
        "steps": steps,
        "planned_steps": planned,
        "stopped_for_budget": steps < planned,
        "accountant": dp.accountant,
        "poisson_sampling": True,
        "trained_parameters": "LoRA adapters only",
        "opacus": metadata.version("opacus"),
    }
    return module._module, steps, report


def _save_adapter(model: Any, base_dir: str | Path, out: str | Path) -> None:
    out = Path(out)
    model.save_pretrained(out)
    config_path = out / "adapter_config.json"
    settings = json.loads(config_path.read_text())
    settings["base_model_name_or_path"] = str(Path(base_dir).resolve())
    config_path.write_text(json.dumps(settings, indent=2))


def shuffled_halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of two random halves of ``n`` records: members and held-out.

    >>> members, holdout = shuffled_halves(5, seed=0)
    >>> sorted([*members.tolist(), *holdout.tolist()]), len(members), len(holdout)
    ([0, 1, 2, 3, 4], 2, 3)
    """
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2 :])
