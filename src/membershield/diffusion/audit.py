"""The diffusion audit: load, check, attack, measure, write.

Data flow: members + non-members (PNG folders or ``.npz``, :mod:`.images`) and a diffusers DDPM folder
(:mod:`.model`) -> checked against each other (size, channels, the same image on both sides) -> the
images in the model's range -> each attack's scores from batched noise estimates
(:mod:`.attacks`) -> the metrics, shared with every audit kind (:mod:`membershield.audit.measure`) ->
:class:`~membershield.result.AuditResult` with ``mode: "diffusion"`` and per-image scores -> every
artifact (:func:`membershield.audit.write_audit_outputs`).
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
from membershield.diffusion.attacks import (
    REGISTRY,
    DiffusionAttack,
    DiffusionAttackInputs,
    create_diffusion_attack,
    parse_diffusion_attack_list,
)
from membershield.diffusion.attacks.timestep_loss import TimestepLossAttack
from membershield.diffusion.images import (
    ImageOverlap,
    ImageSet,
    check_fits,
    load_images,
    refuse_or_drop,
    to_model_range,
)
from membershield.diffusion.model import DiffusionModel, load_diffusion_model
from membershield.diffusion.split_check import image_split_check
from membershield.errors import ConfigError
from membershield.result import AttackResult, AuditResult


@dataclass
class DiffusionAuditConfig:
    model: str
    members: str
    nonmembers: str
    attacks: list[str] | None = None  # None: every built-in attack
    # Per attack, settings among its keyword-only constructor parameters (timesteps on 1,000 steps).
    attack_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    out: str = "membershield-diffusion-audit"
    seed: int = 0
    batch_size: int = 64
    device: str = "auto"
    fprs: list[float] = field(default_factory=lambda: list(DEFAULT_FPRS))
    delta: float = 1e-5
    prior: float = 0.5
    top_k: int = 10
    split_check: bool = True
    drop_overlap: bool = False

    def validate(self) -> DiffusionAuditConfig:
        self.attacks = parse_diffusion_attack_list(self.attacks) if self.attacks else list(REGISTRY)
        unknown = sorted(set(self.attack_options) - set(REGISTRY))
        if unknown:
            raise ConfigError(f"settings given for unknown diffusion attack(s) {', '.join(unknown)}")
        if not self.fprs or any(not 0 < f < 1 for f in self.fprs):
            raise ConfigError(f"fprs must be numbers strictly between 0 and 1, got {self.fprs}")
        self.fprs = sorted(float(f) for f in self.fprs)
        if not 0 <= self.delta < 1:
            raise ConfigError(f"delta must be in [0, 1), got {self.delta}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be 1 or more, got {self.batch_size}")
        for name in self.attacks:
            self.attack(name)  # a bad setting fails before anything loads
        return self

    def attack(self, name: str) -> DiffusionAttack:
        return create_diffusion_attack(name, self.attack_options.get(name))


@dataclass(frozen=True)
class PreparedDiffusionAudit:
    """What the prepare stage checked: the model, both sides' images, and what was dropped."""

    model: DiffusionModel
    members: ImageSet
    nonmembers: ImageSet
    overlap: ImageOverlap | None

    @property
    def is_member(self) -> np.ndarray:
        return np.r_[np.ones(len(self.members), dtype=bool), np.zeros(len(self.nonmembers), dtype=bool)]

    def pixels(self) -> np.ndarray:
        """Members then non-members, in [0, 1]."""
        return np.concatenate([self.members.pixels, self.nonmembers.pixels])

    def origin(self, i: int) -> dict[str, Any]:
        """Where image ``i`` came from, for the most exposed images."""
        n = len(self.members)
        side, row = ("members", i) if i < n else ("nonmembers", i - n)
        images = self.members if side == "members" else self.nonmembers
        return {"source": side, "row": int(row), "file": images.names[row]}


def prepare_diffusion_audit(config: DiffusionAuditConfig) -> PreparedDiffusionAudit:
    """Load the model, then the images in its colour mode, checked against its size and each other."""
    model = load_diffusion_model(config.model, config.device)
    channels = model.shape[0]
    members = load_images(config.members, channels)
    nonmembers = load_images(config.nonmembers, channels)
    for images, side in ((members, "member"), (nonmembers, "non-member")):
        check_fits(images, model.shape, side)
    members, nonmembers, overlap = refuse_or_drop(members, nonmembers, config.drop_overlap)
    return PreparedDiffusionAudit(model, members, nonmembers, overlap)


