"""The language-model audit: load, score every text once per model, attack, measure, write.

Data flow: members + non-members (JSONL) -> target (and reference) model -> per-token scores, computed
once per model (plus the lowercased texts when the lowercase attack runs) -> each attack's scores ->
the metrics of :mod:`membershield.metrics` -> :class:`~membershield.result.AuditResult` (``audit.json``)
and per-record scores (``scores.csv``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from membershield import metrics
from membershield.config import DEFAULT_FPRS
from membershield.data.overlap import Overlap, find_overlap
from membershield.errors import ConfigError, InputDataError, MembershieldError
from membershield.result import AttackResult, AuditResult
from membershield.text.attacks import (
    TextAttackInputs,
    create_text_attack,
    default_attacks,
    parse_text_attack_list,
)
from membershield.text.attacks.min_k import check_fraction
from membershield.text.data import TextRecords, load_jsonl
from membershield.text.scoring import TokenScores, score_texts
from membershield.text.split_check import text_split_check

ProgressCallback = Callable[[str, int, int], None]


@dataclass
class TextAuditConfig:
    model: str
    members: str
    nonmembers: str
    reference_model: str | None = None
    attacks: list[str] | None = None  # None: every attack that applies
    text_field: str = "text"
    out: str = "membershield-text-audit"
    seed: int = 0
    fprs: list[float] = field(default_factory=lambda: list(DEFAULT_FPRS))
    delta: float = 1e-5
    prior: float = 0.5
    top_k: int = 10
    min_k: float = 0.2
    batch_tokens: int = 8192
    max_length: int | None = None
    stride: int | None = None
    device: str = "auto"
    split_check: bool = True
    add_bos: bool | None = None  # None: score the tokenizer's default encoding, as the model was trained
    drop_overlap: bool = False  # texts on both sides: an error unless they are to be dropped

    def validate(self) -> TextAuditConfig:
        has_reference = self.reference_model is not None
        self.attacks = parse_text_attack_list(self.attacks) if self.attacks else default_attacks(has_reference)
        self.min_k = check_fraction(self.min_k)
        if not self.fprs or any(not 0 < f < 1 for f in self.fprs):
            raise ConfigError(f"fprs must be numbers strictly between 0 and 1, got {self.fprs}")
        self.fprs = sorted(float(f) for f in self.fprs)
        if not 0 <= self.delta < 1:
            raise ConfigError(f"delta must be in [0, 1), got {self.delta}")
        if self.batch_tokens < 1:
            raise ConfigError(f"--batch-tokens must be 1 or more, got {self.batch_tokens}")
        if self.max_length is not None and self.max_length < 2:
            raise ConfigError(f"--max-length must be at least 2 tokens, got {self.max_length}")
        for attack in self.attacks:
            create_text_attack(attack, {"min_k": self.min_k}).check(has_reference)
        return self


@dataclass
class TextAuditRun:
    result: AuditResult
    scores: pd.DataFrame


def _excerpt(text: str, width: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def measure(
    scores: np.ndarray,
    is_member: np.ndarray,
    config: TextAuditConfig,
    slices: dict[str, np.ndarray],
    records: list[dict[str, Any]],
) -> dict[str, Any]:
    """The fields of an :class:`AttackResult` that come from the metrics (as for classifier audits)."""
    auc, interval = metrics.auc_with_ci(scores, is_member)
    rates = [metrics.tpr_at_fpr(scores, is_member, f) for f in config.fprs]
    bound = metrics.empirical_epsilon_lower_bound(scores, is_member, delta=config.delta, seed=config.seed)
    advantage = metrics.membership_advantage(scores, is_member, seed=config.seed)
    slice_rows = []
    for by, values in slices.items():
        for row in metrics.slice_metrics(scores, is_member, values, fprs=(0.01,)):
            slice_rows.append({"by": by, **row})
    exposed = metrics.top_exposed(scores, is_member, k=config.top_k)
    for item in exposed:
        item.update(records[item["index"]])
    return {
        "auc": auc,
        "auc_ci_low": interval.low,
        "auc_ci_high": interval.high,
        "advantage": advantage.value,
        "advantage_ci_low": advantage.ci_low,
        "advantage_ci_high": advantage.ci_high,
        "epsilon_lower_bound": bound.epsilon,
        "epsilon_detail": asdict(bound),
        "tpr_at_fpr": [r.to_dict() for r in rates],
        "ppv": metrics.headline_ppv(rates, config.prior),
        "slices": slice_rows,
        "top_exposed": exposed,
    }


def tokens_per_record(n_tokens: np.ndarray) -> dict[str, float]:
    """How many tokens of each record were scored (which ones: ``target.encoding``).

    >>> tokens_per_record(np.array([3, 5, 10]))
    {'min': 3, 'median': 5.0, 'mean': 6.0, 'max': 10}
    """
    return {
        "min": int(n_tokens.min()),
        "median": float(np.median(n_tokens)),
        "mean": float(n_tokens.mean()),
        "max": int(n_tokens.max()),
    }


def _length_buckets(n_tokens: np.ndarray) -> np.ndarray:
    """Token-length terciles, labelled by their ranges, for per-length slices."""
    edges = np.unique(np.quantile(n_tokens, [1 / 3, 2 / 3]))
    bucket = np.searchsorted(edges, n_tokens, side="right")
    bounds = [int(n_tokens.min()), *[int(e) for e in edges], int(n_tokens.max())]
    names = [f"{i + 1}: {bounds[i]}-{bounds[i + 1]} tokens" for i in range(len(bounds) - 1)]
    return np.array([names[min(b, len(names) - 1)] for b in bucket])


def _load_records(config: TextAuditConfig) -> tuple[TextRecords, TextRecords, Overlap | None]:
    """Members and non-members; a text on both sides is an error, or with ``drop_overlap`` dropped."""
    members = load_jsonl(config.members, config.text_field)
    nonmembers = load_jsonl(config.nonmembers, config.text_field)
    overlap = find_overlap(np.array(members.texts, dtype=object), np.array(nonmembers.texts, dtype=object), "text")
    if overlap and not config.drop_overlap:
        raise InputDataError(
            f"{overlap.member_rows.size} member text(s) of {members.path} are also non-members in"
            f" {nonmembers.path} (lines {', '.join(str(members.lines[i]) for i in overlap.member_rows[:5])} and"
            f" {', '.join(str(nonmembers.lines[i]) for i in overlap.nonmember_rows[:5])}): a record cannot be both;"
            " fix the split, or pass --drop-overlap to remove them from both sides"
        )
    if overlap:
        members = _without(members, overlap.member_rows)
        nonmembers = _without(nonmembers, overlap.nonmember_rows)
    for records, role in ((members, "members"), (nonmembers, "non-members")):
        if len(records) < 2:
            raise InputDataError(f"{records.path}: {len(records)} record(s); an audit needs at least 2 {role}")
    return members, nonmembers, overlap if overlap else None


def _without(records: TextRecords, rows: np.ndarray) -> TextRecords:
    keep = [i for i in range(len(records)) if i not in set(rows.tolist())]
    return replace(
        records,
        texts=[records.texts[i] for i in keep],
        lines=[records.lines[i] for i in keep],
        raw=[records.raw[i] for i in keep],
    )


def run_text_audit(config: TextAuditConfig, progress: ProgressCallback | None = None) -> TextAuditRun:
    """Audit a causal LM on members and non-members; write ``audit.json`` and ``scores.csv`` to ``config.out``."""
    from membershield.text.model import load_language_model

    report = progress or (lambda stage, done, total: None)
    config.validate()
    assert config.attacks is not None
    options = {"min_k": config.min_k}
    attacks = [create_text_attack(name, options) for name in config.attacks]
    timings: dict[str, float] = {}

    clock = time.perf_counter()
    report("loading data and model", 0, 0)
    members, nonmembers, overlap = _load_records(config)
    texts = members.texts + nonmembers.texts
    is_member = np.zeros(len(texts), dtype=bool)
    is_member[: len(members)] = True
    source = np.array(["members"] * len(members) + ["nonmembers"] * len(nonmembers))
    lines = np.array(members.lines + nonmembers.lines, dtype=np.int64)
    lm = load_language_model(config.model, config.device, add_bos=config.add_bos)
    reference_lm = (
        load_language_model(config.reference_model, config.device, add_bos=config.add_bos)
        if config.reference_model
        else None
    )
    timings["load"] = time.perf_counter() - clock

    scoring = {"batch_tokens": config.batch_tokens, "max_length": config.max_length, "stride": config.stride}
    clock = time.perf_counter()
    target = score_texts(
        lm,
        texts,
        distribution=any(a.needs_distribution for a in attacks),
        progress=report,
        label="scoring texts (target)",
        where=[f"{members.path}:{n}" for n in members.lines] + [f"{nonmembers.path}:{n}" for n in nonmembers.lines],
        **scoring,
    )
    lowercase: TokenScores | None = None
    if any(a.needs_lowercase for a in attacks):
        lowercase = score_texts(
            lm,
            [t.lower() for t in texts],
            distribution=False,
            progress=report,
            label="scoring lowercased texts",
            **scoring,
        )
    reference: TokenScores | None = None
    if reference_lm is not None and any(a.needs_reference for a in attacks):
        reference = score_texts(
            reference_lm, texts, distribution=False, progress=report, label="scoring texts (reference)", **scoring
        )
    timings["scoring"] = time.perf_counter() - clock
    n_tokens = target.n_tokens

    inputs = TextAttackInputs(texts=texts, target=target, lowercase=lowercase, reference=reference)
    slices = {"length": _length_buckets(n_tokens)}
    records = [
        {"source": str(source[i]), "line": int(lines[i]), "n_tokens": int(n_tokens[i]), "text": _excerpt(texts[i])}
        for i in range(len(texts))
    ]
    attack_results: list[AttackResult] = []
    columns: dict[str, np.ndarray] = {}
    for i, attack in enumerate(attacks):
        report("attacks", i, len(attacks))
        start = time.perf_counter()
        scores = np.asarray(attack.score(inputs), dtype=np.float64)
        seconds = time.perf_counter() - start
        columns[attack.name] = scores
        attack_results.append(
            AttackResult(
                name=attack.name,
                title=attack.title,
                citation=attack.citation,
                access=attack.access,
                params=attack.params(),
                seconds=seconds,
                **measure(scores, is_member, config, slices, records),
            )
        )
    report("attacks", len(attacks), len(attacks))
    timings["attacks"] = sum(r.seconds for r in attack_results)

    warnings: list[str] = []
    if overlap is not None:
        warnings.append(
            f"{overlap.member_rows.size} member and {overlap.nonmember_rows.size} non-member texts were on both"
            " sides and were removed from both (--drop-overlap)"
        )
    split = None
    if config.split_check:
        clock = time.perf_counter()
        report("split check", 0, 0)
        split = text_split_check(texts, is_member, n_tokens, seed=config.seed)
        timings["split_check"] = time.perf_counter() - clock
        if (warning := split.warning("the texts alone")) is not None:
            warnings.append(warning)

    nll = target.mean_nll()
    total_nll, total_tokens = target.total_nll(), n_tokens.astype(np.float64)
    utility = {
        "member_mean_nll": float(nll[is_member].mean()),
        "nonmember_mean_nll": float(nll[~is_member].mean()),
        "member_perplexity": float(np.exp(total_nll[is_member].sum() / total_tokens[is_member].sum())),
        "nonmember_perplexity": float(np.exp(total_nll[~is_member].sum() / total_tokens[~is_member].sum())),
    }
    utility["nll_gap"] = utility["nonmember_mean_nll"] - utility["member_mean_nll"]
    target_info = lm.describe() | {"access": "next-token distributions"}
    target_info["reference_model"] = reference_lm.describe() if reference_lm is not None else None
    result = AuditResult(
        target=target_info,
        data={
            "fingerprints": {"members": members.sha256, "nonmembers": nonmembers.sha256},
            "n_members": len(members),
            "n_nonmembers": len(nonmembers),
            "n_population": 0,
            "text_field": config.text_field,
            "n_tokens_members": int(n_tokens[is_member].sum()),
            "n_tokens_nonmembers": int(n_tokens[~is_member].sum()),
            "tokens_per_record": tokens_per_record(n_tokens),
            "overlap_dropped": overlap.to_dict() if overlap is not None else None,
        },
        utility=utility,
        split_check=split.to_dict() if split else None,
        references={
            "count": 1 if reference_lm is not None else 0,
            "model": reference_lm.path if reference_lm is not None else None,
            "sha256": reference_lm.weights_sha256 if reference_lm is not None else None,
        },
        attacks=attack_results,
        config=asdict(config),
        timings=timings,
        warnings=warnings,
    )
    frame = pd.DataFrame(
        {
            "index": np.arange(len(texts)),
            "source": source,
            "line": lines,
            "is_member": is_member,
            "n_tokens": n_tokens,
            "mean_nll": nll,
            **columns,
        }
    )
    run = TextAuditRun(result, frame)
    write_text_outputs(run, config.out)
    return run


def write_text_outputs(run: TextAuditRun, out: str | Path) -> None:
    directory = Path(out)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        run.result.write_json(directory / "audit.json")
        run.scores.to_csv(directory / "scores.csv", index=False)
    except OSError as exc:
        raise MembershieldError(f"cannot write results to {directory}: {exc.strerror} (pass --out DIR)") from exc
