"""Personal data in one column of a table: what kinds are there, and how many values of each.

The guard's validators (:mod:`membershield.guard.pii`: Luhn for cards, ISO 13616 for IBANs, SSN ranges,
IP parsing, phone digit counts) decide what a candidate is; this module adds the kinds a table holds and
a text output rarely does (postcodes, dates of birth, UK National Insurance numbers) and the rules that
make a whole column readable: a value is taken as the file wrote it, once per distinct value, and a
number is only an identifier when its digits say so.

Every function here is pure.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import date
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from membershield.guard.pii import find_pii, iban_valid, ip_valid, luhn_valid, phone_valid, ssn_valid

KINDS = ("email", "phone", "card", "iban", "national_id", "ip_address", "date_of_birth", "postcode")
GUARD_KINDS = {
    "EMAIL": "email",
    "PHONE": "phone",
    "CREDIT_CARD": "card",
    "IBAN": "iban",
    "US_SSN": "national_id",
    "IP_ADDRESS": "ip_address",
}
# Presidio finds what patterns cannot; its own pattern recognisers repeat ours and are left out.
PRESIDIO_KINDS = {"PERSON": "person", "LOCATION": "location", "NRP": "nrp"}
PRESIDIO_SAMPLE = 200  # distinct values per column: the analyzer costs milliseconds a value

# A number with a fraction is a measurement; its digits after the point can pass Luhn by chance.
_DECIMAL = r"[+-]?\d*[.,]\d+(?:[eE][+-]?\d+)?|[+-]?\d+(?:\.\d*)?[eE][+-]?\d+"
_BARE_DIGITS = r"\d+"
_EMAIL_VALUE = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
_UK_POSTCODE = (
    r"GIR ?0AA|[A-PR-UWYZ](?:[0-9]{1,2}|[A-HK-Y][0-9][0-9ABEHMNPRV-Y]?|[0-9][A-HJKPSTUW]) ?[0-9][ABD-HJLNP-UW-Z]{2}"
)
_CA_POSTCODE = r"[ABCEGHJ-NPRSTVXY]\d[ABCEGHJ-NPRSTV-Z] ?\d[ABCEGHJ-NPRSTV-Z]\d"
_ZIP_PLUS_4 = r"\d{5}-\d{4}"
_ZIP = r"\d{5}(?:-\d{4})?"
_NINO = r"(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]"
# A bare share this high of 13-19 digit numbers passing Luhn is a card column; random ids pass 1 in 10.
CARD_COLUMN_SHARE = 0.5
CARD_SAMPLE = 1000
OLDEST_BIRTH_YEARS = 120


def name_tokens(name: str) -> set[str]:
    """The words of a column name, lower case: ``snake_case``, ``kebab-case``, ``camelCase`` and spaces.

    >>> sorted(name_tokens("customerEmail_2"))
    ['2', 'customer', 'email']
    >>> sorted(name_tokens("Date of Birth"))
    ['birth', 'date', 'of']
    """
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    return {t for t in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if t}


BIRTH_WORDS = {"dob", "birth", "birthday", "birthdate", "born", "geburtsdatum"}
POSTCODE_WORDS = {"zip", "zipcode", "postcode", "postal", "plz", "postalcode"}
SSN_WORDS = {"ssn", "sin", "nino", "nin", "tin", "bsn"}


def is_decimal_text(values: pd.Series) -> pd.Series:
    """Which values are written as numbers with a fraction or exponent (never an identifier here).

    >>> is_decimal_text(pd.Series(["0.0380759064334241", "4111111111111111", "1.2.3.4", "2e5"])).tolist()
    [True, False, False, True]
    """
    return values.str.fullmatch(_DECIMAL).fillna(False).astype(bool)


def date_like(values: pd.Series) -> pd.Series:
    """Values that are calendar dates or timestamps in ISO 8601 form (``2024-01-05``, ``2024-01-05 12:30``).

    >>> date_like(pd.Series(["2024-01-05", "2024-01-05T12:30:00", "+44 20 7946 0958", "20240105"])).tolist()
    [True, True, False, False]
    """
    looks = values.str.match(r"\d{4}-\d{2}-\d{2}(?:[T ]|$)").fillna(False).astype(bool)
    parsed = pd.to_datetime(values.where(looks), errors="coerce", format="ISO8601", utc=True)
    return pd.Series(parsed.notna().to_numpy() & looks.to_numpy(), index=values.index)


def card_column(bare: pd.Series, weights: pd.Series) -> int:
    """Cells of bare 13-19 digit numbers that are cards: the Luhn-valid ones, when most of them pass.

    A column of order or account numbers passes Luhn one time in ten and counts nothing; a card column
    with a few mistyped numbers still counts its valid ones.

    >>> cards = pd.Series(["4111111111111111", "5500005555555559", "4111111111111112"])
    >>> card_column(cards, pd.Series([3, 1, 1]))
    4
    >>> ids = pd.Series([str(10**15 + i) for i in range(20)])
    >>> card_column(ids, pd.Series([1] * 20))
    0
    """
    lengths = bare.str.len()
    candidates = (lengths >= 13) & (lengths <= 19)
    if not candidates.any():
        return 0
    numbers = bare[candidates]
    # The share is decided on a sample (a column of ids passes 1 in 10, far from a half); only a card
    # column has every number checked.
    sample = numbers.sample(n=min(len(numbers), CARD_SAMPLE), random_state=0)
    if sample.map(luhn_valid).astype(bool).mean() < CARD_COLUMN_SHARE:
        return 0
    passing = numbers.map(luhn_valid).astype(bool)
    if passing.mean() < CARD_COLUMN_SHARE:
        return 0
    return int(weights[candidates][passing].sum())


def bare_phones(bare: pd.Series, weights: pd.Series) -> int:
    """Cells of bare digits that are phone numbers: a leading 0 (a trunk prefix; a number loses it) then an
    area code (never 0: ``00`` opens an international number, or pads an account number), 10 or 11 digits
    in all, as a national number is written.

    >>> bare_phones(pd.Series(["07700900123", "7700900123", "0123", "0012345678"]), pd.Series([2, 5, 1, 3]))
    2
    """
    lengths = bare.str.len()
    trunk = bare.str.match(r"0[1-9]").fillna(False).astype(bool)
    return int(weights[trunk & (lengths >= 10) & (lengths <= 11)].sum())


def text_spans(values: pd.Series, weights: pd.Series) -> Counter[str]:
    """Findings of the guard's validators in free text, counted per kind, each value weighted.

    A phone written as bare digits without a leading 0 is a number here, not a phone (a count, an id).

    >>> text_spans(pd.Series(["mail a@example.org or +44 20 7946 0958", "ref 123456789"]), pd.Series([1, 4]))
    Counter({'email': 1, 'phone': 1})
    """
    counts: Counter[str] = Counter()
    for value, weight in zip(values.tolist(), weights.tolist(), strict=True):
        for kind, start, end in find_pii(value):
            span = value[start:end]
            if kind == "PHONE" and span.isdigit() and not span.startswith("0"):
                continue
            counts[GUARD_KINDS[kind]] += weight
    return counts


def births(values: pd.Series, today: date) -> pd.Series:
    """Which values are plausible dates of birth: a date, not in the future, at most 120 years back.

    >>> births(pd.Series(["1984-03-02", "03/02/1984", "2999-01-01", "1850-01-01", "soon"]), date(2025, 1, 1)).tolist()
    [True, True, False, False, False]
    """
    parsed = pd.Series(pd.to_datetime(values, errors="coerce", format="ISO8601", utc=True), index=values.index)
    # element by element is slow; only what ISO 8601 did not read goes that way
    other = parsed.isna()
    if other.any():
        parsed[other] = pd.to_datetime(values[other], errors="coerce", format="mixed", utc=True)
    parsed = parsed.dt.tz_localize(None)
    low = pd.Timestamp(today.year - OLDEST_BIRTH_YEARS, today.month, 1)
    return (parsed.notna() & (parsed <= pd.Timestamp(today)) & (parsed >= low)).astype(bool)


def nino_valid(value: str) -> bool:
    """A UK National Insurance number: two prefix letters (not D, F, I, Q, U, V; the second not O; not the
    prefixes never issued), six digits, a suffix A to D.

    >>> nino_valid("QQ 12 34 56 C"), nino_valid("AB123456C"), nino_valid("GB123456A"), nino_valid("AO123456A")
    (False, True, False, False)
    """
    code = re.sub(r"\s", "", value).upper()
    return bool(re.fullmatch(_NINO, code))


def _matches(values: pd.Series, pattern: str) -> np.ndarray:
    return values.str.fullmatch(pattern).fillna(False).to_numpy(dtype=bool)


class WholeValue(NamedTuple):
    kind: str
    pattern: str
    valid: Callable[[str], bool] | None = None
    any_case: bool = False
    # A value of this shape that fails its check is still not anything else (an SSN-shaped code is no phone).
    claims_shape: bool = False


# One value that is one thing, checked in this order (as the guard checks text), before free text is read.
WHOLE_VALUES = [
    WholeValue("email", _EMAIL_VALUE),
    WholeValue("iban", r"[A-Z]{2}\d{2}(?:[ -]?[A-Z0-9]){10,30}", iban_valid),
    WholeValue("card", r"\d(?:[ -]?\d){12,18}", luhn_valid),  # written with separators: bare digits are apart
    WholeValue("national_id", r"\d{3}-\d{2}-\d{4}", ssn_valid, claims_shape=True),
    WholeValue("national_id", r"[A-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D]", nino_valid, any_case=True),
    WholeValue("ip_address", r"(?:\d{1,3}\.){3}\d{1,3}", ip_valid),
    WholeValue("ip_address", r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}", ip_valid),
    WholeValue("postcode", _UK_POSTCODE, any_case=True),
    WholeValue("postcode", _CA_POSTCODE, any_case=True),
    WholeValue("postcode", _ZIP_PLUS_4),
    WholeValue("phone", r"\+?[\d ()./-]{7,}", phone_valid),
]


def _whole_values(distinct: pd.Series, weights: np.ndarray, rest: np.ndarray, found: Counter[str]) -> np.ndarray:
    """Count the values that are wholly one kind (see ``WHOLE_VALUES``); the values left over."""
    upper = distinct.str.upper()
    for kind, pattern, valid, any_case, claims_shape in WHOLE_VALUES:
        shaped = rest & _matches(upper if any_case else distinct, pattern)
        if not shaped.any():
            continue
        candidates = shaped.copy()
        if valid is not None:
            candidates[shaped] = np.array([valid(v) for v in distinct[shaped].tolist()], dtype=bool)
        found[kind] += int(weights[candidates].sum())
        rest = rest & ~(shaped if claims_shape else candidates)
    return rest


def column_pii(values: pd.Series, name: str, today: date | None = None) -> dict[str, int]:
    """Kinds of personal data in a column of text (as the file wrote it) → how many values of each.

    A free-text cell counts each finding; a cell that is one value counts once. The column's name only
    decides what cannot be told from digits alone: a five-digit ZIP code, a date that is a birth date, a
    bare nine-digit social security number.

    >>> column_pii(pd.Series(["4111111111111111", "5500005555555559", None]), "payment")
    {'card': 2}
    >>> column_pii(pd.Series(["3", "12", "7", "12"]), "years_experience")
    {}
    >>> column_pii(pd.Series(["SW1A 1AA", "ec1a 1bb", "1984-03-02", "AB 12 34 56 C"]), "home")
    {'national_id': 1, 'postcode': 2}
    >>> column_pii(pd.Series(["1984-03-02", "1990-12-31"]), "date_of_birth", today=date(2025, 1, 1))
    {'date_of_birth': 2}
    """
    today = today or date.today()
    counts = values.dropna().astype(str).str.strip().value_counts()
    counts = counts[counts.index != ""]
    if counts.empty:
        return {}
    # Arrow strings: the patterns below run in C++ over every distinct value at once.
    distinct = pd.Series(counts.index.astype(str), dtype="string[pyarrow]")
    weights = counts.to_numpy(dtype=np.int64)
    tokens = name_tokens(name)
    found: Counter[str] = Counter()
    dates = date_like(distinct).to_numpy(dtype=bool)
    if tokens & BIRTH_WORDS:
        born = births(distinct, today).to_numpy(dtype=bool)
        found["date_of_birth"] += int(weights[born].sum())
        dates = dates | born
    rest = ~dates & ~is_decimal_text(distinct).to_numpy(dtype=bool)
    bare = rest & _matches(distinct, _BARE_DIGITS)
    digits, bare_weights = distinct[bare].astype(object).reset_index(drop=True), pd.Series(weights[bare])
    found["card"] += card_column(digits, bare_weights)
    found["phone"] += bare_phones(digits, bare_weights)
    if tokens & SSN_WORDS:
        nine = (digits.str.len() == 9) & digits.map(ssn_valid).astype(bool)
        found["national_id"] += int(bare_weights[nine].sum())
    if tokens & POSTCODE_WORDS:
        zips = rest & _matches(distinct, _ZIP)
        found["postcode"] += int(weights[zips].sum())
        rest = rest & ~zips
    rest = _whole_values(distinct, weights, rest & ~bare, found)
    # Only values that can hold a finding go through the patterns one by one: an '@', four digits
    # (the fewest an IP address has), or a colon (IPv6).
    text = rest & distinct.str.contains(r"@|:|(?:\d\D*){4}", regex=True).fillna(False).to_numpy(dtype=bool)
    found.update(text_spans(distinct[text].astype(object), pd.Series(weights[text])))
    return {kind: count for kind, count in sorted(found.items()) if count > 0}


def presidio_pii(values: pd.Series, analyzer: Any, sample: int = PRESIDIO_SAMPLE, seed: int = 0) -> dict[str, int]:
    """Presidio's confident findings (names, places, nationalities) in up to ``sample`` distinct values of a
    text column, each weighted by how often the value occurs; only those distinct values are read.

    >>> class Finding:
    ...     def __init__(self, kind): self.entity_type, self.score = kind, 0.9
    >>> class Analyzer:
    ...     def analyze(self, text, language): return [Finding("PERSON")] if text[0].isupper() else []
    >>> presidio_pii(pd.Series(["Ada Lovelace", "Ada Lovelace", "x"]), Analyzer())
    {'person': 2}
    """
    from membershield.guard.pii import PRESIDIO_MIN_SCORE

    counts = values.dropna().astype(str).value_counts()
    if len(counts) > sample:
        counts = counts.sample(n=sample, random_state=seed)
    found: Counter[str] = Counter()
    for value, weight in counts.items():
        for result in analyzer.analyze(text=str(value), language="en"):
            kind = PRESIDIO_KINDS.get(result.entity_type)
            if kind is not None and result.score >= PRESIDIO_MIN_SCORE:
                found[kind] += int(weight)
    return dict(sorted(found.items()))


def merge_counts(*parts: Iterable[tuple[str, int]] | dict[str, int]) -> dict[str, int]:
    """Counts of several detectors added up, kinds in name order.

    >>> merge_counts({"email": 2}, {"email": 1, "person": 3})
    {'email': 3, 'person': 3}
    """
    total: Counter[str] = Counter()
    for part in parts:
        total.update(dict(part))
    return dict(sorted(total.items()))
