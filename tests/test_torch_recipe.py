"""A PyTorch recipe audited end to end: the example MLP memorises the digits table and the audit sees it."""

from __future__ import annotations

from pathlib import Path

from membershield.audit import run_audit
from membershield.config import AuditConfig

RECIPE = Path(__file__).resolve().parents[1] / "examples" / "torch_mlp.py"


def test_torch_recipe_audit_detects_memorisation(digits_audit, tmp_path) -> None:
    config = AuditConfig(
        model=f"{RECIPE}:recipe",
        train=str(digits_audit.members),
        holdout=str(digits_audit.nonmembers),
        label_column="digit",
        attacks=["loss", "lira", "rmia"],
        references=4,
        out=str(tmp_path / "out"),
        cache=str(tmp_path / "cache"),
        split_check=False,
    )
    run = run_audit(config)
    result = run.result
    assert result.target["kind"] == "torch-recipe" and result.target["access"] == "white-box"
    assert result.utility["train_accuracy"] == 1.0
    for name in ("lira", "rmia"):
        assert result.attack(name).auc_ci_low > 0.55, name
    # The target itself is cached like a reference: a rerun trains nothing.
    rerun = run_audit(config)
    assert rerun.result.references["trained"] == 0
    assert rerun.scores["lira"].equals(run.scores["lira"])
