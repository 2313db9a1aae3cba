"""Command-line interface. Commands only parse options, call the library and print; no logic here.

Each command lives in the module of its topic (:mod:`.audit`, :mod:`.history`, :mod:`.text`,
:mod:`.compare`, :mod:`.guard`) and is listed here, once.
"""

from __future__ import annotations

import sys

import typer

from membershield.cli import (
    audit,
    compare,
    data,
    diffusion,
    guard,
    history,
    incident,
    lineage,
    monitor,
    synthetic,
    text,
    text_compare,
)
from membershield.cli.common import errors
from membershield.errors import MembershieldError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Measure membership-inference leakage of machine-learning models.",
    pretty_exceptions_enable=False,
)
# Piped output (CI logs, files) has no terminal width; 140 columns keeps the summary table unwrapped.

app.command()(audit.audit)
app.command("attacks")(audit.list_attacks)
app.command("targets")(audit.list_targets)
app.command()(history.gate)
app.command()(history.history)
app.command()(history.report)
app.command()(lineage.lineage)
app.command()(lineage.risk)
app.command("audit-text")(text.audit_text)
app.add_typer(text.canaries_app, name="canaries")
app.command("extract")(text.extract)
app.command("audit-diffusion")(diffusion.audit_diffusion)
app.command("audit-synthetic")(synthetic.audit_synthetic)
app.command()(compare.compare)
app.command("compare-text")(text_compare.compare_text)
app.command()(guard.guard)
app.command()(monitor.monitor)
app.command()(incident.incident)
app.add_typer(guard.keys_app, name="keys")
app.add_typer(data.data_app, name="data")

INTERRUPTED = 130  # the shell's code for a process stopped by SIGINT
INTERRUPTED_MESSAGE = "interrupted: finished reference models are cached; run the same command again to resume"


def main() -> None:
    try:
        # Typer turns Ctrl-C inside a command into a returned 130 when not in standalone mode.
        code = app(standalone_mode=False)
        if code == INTERRUPTED:
            errors.print(INTERRUPTED_MESSAGE)
            sys.exit(INTERRUPTED)
    except MembershieldError as exc:
        errors.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        errors.print(INTERRUPTED_MESSAGE)
        sys.exit(INTERRUPTED)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:  # click usage errors come through here with standalone_mode=False
        import click

        # typer vendors its own click: its usage errors are TyperExceptions, not click.ClickExceptions
        if isinstance(exc, click.ClickException | typer.TyperException) and hasattr(exc, "format_message"):
            # One line, like every other input error; the usage block is one --help away.
            context = getattr(exc, "ctx", None)
            command = context.command_path if context is not None else "membershield"
            message = " ".join(exc.format_message().split())
            errors.print(f"error: {message} (see '{command} --help')", markup=False, highlight=False, soft_wrap=True)
            sys.exit(2)
        raise
