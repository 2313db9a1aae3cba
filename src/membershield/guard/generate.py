"""Text generation through the guard: the request's prompt, local decoding (greedy, or sampled as the
policy's ``[generation]`` says) or an upstream text endpoint. The verbatim filter and redaction of the
answer are the route's."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from typing import Any

import orjson

from membershield.errors import ConfigError
from membershield.guard.errors import GuardError, short
from membershield.guard.policy import GenerationConfig
from membershield.guard.upstream import UpstreamClient, UpstreamError


@dataclass(frozen=True)
class Generation:
    """An answer: its text and, from a local model, the prompt's and the answer's token ids (special tokens
    left out: they are not text, and the verbatim index holds none)."""

    text: str
    prompt_ids: list[int] | None = None
    answer_ids: list[int] | None = None


def prompt_seed(seed: int, prompt: str) -> int:
    """The sampling seed of one prompt under the policy's ``seed``: the same prompt, the same answer.

    >>> prompt_seed(0, "Hello") == prompt_seed(0, "Hello") != prompt_seed(1, "Hello")
    True
    """
    digest = hashlib.blake2b(f"{seed}\0{prompt}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # within int64, as torch.manual_seed takes


def check_generation_policy(settings: GenerationConfig, serves_text: bool) -> None:
    """A ``[generation]`` section on a classifier's guard would do nothing: say so instead."""
    if not serves_text and settings != GenerationConfig():
        raise ConfigError(
            "the policy's [generation] section applies to text models (POST /v1/generate), and this guard serves"
            " a classifier: remove the section (a classifier's softmax temperature is [output] temperature)"
        )


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


def sampling_options(settings: GenerationConfig) -> dict[str, Any]:
    """The ``generate`` keywords of the policy: greedy by default; nucleus sampling with ``top_k`` off
    (a model's generation config often sets 50) when the temperature is over 0.

    >>> sampling_options(GenerationConfig(temperature=0.7, top_p=0.9))
    {'do_sample': True, 'temperature': 0.7, 'top_p': 0.9, 'top_k': 0}
    """
    if not settings.sampling:
        return {"do_sample": False}
    return {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p, "top_k": 0}


class LocalGenerator:
    """Continuations by a local language model, one generation at a time. Greedy by default
    (deterministic, so an answer cannot be averaged over repeated queries); sampled when the policy sets a
    temperature, each call afresh or, with a ``seed``, the same answer for the same prompt."""

    def __init__(self, lm: Any, settings: GenerationConfig | None = None) -> None:
        self.lm = lm
        self.settings = settings or GenerationConfig()
        self.options = sampling_options(self.settings)
        self.special = set(lm.tokenizer.all_special_ids)
        self.lock = threading.Lock()

    def __call__(self, prompt: str, max_new_tokens: int) -> Generation:
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
        seeded = self.settings.sampling and self.settings.seed is not None
        devices = [lm.device.index or 0] if lm.device.type == "cuda" else []
        with self.lock, torch.no_grad(), torch.random.fork_rng(devices=devices, enabled=seeded):
            if seeded:
                torch.manual_seed(prompt_seed(self.settings.seed, prompt))
            output = lm.model.generate(
                inputs,
                attention_mask=torch.ones_like(inputs),
                max_new_tokens=max_new_tokens,
                pad_token_id=pad,
                **self.options,
            )
        answer = [t for t in output[0, len(ids) :].tolist() if t not in self.special]
        return Generation(
            tokenizer.decode(answer, skip_special_tokens=True), [t for t in ids if t not in self.special], answer
        )


def upstream_body(prompt: str, max_new_tokens: int, settings: GenerationConfig) -> dict[str, Any]:
    """What the guard sends an upstream text endpoint: the prompt and token count, and when the policy
    samples, ``temperature`` and ``top_p`` (and the prompt's ``seed`` when the policy has one).

    >>> upstream_body("Hi", 8, GenerationConfig(temperature=0.5, top_p=0.9))
    {'prompt': 'Hi', 'max_new_tokens': 8, 'temperature': 0.5, 'top_p': 0.9}
    """
    body: dict[str, Any] = {"prompt": prompt, "max_new_tokens": max_new_tokens}
    if settings.sampling:
        body.update(temperature=settings.temperature, top_p=settings.top_p)
        if settings.seed is not None:
            body["seed"] = prompt_seed(settings.seed, prompt)
    return body


async def generate_upstream(
    client: UpstreamClient, prompt: str, max_new_tokens: int, settings: GenerationConfig | None = None
) -> str:
    url = client.url
    sent = upstream_body(prompt, max_new_tokens, settings or GenerationConfig())
    try:
        status, body = await client.post(orjson.dumps(sent))
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
