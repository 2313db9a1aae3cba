"""The verbatim filter of ``POST /v1/generate``: an answer must not complete ``n`` consecutive tokens of a
registered training text.

The index holds one 64-bit hash per distinct ``n``-gram of the corpus, sorted, so a lookup is a binary
search (``np.searchsorted``) over a flat array: about 8 bytes per distinct n-gram, whatever ``n`` is. Two
different n-grams share a hash with probability about 2**-64; over a corpus of 10**8 n-grams a clean answer
is wrongly flagged about once in 10**11 n-grams looked up.

What a token is: with a local language model, its own token ids (the corpus encoded exactly as the
prompt is, so what the model reproduces is what the index holds); in front of an upstream text endpoint,
whose tokenizer the guard does not know, words: maximal runs of letters, digits and underscores, and each
other non-space character on its own, case-folded (``\\w+|[^\\w\\s]``).

Where the prompt ends: every n-gram that ends on an answer token counts, with up to ``n - 1`` tokens of
the prompt before it. An answer that continues a training text the prompt began is exactly the leak
(the extraction attack: give a record's prefix, read its suffix), and counting only n-grams inside the
answer would let a client take a text ``n - 1`` tokens per request by feeding each answer back as the next
prompt. N-grams entirely inside the prompt never count: the client already had them.
"""

from __future__ import annotations

import csv
import hashlib
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from membershield.errors import InputDataError

WORD = re.compile(r"\w+|[^\w\s]")
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
_BATCH = 2048  # texts encoded and hashed at a time while the index is built


def mix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (Steele et al. 2014): a bijection of uint64 that spreads every input bit.

    >>> [int(v) % 1000 for v in mix64(np.array([0, 1, 2], dtype=np.uint64))]
    [0, 789, 730]
    """
    z = values.astype(np.uint64, copy=True)
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


def ngram_hashes(ids: np.ndarray, n: int) -> np.ndarray:
    """One uint64 hash per window ``ids[i : i + n]`` (``len(ids) - n + 1`` of them; none when shorter).

    >>> h = ngram_hashes(np.array([5, 6, 7, 5, 6, 7]), 3)
    >>> len(h), bool(h[0] == h[3]), bool(h[0] == h[1])
    (4, True, False)
    """
    m = len(ids) - n + 1
    if m <= 0:
        return np.zeros(0, dtype=np.uint64)
    mixed = mix64(np.asarray(ids, dtype=np.int64).astype(np.uint64) + np.uint64(1))
    h = np.zeros(m, dtype=np.uint64)
    for i in range(n):  # polynomial hash modulo 2**64 of the mixed tokens, then mixed again
        h *= _MULTIPLIER
        h += mixed[i : i + m]
    return mix64(h)


@dataclass
class NgramIndex:
    """The distinct ``n``-grams of a corpus, as sorted hashes."""

    n: int
    hashes: np.ndarray  # sorted, distinct uint64
    texts: int
    tokens: int

    @classmethod
    def build(cls, sequences: Iterable[Sequence[int]], n: int) -> NgramIndex:
        """Index token sequences; an n-gram never spans two of them.

        >>> index = NgramIndex.build([[1, 2, 3, 4], [9, 9]], 3)
        >>> len(index), index.texts, index.tokens
        (2, 2, 6)
        """
        parts, texts, tokens = [], 0, 0
        batch: list[Sequence[int]] = []
        for sequence in sequences:
            batch.append(sequence)
            if len(batch) == _BATCH:
                parts.append(_batch_hashes(batch, n))
                texts, tokens, batch = texts + len(batch), tokens + sum(map(len, batch)), []
        if batch:
            parts.append(_batch_hashes(batch, n))
            texts, tokens = texts + len(batch), tokens + sum(map(len, batch))
        hashes = np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.uint64)
        return cls(n, hashes, texts, tokens)

    def __len__(self) -> int:
        return len(self.hashes)

    @property
    def nbytes(self) -> int:
        return int(self.hashes.nbytes)

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        """Which of ``hashes`` are n-grams of the corpus."""
        if not len(self.hashes):
            return np.zeros(len(hashes), dtype=bool)
        at = np.minimum(np.searchsorted(self.hashes, hashes), len(self.hashes) - 1)
        return self.hashes[at] == hashes

    def first_completion(self, context: Sequence[int], answer: Sequence[int]) -> int | None:
        """The position in ``answer`` of the first token that completes an indexed n-gram (with up to
        ``n - 1`` tokens of ``context`` before the answer), or None.

        >>> index = NgramIndex.build([[1, 2, 3, 4, 5]], 3)
        >>> index.first_completion([7, 1], [2, 3, 4])  # the prompt's 1 begins 1 2 3: the answer's 3 completes it
        1
        >>> index.first_completion([], [2, 3, 4]), index.first_completion([1], [9, 2])
        (2, None)
        >>> index.first_completion([9, 9, 9, 9, 1, 2], [3])  # only the prompt's last n - 1 tokens count
        0
        """
        tail = list(context[max(0, len(context) - self.n + 1) :])
        hits = self.contains(ngram_hashes(np.asarray(tail + list(answer), dtype=np.int64), self.n))
        if not hits.any():
            return None
        return int(np.argmax(hits)) + self.n - 1 - len(tail)


def _batch_hashes(batch: list[Sequence[int]], n: int) -> np.ndarray:
    """The distinct n-gram hashes of a batch of sequences, hashed as one concatenation and the windows that
    cross from one sequence into the next dropped."""
    lengths = np.fromiter((len(s) for s in batch), dtype=np.int64, count=len(batch))
    if not lengths.sum():
        return np.zeros(0, dtype=np.uint64)
    flat = np.fromiter((t for s in batch for t in s), dtype=np.int64, count=int(lengths.sum()))
    hashes = ngram_hashes(flat, n)
    ends = np.repeat(np.cumsum(lengths), lengths)  # where each token's own sequence ends
    inside = ends[: len(hashes)] - np.arange(len(hashes)) >= n
    return np.unique(hashes[inside])


class WordTokens:
    """Word tokens of a text for an upstream endpoint: ids stable within and across processes."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}

    def _id(self, word: str) -> int:
        found = self._ids.get(word)
        if found is None:
            digest = hashlib.blake2b(word.casefold().encode("utf-8", "surrogatepass"), digest_size=8).digest()
            found = self._ids[word] = int.from_bytes(digest, "little") >> 1  # within int64
        return found

    def ids(self, text: str) -> list[int]:
        """
        >>> words = WordTokens()
        >>> words.ids("Call Anna, now") == words.ids("call anna ,now")
        True
        """
        return [self._id(m.group()) for m in WORD.finditer(text)]

    def spans(self, text: str) -> tuple[list[int], list[int]]:
        """Each word's id and where it starts in ``text``."""
        found = list(WORD.finditer(text))
        return [self._id(m.group()) for m in found], [m.start() for m in found]


