"""``[generation]``: sampling and the verbatim filter of POST /v1/generate, on a tiny GPT-2 trained here until it
recites its training texts: 6 private ones (the registered corpus, the members) and 6 public ones the guard
is not told of. The filter's verdicts are checked against a plain set of token tuples (the ground truth),
the model's own greedy answers against the member texts they reproduce."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from membershield.errors import ConfigError, InputDataError
from membershield.guard.app import create_app, guard_config, issue_key
from membershield.guard.pii import redact
from membershield.guard.policy import load_policy, policy_from_dict
from membershield.store import open_store
from tests.guard_server import fake_json_upstream, serving
from tests.test_cli import assert_one_line_error, run_cli
from tests.text_fixtures import write_jsonl

N = 8  # verbatim_ngram of these tests, in the model's tokens
PREFIX = 6  # tokens of a member given as the prompt


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A model directory that recites its 12 training texts from their first tokens, the 6 members as a JSONL
    corpus, the members, the 6 public training texts and 6 texts from the same generator it never saw."""
    pytest.importorskip("transformers")
    from tests.text_fixtures import build_tokenizer, make_corpus, one_thread, save_lm, train_lm

    directory = tmp_path_factory.mktemp("generation")
    members, public, nonmembers = make_corpus(6, seed=21), make_corpus(6, seed=24), make_corpus(6, seed=22)
    with one_thread():
        tokenizer = build_tokenizer(members + public + nonmembers + make_corpus(40, seed=23), vocab_size=300)
        model = train_lm((members + public) * 3, tokenizer, epochs=150, seed=0, lr=1e-2)
        lm = save_lm(model, tokenizer, directory / "lm")
    return lm, write_jsonl(directory / "members.jsonl", members), members, public, nonmembers


@pytest.fixture(scope="module")
def model(world):
    from membershield.text.model import load_language_model

    return load_language_model(world[0])


@contextmanager
def client(tmp_path: Path, lm: Path | None, policy: dict, upstream: str | None = None) -> Iterator[tuple]:
    from fastapi.testclient import TestClient

    tmp_path.mkdir(parents=True, exist_ok=True)
    store = str(tmp_path / "guard.db")
    with open_store(store) as opened:
        user = issue_key(opened, "alice")
    config = guard_config(str(lm) if lm else None, upstream, policy_from_dict(policy), store, text=bool(upstream))
    with TestClient(create_app(config)) as http:
        http.headers["Authorization"] = f"Bearer {user}"
        yield http


def _tokens(model, text: str) -> list[int]:
    special = set(model.tokenizer.all_special_ids)
    return [t for t in model.encode([text])[0] if t not in special]


def _greedy(model, prompt_ids: list[int], count: int) -> list[int]:
    import torch

    inputs = torch.tensor([prompt_ids])
    with torch.no_grad():
        out = model.model.generate(
            inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=count, do_sample=False
        )
    special = set(model.tokenizer.all_special_ids)
    return [t for t in out[0, len(prompt_ids) :].tolist() if t not in special]


def _first_completion(corpus: set[tuple[int, ...]], prompt_ids: list[int], answer: list[int]) -> int | None:
    """The ground truth: the first answer token that ends an n-gram of the corpus, the prompt before it."""
    tokens = prompt_ids + answer
    for j in range(len(answer)):
        end = len(prompt_ids) + j + 1
        if end >= N and tuple(tokens[end - N : end]) in corpus:
            return j
    return None


def _ngrams(model, texts: list[str]) -> set[tuple[int, ...]]:
    grams = set()
    for text in texts:
        ids = _tokens(model, text)
        grams.update(tuple(ids[i : i + N]) for i in range(len(ids) - N + 1))
    return grams


def _longest_run(answer: list[int], text: list[int]) -> int:
    """The most consecutive tokens of ``text`` that ``answer`` repeats."""
    best = 0
    for i in range(len(answer)):
        for k in range(len(text)):
            run = 0
            while i + run < len(answer) and k + run < len(text) and answer[i + run] == text[k + run]:
                run += 1
            best = max(best, run)
    return best


