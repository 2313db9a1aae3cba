"""The white-box attacks (gradient norm, loss trajectory) on a real PyTorch recipe: the example MLP, which
memorises the digits table, leaks clearly to both; a model of the same recipe that never saw the audit
records scores at chance; a target without weights or a recipe without checkpoints is a one-line error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from membershield.audit import run_audit, run_recipe_audit
from membershield.config import AuditConfig
from membershield.errors import ConfigError
from membershield.targets import LoadedModel
from membershield.targets.torch import TorchTarget, load_recipe
from membershield.whitebox_references import RetrainedWhiteBox
from tests.test_cli import assert_one_line_error, base_args, run_cli

RECIPE = Path(__file__).resolve().parents[1] / "examples" / "torch_mlp.py"
WHITE_BOX = ("gradient-norm", "loss-trajectory")

# A linear model trained briefly, keeping no checkpoints: enough for the errors, seconds to train.
PLAIN_RECIPE = """
import torch

def recipe(X, y, *, n_classes, seed):
    model = torch.nn.Linear(X.shape[1], n_classes)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01)
    features, labels = torch.from_numpy(X), torch.from_numpy(y)
    for _ in range(20):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(features), labels).backward()
        optimiser.step()
    return model
"""

# A small MLP trained full-batch to memorise, keeping 3 checkpoints: a recipe audit's many models, quickly.
QUICK_RECIPE = """
import torch


class Scale(torch.nn.Module):
    def __init__(self, x):
        super().__init__()
        self.register_buffer("mean", x.mean(0))
        self.register_buffer("std", x.std(0).clamp_min(1e-3))

    def forward(self, x):
        return (x - self.mean) / self.std


def recipe(X, y, *, n_classes, seed):
    x, labels = torch.from_numpy(X), torch.from_numpy(y)
    hidden = torch.nn.Linear(X.shape[1], 64)
    model = torch.nn.Sequential(Scale(x), hidden, torch.nn.ReLU(), torch.nn.Linear(64, n_classes))
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    model.checkpoints = []
    for step in range(1, 151):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(x), labels).backward()
        optimiser.step()
        if step in (10, 30, 90):
            model.checkpoints.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    return model
