"""Canaries (insertion and exposure) and verbatim extraction on the tiny memorising GPT-2."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from membershield.errors import ConfigError
from membershield.text.canaries import CanarySpec, insert_canaries
from tests.test_cli import assert_one_line_error, run_cli
from tests.text_fixtures import TextWorld, make_corpus, one_thread, shared_text_world, write_jsonl


@pytest.fixture(scope="session")
def text_world(tmp_path_factory: pytest.TempPathFactory) -> TextWorld:
    return shared_text_world(tmp_path_factory)


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    with one_thread():
        yield


def test_insertion_places_each_canary_its_number_of_times(tmp_path) -> None:
    data = write_jsonl(tmp_path / "train.jsonl", make_corpus(50, seed=5))
    out = tmp_path / "with" / "train.jsonl"
    meta = insert_canaries(data, out, count=3, repeats=[0, 1, 4], seed=3)
    lines = out.read_text().splitlines()
    assert len(lines) == 50 + 3 * (0 + 1 + 4)
    saved = json.loads((tmp_path / "with" / "canaries.json").read_text())
    assert saved["canaries"] == meta["canaries"] and saved["space_size"] == 10**6
    for canary in meta["canaries"]:
        assert len(canary["lines"]) == canary["repeats"]
        assert len(canary["secret"]) == 6 and canary["secret"].isdigit()
        texts = {json.loads(lines[n - 1])["text"] for n in canary["lines"]}
        assert texts <= {f"my account number is {canary['secret']}"}
    originals = [line for n, line in enumerate(lines, 1) if all(n not in c["lines"] for c in meta["canaries"])]
    assert originals == data.read_text().splitlines()  # kept unchanged and in order
    again = insert_canaries(data, tmp_path / "again.jsonl", count=3, repeats=[0, 1, 4], seed=3)
    assert [c["secret"] for c in again["canaries"]] == [c["secret"] for c in meta["canaries"]]
    with pytest.raises(ConfigError, match="secret"):
        insert_canaries(data, tmp_path / "x.jsonl", count=1, repeats=[1], spec=CanarySpec(format="no placeholder"))


def test_cli_insert_writes_file_and_metadata(tmp_path, monkeypatch, capsys) -> None:
    data = write_jsonl(tmp_path / "train.jsonl", make_corpus(20, seed=6))
    out = tmp_path / "out" / "train_with_canaries.jsonl"
    args = ["canaries", "insert", "--data", str(data), "--count", "2", "--repeats", "1,3", "--out", str(out)]
    args += ["--format", "the door code is {secret}", "--alphabet", "abc", "--length", "5"]
    code, stdout, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "canaries.json" in stdout
    meta = json.loads((tmp_path / "out" / "canaries.json").read_text())
    assert meta["space_size"] == 3**5 and all(set(c["secret"]) <= set("abc") for c in meta["canaries"])
    assert len(out.read_text().splitlines()) == 20 + 2 * (1 + 3)
    code, _, err = run_cli(monkeypatch, capsys, *args[:-6], "--repeats", "1,x")
    assert_one_line_error(code, err, "--repeats")


def test_exposure_grows_with_repeats(text_world, tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "exposure"
    args = ["canaries", "exposure", "--model", str(text_world.target), "--canaries", str(text_world.canaries)]
    code, stdout, err = run_cli(monkeypatch, capsys, *args, "--out", str(out), "--device", "cpu")
    assert code == 0, err
    assert "Canary exposure" in stdout
    doc = json.loads((out / "exposure.json").read_text())
    assert doc["method"] == "enumeration" and doc["candidates_scored"] == 10**4
    by = {row["repeats"]: row for row in doc["by_repeats"]}
    assert by[16]["mean_exposure"] > by[1]["mean_exposure"] + 5
    assert by[16]["min_exposure"] > by[1]["max_exposure"]
    assert by[0]["mean_exposure"] < 5  # never inserted: about what chance gives (1.44 bits on average)
    # The distribution-fit estimate (as for spaces too large to enumerate) agrees on the ordering.
    code, _, err = run_cli(
        monkeypatch, capsys, *args, "--out", str(out / "fit"), "--max-enumerate", "100", "--samples", "1000"
    )
    assert code == 0, err
    fit = json.loads((out / "fit" / "exposure.json").read_text())
    assert "fit to 1000 sampled candidates" in fit["method"]
    fit_by = {row["repeats"]: row for row in fit["by_repeats"]}
    assert fit_by[16]["mean_exposure"] > fit_by[1]["mean_exposure"] + 5


def test_untrained_model_exposes_no_canary(text_world, tmp_path, monkeypatch, capsys) -> None:
    args = ["canaries", "exposure", "--model", str(text_world.untrained), "--canaries", str(text_world.canaries)]
    code, _, err = run_cli(monkeypatch, capsys, *args, "--out", str(tmp_path), "--device", "cpu")
    assert code == 0, err
    doc = json.loads((tmp_path / "exposure.json").read_text())
    assert max(row["max_exposure"] for row in doc["by_repeats"]) < 8


def test_extraction_reproduces_the_most_repeated_canaries(text_world, tmp_path, monkeypatch, capsys) -> None:
    from transformers import AutoTokenizer

    meta = json.loads(text_world.canaries.read_text())
    data = write_jsonl(tmp_path / "canaries.jsonl", [c["text"] for c in meta["canaries"]])
    tokenizer = AutoTokenizer.from_pretrained(text_world.target, local_files_only=True)
    # The prompt is the format and the first two digits of the secret (digits are one token each).
    prefix = len(tokenizer("my account number is 12")["input_ids"])
    args = ["extract", "--model", str(text_world.target), "--data", str(data), "--device", "cpu"]
    args += ["--prefix-tokens", str(prefix), "--suffix-tokens", "2", "--out", str(tmp_path / "out")]
    code, stdout, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "Verbatim extraction" in stdout
    doc = json.loads((tmp_path / "out" / "extraction.json").read_text())
    assert doc["n_tested"] == len(meta["canaries"])
    exact = {r["line"]: r["exact"] for r in doc["records"]}
    repeats = [c["repeats"] for c in meta["canaries"]]
    frequent = [exact[i + 1] for i, r in enumerate(repeats) if r == 16]
    rare = [exact[i + 1] for i, r in enumerate(repeats) if r <= 1]
    assert sum(frequent) >= 3 and sum(rare) <= 1, (frequent, rare)


def test_extraction_members_versus_nonmembers(text_world, tmp_path) -> None:
    from membershield.text.data import load_jsonl
    from membershield.text.extraction import extract_verbatim
    from membershield.text.model import load_language_model

    lm = load_language_model(text_world.target, "cpu")
    members = extract_verbatim(lm, load_jsonl(text_world.members), prefix_tokens=8, suffix_tokens=8)
    nonmembers = extract_verbatim(lm, load_jsonl(text_world.nonmembers), prefix_tokens=8, suffix_tokens=8)
    assert members["mean_reproduced_tokens"] > nonmembers["mean_reproduced_tokens"]
    assert members["n_extracted"] > nonmembers["n_extracted"]
    assert members["longest"][0]["reproduced_tokens"] == 8
    assert members["extracted_share_ci_low"] <= members["extracted_share"] <= members["extracted_share_ci_high"]


def test_extraction_rejects_lengths_beyond_the_context(text_world, tmp_path, monkeypatch, capsys) -> None:
    args = ["extract", "--model", str(text_world.target), "--data", str(text_world.members)]
    code, _, err = run_cli(monkeypatch, capsys, *args, "--prefix-tokens", "100", "--suffix-tokens", "100")
    assert_one_line_error(code, err, "context")
