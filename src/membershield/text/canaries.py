"""Canaries and their exposure (Carlini et al. 2019, "The Secret Sharer: Evaluating and Testing
Unintended Memorization in Neural Networks", USENIX Security).

A canary is a sentence in a fixed format with a random secret, e.g. "my account number is 281465".
:func:`insert_canaries` adds canaries to a JSONL training file, each repeated a chosen number of times at
random lines (seeded), and writes their metadata to ``canaries.json``. After training, the *exposure* of a
canary with secret ``s`` among the candidate secrets ``R`` (every string of the alphabet and length) is

    exposure(s) = log2 |R| − log2 rank(s),

where ``rank(s)`` is the position of ``s`` when all candidates are sorted by the model's log-perplexity
of the filled-in format (1 = the most likely). A canary the model has not memorised has exposure about
1 bit on average; one it will emit first from the format has the maximum, ``log2 |R|``.

When ``|R|`` is small enough (``max_enumerate``, 10^5 by default) every candidate is scored (batched) and
the rank is exact. Otherwise the paper's estimate is used (Section 4.3): the log-perplexities of sampled
random candidates are fitted with a skew-normal distribution (a normal one if that fit fails), and
``exposure ≈ −log2 CDF(log-perplexity of s)``, capped at ``log2 |R|``.

Ranks are taken among the candidates that were not inserted as other canaries: several memorised canaries
in one model would otherwise push each other down. A repeat count of 0 makes control canaries that are
generated but never inserted; their exposure shows what chance looks like.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from membershield.errors import ConfigError, InputDataError
from membershield.text.data import load_jsonl

ProgressCallback = Callable[[str, int, int], None]

DEFAULT_FORMAT = "my account number is {secret}"
DEFAULT_ALPHABET = "0123456789"
DEFAULT_LENGTH = 6
MAX_ENUMERATE = 100_000
CANARY_SCHEMA_VERSION = "1.0"


@dataclass(frozen=True)
class CanarySpec:
    """The format of the canaries and the space their secrets are drawn from."""

    format: str = DEFAULT_FORMAT
    alphabet: str = DEFAULT_ALPHABET
    length: int = DEFAULT_LENGTH

    def validate(self) -> CanarySpec:
        if self.format.count("{secret}") != 1:
            raise ConfigError(f"the canary format must contain '{{secret}}' exactly once, got {self.format!r}")
        if len(self.alphabet) < 2 or len(set(self.alphabet)) != len(self.alphabet):
            raise ConfigError(
                f"the alphabet needs at least 2 distinct characters, none repeated, got {self.alphabet!r}"
            )
        if self.length < 1:
            raise ConfigError(f"the secret length must be 1 or more, got {self.length}")
        return self

    @property
    def space_size(self) -> int:
        return len(self.alphabet) ** self.length

    def secret(self, index: int) -> str:
        """The ``index``-th secret in lexicographic order of the alphabet as given."""
        base, chars = len(self.alphabet), []
        for _ in range(self.length):
            index, digit = divmod(index, base)
            chars.append(self.alphabet[digit])
        return "".join(reversed(chars))

    def text(self, secret: str) -> str:
        return self.format.replace("{secret}", secret)


def parse_repeats(text: str | list[int]) -> list[int]:
    """``"1,4,16"`` -> ``[1, 4, 16]``: distinct whole numbers, 0 allowed (controls, never inserted)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()] if isinstance(text, str) else [int(v) for v in text]
    except ValueError as exc:
        raise ConfigError(f"--repeats must be comma-separated whole numbers such as 1,4,16, got {text!r}") from exc
    if not values or any(v < 0 for v in values) or len(set(values)) != len(values):
        raise ConfigError(f"--repeats must be distinct whole numbers 0 or more (0 = control), got {text!r}")
    return values


