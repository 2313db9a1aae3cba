"""What every command shares: the consoles, progress display, number formatting and common options."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from membershield.errors import MembershieldError

# Piped output (CI logs, files) has no terminal width; 140 columns keeps the summary table unwrapped.
console = Console() if Console().is_terminal else Console(width=140)
errors = Console(stderr=True)


DropOverlapOption = Annotated[
    bool, typer.Option("--drop-overlap", help="Remove records found on both sides from both (else: an error).")
]
# The encoding a language model is scored under; the tokenizer's default is how `labels=input_ids` trains.
AddBosOption = Annotated[
    bool | None,
    typer.Option(
        "--add-bos/--no-add-bos",
        help="Put the BOS token first / never (default: encode as the tokenizer does, as the model trained).",
    ),
]


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


class RichProgress:
    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, Any] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        key = "attacks" if stage.startswith("attack") else stage
        if key not in self.tasks:
            # A stage without countable steps is over when the next one begins: shown done, not pulsing.
            for task in self.progress.tasks:
                if task.total is None:
                    self.progress.update(task.id, total=1, completed=1)
            self.tasks[key] = self.progress.add_task(stage, total=total or None)
        self.progress.update(self.tasks[key], completed=done, total=total or None, description=stage)


def progress_columns() -> tuple[Any, ...]:
    return (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())


def write_json(path: Path, doc: dict[str, Any]) -> None:
    from membershield.result import jsonable

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(jsonable(doc), indent=2, allow_nan=False, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise MembershieldError(f"cannot write {path}: {exc.strerror} (pass --out DIR)") from exc
