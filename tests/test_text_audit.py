"""`membershield audit-text` on a tiny GPT-2 trained here until it memorises, and on bad input.

Run in-process through ``membershield.cli.main``, as a user would run the command.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from tests.test_cli import assert_one_line_error, run_cli
from tests.text_fixtures import TextWorld, one_thread, shared_text_world


@pytest.fixture(scope="session")
def text_world(tmp_path_factory: pytest.TempPathFactory) -> TextWorld:
    return shared_text_world(tmp_path_factory)


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    with one_thread():
        yield


def audit_args(world: TextWorld, out, model=None, **changes: str) -> list[str]:
    options = {
        "--model": str(model or world.target),
        "--members": str(world.members),
        "--nonmembers": str(world.nonmembers),
        "--out": str(out),
        "--device": "cpu",
    }
    options.update(changes)
    return ["audit-text", *[x for pair in options.items() for x in pair]]


def attacks_of(out) -> dict[str, dict]:
    return {a["name"]: a for a in json.loads((out / "audit.json").read_text())["attacks"]}


def test_memorising_model_is_caught_and_results_are_written(text_world, tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "target"
    args = audit_args(text_world, out, **{"--reference-model": str(text_world.reference)})
    code, stdout, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "min-k-plus-plus" in stdout and "perplexity" in stdout and "split check" in stdout
    doc = json.loads((out / "audit.json").read_text())
    assert doc["schema_version"] == "1.0"
    target = doc["target"]
    assert target["kind"] == "hf-causal-lm"
    weights = text_world.target / "model.safetensors"
    assert target["weight_files"]["model.safetensors"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert target["reference_model"]["spec"] == str(text_world.reference)
    assert doc["data"]["n_members"] == 120 and doc["data"]["n_nonmembers"] == 120
    assert len(doc["data"]["fingerprints"]["members"]) == 64
    assert doc["split_check"]["ok"], doc["split_check"]  # members and non-members come from one generator
    attacks = attacks_of(out)
    assert list(attacks) == ["loss", "zlib", "lowercase", "reference", "min-k", "min-k-plus-plus"]
    for name in ("loss", "min-k-plus-plus", "reference"):
        assert attacks[name]["auc_ci_low"] > 0.6, (name, attacks[name]["auc"])
    for attack in attacks.values():
        assert {"tpr_at_fpr", "advantage", "epsilon_lower_bound", "top_exposed", "citation"} <= set(attack)
        assert attack["tpr_at_fpr"][0]["measurable"] is False  # 120 non-members cannot resolve 0.1% FPR
    top = attacks["loss"]["top_exposed"][0]
    assert top["source"] in ("members", "nonmembers") and top["line"] >= 1 and top["text"]
    scores = pd.read_csv(out / "scores.csv")
    assert len(scores) == 240 and scores["is_member"].sum() == 120
    assert {"line", "n_tokens", "loss", "min-k-plus-plus"} <= set(scores.columns)
    assert doc["utility"]["member_perplexity"] < doc["utility"]["nonmember_perplexity"]
    # The same report command renders text audits: perplexities stand where a classifier's accuracy would.
    code, _, err = run_cli(monkeypatch, capsys, "report", str(out / "audit.json"), "--out", str(out / "r.html"))
    assert code == 0, err
    page = (out / "r.html").read_text()
    assert "Perplexity" in page and "min-k-plus-plus" in page
    # ... and the gate judges them: this memorising model must fail a 0.6 AUC limit.
    policy = tmp_path / "policy.toml"
    policy.write_text('max_auc = 0.6\nmax_tpr_at_fpr = {"0.01" = 0.05}\nallow_unmeasurable = true\n')
    code, stdout, err = run_cli(monkeypatch, capsys, "gate", str(out / "audit.json"), "--policy", str(policy))
    assert code == 1, stdout + err
    assert "loss" in stdout + err


def test_loss_is_the_models_own_loss_and_its_auc(text_world, tmp_path, monkeypatch, capsys) -> None:
    """Each record's LOSS is ``model(input_ids=ids, labels=ids).loss`` on the tokenizer's default encoding,
    and the audit's LOSS AUC is ``roc_auc_score`` on those losses, computed independently here."""
    import torch
    from sklearn.metrics import roc_auc_score
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "own-loss"
    code, _, err = run_cli(monkeypatch, capsys, *audit_args(text_world, out, **{"--attacks": "loss"}))
    assert code == 0, err
    tokenizer = AutoTokenizer.from_pretrained(text_world.target)
    model = AutoModelForCausalLM.from_pretrained(text_world.target).eval()
    files = (text_world.members, text_world.nonmembers)
    texts = [json.loads(line)["text"] for f in files for line in f.read_text().splitlines()]
    with torch.no_grad():
        losses = []
        for text in texts:
            ids = torch.tensor([tokenizer(text)["input_ids"]])
            losses.append(float(model(input_ids=ids, labels=ids).loss))
    scores = pd.read_csv(out / "scores.csv")
    np.testing.assert_allclose(scores["mean_nll"], losses, atol=1e-4)
    np.testing.assert_allclose(-scores["loss"], losses, atol=1e-4)
    truth = np.r_[np.ones(120), np.zeros(120)]
    independent = roc_auc_score(truth, -np.array(losses))
    assert attacks_of(out)["loss"]["auc"] == pytest.approx(independent, abs=0.005)
    assert independent > 0.9  # the model memorised its members


