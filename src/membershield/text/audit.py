"""The language-model audit: load, score every text once per model, attack, measure, write.

Data flow: members + non-members (JSONL, :mod:`.records`) -> target (and reference) model -> per-token
scores, computed once per model (plus the lowercased texts when the lowercase attack runs) -> each
attack's scores -> the metrics, shared with every audit kind (:mod:`membershield.audit.measure`) ->
:class:`~membershield.result.AuditResult` and per-record scores -> every artifact
(:func:`membershield.audit.write_audit_outputs`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from membershield.audit.measure import MeasureSettings, ProgressCallback, run_attacks
from membershield.audit.outputs import AuditRun, write_audit_outputs
from membershield.config import DEFAULT_FPRS
from membershield.errors import ConfigError
from membershield.result import AttackResult, AuditResult
from membershield.text.attacks import (
    QueryingInputs,
    QueryingTextAttack,
    TextAttack,
    TextAttackInputs,
    TextModelQueries,
    create_text_attack,
    default_attacks,
    parse_text_attack_list,
)
from membershield.text.attacks.min_k import check_fraction
from membershield.text.records import TextAuditData, length_buckets, load_text_data, tokens_per_record
from membershield.text.scoring import score_texts
from membershield.text.split_check import text_split_check


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
    # settings of the attacks that query the model again (recall, dc-pdd, neighbourhood)
    recall_shots: int = 4
    recall_prefix: str | None = None  # JSONL of non-member texts for the ReCaLL prefix; None: the non-members
    reference_corpus: str | None = None  # JSONL corpus for DC-PDD's token frequencies; None: the non-members
    dc_pdd_cap: float = 0.01
    neighbours: int = 10

    def attack_options(self) -> dict[str, Any]:
        """What the attacks are built from (each reads the options it has)."""
        names = ("min_k", "text_field", "recall_shots", "recall_prefix", "reference_corpus", "dc_pdd_cap")
        return {name: getattr(self, name) for name in (*names, "neighbours")}

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
            create_text_attack(attack, self.attack_options()).check(has_reference)
        return self


def _load_models(config: TextAuditConfig) -> tuple[Any, Any | None]:
    from membershield.targets.registry import load_for

    options = {"device": config.device, "add_bos": config.add_bos}
    lm = load_for("audit-text", config.model, **options).target
    reference = load_for("audit-text", config.reference_model, **options).target if config.reference_model else None
    return lm, reference


def _score(
    config: TextAuditConfig,
    data: TextAuditData,
    models: tuple[Any, Any | None],
    attacks: list[TextAttack],
    report: ProgressCallback,
) -> TextAttackInputs:
    """Every text's per-token scores under each model the attacks read, computed once."""
    lm, reference_lm = models
    texts = data.texts
    scoring = {"batch_tokens": config.batch_tokens, "max_length": config.max_length, "stride": config.stride}
    distribution = any(a.needs_distribution for a in attacks)
    target = score_texts(
        lm, texts, distribution=distribution, progress=report, label="scoring texts (target)", where=data.places,
        **scoring,
    )  # fmt: skip
    lowercase = reference = None
    if any(a.needs_lowercase for a in attacks):
        lowered = [t.lower() for t in texts]
        lowercase = score_texts(
            lm, lowered, distribution=False, progress=report, label="scoring lowercased texts", **scoring
        )
    if reference_lm is not None and any(a.needs_reference for a in attacks):
        reference = score_texts(
            reference_lm, texts, distribution=False, progress=report, label="scoring texts (reference)", **scoring
        )
    if not any(isinstance(a, QueryingTextAttack) for a in attacks):
        return TextAttackInputs(texts=texts, target=target, lowercase=lowercase, reference=reference)
    queries = TextModelQueries(
        lm, lm.encode(texts), np.flatnonzero(~data.is_member), texts, config.text_field, seed=config.seed,
        progress=report, **scoring,
    )  # fmt: skip
    return QueryingInputs(texts=texts, target=target, lowercase=lowercase, reference=reference, queries=queries)


def _utility(inputs: TextAttackInputs, is_member: np.ndarray) -> dict[str, float]:
    """Mean token NLL and perplexity of members and of non-members (where a classifier has accuracy)."""
    target = inputs.target
    nll, total_nll, total_tokens = target.mean_nll(), target.total_nll(), target.n_tokens.astype(np.float64)
    utility = {
        "member_mean_nll": float(nll[is_member].mean()),
        "nonmember_mean_nll": float(nll[~is_member].mean()),
        "member_perplexity": float(np.exp(total_nll[is_member].sum() / total_tokens[is_member].sum())),
        "nonmember_perplexity": float(np.exp(total_nll[~is_member].sum() / total_tokens[~is_member].sum())),
    }
    utility["nll_gap"] = utility["nonmember_mean_nll"] - utility["member_mean_nll"]
    return utility


