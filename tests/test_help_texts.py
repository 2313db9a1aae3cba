"""Every option's help renders as written: Rich reads an unescaped ``[word]`` as markup and drops it, which
once turned "Guard policy TOML: [output], [limits], ..." into "Guard policy TOML: , , , ."."""

from __future__ import annotations

import re

import typer

from membershield.cli import app
from tests.test_cli import run_cli

MARKUP_LIKE = re.compile(r"(?<!\\)\[[a-z][a-z0-9_ .=-]*\]")


def _commands(command, path: str = "membershield"):
    yield path, command
    if hasattr(command, "commands"):  # a group (typer's own click, not the click package's class)
        for name, sub in command.commands.items():
            yield from _commands(sub, f"{path} {name}")


def test_no_help_text_holds_unescaped_markup() -> None:
    found = [
        f"{path} {param.name}: {param.help!r}"
        for path, command in _commands(typer.main.get_command(app))
        for param in command.params
        if getattr(param, "help", None) and MARKUP_LIKE.search(param.help)
    ]
    assert not found, found


def test_guard_help_names_the_policy_sections(monkeypatch, capsys) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run_cli(monkeypatch, capsys, "guard", "--help")
    assert code == 0
    text = " ".join(out.replace("│", " ").split())
    assert "[output], [limits], [detector], [server]" in text, text
