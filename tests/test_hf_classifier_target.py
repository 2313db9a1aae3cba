"""Hugging Face sequence classifiers as audit targets (``--model hf:DIR``): a tiny GPT-2 classifier that
memorised random labels on its training texts leaks clearly, the same recipe trained on other texts
scores at chance on them, reference attacks run with a TF-IDF stand-in recipe, and each way the
directory or the data can be wrong is one line. Every model and text is made here; nothing is downloaded."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest

from tests.test_cli import assert_one_line_error, run_cli
from tests.text_fixtures import build_tokenizer, gpt2_config, make_corpus, one_thread, save_lm

pytest.importorskip("transformers")

N = 120  # members, non-members and population records each
LABELS = {0: "negative", 1: "positive"}


@dataclass(frozen=True)
class ReviewWorld:
    directory: Path
    members: Path
    nonmembers: Path
    population: Path
    target: Path  # trained on the members until it memorised their (random) labels
    other: Path  # the same recipe trained on the population only: it never saw a member
    stand_in: Path  # TF-IDF + logistic regression on the review column: the references' recipe


def _reviews(seed: int) -> pd.DataFrame:
    # labels independent of the text: only memorising a record can get its label right
    rng = np.random.default_rng(seed + 100)
    return pd.DataFrame({"review": make_corpus(N, seed=seed), "sentiment": rng.choice(list(LABELS.values()), N)})


def _train_classifier(frame: pd.DataFrame, tokenizer, seed: int, epochs: int = 80):
    # 80 epochs reach (near) zero training loss for every seed tried; at 40 some seeds and CPUs stopped at
    # 89-98% training accuracy, leaving the member losses close to the lucky non-members' ones
    import torch
    from transformers import GPT2ForSequenceClassification

    torch.manual_seed(seed)
    config = gpt2_config(len(tokenizer), tokenizer.eos_token_id, n_positions=96)
    config.num_labels, config.pad_token_id = len(LABELS), tokenizer.pad_token_id
    config.id2label, config.label2id = dict(LABELS), {v: k for k, v in LABELS.items()}
    model = GPT2ForSequenceClassification(config)
    encoded = tokenizer(frame["review"].tolist(), padding=True, return_tensors="pt")
    labels = torch.tensor(frame["sentiment"].map(config.label2id).to_numpy())
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for rows in torch.randperm(len(frame), generator=generator).split(32):
            loss = model(
                input_ids=encoded["input_ids"][rows],
                attention_mask=encoded["attention_mask"][rows],
                labels=labels[rows],
            ).loss
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval()


def _stand_in_recipe(frame: pd.DataFrame, path: Path) -> Path:
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    pipeline = make_pipeline(
        ColumnTransformer([("words", TfidfVectorizer(), "review")]), LogisticRegression(C=100.0, max_iter=500)
    )
    joblib.dump(pipeline.fit(frame[["review"]], frame["sentiment"]), path)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> ReviewWorld:
    directory = tmp_path_factory.mktemp("hf-classifier")
    frames = {name: _reviews(seed) for name, seed in (("members", 11), ("nonmembers", 12), ("population", 13))}
    paths = {name: directory / f"{name}.csv" for name in frames}
    for name, frame in frames.items():
        frame.to_csv(paths[name], index=False)
    tokenizer = build_tokenizer([t for f in frames.values() for t in f["review"]])
    with one_thread():
        target = save_lm(_train_classifier(frames["members"], tokenizer, seed=0), tokenizer, directory / "target")
        other = save_lm(_train_classifier(frames["population"], tokenizer, seed=1), tokenizer, directory / "other")
    stand_in = _stand_in_recipe(frames["population"], directory / "tfidf.joblib")
    return ReviewWorld(directory, paths["members"], paths["nonmembers"], paths["population"], target, other, stand_in)


def _audit(world: ReviewWorld, monkeypatch, capsys, model: Path, out: str, *extra: str) -> tuple[int, str, str]:
    args = ["audit", "--model", f"hf:{model}", "--train", str(world.members), "--holdout", str(world.nonmembers)]
    args += ["--label-column", "sentiment", "--out", str(world.directory / out), *extra]
    with one_thread():
        return run_cli(monkeypatch, capsys, *args)


def test_a_classifier_that_memorised_its_texts_leaks(world, monkeypatch, capsys) -> None:
    code, stdout, err = _audit(world, monkeypatch, capsys, world.target, "target", "--attacks", "loss,confidence")
    assert code == 0, err
    result = json.loads((world.directory / "target" / "audit.json").read_text())
    assert result["target"]["kind"] == "hf-classifier" and result["target"]["classes"] == list(LABELS.values())
    assert result["utility"]["train_accuracy"] > 0.95 and result["utility"]["holdout_accuracy"] < 0.7
    loss = next(a for a in result["attacks"] if a["name"] == "loss")
    assert loss["auc"] > 0.8 and loss["auc_ci_low"] > 0.7, stdout


def test_the_same_recipe_on_other_texts_scores_at_chance(world, monkeypatch, capsys) -> None:
    code, stdout, err = _audit(world, monkeypatch, capsys, world.other, "other", "--attacks", "loss")
    assert code == 0, err
    loss = json.loads((world.directory / "other" / "audit.json").read_text())["attacks"][0]
    assert loss["auc_ci_low"] < 0.5 < loss["auc_ci_high"], stdout


def test_reference_attacks_run_with_a_stand_in_recipe(world, monkeypatch, capsys) -> None:
    extra = ["--attacks", "loss,rmia", "--recipe", str(world.stand_in), "--population", str(world.population)]
    extra += ["--references", "4", "--text-column", "review", "--cache", str(world.directory / "cache")]
    code, stdout, err = _audit(world, monkeypatch, capsys, world.target, "references", *extra)
    assert code == 0, err
    result = json.loads((world.directory / "references" / "audit.json").read_text())
    assert result["references"]["count"] == 4 and {a["name"] for a in result["attacks"]} == {"loss", "rmia"}
    rmia = next(a for a in result["attacks"] if a["name"] == "rmia")
    assert rmia["auc"] > 0.6, stdout  # the stand-in references are weaker than the target, not useless


def test_reference_attacks_without_a_recipe_ask_for_one(world, monkeypatch, capsys) -> None:
    code, _, err = _audit(world, monkeypatch, capsys, world.target, "x", "--attacks", "loss,lira")
    assert_one_line_error(code, err, "'lira' needs reference models", "--recipe")


def test_bad_directories_and_columns_are_one_line(world, monkeypatch, capsys, tmp_path) -> None:
    missing = tmp_path / "no-such-model"
    code, _, err = _audit(world, monkeypatch, capsys, missing, "x", "--attacks", "loss")
    assert_one_line_error(code, err, "classifier directory not found", str(missing))
    code, _, err = _audit(world, monkeypatch, capsys, world.target, "x", "--attacks", "loss", "--text-column", "body")
    assert_one_line_error(code, err, "--text-column 'body'", "review")
    (tmp_path / "lm").mkdir()
    from transformers import GPT2LMHeadModel

    language_model = GPT2LMHeadModel(gpt2_config(64, 0, n_positions=32))
    language_model.save_pretrained(tmp_path / "lm")
    code, _, err = _audit(world, monkeypatch, capsys, tmp_path / "lm", "x", "--attacks", "loss")
    assert_one_line_error(code, err, "not a sequence classifier", "audit-text")


def test_text_column_applies_to_hf_classifiers_only(world, monkeypatch, capsys) -> None:
    args = ["audit", "--model", str(world.stand_in), "--train", str(world.members), "--holdout", str(world.nonmembers)]
    args += ["--label-column", "sentiment", "--text-column", "review", "--out", str(world.directory / "x")]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, "text_column applies to a text classifier", "--text-column")
