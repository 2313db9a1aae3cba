"""``compare-text``: a LoRA fine-tune of a base LM, undefended and under DP-SGD, each audited the same way.

The pool of texts is split in two random halves (seeded): members, which every variant fine-tunes on,
and held-out texts. Each variant is audited by :func:`membershield.text.audit.run_text_audit` with the
base as the reference model, so the ``reference`` attack measures what the fine-tune added. For a DP
variant the ε the accountant spent is set beside the empirical lower bound the attacks give; a bound
above the ε would expose broken training or accounting, and the verdict says so.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from membershield.defenses.dp import DPSGD
from membershield.defenses.registry import parse_defense
from membershield.errors import ConfigError
from membershield.text.data import load_jsonl, write_jsonl
from membershield.text.finetune import LoraSettings, finetune_lora, shuffled_halves

TEXT_DEFENSES = "none and dp:epsilon=E[,delta=D,max_grad_norm=C,accountant=prv|rdp] (or dp:noise=σ)"


@dataclass
class TextCompareOptions:
    model: str  # the base model directory
    data: str  # JSONL pool of texts
    defenses: list[str] = field(default_factory=lambda: ["none", "dp:epsilon=8"])
    attacks: list[str] | None = None
    text_field: str = "text"
    lora: LoraSettings = field(default_factory=LoraSettings)
    seed: int = 0
    out: str = "membershield-compare-text"
    device: str = "auto"


def parse_text_defenses(specs: list[str]) -> list[tuple[str, DPSGD | None]]:
    """Each spec with its DP settings (``None`` for ``none``); any other defense is a one-line error."""
    parsed: list[tuple[str, DPSGD | None]] = []
    for spec in specs:
        if spec.strip() == "none":
            parsed.append(("none", None))
            continue
        defense = parse_defense(spec)
        if not isinstance(defense, DPSGD):
            raise ConfigError(f"compare-text trains LoRA fine-tunes and supports {TEXT_DEFENSES}; got '{spec}'")
        parsed.append((spec.strip(), defense))
    if "none" not in [name for name, _ in parsed]:
        parsed.insert(0, ("none", None))  # the baseline every verdict is read against
    return parsed


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", name).strip("-") or "variant"


def _split_pool(options: TextCompareOptions, out: Path) -> tuple[Path, Path, list[str]]:
    pool = load_jsonl(options.data, options.text_field)
    if len(pool) < 4:
        raise ConfigError(f"{options.data}: {len(pool)} texts; compare-text needs at least 4 to split in halves")
    members_at, holdout_at = shuffled_halves(len(pool), options.seed)
    members = [pool.texts[i] for i in members_at]
    write_jsonl(out / "members.jsonl", members, options.text_field)
    write_jsonl(out / "holdout.jsonl", [pool.texts[i] for i in holdout_at], options.text_field)
    return out / "members.jsonl", out / "holdout.jsonl", members


def verdict(name: str, training: dict[str, Any], bound: float, baseline: dict[str, Any] | None, worst: Any) -> str:
    """One plain sentence on a variant: its leakage against the baseline and, under DP, against its ε."""
    parts = []
    if baseline is not None and worst is not None and baseline["worst"] is not None:
        lower = worst["auc"] < baseline["worst"]["auc"]
        parts.append(f"strongest attack AUC {worst['auc']:.3f} vs {baseline['worst']['auc']:.3f} undefended")
        parts.append("lower" if lower else "NOT lower")
    if "epsilon" in training:
        spent = training["epsilon"]
        ok = bound <= spent + 1e-9
        parts.append(
            f"ε spent {spent:.2f} ≥ measured lower bound {bound:.2f}: consistent"
            if ok
            else f"measured lower bound {bound:.2f} EXCEEDS ε spent {spent:.2f}: training or accounting is broken"
        )
    return f"{name}: " + "; ".join(parts) if parts else f"{name}: baseline"


def _variant(options: TextCompareOptions, name: str, dp: DPSGD | None, paths: dict[str, Path], ids, pad) -> dict:
    from membershield.audit import REPORTS
    from membershield.text.audit import TextAuditConfig, run_text_audit

    folder = paths["out"] / _slug(name)
    adapter = folder / "adapter"
    training = finetune_lora(options.model, ids, pad, adapter, settings=options.lora, dp=dp, seed=options.seed)
    config = TextAuditConfig(
        model=str(adapter),
        members=str(paths["members"]),
        nonmembers=str(paths["holdout"]),
        reference_model=options.model,
        attacks=list(options.attacks) if options.attacks else None,
        text_field=options.text_field,
        out=str(folder),
        seed=options.seed,
        device=options.device,
    )
    result = run_text_audit(config, reports=REPORTS).result
    worst = result.headline().attack
    rate = result.headline().rate
    return {
        "name": name,
        "defense": {"name": "dp" if dp else "none", "params": dp.params() if dp else {}},
        "training": training,
        "attacks": [asdict(a) for a in result.attacks],
        "empirical_epsilon_lower_bound": max(a.epsilon_lower_bound for a in result.attacks),
        "worst": {
            "attack": worst.name,
            "auc": worst.auc,
            "auc_ci_low": worst.auc_ci_low,
            "auc_ci_high": worst.auc_ci_high,
            "rate": dict(rate) if rate else None,
        },
        "audit": str(folder / "audit.json"),
        "adapter": str(adapter),
    }


def run_text_compare(options: TextCompareOptions, progress=None) -> dict[str, Any]:
    """Fine-tune and audit every variant; write ``OUT/compare-text.json``; return that document."""
    from membershield.text.model import load_language_model

    say = progress or (lambda message: None)
    variants_to_run = parse_text_defenses(options.defenses)
    options.lora.check()
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    members_path, holdout_path, members = _split_pool(options, out)
    base = load_language_model(options.model, device="cpu")  # the tokenizer, and a bad base fails here
    pad = base.tokenizer.pad_token_id if base.tokenizer.pad_token_id is not None else base.tokenizer.eos_token_id
    ids = base.encode(members)
    paths = {"out": out, "members": members_path, "holdout": holdout_path}
    variants: list[dict[str, Any]] = []
    for name, dp in variants_to_run:
        say(f"fine-tuning and auditing {name}")
        variants.append(_variant(options, name, dp, paths, ids, pad))
    baseline = next(v for v in variants if v["name"] == "none")
    for v in variants:
        v["verdict"] = verdict(
            v["name"],
            v["training"],
            v["empirical_epsilon_lower_bound"],
            None if v is baseline else baseline,
            v["worst"],
        )
    document = {
        "base_model": base.describe(),
        "data": {"pool": options.data, "members": len(members), "holdout": len(load_jsonl(holdout_path))},
        "lora": asdict(options.lora),
        "seed": options.seed,
        "variants": variants,
    }
    (out / "compare-text.json").write_text(json.dumps(document, indent=2, default=str))
    return document