def _filter(corpus: Path, action: str) -> dict:
    policy = {"corpus": str(corpus), "verbatim_ngram": N, "verbatim_action": action}
    return {"generation": policy, "server": {"max_new_tokens": 64}, "limits": {"requests_per_minute": 10_000}}


def test_a_member_prefix_is_refused_and_clean_answers_pass_unchanged(tmp_path, world, model):
    lm, corpus, members, public, nonmembers = world
    grams = _ngrams(model, members)
    with (
        client(tmp_path / "off", lm, {"server": {"max_new_tokens": 64}}) as plain,
        client(tmp_path / "on", lm, _filter(corpus, "refuse")) as guarded,
    ):
        for text in members:
            ids = _tokens(model, text)
            prompt = model.tokenizer.decode(ids[:PREFIX])
            answer = _greedy(model, _tokens(model, prompt), 40)
            assert _longest_run(answer, ids[PREFIX:]) >= N  # the model recites the member: a real leak
            unfiltered = plain.post("/v1/generate", json={"prompt": prompt, "max_new_tokens": 40}).json()
            assert unfiltered["text"] == redact(model.tokenizer.decode(answer))[0]  # what the guard would send
            refused = guarded.post("/v1/generate", json={"prompt": prompt, "max_new_tokens": 40})
            assert refused.status_code == 451, refused.text
            body = refused.json()
            assert body["reason"] == "verbatim_training_text" and body["verbatim"]["action"] == "refused"
            assert f"{N} consecutive tokens" in body["error"] and "\n" not in body["error"]
        passed = 0
        for text in public + nonmembers:  # prompts from outside the registered corpus
            ids = _tokens(model, text)
            prompt = model.tokenizer.decode(ids[:PREFIX])
            count = min(40, len(ids) - PREFIX)
            request = {"prompt": prompt, "max_new_tokens": count}
            unfiltered = plain.post("/v1/generate", json=request).json()
            answer = guarded.post("/v1/generate", json=request)
            leak = _first_completion(grams, _tokens(model, prompt), _greedy(model, _tokens(model, prompt), count))
            if leak is None:  # the answer repeats no member n-gram: it is sent as it would be unfiltered
                passed += 1
                assert answer.status_code == 200, answer.text
                assert answer.json() == {**unfiltered, "verbatim": _summary("passed", 0)}
            else:  # the model drifted into a member text from an outside prompt: refused all the same
                assert answer.status_code == 451, answer.text
        assert passed >= 3  # the public texts, recited as well, are not what the guard was told to protect
        metrics = guarded.get("/metrics").text
    refusals = len(members) + len(public) + len(nonmembers) - passed
    assert f'membershield_guard_verbatim_answers_total{{action="refused"}} {refusals:.1f}' in metrics
    assert f'membershield_guard_verbatim_answers_total{{action="passed"}} {passed:.1f}' in metrics
    assert f'membershield_guard_rejections_total{{reason="verbatim"}} {refusals:.1f}' in metrics


def _summary(action: str, removed: int, unit: str = "tokens") -> dict:
    return {"action": action, "tokens_removed": removed, "ngram": N, "unit": unit}