def test_texts_on_both_sides_are_dropped_on_request(text_world, tmp_path, monkeypatch, capsys) -> None:
    lines = text_world.nonmembers.read_text().splitlines()[:100] + text_world.members.read_text().splitlines()[:20]
    (tmp_path / "mixed.jsonl").write_text("\n".join(lines) + "\n")
    changes = {"--nonmembers": str(tmp_path / "mixed.jsonl"), "--attacks": "loss"}
    args = audit_args(text_world, tmp_path / "out", **changes)
    code, stdout, err = run_cli(monkeypatch, capsys, *args, "--drop-overlap")
    assert code == 0, err
    doc = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert doc["data"]["n_members"] == 100 and doc["data"]["n_nonmembers"] == 100
    assert doc["data"]["overlap_dropped"]["n_members"] == 20
    assert "removed from both" in " ".join(stdout.split())


def test_untrained_copy_scores_at_chance(text_world, tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "untrained"
    args = audit_args(text_world, out, model=text_world.untrained, **{"--attacks": "loss,min-k,min-k-plus-plus"})
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    for name, attack in attacks_of(out).items():
        assert attack["auc_ci_low"] <= 0.5 <= attack["auc_ci_high"], (name, attack["auc"])


def test_split_check_warns_when_nonmembers_come_from_elsewhere(text_world, tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "shifted"
    args = audit_args(text_world, out, **{"--nonmembers": str(text_world.shifted_nonmembers), "--attacks": "loss"})
    code, stdout, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "SPLIT CHECK FAILED" in stdout
    assert not json.loads((out / "audit.json").read_text())["split_check"]["ok"]


def test_windowed_and_batched_scoring_match_one_pass(text_world) -> None:
    from membershield.text.data import load_jsonl
    from membershield.text.model import load_language_model
    from membershield.text.scoring import score_texts

    lm = load_language_model(text_world.target, "cpu")
    texts = load_jsonl(text_world.members).texts[:12]
    whole = score_texts(lm, texts)
    small_batches = score_texts(lm, texts, batch_tokens=1)
    windowed = score_texts(lm, texts, max_length=12, stride=6)
    assert (windowed.n_tokens == whole.n_tokens).all()
    for a, b, c in zip(whole.logprob, small_batches.logprob, windowed.logprob, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)  # padding does not change any score
        np.testing.assert_allclose(a[:11], c[:11], atol=1e-4)  # the first window has the same context
    # mean and variance of log p under the next-token distribution, checked by brute force at one position
    import torch

    ids = lm.encode(texts[:1])[0]
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(torch.tensor([ids])).logits[0, 4].double(), -1).numpy()
    p = np.exp(logp)
    assert whole.mean[0][4] == pytest.approx((p * logp).sum(), abs=1e-4)
    assert whole.var[0][4] == pytest.approx((p * (logp - (p * logp).sum()) ** 2).sum(), abs=1e-3)


@pytest.mark.parametrize(
    "case",
    [
        "missing model",
        "empty file",
        "malformed line",
        "encoder model",
        "no tokenizer",
        "reference without model",
        "unknown attack",
        "members as non-members",
    ],
)
def test_bad_input_is_one_line_and_exit_2(case, text_world, tmp_path, monkeypatch, capsys) -> None:
    changes: dict[str, str] = {}
    needles: tuple[str, ...]
    if case == "missing model":
        changes["--model"] = str(tmp_path / "no-such-model")
        needles = ("no-such-model", "not found")
    elif case == "empty file":
        (tmp_path / "empty.jsonl").write_text("")
        changes["--nonmembers"] = str(tmp_path / "empty.jsonl")
        needles = ("empty.jsonl", "no records")
    elif case == "malformed line":
        lines = text_world.members.read_text().splitlines()
        lines[6] = lines[6][:-2]  # a truncated JSON object on line 7
        (tmp_path / "broken.jsonl").write_text("\n".join(lines) + "\n")
        changes["--members"] = str(tmp_path / "broken.jsonl")
        needles = ("broken.jsonl:7", "not valid JSON")
    elif case == "encoder model":
        from transformers import BertConfig

        BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(
            tmp_path / "bert"
        )
        changes["--model"] = str(tmp_path / "bert")
        needles = ("bert", "not a causal")
    elif case == "no tokenizer":
        (tmp_path / "bare").mkdir()
        for name in ("config.json", "model.safetensors"):
            shutil.copy(text_world.target / name, tmp_path / "bare" / name)
        changes["--model"] = str(tmp_path / "bare")
        needles = ("bare", "tokenizer")
    elif case == "members as non-members":
        changes["--nonmembers"] = str(text_world.members)
        needles = ("120 member text(s)", "also non-members", "--drop-overlap")
    elif case == "reference without model":
        changes["--attacks"] = "loss,reference"
        needles = ("reference", "--reference-model")
    else:
        changes["--attacks"] = "loss,mink"
        needles = ("mink", "min-k")
    code, _, err = run_cli(monkeypatch, capsys, *audit_args(text_world, tmp_path / "out", **changes))
    assert_one_line_error(code, err, *needles)
