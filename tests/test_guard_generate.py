"""POST /v1/generate over real HTTP: a local language model (a tiny GPT-2 trained here until it recites a
sentence full of personal data) and an upstream text endpoint; the text is redacted before it leaves."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from membershield.guard.app import create_app, guard_config, issue_key
from membershield.guard.pii import redact
from membershield.guard.policy import policy_from_dict
from membershield.store import open_store
from tests.guard_server import fake_json_upstream, serving

SECRET = "Write to jane.doe@example.com or call +1 (415) 555-2671 about card 4111 1111 1111 1111 today."


@pytest.fixture(scope="module")
def reciting_lm(tmp_path_factory):
    """A model directory whose greedy continuation of "Write to" is :data:`SECRET`."""
    pytest.importorskip("transformers")
    from tests.text_fixtures import build_tokenizer, one_thread, save_lm, train_lm

    with one_thread():
        tokenizer = build_tokenizer([SECRET, "Other words about the weather and the sea."] * 4, vocab_size=300)
        model = train_lm([SECRET] * 8, tokenizer, epochs=40, seed=0, lr=1e-2)
        return save_lm(model, tokenizer, tmp_path_factory.mktemp("lm") / "reciting")


@contextmanager
def guard(tmp_path: Path, model: str | None, policy: dict, upstream: str | None = None) -> Iterator[tuple]:
    store = str(tmp_path / "guard.db")
    with open_store(store) as opened:
        user = issue_key(opened, "alice")
    config = guard_config(model, upstream, policy_from_dict(policy), store, text=upstream is not None)
    with serving(create_app(config)) as url:
        yield url, {"Authorization": f"Bearer {user}"}, store


def test_local_language_model_output_is_redacted_and_logged(tmp_path, reciting_lm):
    from membershield.text.model import load_language_model
    from tests.text_fixtures import one_thread

    lm = load_language_model(reciting_lm)
    with one_thread():
        import torch

        ids = torch.tensor([lm.encode(["Write to"])[0]])
        raw = lm.tokenizer.decode(
            lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=40, do_sample=False)[
                0, ids.shape[1] :
            ].tolist(),
            skip_special_tokens=True,
        )
    assert "jane.doe@example.com" in raw  # the model recites it: the guard must be what removes it
    policy = {"limits": {"requests_per_minute": 3}, "server": {"max_new_tokens": 40}}
    with guard(tmp_path, str(reciting_lm), policy) as (url, user, store):
        answer = httpx.post(f"{url}/v1/generate", json={"prompt": "Write to", "max_new_tokens": 40}, headers=user)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["text"] == redact(raw)[0]
        assert "jane.doe@example.com" not in body["text"] and "[EMAIL]" in body["text"]
        assert body["redacted"]["EMAIL"] == 1
        too_many = httpx.post(f"{url}/v1/generate", json={"prompt": "Write to", "max_new_tokens": 41}, headers=user)
        assert too_many.status_code == 422 and "from 1 to 40" in too_many.json()["error"]
        long = httpx.post(f"{url}/v1/generate", json={"prompt": "Write to " * 200}, headers=user)
        assert long.status_code == 422 and "positions" in long.json()["error"]
        wrong = httpx.post(f"{url}/v1/predict", json={"records": [[1.0]]}, headers=user)
        assert wrong.status_code == 404 and "text model at POST /v1/generate" in wrong.json()["error"]
        limited = httpx.post(f"{url}/v1/generate", json={"prompt": "Write to"}, headers=user)
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert httpx.post(f"{url}/v1/generate", json={"prompt": "x"}).status_code == 401
        metrics = httpx.get(f"{url}/metrics").text
    assert 'membershield_guard_redactions_total{kind="EMAIL"} 1.0' in metrics
    with open_store(store) as opened:
        assert opened.guard_request_count() == 6  # every /v1 call, the 404 on /v1/predict included
        usage = opened.guard_usage()
    assert usage[0]["key"] == "alice" and usage[0]["records"] == 1


def _text_answer(request: dict) -> object:
    if request["prompt"] == "broken":
        return b'{"predictions": []}'
    text = f"{request['prompt']}: mail ops@example.org from 192.168.1.20, order 4111 1111 1111 1112"
    return [{"generated_text": text}]


def test_upstream_text_endpoint_is_forwarded_and_redacted(tmp_path):
    with (
        fake_json_upstream(_text_answer, "/generate") as address,
        guard(tmp_path, None, {}, upstream=address) as (url, user, _store),
    ):
        answer = httpx.post(f"{url}/v1/generate", json={"prompt": "Status", "max_new_tokens": 8}, headers=user)
        broken = httpx.post(f"{url}/v1/generate", json={"prompt": "broken"}, headers=user)
        unknown = httpx.post(f"{url}/v1/generate", json={"prompt": "x", "temperature": 2}, headers=user)
        schema = httpx.get(f"{url}/openapi.json").json()
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "text": "Status: mail [EMAIL] from [IP_ADDRESS], order 4111 1111 1111 1112",
        "redacted": {"EMAIL": 1, "IP_ADDRESS": 1},
    }
    assert broken.status_code == 502 and "other than {'text'" in broken.json()["error"]
    assert unknown.status_code == 422 and "unknown field 'temperature'" in unknown.json()["error"]
    assert "/v1/generate" in schema["paths"] and "/v1/predict" not in schema["paths"]


@pytest.mark.parametrize("kind", ["upstream", "local"])
def test_a_prompt_with_a_lone_surrogate_is_refused(tmp_path, kind, request):
    model = str(request.getfixturevalue("reciting_lm")) if kind == "local" else None
    with (
        fake_json_upstream(_text_answer, "/generate") as address,
        guard(tmp_path, model, {}, upstream=address if kind == "upstream" else None) as (url, user, _store),
    ):
        for body in ('{"prompt": "\\ud800"}', '{"prompt": "Status \\udc00 now", "max_new_tokens": 4}'):
            answer = httpx.post(f"{url}/v1/generate", content=body.encode(), headers=user)
            assert answer.status_code == 400, answer.text
            assert "surrogate" in answer.json()["error"]
        emoji = httpx.post(
            f"{url}/v1/generate", json={"prompt": "Status \U0001f600", "max_new_tokens": 4}, headers=user
        )
    assert emoji.status_code == 200, emoji.text


class _FakeAnalyzer:
    """Presidio's analyzer interface: ``analyze(text=, language=)`` returning scored spans."""

    def analyze(self, text: str, language: str) -> list[SimpleNamespace]:
        assert language == "en"
        found = []
        for entity, word, score in (("PERSON", "Jane Doe", 0.85), ("LOCATION", "Paris", 0.3), ("EMAIL", "jd@x.io", 1)):
            start = text.find(word)
            if start >= 0:
                found.append(SimpleNamespace(entity_type=entity, start=start, end=start + len(word), score=score))
        return found


def test_presidio_findings_are_added_where_the_validators_found_nothing():
    text, counts = redact("Jane Doe (jd@x.io) lives in Paris.", _FakeAnalyzer())
    assert text == "[PERSON] ([EMAIL]) lives in Paris."  # Paris scored under 0.5; the email found once
    assert counts == {"PERSON": 1, "EMAIL": 1}