def test_truncation_cuts_before_the_first_token_that_completes_a_member_ngram(tmp_path, world, model):
    lm, corpus, members, public, nonmembers = world
    grams = _ngrams(model, members)
    truncated = 0
    with client(tmp_path, lm, _filter(corpus, "truncate")) as guarded:
        for text in members + public + nonmembers:
            ids = _tokens(model, text)
            prompt = model.tokenizer.decode(ids[:PREFIX] if text in members + public else ids[:3])
            prompt_ids = _tokens(model, prompt)
            answer = _greedy(model, prompt_ids, 40)
            cut = _first_completion(grams, prompt_ids, answer)
            got = guarded.post("/v1/generate", json={"prompt": prompt, "max_new_tokens": 40})
            assert got.status_code == 200, got.text
            if cut is None:
                assert got.json()["verbatim"] == _summary("passed", 0)
                continue
            truncated += 1
            kept = model.tokenizer.decode(answer[:cut], skip_special_tokens=True)
            assert got.json() == {"text": kept, "redacted": {}, "verbatim": _summary("truncated", len(answer) - cut)}
            assert _first_completion(grams, prompt_ids, answer[:cut]) is None  # what is sent completes nothing
        metrics = guarded.get("/metrics").text
    assert truncated >= len(members)
    assert f'membershield_guard_verbatim_answers_total{{action="truncated"}} {truncated:.1f}' in metrics
    assert "membershield_guard_verbatim_tokens_removed_total" in metrics


def test_sampling_varies_greedy_does_not_and_a_seed_ties_answers_to_prompts(tmp_path, world, model):
    lm, _corpus, _members, _public, nonmembers = world
    prompt = model.tokenizer.decode(_tokens(model, nonmembers[0])[:2])
    request = {"prompt": prompt, "max_new_tokens": 24}

    guards = iter(range(100))

    def answers(policy: dict, times: int = 6) -> list[str]:
        with client(tmp_path / str(next(guards)), lm, policy) as http:
            return [http.post("/v1/generate", json=request).json()["text"] for _ in range(times)]

    greedy = answers({})
    assert len(set(greedy)) == 1
    assert greedy[0] == model.tokenizer.decode(_greedy(model, _tokens(model, prompt), 24))
    sampled = answers({"generation": {"temperature": 1.5, "top_p": 0.95}})
    assert len(set(sampled)) >= 3, sampled
    # top_p so small that only the likeliest token is ever kept: sampling gives the greedy answer back
    assert set(answers({"generation": {"temperature": 1.0, "top_p": 1e-9}}, 3)) == {greedy[0]}
    seeded = {"temperature": 1.5, "top_p": 0.95, "seed": 3}
    first = answers({"generation": seeded}, 3)
    assert len(set(first)) == 1 and answers({"generation": seeded}, 1) == first[:1]  # the same on a restart
    by_seed = {answers({"generation": {**seeded, "seed": seed}}, 1)[0] for seed in range(4)}
    assert len(by_seed) >= 2


def test_an_upstream_gets_the_sampling_settings_and_its_answers_are_filtered_in_words(tmp_path, world):
    _lm, corpus, members, _public, _nonmembers = world
    seen: list[dict] = []
    member_words = members[0].split()

    def answer(request: dict) -> dict:
        seen.append(request)
        if request["prompt"] == "echo":  # a server that repeats the prompt: that part is prompt, not answer
            return [{"generated_text": "echo " + " ".join(member_words[:5]) + " and more"}]
        return {"text": " " + " ".join(member_words[2:]) + " Goodbye."}

    policy = _filter(corpus, "truncate")
    policy["generation"].update(temperature=0.7, top_p=0.9, seed=5, verbatim_ngram=4)
    with fake_json_upstream(answer, "/generate") as address, client(tmp_path, None, policy, upstream=address) as http:
        prompt = " ".join(member_words[:2])
        cut = http.post("/v1/generate", json={"prompt": prompt, "max_new_tokens": 30})
        echoed = http.post("/v1/generate", json={"prompt": "echo", "max_new_tokens": 30})
        other = http.post("/v1/generate", json={"prompt": "unrelated words", "max_new_tokens": 30})
    # "w0 w1" + " w2 w3 ...": the prompt's two words and the answer's first two complete a member 4-gram
    assert cut.status_code == 200, cut.text
    body = cut.json()
    assert body["text"] == " " + member_words[2] and body["verbatim"]["unit"] == "words"
    assert body["verbatim"]["action"] == "truncated" and body["verbatim"]["ngram"] == 4
    # the echoed prompt is context: the member 4-gram is completed by the answer's fourth word
    assert echoed.json()["text"] == "echo " + " ".join(member_words[:3])
    assert echoed.json()["verbatim"] == _summary("truncated", 4, "words") | {"ngram": 4}  # w3, w4, and, more
    assert other.json()["text"] == " " + " ".join(member_words[2:5])
    assert seen[0] == {
        "prompt": prompt,
        "max_new_tokens": 30,
        "temperature": 0.7,
        "top_p": 0.9,
        "seed": seen[0]["seed"],
    }
    assert seen[0]["seed"] != seen[1]["seed"] and isinstance(seen[0]["seed"], int)


