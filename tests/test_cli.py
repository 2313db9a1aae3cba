"""The command line as a user meets it: a finished audit exits 0; each kind of bad input exits 2 with one
line that names the file, column or option at fault."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest

from membershield.cli import main


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["membershield", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def base_args(d, tmp_path: Path, **changes: str) -> list[str]:
    options = {
        "--model": str(d.overfit_model),
        "--train": str(d.members),
        "--holdout": str(d.nonmembers),
        "--label-column": "digit",
        "--attacks": "loss,confidence",
        "--out": str(tmp_path / "out"),
        "--cache": str(tmp_path / "cache"),
    }
    options.update(changes)
    return ["audit", *[x for pair in options.items() for x in pair]]


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_finished_audit_exits_zero_and_writes_files(digits_audit, tmp_path, monkeypatch, capsys) -> None:
    code, out, err = run_cli(monkeypatch, capsys, *base_args(digits_audit, tmp_path))
    assert code == 0, err
    assert "loss" in out and "AUC" in out
    assert (tmp_path / "out" / "audit.json").is_file() and (tmp_path / "out" / "scores.csv").is_file()
    timing = [line for line in out.splitlines() if line.startswith("time: ")]
    assert len(timing) == 1 and "loading" in timing[0] and "attacks" in timing[0], out


def test_mismatched_feature_count(digits_audit, tmp_path, monkeypatch, capsys) -> None:
    narrow = tmp_path / "narrow"
    narrow.mkdir()
    for name, source in (("m.csv", digits_audit.members), ("n.csv", digits_audit.nonmembers)):
        table = pd.read_csv(source).drop(columns=["pixel_0_0", "pixel_0_1"])
        table.to_csv(narrow / name, index=False)
    args = base_args(digits_audit, tmp_path, **{"--train": str(narrow / "m.csv"), "--holdout": str(narrow / "n.csv")})
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, "pixel_0_0")


def test_unknown_attack_name(digits_audit, tmp_path, monkeypatch, capsys) -> None:
    code, _, err = run_cli(monkeypatch, capsys, *base_args(digits_audit, tmp_path, **{"--attacks": "loss,lria"}))
    assert_one_line_error(code, err, "'lria'", "did you mean", "'lira'")


def test_recipe_that_does_not_import(digits_audit, tmp_path, monkeypatch, capsys) -> None:
    recipe = tmp_path / "bad_recipe.py"
    recipe.write_text("import not_a_real_module_xyz\n\ndef recipe(X, y, *, n_classes, seed):\n    pass\n")
    args = base_args(digits_audit, tmp_path, **{"--model": f"{recipe}:recipe"})
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, "bad_recipe.py", "does not import", "not_a_real_module_xyz")


def test_recipe_function_missing(digits_audit, tmp_path, monkeypatch, capsys) -> None:
    recipe = tmp_path / "empty_recipe.py"
    recipe.write_text("x = 1\n")
    code, _, err = run_cli(monkeypatch, capsys, *base_args(digits_audit, tmp_path, **{"--model": f"{recipe}:train"}))
    assert_one_line_error(code, err, "empty_recipe.py", "'train'")


def test_too_few_references_for_lira(digits_audit, tmp_path, monkeypatch, capsys) -> None:
    args = base_args(digits_audit, tmp_path, **{"--attacks": "lira", "--references": "1"})
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, "'lira'", "--references")


def test_config_file_with_flag_override(digits_audit, tmp_path, monkeypatch, capsys) -> None:
    config = tmp_path / "audit.toml"
    config.write_text(
        "[audit]\n"
        f'model = "{digits_audit.overfit_model}"\n'
        f'train = "{digits_audit.members}"\n'
        f'holdout = "{digits_audit.nonmembers}"\n'
        'label_column = "digit"\n'
        'attacks = ["loss", "entropy"]\n'
        f'out = "{tmp_path / "from_file"}"\n'
        f'cache = "{tmp_path / "cache"}"\n'
        "seed = 3\n"
    )
    code, _, err = run_cli(monkeypatch, capsys, "audit", "--config", str(config), "--attacks", "confidence")
    assert code == 0, err
    document = json.loads((tmp_path / "from_file" / "audit.json").read_text())
    assert [a["name"] for a in document["attacks"]] == ["confidence"]
    assert document["config"]["seed"] == 3


def test_config_file_with_unknown_key(digits_audit, tmp_path, monkeypatch, capsys) -> None:
    config = tmp_path / "audit.toml"
    config.write_text('[audit]\nmodel = "m.joblib"\nrefrences = 4\n')
    code, _, err = run_cli(monkeypatch, capsys, "audit", "--config", str(config))
    assert_one_line_error(code, err, "'refrences'", "audit.toml", "did you mean 'references'")


def test_config_value_of_wrong_type(digits_audit, tmp_path, monkeypatch, capsys) -> None:
    config = tmp_path / "audit.toml"
    config.write_text(f'[audit]\nmodel = "{digits_audit.overfit_model}"\nreferences = "eight"\n')
    args = ["audit", "--config", str(config), "--train", str(digits_audit.members)]
    args += ["--holdout", str(digits_audit.nonmembers), "--label-column", "digit"]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, "references", "int")


def test_missing_required_option(monkeypatch, capsys) -> None:
    code, _, err = run_cli(monkeypatch, capsys, "audit", "--model", "m.joblib")
    assert_one_line_error(code, err, "--train", "--holdout", "--label-column")


def test_attacks_command_lists_the_registry(monkeypatch, capsys) -> None:
    code, out, _ = run_cli(monkeypatch, capsys, "attacks")
    assert code == 0
    names = ("loss", "lira", "rmia-offline", "shadow", "min-k-plus-plus", "recall", "dc-pdd", "neighbourhood")
    for name in (*names, "timestep-loss", "secmi", "pia", "dcr", "domias", "shadow-generators"):
        assert name in out, name
    assert "audit-diffusion" in out and "audit-synthetic" in out


@pytest.mark.parametrize("suffix", [".parquet", ".npz"])
def test_parquet_and_npz_inputs(digits_audit, tmp_path, monkeypatch, capsys, suffix) -> None:
    paths = {}
    for name, source in (("m", digits_audit.members), ("n", digits_audit.nonmembers)):
        table = pd.read_csv(source)
        paths[name] = tmp_path / f"{name}{suffix}"
        if suffix == ".parquet":
            table.to_parquet(paths[name])
        else:
            np.savez(paths[name], X=table.drop(columns="digit").to_numpy(), y=table["digit"].to_numpy())
    model = digits_audit.overfit_model
    if suffix == ".npz":
        # A model fitted on a plain array, as NPZ users have.
        from tests.conftest import mlp

        members = pd.read_csv(digits_audit.members)
        model = tmp_path / "array_model.joblib"
        joblib.dump(mlp().fit(members.drop(columns="digit").to_numpy(), members["digit"]), model)
    label = "digit" if suffix == ".parquet" else "y"
    args = base_args(
        digits_audit,
        tmp_path,
        **{"--train": str(paths["m"]), "--holdout": str(paths["n"]), "--label-column": label, "--model": str(model)},
    )
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err


def test_usage_errors_are_one_line_with_exit_code_two(monkeypatch, capsys, tmp_path) -> None:
    code, _, err = run_cli(monkeypatch, capsys, "history", "--limit", "0", "--store", str(tmp_path / "h.db"))
    assert_one_line_error(code, err, "--limit", "history --help")
    code, _, err = run_cli(monkeypatch, capsys, "audit", "--no-such-option", "1")
    assert_one_line_error(code, err, "--no-such-option", "audit --help")


def test_config_problems_are_all_named_at_once(digits_audit, tmp_path, monkeypatch, capsys) -> None:
    config = tmp_path / "audit.toml"
    config.write_text(
        f'[audit]\nmodel = "{digits_audit.overfit_model}"\nrefrences = 4\ntop_kk = 3\n'
        'references = -1\nprior = 1.5\nbackend = "gpu"\nattacks = ["lria"]\n'
    )
    args = ["audit", "--config", str(config), "--train", str(digits_audit.members)]
    args += ["--holdout", str(digits_audit.nonmembers), "--label-column", "digit"]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, "'refrences'", "'top_kk'", "did you mean 'top_k'")
    config.write_text(config.read_text().replace("refrences = 4\ntop_kk = 3\n", ""))
    code, _, err = run_cli(monkeypatch, capsys, *args)
    expected = ["'lria'", "references must be 0 or more", "prior must be strictly between", "unknown backend 'gpu'"]
    assert_one_line_error(code, err, *expected)
