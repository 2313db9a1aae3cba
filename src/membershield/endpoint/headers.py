"""Request headers from ``--header "Name: value"``, where a value may say ``${VAR}``.

membershield expands ``${VAR}`` from its own environment, so a secret is in neither the shell history
nor the recorded command line, and only the unexpanded form is ever written down (audit.json, logs,
reports). A literal value is written down as ``<hidden>``: a header is where credentials travel.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

from membershield.errors import ConfigError

VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _split(header: str) -> tuple[str, str]:
    name, sep, value = header.partition(":")
    if not sep or not name.strip() or " " in name.strip():
        raise ConfigError(f"header {header!r} must read 'Name: value' (e.g. 'Authorization: Bearer ${{API_KEY}}')")
    return name.strip(), value.strip()


def expand_headers(headers: Iterable[str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The headers to send, ``${VAR}`` replaced by the environment's value.

    >>> expand_headers(["Authorization: Bearer ${TOKEN}"], {"TOKEN": "s3cret"})
    {'Authorization': 'Bearer s3cret'}
    """
    env = os.environ if environ is None else environ
    out = {}
    for header in headers:
        name, value = _split(header)
        missing = [v for v in VARIABLE.findall(value) if v not in env]
        if missing:
            raise ConfigError(f"header {name} refers to ${{{missing[0]}}}, which is not set: export {missing[0]}=...")
        out[name] = VARIABLE.sub(lambda m: env[m.group(1)], value)
    return out


def recorded_headers(headers: Iterable[str]) -> list[str]:
    """The headers as they may be written down: environment references kept, literal values hidden.

    >>> recorded_headers(["Authorization: Bearer ${TOKEN}", "X-Api-Key: abc123"])
    ['Authorization: Bearer ${TOKEN}', 'X-Api-Key: <hidden>']
    """
    out = []
    for header in headers:
        name, value = _split(header)
        literal = VARIABLE.sub("", value).strip()
        shown = value if VARIABLE.search(value) and not _looks_secret(literal) else "<hidden>"
        out.append(f"{name}: {shown}")
    return out


def _looks_secret(text: str) -> bool:
    # a scheme word such as "Bearer" beside the reference is fine to show; anything longer may be a key
    return len(text) > 0 and not re.fullmatch(r"[A-Za-z-]{1,16}", text)
