"""ReCaLL, DC-PDD and the neighbourhood attack through `membershield audit-text`, and nucleus-sampled
extraction through `membershield extract`, on tiny GPT-2 models trained here.

The attacks run on the shared memorising model (:mod:`tests.text_fixtures`) and on two models that never
saw the audit's texts: its random-weight copy and a model trained on other records from the same
generator. Extraction runs on a smaller model trained far longer, until it reproduces most of its
records.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from membershield.errors import ConfigError
from membershield.text.attacks import TextAttackInputs, create_text_attack
from membershield.text.scoring import TokenScores
from tests.test_cli import assert_one_line_error, run_cli
from tests.text_fixtures import TextWorld, make_corpus, one_thread, shared_text_world, write_jsonl

RECENT = "recall,dc-pdd,neighbourhood"


@pytest.fixture(scope="session")
def text_world(tmp_path_factory: pytest.TempPathFactory) -> TextWorld:
    return shared_text_world(tmp_path_factory)


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    with one_thread():
        yield


def audit(monkeypatch, capsys, world: TextWorld, out: Path, model: Path | None = None, **changes: str) -> dict:
    options = {
        "--model": str(model or world.target),
        "--members": str(world.members),
        "--nonmembers": str(world.nonmembers),
        "--out": str(out),
        "--device": "cpu",
        "--attacks": RECENT,
        # a = 0.01 (the paper's) suits vocabularies of tens of thousands of tokens, whose probabilities are
        # small; this tokenizer has 400 tokens, so -p·log f is mostly far above 0.01 and a = 1 keeps it.
        "--dc-pdd-cap": "1",
    }
    options.update(changes)
    code, _, err = run_cli(monkeypatch, capsys, "audit-text", *[x for pair in options.items() for x in pair])
    assert code == 0, err
    return {a["name"]: a for a in json.loads((out / "audit.json").read_text())["attacks"]}


def test_each_attack_catches_the_memorising_model(text_world, tmp_path, monkeypatch, capsys) -> None:
    attacks = audit(monkeypatch, capsys, text_world, tmp_path / "target")
    assert list(attacks) == ["recall", "dc-pdd", "neighbourhood"]
    for name, attack in attacks.items():
        assert attack["auc_ci_low"] > 0.5, (name, attack["auc"], attack["auc_ci_low"])
    assert "Xie" in attacks["recall"]["citation"] and "Mattern" in attacks["neighbourhood"]["citation"]
    assert attacks["recall"]["params"]["prefix_texts"] == 4
    assert attacks["neighbourhood"]["params"]["neighbours_scored"] == 240 * 10
    assert attacks["dc-pdd"]["params"]["corpus_texts"] == 120  # the non-members, each leaving itself out
    scores = pd.read_csv(tmp_path / "target" / "scores.csv")
    assert {"recall", "dc-pdd", "neighbourhood"} <= set(scores.columns)


@pytest.mark.parametrize("which", ["untrained", "reference"])
def test_each_attack_is_at_chance_on_a_model_that_never_saw_the_texts(
    which, text_world, tmp_path, monkeypatch, capsys
) -> None:
    model = text_world.untrained if which == "untrained" else text_world.reference
    attacks = audit(monkeypatch, capsys, text_world, tmp_path / which, model=model)
    for name, attack in attacks.items():
        assert attack["auc_ci_low"] <= 0.5 <= attack["auc_ci_high"], (which, name, attack["auc"])


def test_dc_pdd_reference_corpus(text_world, tmp_path, monkeypatch, capsys) -> None:
    # Left out text by text, the default corpus (the non-members) is the non-member file given explicitly.
    scores = {}
    for label, extra in (("default", {}), ("explicit", {"--reference-corpus": str(text_world.nonmembers)})):
        audit(monkeypatch, capsys, text_world, tmp_path / label, **{"--attacks": "dc-pdd", **extra})
        scores[label] = pd.read_csv(tmp_path / label / "scores.csv")["dc-pdd"].to_numpy()
    np.testing.assert_allclose(scores["default"], scores["explicit"])
    # A corpus of other texts from the same generator calibrates as well.
    corpus = write_jsonl(tmp_path / "corpus.jsonl", make_corpus(200, seed=31))
    attack = audit(
        monkeypatch, capsys, text_world, tmp_path / "own", **{"--attacks": "dc-pdd", "--reference-corpus": str(corpus)}
    )
    assert attack["dc-pdd"]["auc_ci_low"] > 0.5 and attack["dc-pdd"]["params"]["corpus_texts"] == 200


def test_recall_prefix_from_a_file(text_world, tmp_path, monkeypatch, capsys) -> None:
    prefix = write_jsonl(tmp_path / "prefix.jsonl", make_corpus(3, seed=32))
    attacks = audit(
        monkeypatch, capsys, text_world, tmp_path / "p", **{"--attacks": "recall", "--recall-prefix": str(prefix)}
    )
    recall = attacks["recall"]
    assert recall["params"]["prefix_source"] == str(prefix) and recall["params"]["prefix_texts"] == 3
    assert recall["auc_ci_low"] > 0.5


def test_querying_attacks_need_the_model() -> None:
    inputs = TextAttackInputs(["a b"], TokenScores([np.array([-1.0])]))
    for name in RECENT.split(","):
        with pytest.raises(ConfigError, match="queries the model"):
            create_text_attack(name).score(inputs)


@pytest.mark.parametrize(
    "flags, needles",
    [
        (["--neighbours", "0"], ("--neighbours", "at least 1")),
        (["--recall-prefix", "missing.jsonl"], ("--recall-prefix", "missing.jsonl", "not found")),
        (["--reference-corpus", "gone.jsonl"], ("--reference-corpus", "gone.jsonl", "not found")),
        (["--dc-pdd-cap", "0"], ("--dc-pdd-cap", "positive")),
        (["--attacks", "recal"], ("did you mean 'recall'",)),
    ],
)
def test_bad_attack_options_are_one_line_and_exit_2(flags, needles, text_world, tmp_path, monkeypatch, capsys):
    args = ["audit-text", "--model", str(text_world.target), "--members", str(text_world.members)]
    args += ["--nonmembers", str(text_world.nonmembers), "--out", str(tmp_path), "--attacks", RECENT, *flags]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, *needles)


def test_nucleus_filter_keeps_the_smallest_set_reaching_top_p() -> None:
    import torch

    from membershield.text.extraction import nucleus_log_probs

    logits = torch.log(torch.tensor([[0.2, 0.5, 0.3]]))
    kept = nucleus_log_probs(logits, 0.6).exp()[0].tolist()
    assert kept == pytest.approx([0.0, 0.625, 0.375])
    assert nucleus_log_probs(logits, 0.45).exp()[0].tolist() == pytest.approx([0.0, 1.0, 0.0])  # 0.5 alone
    assert nucleus_log_probs(logits, 1.0).exp()[0].tolist() == pytest.approx([0.2, 0.5, 0.3])
    # temperature 0.5 squares the odds before the filter
    assert nucleus_log_probs(logits, 1.0, 0.5).exp()[0].tolist() == pytest.approx(
        [0.04 / 0.38, 0.25 / 0.38, 0.09 / 0.38]
    )


@pytest.fixture(scope="module")
def memorised(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """48 records a 2-layer GPT-2 saw 150 times (1 step of 32 per epoch), and 48 it never saw."""
    pytest.importorskip("transformers")
    from tests.text_fixtures import build_tokenizer, save_lm, train_lm

    d = tmp_path_factory.mktemp("memorised")
    members, nonmembers = make_corpus(48, seed=21), make_corpus(48, seed=22)
    with one_thread():
        tokenizer = build_tokenizer(members + nonmembers)
        model = save_lm(train_lm(members, tokenizer, epochs=150, seed=0), tokenizer, d / "model")
    return {
        "model": model,
        "members": write_jsonl(d / "members.jsonl", members),
        "nonmembers": write_jsonl(d / "nonmembers.jsonl", nonmembers),
    }


def _extract(monkeypatch, capsys, memorised, data: str, out: Path, *flags: str) -> tuple[dict, str]:
    args = ["extract", "--model", str(memorised["model"]), "--data", str(memorised[data]), "--out", str(out)]
    args += ["--prefix-tokens", "6", "--suffix-tokens", "10", "--device", "cpu", *flags]
    code, stdout, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    return json.loads((out / "extraction.json").read_text()), stdout


def test_nucleus_extraction_reports_the_share_reproduced_at_each_top_p(memorised, tmp_path, monkeypatch, capsys):
    nucleus = ("--sampling", "nucleus", "--top-p", "1,0.5", "--samples", "8")
    doc, stdout = _extract(monkeypatch, capsys, memorised, "members", tmp_path / "m", *nucleus)
    assert "Nucleus extraction" in stdout and doc["decoding"] == "nucleus" and doc["samples"] == 8
    low, high = doc["by_top_p"]
    assert (low["top_p"], high["top_p"]) == (0.5, 1.0) and low["n_tested"] == 48
    greedy, _ = _extract(monkeypatch, capsys, memorised, "members", tmp_path / "g")
    assert greedy["n_extracted"] >= 0.6 * 48  # the model memorised its records
    # A narrow nucleus decodes almost as greedy does; sampling the full distribution reproduces less.
    assert low["extracted_share_ci_low"] > 0.6 and high["extracted_share"] < low["extracted_share"]
    for row in (low, high):
        # the sampled count agrees with the exact per-sample probability (sd <= sqrt(0.25 / 384) = 0.026)
        assert abs(row["exact_sample_share"] - row["mean_exact_probability"]) < 0.1, row
        assert row["extracted_share_ci_low"] <= row["extracted_share"] <= row["extracted_share_ci_high"]
    assert set(doc["records"][0]["exact_samples"]) == {"0.5", "1"}
    unseen, _ = _extract(monkeypatch, capsys, memorised, "nonmembers", tmp_path / "n", *nucleus)
    for row in unseen["by_top_p"]:
        assert row["n_extracted"] == 0 and row["extracted_share_ci_high"] < 0.1 and row["expected_share"] < 0.01


@pytest.mark.parametrize(
    "flags, needles",
    [
        (["--top-p", "0.5"], ("--top-p", "--sampling nucleus")),
        (["--sampling", "nucleus", "--top-p", "1.5"], ("--top-p", "(0, 1]")),
        (["--sampling", "nucleus", "--samples", "0"], ("--samples",)),
        (["--sampling", "beam"], ("--sampling", "greedy or nucleus")),
    ],
)
def test_bad_sampling_options_are_one_line_and_exit_2(flags, needles, memorised, tmp_path, monkeypatch, capsys):
    args = ["extract", "--model", str(memorised["model"]), "--data", str(memorised["members"]), *flags]
    code, _, err = run_cli(monkeypatch, capsys, *args, "--out", str(tmp_path))
    assert_one_line_error(code, err, *needles)
