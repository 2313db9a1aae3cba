"""JSONL records: one JSON object per line with a text field.

Blank lines are skipped; every other line must be an object whose text field is a non-empty string.
Errors name the file and the 1-based line number, so a user can open the file at the bad line.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from membershield.errors import InputDataError


@dataclass(frozen=True)
class TextRecords:
    """Texts read from one JSONL file, with the line each came from and the file's sha256."""

    path: str
    texts: list[str]
    lines: list[int]  # 1-based line numbers in the file
    raw: list[str]  # the original lines (without the newline), for rewriting the file unchanged
    sha256: str

    def __len__(self) -> int:
        return len(self.texts)


def load_jsonl(path: str | Path, text_field: str = "text") -> TextRecords:
    """Read a JSONL file of records; raise :class:`InputDataError` naming the line of any problem."""
    p = Path(path)
    if not p.is_file():
        what = "a directory, not a file" if p.is_dir() else "not found"
        raise InputDataError(f'{p}: {what} (give a JSONL file with one {{"{text_field}": ...}} object per line)')
    data = p.read_bytes()
    try:
        content = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputDataError(f"{p}:{line}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from exc
    texts: list[str] = []
    lines: list[int] = []
    raw: list[str] = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputDataError(f"{p}:{number}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
        if not isinstance(record, dict):
            raise InputDataError(f"{p}:{number}: expected a JSON object, got {type(record).__name__}")
        if text_field not in record:
            keys = ", ".join(repr(k) for k in list(record)[:5]) or "none"
            raise InputDataError(
                f"{p}:{number}: no field '{text_field}' (fields: {keys}); name the text field with --text-field"
            )
        text = record[text_field]
        if not isinstance(text, str):
            raise InputDataError(f"{p}:{number}: field '{text_field}' must be a string, got {type(text).__name__}")
        if not text.strip():
            raise InputDataError(f"{p}:{number}: field '{text_field}' is empty; remove the record or fill it")
        texts.append(text)
        lines.append(number)
        raw.append(line)
    if not texts:
        raise InputDataError(f"{p}: no records (the file is empty); give one JSON object per line")
    return TextRecords(str(p), texts, lines, raw, hashlib.sha256(data).hexdigest())


def write_jsonl(path: str | Path, texts: list[str], text_field: str = "text") -> None:
    """Write one ``{text_field: text}`` object per line (UTF-8, non-ASCII kept as is)."""
    Path(path).write_text("".join(json.dumps({text_field: t}, ensure_ascii=False) + "\n" for t in texts))