def _split_check(config: TextAuditConfig, data: TextAuditData, n_tokens: np.ndarray, warnings: list[str]):
    if data.overlap is not None:
        warnings.append(
            f"{data.overlap.member_rows.size} member and {data.overlap.nonmember_rows.size} non-member texts were"
            " on both sides and were removed from both (--drop-overlap)"
        )
    if not config.split_check:
        return None
    split = text_split_check(data.texts, data.is_member, n_tokens, seed=config.seed)
    if (warning := split.warning("the texts alone")) is not None:
        warnings.append(warning)
    return split.to_dict()


def _result(
    config: TextAuditConfig,
    data: TextAuditData,
    models: tuple[Any, Any | None],
    inputs: TextAttackInputs,
    attacks: list[AttackResult],
    split: dict | None,
    timings: dict[str, float],
    warnings: list[str],
) -> AuditResult:
    lm, reference_lm = models
    n_tokens, is_member = inputs.target.n_tokens, data.is_member
    target_info = lm.describe() | {"access": "next-token distributions"}
    target_info["reference_model"] = reference_lm.describe() if reference_lm is not None else None
    return AuditResult(
        target=target_info,
        data={
            "fingerprints": {"members": data.members.sha256, "nonmembers": data.nonmembers.sha256},
            "n_members": len(data.members),
            "n_nonmembers": len(data.nonmembers),
            "n_population": 0,
            "text_field": config.text_field,
            "n_tokens_members": int(n_tokens[is_member].sum()),
            "n_tokens_nonmembers": int(n_tokens[~is_member].sum()),
            "tokens_per_record": tokens_per_record(n_tokens),
            "overlap_dropped": data.overlap.to_dict() if data.overlap is not None else None,
        },
        utility=_utility(inputs, is_member),
        split_check=split,
        references={
            "count": 1 if reference_lm is not None else 0,
            "model": reference_lm.path if reference_lm is not None else None,
            "sha256": reference_lm.weights_sha256 if reference_lm is not None else None,
        },
        attacks=attacks,
        config=asdict(config),
        timings=timings,
        warnings=warnings,
    )


def _scores_frame(data: TextAuditData, inputs: TextAttackInputs, columns: dict[str, np.ndarray]) -> pd.DataFrame:
    index = np.arange(len(data.texts))
    return pd.DataFrame(
        {
            "index": index,
            "source": data.source,
            "line": data.lines,
            "is_member": data.is_member,
            "n_tokens": inputs.target.n_tokens,
            "mean_nll": inputs.target.mean_nll(),
            **columns,
        }
    )


def run_text_audit(
    config: TextAuditConfig, progress: ProgressCallback | None = None, *, reports: tuple[str, ...] = ()
) -> AuditRun:
    """Audit a causal LM on members and non-members; write ``audit.json``, ``scores.csv`` and the
    ``reports`` asked for to ``config.out``."""
    report = progress or (lambda stage, done, total: None)
    config.validate()
    assert config.attacks is not None
    attacks = [create_text_attack(name, config.attack_options()) for name in config.attacks]
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    report("loading data and model", 0, 0)
    data = load_text_data(config.members, config.nonmembers, config.text_field, config.drop_overlap)
    models = _load_models(config)
    timings["load"] = time.perf_counter() - clock
    clock = time.perf_counter()
    inputs = _score(config, data, models, attacks, report)
    timings["scoring"] = time.perf_counter() - clock
    n_tokens = inputs.target.n_tokens
    results, columns = run_attacks(
        attacks,
        inputs,
        data.is_member,
        MeasureSettings.of(config),
        slices={"length": length_buckets(n_tokens)},
        origin=data.origin(n_tokens),
        progress=report,
    )
    timings["attacks"] = sum(r.seconds for r in results)
    warnings: list[str] = []
    clock = time.perf_counter()
    if config.split_check:
        report("split check", 0, 0)
    split = _split_check(config, data, n_tokens, warnings)
    if split is not None:
        timings["split_check"] = time.perf_counter() - clock
    result = _result(config, data, models, inputs, results, split, timings, warnings)
    run = AuditRun(result, _scores_frame(data, inputs, columns))
    write_audit_outputs(run, config.out, reports=reports)
    return run
