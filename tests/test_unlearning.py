"""The unlearning check on real data: digits, an unregularised MLP trained on kept + forgotten records
(the original) and the same MLP retrained on the kept records only. The same command passes the
retrained model and fails the original, in audit.json, the reports and the gate; bad input is one line."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from membershield.audit.unlearning import DISTINGUISHABLE
from membershield.config import build_config
from membershield.errors import ConfigError, InputDataError
from membershield.lineage import model_lineage
from membershield.result import check_document, load
from tests.test_cli import run_cli


@dataclass(frozen=True)
class Unlearning:
    directory: Path
    kept: Path
    forgotten: Path
    holdout: Path
    original: Path
    retrained: Path
    config: Path


def _mlp():
    # unregularised and small: it memorises a few hundred records, and trains in seconds
    return make_pipeline(
        StandardScaler(), MLPClassifier(hidden_layer_sizes=(64,), alpha=0.0, max_iter=150, random_state=0)
    )


@pytest.fixture(scope="module")
def unlearning(tmp_path_factory) -> Unlearning:
    directory = tmp_path_factory.mktemp("unlearning")
    frame = load_digits(as_frame=True).frame.rename(columns={"target": "digit"})
    order = np.random.default_rng(3).permutation(len(frame))
    parts = {"kept": order[:150], "forgotten": order[150:300], "holdout": order[300:900]}
    paths = {}
    for name, rows in parts.items():
        paths[name] = directory / f"{name}.csv"
        frame.iloc[rows].reset_index(drop=True).to_csv(paths[name], index=False)
    original_rows = frame.iloc[np.concatenate([parts["kept"], parts["forgotten"]])]
    kept_rows = frame.iloc[parts["kept"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        original = _mlp().fit(original_rows.drop(columns="digit"), original_rows["digit"])
        retrained = _mlp().fit(kept_rows.drop(columns="digit"), kept_rows["digit"])
    joblib.dump(original, directory / "original.joblib")
    joblib.dump(retrained, directory / "retrained.joblib")
    config = directory / "audit.toml"
    config.write_text('attacks = ["loss", "entropy"]\nsplit_check = false\n')
    return Unlearning(directory, paths["kept"], paths["forgotten"], paths["holdout"], *(
        directory / f"{m}.joblib" for m in ("original", "retrained")
    ), config)  # fmt: skip


def unlearning_args(u: Unlearning, model: Path, out: Path, *extra: str) -> list[str]:
    return [
        "audit",
        "--config",
        str(u.config),
        "--model",
        str(model),
        "--train",
        str(u.kept),
        "--holdout",
        str(u.holdout),
        "--forgotten",
        str(u.forgotten),
        "--label-column",
        "digit",
        "--out",
        str(out),
        *extra,
    ]


def test_retrained_model_passes_and_the_original_fails(unlearning, tmp_path, monkeypatch, capsys) -> None:
    store = str(tmp_path / "history.db")
    policy = tmp_path / "policy.toml"
    policy.write_text("max_auc = 1.0\n")
    outcomes = {}
    for name, model in (("retrained", unlearning.retrained), ("original", unlearning.original)):
        out = tmp_path / name
        extra = ("--store", store, "--model-name", "digits", "--model-version", name)
        code, stdout, err = run_cli(monkeypatch, capsys, *unlearning_args(unlearning, model, out, *extra))
        assert code == 0, stdout + err
        document = json.loads((out / "audit.json").read_text())
        check_document(document)
        gate_code, gate_out, _ = run_cli(monkeypatch, capsys, "gate", str(out / "audit.json"), "--policy", str(policy))
        outcomes[name] = (stdout, document, gate_code, gate_out, out)

    stdout, document, gate_code, gate_out, out = outcomes["retrained"]
    check = document["unlearning"]
    assert (check["n_forgotten"], check["n_holdout"], check["n_rows"]) == (150, 600, 150)
    assert check["forgotten_distinguishable"] is False
    assert {a["name"] for a in check["attacks"]} == {"loss", "entropy"}
    assert all(a["auc_ci_low"] <= 0.5 <= a["auc_ci_high"] for a in check["attacks"])
    assert "unlearning check: passed" in stdout
    assert DISTINGUISHABLE not in (out / "report.html").read_text() + (out / "summary.md").read_text()
    assert gate_code == 0, gate_out
    assert load(out / "audit.json").unlearning == check

    stdout, document, gate_code, gate_out, out = outcomes["original"]
    check = document["unlearning"]
    assert check["forgotten_distinguishable"] is True
    loss = next(a for a in check["attacks"] if a["name"] == "loss")
    assert loss["distinguishable"] and loss["auc_ci_low"] > 0.5
    assert "unlearning check: FAILED" in stdout
    for report in ("report.html", "summary.md"):
        assert DISTINGUISHABLE in (out / report).read_text()
    assert gate_code == 1 and "forgotten records AUC" in gate_out

    # the forgotten dataset is part of both versions' lineage
    found = model_lineage("digits", store=store)
    forgotten = {link.model_version for link in found.links if link.role == "forgotten"}
    assert forgotten == {"retrained", "original"}
    assert document["data"]["fingerprints"]["forgotten"] == check["fingerprint"]


def one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


def test_forgotten_file_with_other_columns_is_one_line(unlearning, tmp_path, monkeypatch, capsys) -> None:
    other = tmp_path / "forgotten-other.csv"
    pd.read_csv(unlearning.forgotten).drop(columns=["pixel_0_0"]).assign(note="x").to_csv(other, index=False)
    args = unlearning_args(unlearning, unlearning.retrained, tmp_path / "out")
    args[args.index("--forgotten") + 1] = str(other)
    code, _, err = run_cli(monkeypatch, capsys, *args)
    line = one_error_line(err)
    assert code == 2 and "columns differ" in line and "pixel_0_0" in line and "note" in line
    assert not (tmp_path / "out" / "audit.json").exists()  # refused before anything ran


def test_forgotten_records_still_in_train_are_refused(unlearning, tmp_path, monkeypatch, capsys) -> None:
    args = unlearning_args(unlearning, unlearning.original, tmp_path / "out")
    args[args.index("--forgotten") + 1] = str(unlearning.kept)
    code, _, err = run_cli(monkeypatch, capsys, *args)
    line = one_error_line(err)
    assert code == 2 and "are also in" in line and "kept.csv" in line


def test_missing_forgotten_file_is_one_line(unlearning, tmp_path, monkeypatch, capsys) -> None:
    args = unlearning_args(unlearning, unlearning.retrained, tmp_path / "out")
    args[args.index("--forgotten") + 1] = str(tmp_path / "nope.csv")
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2 and "nope.csv" in one_error_line(err)


def test_forgotten_needs_one_trained_model() -> None:
    with pytest.raises(ConfigError, match="not to a recipe audit"):
        build_config({}, {"data": "pool.csv", "recipe": "r.py:fit", "label_column": "y", "forgotten": "f.csv"})
    with pytest.raises(ConfigError, match="not a recipe that trains it"):
        build_config(
            {},
            {"model": "r.py:fit", "train": "a.csv", "holdout": "b.csv", "label_column": "y", "forgotten": "f.csv"},
        )
    with pytest.raises(ConfigError, match="'forgotten' must be str"):
        build_config({}, {"model": "m.joblib", "train": "a", "holdout": "b", "label_column": "y", "forgotten": 3})


def test_audit_json_knows_unlearning_and_older_documents_still_load(unlearning, tmp_path) -> None:
    from membershield.audit import run_audit

    config = build_config(
        {"attacks": ["loss"], "split_check": False, "cache": ""},
        {
            "model": str(unlearning.original),
            "train": str(unlearning.kept),
            "holdout": str(unlearning.holdout),
            "forgotten": str(unlearning.forgotten),
            "label_column": "digit",
            "out": str(tmp_path / "out"),
        },
    )
    document = run_audit(config).result.to_dict()
    assert document["config"]["forgotten"] == str(unlearning.forgotten)
    check_document(document)
    older = {k: v for k, v in document.items() if k != "unlearning"}
    check_document(older)  # written before the unlearning check existed
    bad = {**document, "unlearning": {"attacks": [{"name": "loss", "auc": "high"}]}}
    with pytest.raises(InputDataError, match="unlearning") as error:
        check_document(bad)
    message = str(error.value)
    assert "forgotten_distinguishable" in message and "'auc' must be a number" in message
    assert "lacks 'auc_ci_low'" in message and "n_forgotten" in message