def read_corpus(path: str, text_field: str) -> list[str]:
    """The training texts of a JSONL file (``{text_field: ...}`` per line) or a CSV file (a column)."""
    if Path(path).suffix.lower() == ".jsonl":
        from membershield.text.data import load_jsonl

        return load_jsonl(path, text_field).texts
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            if text_field not in (reader.fieldnames or []):
                columns = ", ".join(repr(c) for c in (reader.fieldnames or [])[:8]) or "none"
                raise InputDataError(
                    f"{path}: no column '{text_field}' (columns: {columns}); name it with [generation] text_field"
                )
            texts = [row[text_field] for row in reader if row.get(text_field)]
    except UnicodeDecodeError as exc:
        raise InputDataError(f"{path}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from exc
    except csv.Error as exc:
        raise InputDataError(f"{path}: not a readable CSV file ({exc})") from exc
    if not texts:
        raise InputDataError(f"{path}: no texts in column '{text_field}'; register the training texts")
    return texts


@dataclass(frozen=True)
class Verdict:
    """What the filter did to one answer."""

    action: str  # "passed", "refused" or "truncated"
    text: str  # the answer to send (cut before the first completing token when truncated)
    tokens_removed: int = 0

    def summary(self, n: int, unit: str) -> dict[str, Any]:
        """The ``verbatim`` member of the answer."""
        return {"action": self.action, "tokens_removed": self.tokens_removed, "ngram": n, "unit": unit}


class VerbatimFilter:
    """Refuses or truncates answers that complete an indexed n-gram, in the served model's tokens
    (``decode`` given) or in words (an upstream endpoint)."""

    def __init__(
        self,
        index: NgramIndex,
        action: str,
        decode: Callable[[list[int]], str] | None = None,
        words: WordTokens | None = None,
    ) -> None:
        self.index, self.action, self.decode = index, action, decode
        self.unit = "tokens" if decode is not None else "words"
        self.words = (words or WordTokens()) if decode is None else None
        self.build_seconds = 0.0

    def check_tokens(self, prompt_ids: Sequence[int], answer_ids: Sequence[int], text: str | None = None) -> Verdict:
        """An answer of the local model, in its token ids (special tokens left out); ``text``: the answer
        already decoded."""
        assert self.decode is not None
        at = self.index.first_completion(prompt_ids, answer_ids)
        if at is None:
            return Verdict("passed", self.decode(list(answer_ids)) if text is None else text)
        if self.action == "refuse":
            return Verdict("refused", "", len(answer_ids))
        return Verdict("truncated", self.decode(list(answer_ids[:at])), len(answer_ids) - at)

    def check_text(self, prompt: str, answer: str) -> Verdict:
        """An upstream's answer, in words; an answer that starts by echoing the prompt (as text-generation
        servers do unless told otherwise) has that part counted as prompt."""
        assert self.words is not None
        echoed = len(prompt) if answer.startswith(prompt) else 0
        ids, starts = self.words.spans(answer[echoed:])
        at = self.index.first_completion(self.words.ids(prompt), ids)
        if at is None:
            return Verdict("passed", answer)
        if self.action == "refuse":
            return Verdict("refused", "", len(ids))
        return Verdict("truncated", answer[: echoed + starts[at]].rstrip(), len(ids) - at)


def build_filter(
    corpus: str, text_field: str, n: int, action: str, language_model: Any | None = None
) -> VerbatimFilter:
    """Read the corpus and index it: in the local model's tokens (encoded as its prompts are, special tokens
    left out), else in words. ``build_seconds`` says how long that took."""
    start = time.perf_counter()
    texts = read_corpus(corpus, text_field)
    return index_texts(texts, n, action, language_model, start)


def index_texts(
    texts: list[str], n: int, action: str, language_model: Any | None = None, start: float | None = None
) -> VerbatimFilter:
    """The filter over ``texts`` (see :func:`build_filter`)."""
    start = time.perf_counter() if start is None else start
    if language_model is not None:
        special = set(language_model.tokenizer.all_special_ids)
        sequences: Iterable[Sequence[int]] = (
            [t for t in ids if t not in special]
            for i in range(0, len(texts), _BATCH)
            for ids in language_model.encode(texts[i : i + _BATCH])
        )
        tokenizer = language_model.tokenizer
        built = VerbatimFilter(
            NgramIndex.build(sequences, n), action, lambda ids: tokenizer.decode(ids, skip_special_tokens=True)
        )
    else:
        words = WordTokens()
        built = VerbatimFilter(NgramIndex.build((words.ids(t) for t in texts), n), action, words=words)
    built.build_seconds = time.perf_counter() - start
    return built
