"""``scan.html``: the scan of a table as one self-contained page (inline styles, no scripts, nothing to fetch).

The template lives with the report templates (``report/templates/scan.html.j2``) so that it is packaged
with them; it renders only what ``scan.json`` holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from membershield.errors import MembershieldError

ROWS_SHOWN = 50
GROUPS_SHOWN = 20


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def render_scan(doc: dict[str, Any]) -> str:
    """The HTML page of a scan document."""
    env = Environment(
        loader=PackageLoader("membershield.report", "templates"),
        autoescape=select_autoescape(["html", "html.j2"], default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = _pct
    verdict = "no policy" if doc["policy"] is None else ("passed" if doc["passed"] else "failed")
    by_tier = {tier: [c["name"] for c in doc["columns"] if c["tier"] == tier] for tier in ("protected", "personal")}
    return env.get_template("scan.html.j2").render(
        scan=doc,
        verdict=verdict,
        by_tier=by_tier,
        rows_shown=ROWS_SHOWN,
        groups_shown=GROUPS_SHOWN,
        failures=[c for c in doc["checks"] if not c["passed"]],
    )


def write_scan_html(doc: dict[str, Any], path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_scan(doc), encoding="utf-8")
    except OSError as exc:
        raise MembershieldError(f"cannot write {path}: {exc.strerror} (pass --out DIR)") from exc
