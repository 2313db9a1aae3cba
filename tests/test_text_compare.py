"""``membershield compare-text``: LoRA fine-tunes of the tiny GPT-2, undefended and under DP-SGD (Opacus).

The base is the text tests' reference model; the pool is 240 generated texts it never saw, split in
halves. The undefended fine-tune memorises its members; DP-SGD at ε = 1 leaves the attacks at chance and
every attack's empirical ε lower bound under the ε the accountant spent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_cli import assert_one_line_error, run_cli
from tests.text_fixtures import TextWorld, one_thread, shared_text_world

if os.environ.get("CI") != "true":
    pytest.importorskip("peft", reason="LoRA fine-tuning needs the llm extra (peft)")


@pytest.fixture(scope="module")
def text_world(tmp_path_factory: pytest.TempPathFactory) -> TextWorld:
    return shared_text_world(tmp_path_factory)


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    with one_thread():
        yield


@pytest.fixture(scope="module")
def pool(text_world: TextWorld, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pool") / "pool.jsonl"
    path.write_text(text_world.members.read_text() + text_world.nonmembers.read_text())
    return path


@pytest.fixture(scope="module")
def comparison(text_world, pool, tmp_path_factory) -> tuple[dict, Path]:
    # The command itself, as a user runs it (one process, one thread like the other text tests).
    out = tmp_path_factory.mktemp("compare-text")
    command = [
        sys.executable, "-m", "membershield", "compare-text", "--model", str(text_world.reference),
        "--data", str(pool), "--defenses", "none,dp:epsilon=1", "--attacks", "loss,reference,zlib",
        "--epochs", "12", "--learning-rate", "0.01", "--lora-rank", "16", "--out", str(out), "--device", "cpu",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    finished = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "compare-text.json" in finished.stdout and "consistent" in finished.stdout
    return json.loads((out / "compare-text.json").read_text()), out


def _variant(document: dict, name: str) -> dict:
    return next(v for v in document["variants"] if v["name"] == name)


def test_the_undefended_fine_tune_memorises_and_the_reference_attack_sees_it(comparison) -> None:
    document, out = comparison
    assert document["data"] == {"pool": document["data"]["pool"], "members": 120, "holdout": 120}
    none = _variant(document, "none")
    attacks = {a["name"]: a for a in none["attacks"]}
    assert attacks["reference"]["auc_ci_low"] > 0.6, attacks["reference"]["auc"]
    assert none["training"]["steps"] == 12 * 15 and "epsilon" not in none["training"]
    audit = json.loads(Path(none["audit"]).read_text())
    assert audit["target"]["base_model"] and audit["target"]["reference_model"]
    assert (out / "none" / "adapter" / "adapter_config.json").is_file()


def test_dp_at_epsilon_one_is_at_chance_and_under_its_bound(comparison) -> None:
    document, _ = comparison
    dp = _variant(document, "dp:epsilon=1")
    training = dp["training"]
    assert 0 < training["epsilon"] <= 1.0 + 1e-9 and training["accountant"] == "prv"
    assert training["noise_multiplier"] > 0 and training["sample_rate"] == pytest.approx(8 / 120, rel=0.1)
    for attack in dp["attacks"]:
        assert attack["auc_ci_low"] < 0.5 < attack["auc_ci_high"] or abs(attack["auc"] - 0.5) < 0.06, attack
        assert attack["epsilon_lower_bound"] <= training["epsilon"] + 1e-9
    assert "consistent" in dp["verdict"]
    none = _variant(document, "none")
    assert dp["worst"]["auc"] < none["worst"]["auc"]


def test_a_defense_compare_text_cannot_train_is_one_line(text_world, pool, tmp_path, monkeypatch, capsys) -> None:
    args = ["--model", str(text_world.reference), "--data", str(pool), "--out", str(tmp_path)]
    code, _, err = run_cli(monkeypatch, capsys, "compare-text", *args, "--defenses", "none,relaxloss")
    assert_one_line_error(code, err, "relaxloss", "dp:epsilon=E")
