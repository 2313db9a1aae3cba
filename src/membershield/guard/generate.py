"""Text generation through the guard: the request's prompt, greedy local decoding or an upstream text
endpoint. Redaction of the answer is the service's."""

from __future__ import annotations

import threading
from typing import Any

import orjson

from membershield.guard.errors import GuardError, short
from membershield.guard.upstream import UpstreamClient, UpstreamError


def generate_request(payload: Any, max_new_tokens: int) -> tuple[str, int]:
    """The prompt and token count of a generate request."""
    if not isinstance(payload, dict) or not isinstance(payload.get("prompt"), str):
        raise GuardError(422, 'the body must be a JSON object {"prompt": "...", "max_new_tokens": N}', "invalid_input")
    unknown = sorted(set(payload) - {"prompt", "max_new_tokens"})
    if unknown:
        raise GuardError(
            422,
            f"unknown field {short(unknown[0])} in the body (accepted: 'prompt', 'max_new_tokens')",
            "invalid_input",
        )
    if not payload["prompt"]:
        raise GuardError(422, "'prompt' must not be empty", "invalid_input")
    count = payload.get("max_new_tokens", min(64, max_new_tokens))
    if type(count) is float and count.is_integer():  # JSON Schema's integers include 93.0
        count = int(count)
    if type(count) is not int or not 1 <= count <= max_new_tokens:
        raise GuardError(
            422, f"'max_new_tokens' must be an integer from 1 to {max_new_tokens}, got {short(count)}", "invalid_input"
        )
    return payload["prompt"], count


def upstream_text(answer: Any) -> str | None:
    """The generated text of an upstream answer: ``{"text": ...}``, ``{"generated_text": ...}`` or a list of
    the latter (as Hugging Face inference servers answer)."""
    if isinstance(answer, list) and answer:
        answer = answer[0]
    if isinstance(answer, dict):
        for field_name in ("text", "generated_text"):
            if isinstance(answer.get(field_name), str):
                return answer[field_name]
    return None


class LocalGenerator:
    """Greedy continuations by a local language model (deterministic, so an answer cannot be averaged
    over repeated queries); one generation at a time."""

    def __init__(self, lm: Any) -> None:
        self.lm = lm
        self.lock = threading.Lock()

    def __call__(self, prompt: str, max_new_tokens: int) -> str:
        import torch

        lm = self.lm
        ids = lm.encode([prompt])[0]
        if len(ids) + max_new_tokens > lm.max_positions:
            raise GuardError(
                422,
                f"the prompt has {len(ids)} tokens; with max_new_tokens={max_new_tokens} that is over the model's"
                f" {lm.max_positions} positions",
                "invalid_input",
            )
        tokenizer = lm.tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        inputs = torch.tensor([ids], device=lm.device)
        with self.lock, torch.no_grad():
            output = lm.model.generate(
                inputs,
                attention_mask=torch.ones_like(inputs),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
            )
        return tokenizer.decode(output[0, len(ids) :].tolist(), skip_special_tokens=True)


async def generate_upstream(client: UpstreamClient, prompt: str, max_new_tokens: int) -> str:
    url = client.url
    try:
        status, body = await client.post(orjson.dumps({"prompt": prompt, "max_new_tokens": max_new_tokens}))
    except UpstreamError as exc:
        raise GuardError(502, f"upstream {url} is unreachable: {exc}".splitlines()[0], "upstream_error") from exc
    if status != 200:
        raise GuardError(502, f"upstream {url} answered HTTP {status}", "upstream_error")
    try:
        text = upstream_text(orjson.loads(body))
    except orjson.JSONDecodeError:
        text = None
    if text is None:
        raise GuardError(502, f"upstream {url} answered something other than {{'text': '...'}}", "upstream_error")
    return text