def _utility(config: DiffusionAuditConfig, inputs: DiffusionAttackInputs, is_member: np.ndarray) -> dict[str, Any]:
    """The training objective of members and of non-members (where a classifier has its accuracy), at the
    timestep-loss attack's timesteps and draws."""
    loss_attack = config.attack(TimestepLossAttack.name)
    assert isinstance(loss_attack, TimestepLossAttack)
    steps = loss_attack.resolved(inputs.model.num_train_timesteps)
    loss = inputs.denoising_loss(steps, loss_attack.draws, "denoising loss: images").mean(axis=1)
    member, nonmember = float(loss[is_member].mean()), float(loss[~is_member].mean())
    return {
        "member_denoising_loss": member,
        "nonmember_denoising_loss": nonmember,
        "denoising_loss_gap": nonmember - member,
        "denoising_loss_timesteps": list(steps),
        "denoising_loss_draws": loss_attack.draws,
    }


def _split_check(
    config: DiffusionAuditConfig, prepared: PreparedDiffusionAudit, warnings: list[str]
) -> dict[str, Any] | None:
    if prepared.overlap is not None:
        warnings.append(
            f"{prepared.overlap.member_rows.size} member and {prepared.overlap.nonmember_rows.size} non-member"
            " images were on both sides and were removed from both (--drop-overlap)"
        )
    if not config.split_check:
        return None
    check = image_split_check(prepared.pixels(), prepared.is_member, seed=config.seed)
    if (warning := check.warning("the images alone")) is not None:
        warnings.append(warning)
    return check.to_dict()


def _result(
    config: DiffusionAuditConfig,
    prepared: PreparedDiffusionAudit,
    utility: dict[str, Any],
    attacks: list[AttackResult],
    split: dict[str, Any] | None,
    timings: dict[str, float],
    warnings: list[str],
) -> AuditResult:
    members, nonmembers = prepared.members, prepared.nonmembers
    channels, height, width = members.shape
    return AuditResult(
        target=prepared.model.describe(),
        data={
            "fingerprints": {"members": members.sha256, "nonmembers": nonmembers.sha256},
            "n_members": len(members),
            "n_nonmembers": len(nonmembers),
            "n_population": 0,
            "image_shape": {"channels": channels, "height": height, "width": width},
            "stored_as": {"members": members.stored_as, "nonmembers": nonmembers.stored_as},
            "overlap_dropped": prepared.overlap.to_dict() if prepared.overlap is not None else None,
        },
        utility=utility,
        split_check=split,
        references={"count": 0},
        attacks=attacks,
        config=asdict(config),
        timings=timings,
        warnings=warnings,
        mode="diffusion",
    )


def _scores_frame(prepared: PreparedDiffusionAudit, columns: dict[str, np.ndarray]) -> pd.DataFrame:
    n_members = len(prepared.members)
    origins = [prepared.origin(i) for i in range(n_members + len(prepared.nonmembers))]
    return pd.DataFrame(
        {
            "index": np.arange(len(origins)),
            "source": [o["source"] for o in origins],
            "row": [o["row"] for o in origins],
            "file": [o["file"] for o in origins],
            "is_member": prepared.is_member,
            **columns,
        }
    )


def run_diffusion_audit(
    config: DiffusionAuditConfig, progress: ProgressCallback | None = None, *, reports: tuple[str, ...] = ()
) -> AuditRun:
    """Audit a DDPM on member and non-member images; write ``audit.json`` (``mode: "diffusion"``),
    ``scores.csv`` (one row per image) and the ``reports`` asked for to ``config.out``."""
    import torch

    report = progress or (lambda stage, done, total: None)
    config.validate()
    assert config.attacks is not None
    torch.manual_seed(config.seed)  # no attack draws from the global stream; a model that does is pinned too
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    report("loading model and images", 0, 0)
    prepared = prepare_diffusion_audit(config)
    timings["load"] = time.perf_counter() - clock
    low, high = prepared.model.sample_range
    inputs = DiffusionAttackInputs(
        prepared.model, to_model_range(prepared.pixels(), low, high), config.batch_size, config.seed, report
    )
    attacks = [config.attack(name) for name in config.attacks]
    results, columns = run_attacks(
        attacks,
        inputs,
        prepared.is_member,
        MeasureSettings.of(config),
        slices={},
        origin=prepared.origin,
        progress=report,
    )
    timings["attacks"] = sum(r.seconds for r in results)
    clock = time.perf_counter()
    utility = _utility(config, inputs, prepared.is_member)  # shared with timestep-loss when it ran
    timings["utility"] = time.perf_counter() - clock
    warnings: list[str] = []
    clock = time.perf_counter()
    if config.split_check:
        report("split check", 0, 0)
    split = _split_check(config, prepared, warnings)
    if split is not None:
        timings["split_check"] = time.perf_counter() - clock
    result = _result(config, prepared, utility, results, split, timings, warnings)
    run = AuditRun(result, _scores_frame(prepared, columns))
    write_audit_outputs(run, config.out, reports=reports)
    return run
