"""The attention-head memorisation diagnostic of `membershield extract --nonmembers`, on tiny GPT-2 models
trained here.

Ground truth: a 2-layer GPT-2 that memorised its 64 records (16 words drawn at random, one token each,
seen 300 times) against a model of the same recipe trained on 64 other records; 512 records of the same
generator are the non-members. The first lists heads of its second layer whose focus is more frequent
for its records' prefixes; the second lists none. On three data and training seeds tried, at a threshold of
0.5 the memorising model's best head had an AUC of 0.68-0.73 (interval from 0.59-0.65) and the other
model's best interval started at 0.46-0.48; at 0.9 focus is rarer (member rates 1-4%, non-members'
0.3-1%) and two seeds of three listed a head.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from membershield.errors import ConfigError
from membershield.text.attention import FocusRates, check_threshold, compare_heads, focus_rates
from tests.test_cli import assert_one_line_error, run_cli
from tests.text_fixtures import CITIES, FIRST, ITEMS, JOBS, LAST, one_thread, write_jsonl

WORDS = FIRST + LAST + CITIES + JOBS + ITEMS
PREFIX = 12
EPOCHS = 300
THRESHOLD = "0.5"


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    with one_thread():
        yield


def word_records(n: int, seed: int, length: int = 16) -> list[str]:
    """Records of ``length`` words drawn at random: nothing to learn but the records themselves."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, length)) for _ in range(n)]


def build_attention_models(directory: Path) -> dict[str, Path]:
    """The memorising model, the model of the same recipe trained on other records, and the two JSONL
    files (members, non-members) in ``directory``; about 40 seconds on one thread."""
    from tests.text_fixtures import build_tokenizer, gpt2_config, save_lm, train_lm

    members, nonmembers, other = word_records(64, 21), word_records(512, 22), word_records(64, 23)
    tokenizer = build_tokenizer(members + nonmembers + other, vocab_size=1000)  # every word one token

    def trained(texts: list[str], name: str) -> Path:
        config = gpt2_config(len(tokenizer), tokenizer.eos_token_id, n_embd=128)
        model = train_lm(texts, tokenizer, epochs=EPOCHS, seed=0, config=config)
        return save_lm(model, tokenizer, directory / name)

    with one_thread():
        memorising, control = trained(members, "memorising"), trained(other, "control")
    return {
        "memorising": memorising,
        "control": control,
        "members": write_jsonl(directory / "members.jsonl", members),
        "nonmembers": write_jsonl(directory / "nonmembers.jsonl", nonmembers),
    }


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("transformers")
    return build_attention_models(tmp_path_factory.mktemp("attention"))


def extract(monkeypatch, capsys, models, model: str, out: Path, *flags: str) -> tuple[int, str, str]:
    args = ["extract", "--model", str(models[model]), "--data", str(models["members"]), "--out", str(out)]
    args += ["--prefix-tokens", str(PREFIX), "--suffix-tokens", "4", "--device", "cpu", *flags]
    return run_cli(monkeypatch, capsys, *args)


def rates(focused: np.ndarray, sink: np.ndarray | None = None) -> FocusRates:
    sink = np.zeros_like(focused) if sink is None else sink
    return FocusRates(focused, sink, np.zeros(focused.shape, dtype=int), queries=10)


def test_a_sink_head_and_a_head_sharp_for_every_text_are_not_flagged() -> None:
    rng = np.random.default_rng(0)
    n = 40
    # head 0: the sink (everything on position 0) for every text; head 1: as sharp for both sides;
    # head 2: sharper for members (the finding).
    member, nonmember = np.zeros((n, 1, 3)), np.zeros((n, 1, 3))
    member[:, 0, 1] = nonmember[:, 0, 1] = 0.9
    member[:, 0, 2], nonmember[:, 0, 2] = rng.uniform(0.4, 0.8, n), rng.uniform(0.0, 0.4, n)
    sink = np.zeros((n, 1, 3))
    sink[:, 0, 0] = 1.0
    rows = compare_heads(rates(member, sink), rates(nonmember, sink))
    assert [r["flagged"] for r in rows] == [False, False, True]
    assert rows[0]["member_sink_rate"] == rows[0]["nonmember_sink_rate"] == 1.0 and rows[0]["member_rate"] == 0
    assert rows[2]["auc_ci_low"] > 0.5 and rows[2]["difference"] == pytest.approx(0.4, abs=0.1)


def test_focus_on_the_first_position_counts_as_sink_and_the_first_query_is_left_out() -> None:
    n = 5
    weights = np.zeros((1, 1, 1, n, n))
    for q in range(n):
        weights[0, 0, 0, q, 0 if q % 2 else q] = 1.0  # odd queries on the first token, even ones on themselves
    r = focus_rates(weights, 0.9)
    assert r.queries == n - 1 and r.sink[0, 0, 0] == 0.5 and r.focused[0, 0, 0] == 0.5
    weights[0, 0, 0, 2] = [0.0, 0.95, 0.05, 0, 0]  # query 2 on the previous token
    assert focus_rates(weights, 0.9).previous[0, 0, 0] == 1
    assert focus_rates(weights, 1.0).focused[0, 0, 0] == 0.25  # only exactly one counts at threshold 1