def sample_secrets(spec: CanarySpec, n: int, rng: np.random.Generator, exclude: set[str] | None = None) -> list[str]:
    """``n`` distinct secrets drawn uniformly from the space, none of them in ``exclude``."""
    exclude = exclude or set()
    if n + len(exclude) > spec.space_size:
        raise ConfigError(
            f"{n} distinct secrets asked for, but the space holds {spec.space_size}"
            f" ({len(spec.alphabet)} characters ^ {spec.length}); lengthen the secret or use fewer canaries"
        )
    chosen: dict[str, None] = {}
    while len(chosen) < n:
        need = n - len(chosen)
        draws = rng.integers(0, len(spec.alphabet), size=(2 * need + 8, spec.length))
        for row in draws:
            secret = "".join(spec.alphabet[i] for i in row)
            if secret not in exclude and secret not in chosen:
                chosen[secret] = None
                if len(chosen) == n:
                    break
    return list(chosen)


def insert_canaries(
    data: str | Path,
    out: str | Path,
    count: int,
    repeats: list[int],
    spec: CanarySpec | None = None,
    seed: int = 0,
    text_field: str = "text",
) -> dict[str, Any]:
    """Write ``out``: the records of ``data`` with ``count`` canaries per repeat count inserted at random lines.

    Original lines are kept as they are, in order; each canary copy is a new line ``{text_field: text}``.
    The metadata (also returned) goes to ``canaries.json`` next to ``out``.
    """
    spec = (spec or CanarySpec()).validate()
    repeats = parse_repeats(repeats)
    if count < 1:
        raise ConfigError(f"--count must be 1 or more canaries per repeat count, got {count}")
    source, target = Path(data), Path(out)
    if target.exists() and target.resolve() == source.resolve():
        raise ConfigError(f"--out {target} is the input file; write the file with canaries somewhere else")
    records = load_jsonl(source, text_field)
    rng = np.random.default_rng(seed)
    secrets = sample_secrets(spec, count * len(repeats), rng)
    canaries = []
    for k, secret in enumerate(secrets):
        canaries.append(
            {"id": k, "secret": secret, "text": spec.text(secret), "repeats": repeats[k // count], "lines": []}
        )
    copies = [c["id"] for c in canaries for _ in range(c["repeats"])]
    n_total = len(records) + len(copies)
    slots = rng.permutation(n_total)[: len(copies)]  # random lines for the canary copies
    slot_of = dict(zip(slots.tolist(), rng.permutation(copies).tolist(), strict=True))
    originals = iter(records.raw)
    lines = []
    for line_number in range(n_total):
        if line_number in slot_of:
            canary = canaries[slot_of[line_number]]
            canary["lines"].append(line_number + 1)
            lines.append(json.dumps({text_field: canary["text"]}, ensure_ascii=False))
        else:
            lines.append(next(originals))
    for canary in canaries:
        canary["lines"].sort()
    text = "".join(line + "\n" for line in lines)
    meta_path = target.parent / "canaries.json"
    metadata = {
        "schema_version": CANARY_SCHEMA_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "format": spec.format,
        "alphabet": spec.alphabet,
        "length": spec.length,
        "space_size": spec.space_size,
        "seed": seed,
        "text_field": text_field,
        "count_per_repeat": count,
        "repeats": repeats,
        "source": {"path": str(source), "sha256": records.sha256, "n_records": len(records)},
        "output": {
            "path": str(target),
            "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
            "n_records": n_total,
        },
        "canaries": canaries,
    }
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        meta_path.write_text(json.dumps(metadata, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    except OSError as exc:
        raise InputDataError(f"cannot write {target}: {exc.strerror}") from exc
    metadata["metadata_path"] = str(meta_path)
    return metadata


def load_canaries(path: str | Path) -> tuple[CanarySpec, list[dict[str, Any]], str]:
    """Read ``canaries.json``; returns the spec, the canaries and the file's sha256."""
    p = Path(path)
    if not p.is_file():
        raise InputDataError(f"canaries file not found: {p} (give the canaries.json written by `canaries insert`)")
    raw = p.read_bytes()
    try:
        meta = json.loads(raw)
        spec = CanarySpec(str(meta["format"]), str(meta["alphabet"]), int(meta["length"])).validate()
        canaries = [
            {"id": int(c["id"]), "secret": str(c["secret"]), "repeats": int(c["repeats"])} for c in meta["canaries"]
        ]
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputDataError(f"{p} is not valid JSON: {exc}") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise InputDataError(f"{p} is not a canaries file written by `canaries insert` (missing {exc})") from exc
    if not canaries:
        raise InputDataError(f"{p} lists no canaries")
    bad = [c["secret"] for c in canaries if len(c["secret"]) != spec.length or set(c["secret"]) - set(spec.alphabet)]
    if bad:
        raise InputDataError(f"{p}: secret {bad[0]!r} does not fit the alphabet and length of the file")
    return spec, canaries, hashlib.sha256(raw).hexdigest()


def log_perplexity_bits(lm: Any, texts: list[str], batch_tokens: int, progress: ProgressCallback | None) -> np.ndarray:
    """Total negative log2-likelihood of each text (the Secret Sharer's log-perplexity), in bits."""
    from membershield.text.scoring import score_texts

    scores = score_texts(
        lm, texts, distribution=False, batch_tokens=batch_tokens, progress=progress, label="scoring candidates"
    )
    return scores.total_nll() / math.log(2.0)


def _fit_cdf(samples: np.ndarray) -> tuple[Callable[[np.ndarray], np.ndarray], dict[str, Any]]:
    """A log-CDF fitted to sampled log-perplexities: skew-normal, or normal when that fit fails."""
    from scipy import stats

    try:
        with np.errstate(all="ignore"):
            a, loc, scale = stats.skewnorm.fit(samples)
        if not all(np.isfinite([a, loc, scale])) or scale <= 0:
            raise ValueError("degenerate skew-normal fit")
        ks = stats.kstest(samples, "skewnorm", args=(a, loc, scale)).statistic
        return (
            lambda x: stats.skewnorm.logcdf(x, a, loc, scale),
            {"distribution": "skewnorm", "a": a, "loc": loc, "scale": scale, "ks_statistic": float(ks)},
        )
    except (ValueError, RuntimeError, FloatingPointError):
        loc, scale = float(samples.mean()), float(samples.std(ddof=1))
        scale = max(scale, 1e-12)
        ks = stats.kstest(samples, "norm", args=(loc, scale)).statistic
        return (
            lambda x: stats.norm.logcdf(x, loc, scale),
            {"distribution": "norm", "loc": loc, "scale": scale, "ks_statistic": float(ks)},
        )


def _exposure_by_enumeration(
    lm: Any,
    spec: CanarySpec,
    canaries: list[dict[str, Any]],
    canary_bits: np.ndarray,
    batch_tokens: int,
    progress: ProgressCallback | None,
) -> tuple[list[dict[str, Any]], int]:
    """Exact ranks of every canary among all candidate secrets; the rows and how many candidates were scored."""
    inserted = {c["secret"] for c in canaries if c["repeats"] > 0}
    candidates = [spec.secret(i) for i in range(spec.space_size)]
    keep = [s for s in candidates if s not in inserted]
    bits = np.sort(log_perplexity_bits(lm, [spec.text(s) for s in keep], batch_tokens, progress))
    rows = []
    for canary, own in zip(canaries, canary_bits, strict=True):
        # Rank among the non-inserted candidates plus the canary itself; ties count half.
        lower = np.searchsorted(bits, own, side="left")
        ties = np.searchsorted(bits, own, side="right") - lower
        if canary["secret"] not in inserted:
            ties -= 1  # the canary is among the candidates: do not count it against itself
        rank = 1.0 + lower + 0.5 * max(ties, 0)
        size = bits.size + (1 if canary["secret"] in inserted else 0)
        rows.append(
            {
                **canary,
                "log_perplexity_bits": float(own),
                "rank": rank,
                "candidates": size,
                "exposure": max(0.0, math.log2(size) - math.log2(rank)),
            }
        )
    return rows, len(candidates)


def _exposure_by_fit(
    lm: Any,
    spec: CanarySpec,
    canaries: list[dict[str, Any]],
    canary_bits: np.ndarray,
    *,
    samples: int,
    seed: int,
    batch_tokens: int,
    progress: ProgressCallback | None,
) -> tuple[list[dict[str, Any]], int, dict[str, Any]]:
    """Exposures estimated from a distribution fitted to sampled candidates (the space is too large to
    enumerate); the rows, how many candidates were scored, and the fit."""
    secrets = [c["secret"] for c in canaries]
    inserted = {c["secret"] for c in canaries if c["repeats"] > 0}
    rng = np.random.default_rng(seed)
    sampled = sample_secrets(spec, samples, rng, exclude=set(secrets))
    bits = log_perplexity_bits(lm, [spec.text(s) for s in sampled], batch_tokens, progress)
    log_cdf, fit = _fit_cdf(bits)
    size = spec.space_size - len(inserted) + 1
    cap = math.log2(size)
    rows = []
    for canary, own in zip(canaries, canary_bits, strict=True):
        exposure = float(-log_cdf(np.array([own]))[0] / math.log(2.0))
        exposure = min(max(exposure, 0.0), cap) if math.isfinite(exposure) else cap
        empirical = float(np.mean(bits < own))
        rows.append(
            {
                **canary,
                "log_perplexity_bits": float(own),
                "rank": size * 2.0 ** (-exposure),
                "candidates": size,
                "exposure": exposure,
                "sampled_share_below": empirical,
            }
        )
    return rows, len(sampled), fit


def _summary_by_repeats(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_repeats = []
    for r in sorted({c["repeats"] for c in rows}):
        values = np.array([c["exposure"] for c in rows if c["repeats"] == r])
        by_repeats.append(
            {
                "repeats": r,
                "n_canaries": int(values.size),
                "mean_exposure": float(values.mean()),
                "median_exposure": float(np.median(values)),
                "min_exposure": float(values.min()),
                "max_exposure": float(values.max()),
                "n_fully_exposed": int(sum(c["rank"] <= 1.0 for c in rows if c["repeats"] == r)),
            }
        )
    return by_repeats


def canary_exposure(
    lm: Any,
    canaries_path: str | Path,
    *,
    max_enumerate: int = MAX_ENUMERATE,
    samples: int = 10_000,
    seed: int = 0,
    batch_tokens: int = 8192,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Exposure of every canary in ``canaries.json`` under ``lm``, and a summary per repeat count."""
    spec, canaries, file_sha = load_canaries(canaries_path)
    if samples < 100:
        raise ConfigError(f"--samples must be at least 100 candidates for the distribution fit, got {samples}")
    secrets = [c["secret"] for c in canaries]
    canary_bits = log_perplexity_bits(lm, [spec.text(s) for s in secrets], batch_tokens, progress)
    fit: dict[str, Any] | None = None
    if spec.space_size <= max_enumerate:
        method = "enumeration"
        rows, n_scored = _exposure_by_enumeration(lm, spec, canaries, canary_bits, batch_tokens, progress)
    else:
        rows, n_scored, fit = _exposure_by_fit(
            lm, spec, canaries, canary_bits, samples=samples, seed=seed, batch_tokens=batch_tokens, progress=progress
        )
        method = f"{fit['distribution']} fit to {samples} sampled candidates"
    return {
        "schema_version": CANARY_SCHEMA_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": lm.describe(),
        "canaries_file": {"path": str(canaries_path), "sha256": file_sha},
        "format": spec.format,
        "alphabet": spec.alphabet,
        "length": spec.length,
        "space_size": spec.space_size,
        "max_exposure": math.log2(spec.space_size),
        "method": method,
        "candidates_scored": n_scored,
        "fit": fit,
        "by_repeats": _summary_by_repeats(rows),
        "canaries": rows,
    }