def test_a_greedy_guard_sends_an_upstream_only_prompt_and_token_count(tmp_path):
    seen: list[dict] = []

    def answer(request: dict) -> dict:
        seen.append(request)
        return {"text": "fine"}

    with fake_json_upstream(answer, "/generate") as address, client(tmp_path, None, {}, upstream=address) as http:
        assert http.post("/v1/generate", json={"prompt": "Hi", "max_new_tokens": 3}).json() == {
            "text": "fine",
            "redacted": {},
        }
    assert seen == [{"prompt": "Hi", "max_new_tokens": 3}]


@pytest.mark.parametrize(
    ("generation", "needle"),
    [
        ({"temprature": 0.5}, "unknown key 'temprature' in [generation]"),
        ({"temperature": -1}, "temperature must be 0 (greedy decoding) or more"),
        ({"temperature": float("nan")}, "temperature must be a finite number"),
        ({"temperature": "hot"}, "temperature must be a finite number"),
        ({"top_p": 0.9}, "top_p only applies when sampling"),
        ({"temperature": 1.0, "top_p": 0}, "top_p must be over 0 and at most 1"),
        ({"temperature": 1.0, "top_p": 1.5}, "top_p must be over 0 and at most 1"),
        ({"temperature": 1.0, "seed": -2}, "seed must be from 0"),
        ({"seed": 1}, "seed only applies when sampling"),
        ({"verbatim_ngram": 8}, "needs corpus"),
        ({"corpus": "CORPUS", "verbatim_ngram": 1}, "verbatim_ngram must be from 2 to 1024"),
        ({"corpus": "CORPUS", "verbatim_ngram": 8.0}, "verbatim_ngram must be an integer"),
        ({"corpus": "CORPUS", "verbatim_action": "drop"}, "verbatim_action must be 'refuse' or 'truncate'"),
        ({"corpus": "missing.jsonl"}, "corpus file not found"),
        ({"corpus": "CORPUS.txt"}, "must be a .jsonl or .csv file"),
        ({"corpus": "CORPUS", "text_field": ""}, "text_field must be a non-empty string"),
    ],
)
def test_a_bad_generation_key_is_a_one_line_error_and_exit_2(tmp_path, world, monkeypatch, capsys, generation, needle):
    corpus = world[1]
    values = {
        k: (str(corpus) + v[6:] if isinstance(v, str) and v.startswith("CORPUS") else v) for k, v in generation.items()
    }
    with pytest.raises(ConfigError) as raised:
        policy_from_dict({"generation": values}, base=tmp_path)
    assert needle in str(raised.value) and "\n" not in str(raised.value)
    toml = "[generation]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in values.items())
    (tmp_path / "guard.toml").write_text(toml)
    code, _out, err = run_cli(
        monkeypatch, capsys, "guard", "--model", str(world[0]), "--policy", str(tmp_path / "guard.toml")
    )
    assert_one_line_error(code, err, needle, "[generation]")


def _toml(value: object) -> str:
    if isinstance(value, float) and value != value:
        return "nan"
    return json.dumps(value)