def test_uncorrected_chance_differences_are_not_flagged_among_many_heads() -> None:
    rng = np.random.default_rng(1)
    member, nonmember = rng.uniform(0, 1, (60, 12, 12)), rng.uniform(0, 1, (60, 12, 12))
    rows = compare_heads(rates(member), rates(nonmember))
    assert len(rows) == 144 and not any(r["flagged"] for r in rows)
    assert rows[0]["auc_ci_high"] - rows[0]["auc_ci_low"] > 0.3  # Bonferroni over 144 heads widens each interval


@pytest.mark.parametrize("threshold", [0.0, -0.5, 1.5])
def test_a_threshold_outside_zero_one_is_refused(threshold: float) -> None:
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        check_threshold(threshold)


def test_the_memorising_model_lists_heads_that_focus_more_for_its_records(models, tmp_path, monkeypatch, capsys):
    flags = ("--nonmembers", str(models["nonmembers"]), "--attention-threshold", THRESHOLD)
    code, stdout, err = extract(monkeypatch, capsys, models, "memorising", tmp_path, *flags)
    assert code == 0, err
    section = json.loads((tmp_path / "extraction.json").read_text())["attention_heads"]
    assert (section["n_member_texts"], section["n_nonmember_texts"], section["prompt_tokens"]) == (64, 512, PREFIX)
    assert section["threshold"] == 0.5 and section["correction"].startswith("Bonferroni over 8 heads")
    flagged = [(layer["layer"], row) for layer in section["layers"] for row in layer["flagged"]]
    assert section["n_flagged"] == len(flagged) >= 1
    for layer, row in flagged:
        assert layer == 1  # the first layer's attention sees tokens and positions only, the same on both sides
        assert row["member_rate"] > row["nonmember_rate"] and row["auc_ci_low"] > 0.5, row
    assert len(section["heads"]) == 8 and all(0 <= r["member_sink_rate"] <= 1 for r in section["heads"])
    assert "Attention heads that focus" in stdout and "non-member rate" in stdout


def test_a_model_trained_on_other_records_lists_no_head(models, tmp_path, monkeypatch, capsys):
    flags = ("--nonmembers", str(models["nonmembers"]), "--attention-threshold", THRESHOLD)
    code, stdout, err = extract(monkeypatch, capsys, models, "control", tmp_path, *flags)
    assert code == 0, err
    section = json.loads((tmp_path / "extraction.json").read_text())["attention_heads"]
    assert section["n_flagged"] == 0 and all(not layer["flagged"] for layer in section["layers"])
    assert all(r["auc_ci_low"] <= 0.5 <= r["auc_ci_high"] for r in section["heads"])
    assert "attention heads: no head focuses more often" in stdout


def test_the_diagnostic_is_off_without_nonmembers_or_when_turned_off(models, tmp_path, monkeypatch, capsys):
    code, _, err = extract(monkeypatch, capsys, models, "control", tmp_path / "a")
    assert code == 0, err
    assert "attention_heads" not in json.loads((tmp_path / "a" / "extraction.json").read_text())
    flags = ("--nonmembers", str(models["nonmembers"]), "--no-attention-heads")
    code, _, err = extract(monkeypatch, capsys, models, "control", tmp_path / "b", *flags)
    assert code == 0, err
    assert "attention_heads" not in json.loads((tmp_path / "b" / "extraction.json").read_text())


@pytest.fixture(scope="module")
def state_space_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A causal LM without attention (a one-layer Mamba): there is no attention weight to read."""
    transformers = pytest.importorskip("transformers")
    from tests.text_fixtures import build_tokenizer, save_lm

    tokenizer = build_tokenizer(word_records(20, 5))
    eos = tokenizer.eos_token_id
    config = transformers.MambaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        state_size=4,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    return save_lm(transformers.MambaForCausalLM(config), tokenizer, tmp_path_factory.mktemp("mamba") / "model")


@pytest.mark.parametrize(
    "flags, needles",
    [
        (["--attention-threshold", "0"], ("--attention-threshold", "(0, 1]")),
        (["--attention-threshold", "1.5"], ("--attention-threshold", "(0, 1]")),
        (["--attention-heads"], ("--attention-heads", "--nonmembers FILE")),
        (["--nonmembers", "short"], ("short.jsonl", "--prefix-tokens")),
        (["--nonmembers", "missing"], ("missing.jsonl",)),
        (["--nonmembers", "nonmembers", "--prefix-tokens", "1"], ("--prefix-tokens 1", "--no-attention-heads")),
    ],
)
def test_bad_attention_options_are_one_line_and_exit_2(flags, needles, models, tmp_path, monkeypatch, capsys):
    short = write_jsonl(tmp_path / "short.jsonl", [" ".join(WORDS[:3])] * 4)
    named = {"short": str(short), "missing": str(tmp_path / "missing.jsonl"), "nonmembers": str(models["nonmembers"])}
    flags = [named.get(f, f) for f in flags]
    if "--attention-threshold" in flags:
        flags += ["--nonmembers", str(models["nonmembers"])]
    code, _, err = extract(monkeypatch, capsys, models, "control", tmp_path / "out", *flags)
    assert_one_line_error(code, err, *needles)


def test_a_model_without_attention_weights_is_one_line_and_exit_2(
    state_space_model, models, tmp_path, monkeypatch, capsys
):
    models = {**models, "mamba": state_space_model}
    code, _, err = extract(monkeypatch, capsys, models, "mamba", tmp_path, "--nonmembers", str(models["nonmembers"]))
    assert_one_line_error(code, err, "no attention weights", "--no-attention-heads")
