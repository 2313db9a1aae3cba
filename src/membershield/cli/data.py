"""``membershield data scan``: personal data, tiers, rare records, duplicates and retention of a table."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from membershield.cli.common import console, write_json

data_app = typer.Typer(help="Check a training table before a model sees it.", no_args_is_help=True)


def _say(line: str) -> None:
    console.print(line, markup=False, highlight=False, soft_wrap=True)


def scan(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="The table: CSV, Parquet or NPZ.")],
    policy: Annotated[
        Path | None, typer.Option(help="Data policy TOML: tiers, owners, quasi-identifiers, retention, limits.")
    ] = None,
    quasi_identifiers: Annotated[
        str | None,
        typer.Option(help="Columns whose combinations make a record rare, comma-separated (exact values)."),
    ] = None,
    k: Annotated[
        int | None, typer.Option(help="A combination seen fewer than k times is rare (default 5).", min=2)
    ] = None,
    out: Annotated[Path, typer.Option(help="Directory for scan.json and scan.html.")] = Path("scan-out"),
) -> None:
    """Scan a table: exit 0 when it meets the policy (or there is none), 1 when a limit fails, 2 on bad input."""
    from membershield.datascan import load_policy, scan_table, write_scan_html

    listed = [name.strip() for name in quasi_identifiers.split(",") if name.strip()] if quasi_identifiers else None
    doc = scan_table(file, load_policy(policy) if policy else None, quasi_identifiers=listed, k=k)
    write_json(out / "scan.json", doc)
    write_scan_html(doc, out / "scan.html")
    for column in doc["columns"]:
        found = ", ".join(f"{kind} {n}" for kind, n in column["pii"].items()) or "-"
        _say(f"{column['tier']:<10} {column['name']}: {found}")
    lowk, dup = doc["low_k"], doc["duplicates"]
    names = ", ".join(lowk["quasi_identifiers"]) or "none"
    _say(f"low-k: {lowk['records']} records in {lowk['combinations']} combinations seen < {lowk['k']} times ({names})")
    _say(f"duplicates: {dup['exact']['records']} exact, {dup['near']['records']} near copies")
    if doc["retention"] is not None:
        _say(f"retention: {doc['retention']['expired']} records past {doc['retention']['max_age_days']:g} days")
    for check in doc["checks"]:
        if not check["passed"]:
            _say(f"FAIL {check['line']}")
    _say(f"wrote {out / 'scan.json'} and {out / 'scan.html'} ({doc['seconds']:.1f} s)")
    if not doc["passed"]:
        failed = sum(not c["passed"] for c in doc["checks"])
        _say(f"scan FAILED: {failed} of {len(doc['checks'])} checks")
        sys.exit(1)
    if doc["checks"]:
        _say(f"scan passed: {len(doc['checks'])} checks")


data_app.command("scan")(scan)