def test_a_relative_corpus_is_found_next_to_the_policy_file(tmp_path, world):
    (tmp_path / "train.jsonl").write_text(Path(world[1]).read_text())
    (tmp_path / "guard.toml").write_text('[generation]\ncorpus = "train.jsonl"\nverbatim_action = "truncate"\n')
    policy = load_policy(tmp_path / "guard.toml")
    assert policy.generation.corpus == str(tmp_path / "train.jsonl") and policy.generation.verbatim_ngram == 8


def test_corpus_and_policy_problems_found_at_start_up(tmp_path, world, monkeypatch, capsys):
    lm, _corpus, members, _public, _nonmembers = world
    wrong_field = tmp_path / "wrong.jsonl"
    wrong_field.write_text(json.dumps({"body": members[0]}) + "\n")
    store = str(tmp_path / "guard.db")

    def start(model: str | None, generation: dict, upstream: str | None = None) -> None:
        create_app(guard_config(model, upstream, policy_from_dict({"generation": generation}), store))

    with pytest.raises(InputDataError, match="no field 'text'"):
        start(str(lm), {"corpus": str(wrong_field)})
    table = tmp_path / "train.csv"
    table.write_text("id,body\n1,hello\n")
    with pytest.raises(InputDataError, match=r"no column 'text'.*text_field"):
        start(str(lm), {"corpus": str(table)})
    with pytest.raises(ConfigError, match=r"applies to text models .* \[output\] temperature"):
        start(None, {"temperature": 1}, upstream="http://127.0.0.1:9/predict")
    (tmp_path / "guard.toml").write_text(f'[generation]\ncorpus = "{wrong_field}"\n')
    arguments = ["guard", "--model", str(lm), "--policy", str(tmp_path / "guard.toml"), "--port", "0", "--store", store]
    code, _out, err = run_cli(monkeypatch, capsys, *arguments)
    assert_one_line_error(code, err, "no field 'text'")


def test_a_csv_corpus_indexes_its_text_column(tmp_path, world, model):
    import csv

    lm, _corpus, members, _public, _nonmembers = world

    with open(tmp_path / "train.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "note"])
        writer.writerows([i, text] for i, text in enumerate(members))
    policy = {"generation": {"corpus": str(tmp_path / "train.csv"), "text_field": "note"}}
    with client(tmp_path, lm, policy) as guarded:
        prompt = model.tokenizer.decode(_tokens(model, members[1])[:PREFIX])
        assert guarded.post("/v1/generate", json={"prompt": prompt}).status_code == 451
        index = guarded.app.state.verbatim.index
    assert index.texts == len(members) and len(index) == len(_ngrams(model, members))


def test_the_openapi_document_stays_right_under_random_calls(tmp_path, world):
    """The 451 refusal and the ``verbatim`` member of answers are documented: random calls from the schema
    (a guard in front of an upstream whose answers sometimes repeat a member) all match it."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    from tests.test_guard_fuzz import CHECKS

    _lm, corpus, members, _public, _nonmembers = world

    def answer(request: dict) -> dict:
        return {"text": members[0] if len(request["prompt"]) % 2 else "nothing to see"}

    store = str(tmp_path / "guard.db")
    with open_store(store) as opened:
        admin = issue_key(opened, "ops", admin=True)
    policy = policy_from_dict(_filter(corpus, "refuse"))
    with (
        fake_json_upstream(answer, "/generate") as address,
        serving(create_app(guard_config(None, address, policy, store, text=True))) as url,
    ):
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        document = schema.raw_schema["paths"]["/v1/generate"]["post"]
        assert "451" in document["responses"]
        operations = [result.ok() for result in schema.get_all_operations()]
        operation = next(op for op in operations if op.label == "POST /v1/generate")
        statuses: list[int] = []

        @given(case=operation.as_strategy())
        @settings(
            max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None
        )
        def call(case) -> None:
            response = case.call_and_validate(base_url=url, headers={"Authorization": f"Bearer {admin}"}, checks=CHECKS)
            statuses.append(response.status_code)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            call()
    assert {200, 451} <= set(statuses), statuses
