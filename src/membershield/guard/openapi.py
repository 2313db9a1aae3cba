"""The guard's OpenAPI additions: request and answer schemas of its endpoints and their error answers."""

from __future__ import annotations

import copy
from typing import Any

from membershield.guard.records import InputSchema

ERROR_BODY = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string", "description": "What was wrong, in one line."}},
}
ERRORS = {
    "400": "The body is not valid JSON.",
    "401": "No API key, an unknown or revoked one, or one a rotation replaced whose grace period ended.",
    "403": "The key is not an admin key.",
    "404": "No such alert of this guard's model.",
    "413": "The body is over [server] max_body_bytes.",
    "422": "The body is valid JSON but not valid input (the message says which record and why).",
    "429": "Rate limit, daily budget or probing throttle reached; Retry-After says when to try again.",
    "502": "The upstream model endpoint is down or answered something unusable.",
    "503": "The store that holds the API keys cannot be read.",
}
BEARER = [{"bearer": []}]


def error_responses(*codes: str) -> dict[str, Any]:
    """The documented error answers of an endpoint, every one ``{"error": "one line"}``."""
    # fresh copies: FastAPI edits the response objects it is given while it builds the schema
    return {
        code: {"description": ERRORS[code], "content": {"application/json": {"schema": copy.deepcopy(ERROR_BODY)}}}
        for code in codes
    }


def predict_openapi(schema: InputSchema, max_body_bytes: int) -> dict[str, Any]:
    """The OpenAPI of ``POST /v1/predict``: each record's columns with their kinds (numbers within the float
    range, strings, the categories an encoder knows, null where the model imputes), so a client (or a
    fuzzer) generated from it sends records the model can score."""
    prediction = {
        "type": "object",
        "properties": {
            "label": {"description": "The model's label (hardening never changes it)."},
            "probabilities": {"type": "array", "items": {"type": "number"}},
            "text": {"type": "string", "description": "Text output, personal data redacted (upstream mode)."},
        },
    }
    answer = {
        "type": "object",
        "required": ["predictions"],
        "properties": {"predictions": {"type": "array", "items": prediction}, "classes": {"type": "array"}},
    }
    body = {
        "type": "object",
        "required": ["records"],
        "properties": {"records": {"type": "array", "minItems": 1, "items": schema.openapi_record()}},
        "additionalProperties": False,
    }
    return {
        "security": BEARER,
        "requestBody": {
            "required": True,
            "description": f"At most {max_body_bytes} bytes.",
            "content": {"application/json": {"schema": body}},
        },
        "responses": {
            "200": {"description": "Hardened predictions.", "content": {"application/json": {"schema": answer}}},
        },
    }


VERBATIM = {
    "type": "object",
    "required": ["action", "tokens_removed", "ngram", "unit"],
    "description": "What the verbatim filter did: the answer completed no `ngram` consecutive tokens of the"
    " registered training corpus (passed), or was cut before the first token that did (truncated).",
    "properties": {
        "action": {"type": "string", "enum": ["passed", "truncated"]},
        "tokens_removed": {"type": "integer", "minimum": 0},
        "ngram": {"type": "integer", "minimum": 2},
        "unit": {"type": "string", "enum": ["tokens", "words"]},
    },
}
REFUSED = {
    "type": "object",
    "required": ["error", "reason"],
    "properties": {
        "error": {"type": "string", "description": "What was refused, in one line."},
        "reason": {"type": "string", "enum": ["verbatim_training_text"]},
        "verbatim": {
            "type": "object",
            "properties": {
                "action": {"type": "string", "enum": ["refused"]},
                "ngram": {"type": "integer"},
                "unit": {"type": "string", "enum": ["tokens", "words"]},
            },
        },
    },
}


def verbatim_refusal() -> dict[str, Any]:
    """The 451 answer of a guard whose verbatim filter refuses."""
    description = (
        "The answer would repeat a registered training text verbatim ([generation] verbatim_action = 'refuse');"
        " nothing of it is sent. Asking again with the same prompt gets the same refusal unless sampling differs."
    )
    return {"451": {"description": description, "content": {"application/json": {"schema": copy.deepcopy(REFUSED)}}}}


def generate_openapi(max_new_tokens: int, verbatim: bool = False) -> dict[str, Any]:
    """The OpenAPI of ``POST /v1/generate`` (``verbatim``: the answers carry the filter's verdict)."""
    request = {
        "type": "object",
        "required": ["prompt"],
        "properties": {
            "prompt": {"type": "string", "minLength": 1},
            "max_new_tokens": {
                "type": "integer",
                "minimum": 1,
                "maximum": max_new_tokens,
                "default": min(64, max_new_tokens),
            },
        },
        "additionalProperties": False,
    }
    answer = {
        "type": "object",
        "required": ["text", "redacted"],
        "properties": {
            "text": {"type": "string", "description": "The generated text, personal data replaced by [KIND]."},
            "redacted": {"type": "object", "additionalProperties": {"type": "integer"}},
        },
    }
    if verbatim:
        answer["required"].append("verbatim")
        answer["properties"]["verbatim"] = copy.deepcopy(VERBATIM)
    return {
        "security": BEARER,
        "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
        "responses": {
            "200": {"description": "Generated text, redacted.", "content": {"application/json": {"schema": answer}}}
        },
    }
