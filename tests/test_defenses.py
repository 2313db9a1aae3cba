"""Training-time defenses and the side-by-side comparison, on real data (scikit-learn's digits table).

The comparison test runs ``membershield compare`` once on a small pool with a small MLP recipe and checks
what the issue asks of it: DP-SGD at ε = 1 is audited far below ε = 1 and pulls LiRA's AUC to 0.5; the
reported ε is what Opacus's accountant gives for the reported noise, sample rate and steps; every variant
has its holdout accuracy, and its verdict says plainly whether it lowered LiRA's TPR at 1% FPR.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from membershield.cli import main
from membershield.defenses.dp import DPSGD, epsilon_spent
from membershield.defenses.registry import parse_defense, parse_defense_list, split_defense_list
from membershield.defenses.regularisation import with_dropout
from membershield.defenses.relaxloss import flattened_targets, relaxloss
from membershield.defenses.training import DefendedRecipe, NoDefense, build_model
from membershield.errors import ConfigError
from membershield.targets.torch import TorchRecipe
from membershield.training.vectorised import VectorisedSpec
from tests.test_cli import assert_one_line_error, run_cli

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "torch_mlp.py"

SMALL_RECIPE = '''
"""A small MLP that memorises: the recipe the comparison test defends."""
import numpy as np
import torch
from torch import nn


class Standardize(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

    def forward(self, x):
        return (x - self.mean) / self.std


def build(X, y, n_classes, seed):
    torch.manual_seed(seed)
    std = X.std(axis=0)
    return nn.Sequential(
        Standardize(X.mean(axis=0), np.where(std > 0, std, 1.0)),
        nn.Linear(X.shape[1], 64),
        nn.ReLU(),
        nn.Linear(64, n_classes),
    )


def vectorised_spec():
    from membershield.training.vectorised import VectorisedSpec

    return VectorisedSpec(build=build, epochs=20, batch_size=32, lr=2e-3)


def recipe(X, y, *, n_classes, seed):
    from membershield.defenses.training import build_model, train_plain

    spec = vectorised_spec()
    return train_plain(spec, build_model(spec, X, y, n_classes, seed), X, y, seed)
'''

TRAINING_DEFENSES = (
    "dp:epsilon=1",
    "relaxloss",
    "label-smoothing:0.1",
    "confidence-penalty:0.3",
    "early-stopping",
    "l2:1e-3",
    "dropout:0.3",
    "distillation",
    "adv-reg",
    "mist",
    "hamp",
    "selena",
    "pruning",
    "augmentation:kind=mixup",
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Small models: threads buy nothing and stall every step when the cores are shared.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits() -> pd.DataFrame:
    return load_digits(as_frame=True).frame.rename(columns={"target": "digit"})


@pytest.fixture(scope="module")
def sklearn_files(digits, tmp_path_factory: pytest.TempPathFactory):
    """A pool CSV and a fitted scikit-learn model of it (joblib), for the command-line error tests."""
    import joblib
    from sklearn.linear_model import LogisticRegression

    directory = tmp_path_factory.mktemp("sklearn")
    rows = digits.sample(200, random_state=1)
    rows.to_csv(directory / "pool.csv", index=False)
    model = LogisticRegression(max_iter=200).fit(rows.drop(columns="digit"), rows["digit"])
    joblib.dump(model, directory / "model.joblib")
    return directory / "pool.csv", directory / "model.joblib"


@pytest.fixture(scope="module")
def small_task(digits) -> tuple[np.ndarray, np.ndarray]:
    rows = digits.sample(240, random_state=3)
    return rows.drop(columns="digit").to_numpy(np.float32), rows["digit"].to_numpy()


def tiny_spec(epochs: int = 3) -> VectorisedSpec:
    def build(X, y, n_classes, seed):
        return nn.Sequential(nn.Linear(X.shape[1], 32), nn.ReLU(), nn.Linear(32, n_classes))

    return VectorisedSpec(build=build, epochs=epochs, batch_size=32, lr=1e-3)


def _frame(X: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])


# --------------------------------------------------------------------------------------------------
# spec strings


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("relaxlos", ["unknown defense 'relaxlos'", "did you mean 'relaxloss'"]),
        ("dp:epsilon=0", ["epsilon must be greater than 0"]),
        ("dp:epsilon=-1", ["epsilon must be greater than 0"]),
        ("label-smoothing:abc", ["amount must be a number", "'abc'"]),
        ("early-stopping:patience=2.5", ["patience must be a whole number"]),
        ("dp:epsilon=1,max_grad=1", ["no parameter 'max_grad'", "max_grad_norm"]),
        ("dp:delta=1e-5", ["needs epsilon=E", "noise="]),
        ("dp:epsilon=1,accountant=gdp", ["accountant must be prv or rdp"]),
        ("output", ["needs at least one parameter"]),
        ("output:clip_top1=0.2", ["clip_top1 must be in (0.5, 1]"]),
        ("none:3", ["takes no parameters"]),
    ],
)
def test_bad_defense_specs_fail_with_the_fix(text: str, needles: list[str]) -> None:
    with pytest.raises(ConfigError) as error:
        parse_defense(text)
    for needle in needles:
        assert needle in str(error.value), (needle, str(error.value))


def test_defense_specs_parse_with_defaults_and_continuations() -> None:
    assert split_defense_list("none,dp:epsilon=8,delta=1e-5,max_grad_norm=1.0,relaxloss,output:top_k=1,label_only") == [
        "none",
        "dp:epsilon=8,delta=1e-5,max_grad_norm=1.0",
        "relaxloss",
        "output:top_k=1,label_only",
    ]
    dp = parse_defense("dp:epsilon=8,delta=1e-5,max_grad_norm=1.0")
    assert dp.params() == {"epsilon": 8.0, "delta": 1e-5, "max_grad_norm": 1.0, "accountant": "prv"}
    assert parse_defense("dp:noise=1.1,accountant=rdp").params()["noise"] == 1.1
    assert parse_defense("relaxloss:alpha=0.5").params() == {"alpha": 0.5}
    assert parse_defense("label-smoothing:0.1").params() == {"amount": 0.1}
    assert parse_defense("output:label_only").policy.label_only is True
    assert parse_defense("output:round_decimals=2").policy.round_decimals == 2
    with pytest.raises(ConfigError, match="listed twice"):
        parse_defense_list("l2:0.001,l2:1e-3")
    with pytest.raises(ConfigError, match="looks like a parameter"):
        split_defense_list("none,epsilon=1")


def test_recipe_identity_carries_the_defense_parameters() -> None:
    spec = tiny_spec()
    one = DefendedRecipe(spec, parse_defense("dp:epsilon=1")).identity()
    eight = DefendedRecipe(spec, parse_defense("dp:epsilon=8")).identity()
    assert one != eight and '"epsilon": 1.0' in one and '"max_grad_norm": 1.0' in one


# --------------------------------------------------------------------------------------------------
# the training loop and the defenses' mechanics


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch):
    loader = importlib.util.spec_from_file_location("defenses_test_torch_mlp", EXAMPLE)
    module = importlib.util.module_from_spec(loader)
    monkeypatch.setitem(sys.modules, loader.name, module)
    loader.loader.exec_module(module)
    return module


def test_no_defense_trains_the_recipes_own_model(example, small_task) -> None:
    # The plain loop is the spec's loop: same initial weights, same batches, same Adam steps.
    example.EPOCHS = 2
    X, y = small_task
    classes = np.arange(10)
    ours = DefendedRecipe(example.vectorised_spec(), NoDefense()).fit(_frame(X), y, classes, seed=5)
    theirs = TorchRecipe(example.recipe, "0" * 64, f"{EXAMPLE}:recipe").fit(_frame(X), y, classes, seed=5)
    np.testing.assert_allclose(ours.logits(_frame(X)), theirs.logits(_frame(X)), rtol=0, atol=1e-5)


def test_relaxloss_ascends_below_the_target_and_flattens_only_the_other_classes() -> None:
    logits = torch.tensor([[6.0, 0.0, -1.0], [5.0, 1.0, 0.0]], requires_grad=True)
    labels = torch.tensor([0, 0])
    # Even epoch, loss far below alpha = 1: |L - alpha| decreases by *raising* the loss.
    relaxloss(logits, labels, epoch=0, alpha=1.0).backward()
    assert logits.grad[:, 0].gt(0).all()  # gradient descent then lowers the true-class logit
    targets = flattened_targets(torch.softmax(logits.detach(), dim=1), labels)
    probs = torch.softmax(logits.detach(), dim=1)
    torch.testing.assert_close(targets[:, 0], probs[:, 0])
    torch.testing.assert_close(targets[:, 1], targets[:, 2])
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(2))


def test_dropout_goes_after_each_activation_or_sets_existing_layers() -> None:
    plain = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))
    assert with_dropout(plain, 0.25) == 2
    assert [type(m).__name__ for m in plain.modules()].count("Dropout") == 2
    own = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.1), nn.Linear(8, 2))
    assert with_dropout(own, 0.4) == 1 and own[1].p == 0.4


def test_dp_reports_the_epsilon_opacus_accountants_give(small_task) -> None:
    from opacus.accountants import PRVAccountant, RDPAccountant

    X, y = small_task
    classes = np.arange(10)
    recipe = DefendedRecipe(tiny_spec(epochs=3), parse_defense("dp:epsilon=1"))
    recipe.fit(_frame(X), y, classes, seed=0)
    report = recipe.defense_report
    assert report["accountant"] == "prv" and report["poisson_sampling"] is True
    assert report["sample_rate"] == pytest.approx(1 / np.ceil(len(y) / 32))
    assert report["steps"] == 3 * np.ceil(len(y) / 32)
    assert 0 < report["epsilon"] <= 1.0
    ledger = PRVAccountant()
    ledger.history = [(report["noise_multiplier"], report["sample_rate"], report["steps"])]
    assert report["epsilon"] == pytest.approx(ledger.get_epsilon(delta=report["delta"]), rel=1e-9)

    recipe = DefendedRecipe(tiny_spec(epochs=2), parse_defense("dp:noise=1.1,accountant=rdp,delta=1e-6"))
    recipe.fit(_frame(X), y, classes, seed=0)
    report = recipe.defense_report
    ledger = RDPAccountant()
    ledger.history = [(1.1, report["sample_rate"], report["steps"])]
    assert report["noise_multiplier"] == 1.1
    assert report["epsilon"] == pytest.approx(ledger.get_epsilon(delta=1e-6), rel=1e-9)


def test_dp_stops_before_the_budget_is_exceeded(small_task) -> None:
    X, y = small_task
    defense = DPSGD(noise=0.6, epsilon=2.0, accountant="rdp")
    recipe = DefendedRecipe(tiny_spec(epochs=30), defense)
    recipe.fit(_frame(X), y, np.arange(10), seed=0)
    report = recipe.defense_report
    assert report["stopped_for_budget"] and report["steps"] < report["planned_steps"]
    assert report["epsilon"] <= 2.0
    assert epsilon_spent("rdp", 0.6, report["sample_rate"], report["steps"] + 1, report["delta"]) > 2.0


def test_dp_refuses_layers_opacus_cannot_train(small_task) -> None:
    def build(X, y, n_classes, seed):
        return nn.Sequential(nn.Linear(X.shape[1], 16), nn.BatchNorm1d(16), nn.Linear(16, n_classes))

    X, y = small_task
    recipe = DefendedRecipe(VectorisedSpec(build=build, epochs=1, batch_size=32, lr=1e-3), DPSGD(epsilon=1))
    with pytest.raises(ConfigError, match="BatchNorm"):
        recipe.fit(_frame(X), y, np.arange(10), seed=0)


def test_dp_ghost_clipping_trains_the_model_per_record_gradients_would(small_task) -> None:
    # Same seed, same Poisson batches and noise draws: the two ways of clipping must agree to rounding.
    X, y = small_task
    spec, defense = tiny_spec(epochs=2), DPSGD(noise=1.0)
    ghost = defense._train(spec, build_model(spec, X, y, 10, 0), X, y, "ghost")
    hooks = defense._train(spec, build_model(spec, X, y, 10, 0), X, y, "hooks")
    assert (ghost.report["clipping"], hooks.report["clipping"]) == ("ghost", "hooks")
    assert ghost.report["epsilon"] == hooks.report["epsilon"]
    for mine, theirs in zip(ghost.module.parameters(), hooks.module.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6)


def test_dp_falls_back_to_per_record_gradients_for_tied_weights(small_task) -> None:
    class Twice(nn.Module):
        def __init__(self, width: int, n_classes: int) -> None:
            super().__init__()
            self.shared = nn.Linear(width, width)
            self.out = nn.Linear(width, n_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(torch.relu(self.shared(torch.relu(self.shared(x)))))

    X, y = small_task
    spec = VectorisedSpec(
        build=lambda X, y, n_classes, seed: Twice(X.shape[1], n_classes), epochs=1, batch_size=32, lr=1e-3
    )
    assert DPSGD(noise=1.0).train(spec, X, y, 10, 0).report["clipping"] == "hooks"


# --------------------------------------------------------------------------------------------------
# the comparison, end to end through the command line


@pytest.fixture(scope="module")
def comparison(digits, tmp_path_factory: pytest.TempPathFactory) -> dict:
    directory = tmp_path_factory.mktemp("compare")
    (directory / "small_mlp.py").write_text(SMALL_RECIPE)
    digits.sample(900, random_state=0).to_csv(directory / "pool.csv", index=False)
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "membershield",
            "compare",
            "--recipe",
            f"{directory / 'small_mlp.py'}:recipe",
            "--data",
            str(directory / "pool.csv"),
            "--label-column",
            "digit",
            "--defenses",
            ",".join(("none", *TRAINING_DEFENSES, "output:top_k=1")),
            "--attacks",
            "loss,lira",
            "--references",
            "2",
            "--no-reports",
            "--recommend",
            "max_accuracy_drop=0.02",
            "--out",
            str(directory / "out"),
        ],
    )
    try:
        main()
    except SystemExit as exc:
        assert not exc.code, exc
    finally:
        monkeypatch.undo()
    out = directory / "out"
    return {"out": out, "doc": json.loads((out / "compare.json").read_text())}


def _variant(doc: dict, name: str) -> dict:
    return next(v for v in doc["variants"] if v["name"] == name)


def _attack(variant: dict, name: str) -> dict:
    return next(a for a in variant["attacks"] if a["name"] == name)


@pytest.mark.slow
def test_compare_writes_every_variant_with_its_audit_and_utility(comparison) -> None:
    doc, out = comparison["doc"], comparison["out"]
    names = [v["name"] for v in doc["variants"]]
    assert names == ["none", *TRAINING_DEFENSES, "output:top_k=1"]
    assert doc["data"]["n_members"] == doc["data"]["n_holdout"] == 450
    # Training time: the median over the target and both references, all trained here.
    for variant in doc["variants"]:
        if variant["defense"]["kind"] != "output":
            assert variant["training_fits"] == 3 and variant["training_seconds"] > 0, variant["name"]
    assert (out / "members.csv").is_file() and (out / "holdout.csv").is_file()
    html = (out / "compare.html").read_text()
    assert "data:image/png;base64," in html and "http" not in html.replace("http-equiv", "")
    for variant in doc["variants"]:
        audit = json.loads((out / variant["audit"]).read_text())
        assert [a["name"] for a in variant["attacks"]] == [a["name"] for a in audit["attacks"]]
        assert variant["attacks"] == audit["attacks"]
        assert 0 <= variant["holdout_accuracy"] <= 1 and 0 <= variant["train_accuracy"] <= 1
        # The output defense brings label-only and threshold attacks to every variant.
        names = {a["name"] for a in audit["attacks"]}
        assert {"lira", "loss", "confidence", "label-only-gap", "label-only-noise"} <= names


@pytest.mark.slow
def test_each_verdict_says_plainly_whether_lira_tpr_went_down(comparison) -> None:
    doc = comparison["doc"]
    baseline = _variant(doc, "none")
    base_tpr = next(r for r in _attack(baseline, "lira")["tpr_at_fpr"] if r["fpr"] == 0.01)["tpr"]
    for variant in doc["variants"][1:]:
        tpr = next(r for r in _attack(variant, "lira")["tpr_at_fpr"] if r["fpr"] == 0.01)["tpr"]
        assert variant["lowers_lira_tpr"] == (tpr < base_tpr)
        if not variant["lowers_lira_tpr"]:
            assert variant["verdict"].startswith("did NOT lower LiRA TPR at 1% FPR")
            assert variant["counts_as_protection"] is False
        html = (comparison["out"] / "compare.html").read_text()
        assert variant["verdict"].split(":")[0] in html
    hidden = _variant(doc, "output:top_k=1")
    assert hidden["counts_as_protection"] is False and "NOT protection" in hidden["verdict"]
    # The hardened variant is audited as what it exposes: answers, not weights.
    audits = [json.loads(p.read_text()) for p in comparison["out"].glob("*/audit.json")]
    hardened = [a for a in audits if (a["target"].get("defense") or {}).get("name") == "output"]
    assert hardened and all(a["target"]["access"] == "black-box" for a in hardened)


@pytest.mark.slow
def test_the_frontier_and_the_recommendation_follow_from_the_numbers(comparison) -> None:
    doc = comparison["doc"]
    from membershield.defenses.compare import accuracy_interval

    def point(v: dict) -> tuple:
        worst = v["worst_attack"]
        leak = (worst["tpr_ci_low"], worst["tpr_ci_high"]) if worst["measurable"] else (None, None)
        return accuracy_interval(v["holdout_accuracy"], v["n_nonmembers"]), leak

    def clearly(a: tuple, b: tuple, higher: bool) -> bool:  # a entirely on the good side of b
        if None in (*a, *b):
            return False
        return a[0] > b[1] if higher else a[1] < b[0]

    for v in doc["variants"]:
        dominators = []
        for w in doc["variants"]:
            (acc_w, leak_w), (acc_v, leak_v) = point(w), point(v)
            better = clearly(acc_w, acc_v, True) or clearly(leak_w, leak_v, False)
            worse = clearly(acc_v, acc_w, True) or clearly(leak_v, leak_w, False)
            if w is not v and better and not worse:
                dominators.append(w["name"])
        assert v["dominated_by"] == dominators and v["pareto"] == (not dominators), v["name"]
    assert any(v["pareto"] for v in doc["variants"])
    advice = doc["frontier"]["recommendation"]
    base = _variant(doc, "none")["holdout_accuracy"]
    within = [
        v for v in doc["variants"] if base - v["holdout_accuracy"] <= 0.02 + 1e-12 and v["worst_attack"]["measurable"]
    ]
    assert advice["candidates"] == [v["name"] for v in within]
    best = min(within, key=lambda v: (v["worst_attack"]["tpr"], v["worst_attack"]["tpr_ci_high"]))
    assert advice["variant"] == best["name"] and best["name"] in advice["reason"]
    assert "Recommendation" in (comparison["out"] / "compare.html").read_text()


def test_a_bad_recommendation_budget_is_one_line(sklearn_files, tmp_path, monkeypatch, capsys) -> None:
    from tests.test_cli import assert_one_line_error, run_cli

    pool, model = sklearn_files
    args = ["compare", "--recipe", str(model), "--data", str(pool), "--label-column", "digit"]
    code, _, err = run_cli(monkeypatch, capsys, *args, "--recommend", "max_drop=2", "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "--recommend takes max_accuracy_drop=VALUE", "max_drop=2")


@pytest.mark.slow
def test_dp_at_epsilon_one_is_audited_below_one_and_near_chance(comparison) -> None:
    doc, out = comparison["doc"], comparison["out"]
    dp, none = _variant(doc, "dp:epsilon=1"), _variant(doc, "none")
    assert dp["accountant"] == "prv" and dp["delta"] == 1e-5
    assert 0 < dp["epsilon"] <= 1.0
    assert epsilon_spent("prv", dp["noise_multiplier"], dp["sample_rate"], dp["steps"], dp["delta"]) == pytest.approx(
        dp["epsilon"], rel=1e-9
    )
    assert dp["empirical_epsilon_lower_bound"] <= 1.0
    # The undefended model leaks clearly; DP pulls LiRA's AUC back to chance.
    assert _attack(none, "lira")["auc_ci_low"] > 0.5
    lira = _attack(dp, "lira")
    assert lira["auc_ci_low"] <= 0.5 <= lira["auc_ci_high"] or abs(lira["auc"] - 0.5) < 0.03
    assert abs(lira["auc"] - 0.5) < abs(_attack(none, "lira")["auc"] - 0.5)
    # The variant's own audit.json carries the accounting next to the attacks' lower bounds.
    audit = json.loads((out / dp["audit"]).read_text())
    assert audit["target"]["defense"]["epsilon"] == dp["epsilon"]
    assert audit["target"]["defense"]["noise_multiplier"] == dp["noise_multiplier"]


# --------------------------------------------------------------------------------------------------
# bad input on the command line


def test_dp_on_a_scikit_learn_model_is_one_line(sklearn_files, tmp_path, monkeypatch, capsys) -> None:
    pool, model = sklearn_files
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "compare",
        "--recipe",
        str(model),
        "--data",
        str(pool),
        "--label-column",
        "digit",
        "--defenses",
        "none,dp:epsilon=1",
        "--out",
        str(tmp_path / "out"),
    )
    assert_one_line_error(code, err, "dp:epsilon=1", "scikit-learn", "vectorised_spec")


@pytest.mark.parametrize(
    ("defenses", "needle"),
    [
        ("none,dp:epsilon=0", "epsilon must be greater than 0"),
        ("none,relaxlos", "did you mean 'relaxloss'"),
        ("none,label-smoothing:abc", "amount must be a number"),
        ("none,memguard:budget=3", "budget must be in (0, 2]"),
    ],
)
def test_bad_defenses_on_the_command_line_are_one_line(
    defenses, needle, sklearn_files, tmp_path, monkeypatch, capsys
) -> None:
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "compare",
        "--recipe",
        str(EXAMPLE) + ":recipe",
        "--data",
        str(sklearn_files[0]),
        "--label-column",
        "digit",
        "--defenses",
        defenses,
        "--out",
        str(tmp_path / "out"),
    )
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "out").exists()  # refused before anything was written or trained


def test_training_defense_needs_a_declared_training(sklearn_files, tmp_path, monkeypatch, capsys) -> None:
    bare = tmp_path / "bare_recipe.py"
    bare.write_text(SMALL_RECIPE.replace("def vectorised_spec", "def _spec"))
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "compare",
        "--recipe",
        f"{bare}:recipe",
        "--data",
        str(sklearn_files[0]),
        "--label-column",
        "digit",
        "--defenses",
        "none,relaxloss",
        "--out",
        str(tmp_path / "out"),
    )
    assert_one_line_error(code, err, "relaxloss", "vectorised_spec()")
