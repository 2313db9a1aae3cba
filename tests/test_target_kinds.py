"""Every registered target kind, found in the registry: a real model of that kind is recognised as it (and
by no kind listed before it), loads with the access and recipe its kind declares, and `membershield
targets` lists it. A kind without a builder here fails the test: adding a kind means showing it works."""

from __future__ import annotations

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from membershield.errors import ModelLoadError
from membershield.targets import KINDS, load_model, resolve
from membershield.targets.registry import load_for
from tests.test_cli import assert_one_line_error, run_cli

EXAMPLE_RECIPE = "examples/torch_mlp.py:recipe"


def _sklearn(directory):
    X = np.random.default_rng(0).normal(size=(60, 4))
    joblib.dump(LogisticRegression().fit(X, (X[:, 0] > 0).astype(int)), directory / "model.joblib")
    return str(directory / "model.joblib")


def _recipe(directory):
    return EXAMPLE_RECIPE


def _language_model(directory):
    pytest.importorskip("transformers")
    from transformers import GPT2LMHeadModel

    from tests.text_fixtures import build_tokenizer, gpt2_config, make_corpus, save_lm

    tokenizer = build_tokenizer(make_corpus(30, seed=0), vocab_size=300)
    model = GPT2LMHeadModel(gpt2_config(len(tokenizer), tokenizer.eos_token_id, n_positions=32))
    return str(save_lm(model, tokenizer, directory / "lm"))


def _onnx(directory):
    pytest.importorskip("skl2onnx")
    from skl2onnx import to_onnx

    X = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
    model = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))
    (directory / "model.onnx").write_bytes(to_onnx(model, X[:1]).SerializeToString())
    return str(directory / "model.onnx")


def _text_classifier(directory):
    pytest.importorskip("transformers")
    from transformers import GPT2ForSequenceClassification

    from tests.text_fixtures import build_tokenizer, gpt2_config, make_corpus, save_lm

    tokenizer = build_tokenizer(make_corpus(30, seed=0), vocab_size=300)
    config = gpt2_config(len(tokenizer), tokenizer.eos_token_id, n_positions=32)
    config.num_labels, config.pad_token_id = 2, tokenizer.pad_token_id
    return "hf:" + str(save_lm(GPT2ForSequenceClassification(config), tokenizer, directory / "classifier"))


def _endpoint(directory):
    return "http://127.0.0.1:9/v1/predict"  # loading asks nothing: the first query is the audit's


BUILDERS = {
    "http-endpoint": _endpoint,
    "sklearn": _sklearn,
    "torch-recipe": _recipe,
    "hf-causal-lm": _language_model,
    "onnx": _onnx,
    "hf-classifier": _text_classifier,
}


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_every_kind_recognises_loads_and_declares_its_access(kind, tmp_path) -> None:
    assert kind.name in BUILDERS, f"target kind {kind.name} has no contract builder in this test"
    assert kind.description and kind.example and kind.audit_command in ("audit", "audit-text")
    spec = BUILDERS[kind.name](tmp_path)
    assert resolve(spec) is kind
    loaded = load_model(spec)
    assert loaded.kind == kind.name and loaded.spec and len(loaded.sha256) == 64
    assert loaded.access == kind.access
    assert (loaded.recipe is not None) == kind.gives_recipe
    assert load_for(kind.audit_command, spec).kind == kind.name


def test_each_command_refuses_a_kind_it_does_not_audit(tmp_path) -> None:
    model = _sklearn(tmp_path)
    with pytest.raises(ModelLoadError, match="use `membershield audit`"):
        load_for("audit-text", model)
    with pytest.raises(ModelLoadError, match="directory not found"):
        load_for("audit-text", str(tmp_path / "no-such-lm"))  # not there: the language-model kind says so
    with pytest.raises(ModelLoadError, match="model file not found"):
        load_for("audit", str(tmp_path / "no-such.joblib"))


def test_targets_command_lists_every_kind(monkeypatch, capsys) -> None:
    code, out, err = run_cli(monkeypatch, capsys, "targets")
    assert code == 0, err
    for kind in KINDS:
        assert kind.name in out and kind.audit_command in out


def test_attacks_verbose_lists_each_attacks_settings(monkeypatch, capsys) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # folded cells would split the substrings checked below
    code, out, err = run_cli(monkeypatch, capsys, "attacks", "--verbose")
    assert code == 0, err
    assert "queries_per_record=32" in out and "max_training_rows=200000" in out and "gamma=1.0" in out
    assert "k=0.2" in out  # text attacks too


def test_a_recipe_given_to_audit_text_is_one_line(monkeypatch, capsys, tmp_path) -> None:
    for name in ("a.jsonl", "b.jsonl"):
        (tmp_path / name).write_text("".join(f'{{"text": "record {name} {i}"}}\n' for i in range(3)))
    args = ["audit-text", "--model", EXAMPLE_RECIPE, "--members", str(tmp_path / "a.jsonl")]
    args += ["--nonmembers", str(tmp_path / "b.jsonl"), "--out", str(tmp_path / "out")]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, "PyTorch recipe", "use `membershield audit`")