"""


def _config(digits_audit, tmp: Path, attacks: list[str], references: int, model: str | None = None) -> AuditConfig:
    return AuditConfig(
        model=model or f"{RECIPE}:recipe",
        train=str(digits_audit.members),
        holdout=str(digits_audit.nonmembers),
        population=str(digits_audit.population),
        label_column="digit",
        attacks=attacks,
        references=references,
        out=str(tmp / "out"),
        cache=str(tmp.parent / "cache"),  # shared: the references of every audit here train once
        split_check=False,
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("whitebox")


@pytest.fixture(scope="module")
def overfit(digits_audit, workdir):
    config = _config(digits_audit, workdir / "overfit", ["loss", "lira", *WHITE_BOX], references=4)
    return run_audit(config).result


def test_overfit_mlp_leaks_to_both_white_box_attacks(overfit) -> None:
    for name in WHITE_BOX:
        attack = overfit.attack(name)
        assert attack.access == "white-box", name
        assert attack.auc_ci_low > 0.55, (name, attack.auc)
        assert "4 references" in attack.params["calibration"], attack.params
    # Calibrated per record, the gradient norm tells members apart where the loss threshold cannot: at 1%
    # FPR (600 non-members, 6 above the threshold) the estimates are compared, the intervals overlap.
    gradient, loss = overfit.attack("gradient-norm").rate_at(0.01), overfit.attack("loss").rate_at(0.01)
    assert gradient is not None and loss is not None
    assert gradient["tpr"] > loss["tpr"], (gradient, loss)
    assert overfit.attack("gradient-norm").auc > overfit.attack("loss").auc
    weights = overfit.attack("loss-trajectory").params["step_weights"]
    assert len(weights) == 7  # the example keeps 6 checkpoints, then the trained model


def test_without_references_the_raw_signals_still_see_the_overfit_mlp(digits_audit, workdir) -> None:
    result = run_audit(_config(digits_audit, workdir / "raw", ["loss", *WHITE_BOX], references=0)).result
    for name in WHITE_BOX:
        attack = result.attack(name)
        assert attack.params["calibration"].startswith("none"), attack.params
        assert attack.auc_ci_low > 0.5, (name, attack.auc)


def test_a_model_that_never_saw_the_audit_records_scores_at_chance(digits_audit, workdir) -> None:
    recipe = load_recipe(f"{RECIPE}:recipe")
    population = pd.read_csv(digits_audit.population)
    classes = np.arange(10)
    target = recipe.fit(population.drop(columns="digit"), population["digit"].to_numpy(), classes, seed=0)
    loaded = LoadedModel(target=target, recipe=recipe, kind="torch-recipe", spec=str(RECIPE), sha256="")
    config = _config(digits_audit, workdir / "unseen", list(WHITE_BOX), references=4)
    result = run_audit(config, model=loaded).result
    for name in WHITE_BOX:
        attack = result.attack(name)
        assert "4 references" in attack.params["calibration"], attack.params
        assert attack.auc_ci_low <= 0.5 <= attack.auc_ci_high, (name, attack.auc)
        at_1 = attack.rate_at(0.01)
        assert at_1 is not None and at_1["ci_low"] <= 0.01, (name, at_1)


def test_white_box_attacks_on_a_scikit_learn_model_are_one_line_exit_2(digits_audit, tmp_path, monkeypatch, capsys):
    for name in WHITE_BOX:
        args = base_args(digits_audit, tmp_path, **{"--attacks": f"loss,{name}"})
        code, _, err = run_cli(monkeypatch, capsys, *args)
        assert_one_line_error(code, err, f"'{name}' needs white-box access", "drop those attacks")


def test_white_box_attacks_on_a_model_behind_an_api_fail_before_any_query(digits_audit, tmp_path, monkeypatch, capsys):
    # Port 9 (discard) has no server: the error must come before the first connection is tried.
    args = base_args(digits_audit, tmp_path, **{"--model": "http://127.0.0.1:9/v1/predict", "--attacks": "loss,"
                     + ",".join(WHITE_BOX), "--recipe": f"{RECIPE}:recipe"})  # fmt: skip
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, "need white-box access", "behind an API", *WHITE_BOX)
    assert "cannot reach" not in err


def test_a_recipe_that_kept_no_checkpoints_is_a_clear_error(digits_audit, tmp_path) -> None:
    recipe = tmp_path / "plain.py"
    recipe.write_text(PLAIN_RECIPE)
    config = _config(digits_audit, tmp_path / "plain", ["loss-trajectory"], references=0, model=f"{recipe}:recipe")
    with pytest.raises(ConfigError, match=r"recipe kept none: set model\.checkpoints"):
        run_audit(config)


def test_each_reference_trains_once_for_every_target_that_reads_it() -> None:
    fits: list[int] = []
    features = pd.DataFrame(np.random.default_rng(0).normal(size=(6, 2)), columns=["a", "b"])
    labels = np.array([0, 1, 0, 1, 0, 1])

    def fit(k: int) -> TorchTarget:
        fits.append(k)
        torch.manual_seed(k)
        return TorchTarget(torch.nn.Linear(2, 2), np.arange(2))

    models = RetrainedWhiteBox(fit, 3, features, labels)
    first, second = models.references([1, 2]), models.references([0, 2])
    assert first.gradient_norms().shape == (2, 6) and first.checkpoint_losses().shape == (2, 0, 6)
    assert second.gradient_norms().shape == (2, 6)
    assert sorted(fits) == [0, 1, 2]
    np.testing.assert_array_equal(first.gradient_norms()[1], second.gradient_norms()[1])


def test_a_recipe_audit_calibrates_each_model_on_the_others(digits_audit, tmp_path) -> None:
    recipe = tmp_path / "quick.py"
    recipe.write_text(QUICK_RECIPE)
    config = AuditConfig(
        recipe=f"{recipe}:recipe",
        data=str(digits_audit.members),
        label_column="digit",
        models=4,
        attacks=["loss", *WHITE_BOX],
        out=str(tmp_path / "out"),
        cache=str(tmp_path / "cache"),
    )
    result = run_recipe_audit(config, resamples=50).result
    for name in WHITE_BOX:
        attack = result.attack(name)
        # listed model by model where they differ (the step weights each model's references give)
        calibrations = {entry["calibration"] for entry in attack.params.get("per_model", [attack.params])}
        assert all("3 references" in c for c in calibrations), calibrations
        assert attack.auc_ci_low > 0.5, (name, attack.auc)
